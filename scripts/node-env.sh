# Sourced by the scripts that run Node.js tests: puts the Node.js 20 that
# scripts/deps.sh fetched (where the system's is older) first on PATH, and
# installs the npm packages (official SDKs, Claude Code) with `npm ci` when
# node_modules is missing or older than the lock file (and not a link).
for d in .tools/node/node_modules/node-linux-*/bin; do
  [ -x "$d/node" ] && PATH="$PWD/$d:$PATH" && export PATH
done
# A node_modules that is a link is another checkout's install, shared: npm ci
# would empty the directory it points to (for everyone using it) and put a
# directory of its own in place of the link; a fresh clone's lock file is
# always newer than it. It is used as it is. A directory without npm's
# .package-lock.json is an install that did not finish (npm writes it last,
# an interrupted npm ci leaves none): installed again here, and refused
# through a link (the tests would fail on a missing package); tested on its
# own, as dash's -nt is false when the second file is missing.
if [ -L node_modules ]; then
  [ -d node_modules ] || { echo "node-env: node_modules links to nothing" >&2; exit 1; }
  [ -e node_modules/.package-lock.json ] || {
    echo "node-env: node_modules links to an install that did not finish (no .package-lock.json): run npm ci there" >&2
    exit 1
  }
elif [ ! -d node_modules ] || [ ! -e node_modules/.package-lock.json ] ||
     [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
