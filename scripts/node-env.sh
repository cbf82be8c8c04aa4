# Sourced by the scripts that run Node.js tests: puts the Node.js 20 that
# scripts/deps.sh fetched (where the system's is older) first on PATH, and
# installs the npm packages (official SDKs, Claude Code) with `npm ci` when
# node_modules is missing or older than the lock file.
for d in .tools/node/node_modules/node-linux-*/bin; do
  [ -x "$d/node" ] && PATH="$PWD/$d:$PATH" && export PATH
done
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
