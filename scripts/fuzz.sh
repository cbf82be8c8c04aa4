#!/bin/sh
# Build the libFuzzer targets in tests/fuzz with clang (+ASan/UBSan) and run
# each for FUZZ_SECONDS (default 10). Crashes land in build-fuzz/crashes/.
set -eu
cd "$(dirname "$0")/.."
out=build-fuzz
secs="${FUZZ_SECONDS:-10}"
mkdir -p "$out/crashes"
pkgs="$(make -s --no-print-directory print-pkgs)" # the Makefile's list, one place
cflags="-std=c17 -D_GNU_SOURCE -g -O1 -Isrc -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined $(pkg-config --cflags $pkgs)"
libs="$(pkg-config --libs $pkgs) -lpthread -lm"
# Every source but main.c, as an archive: each target links what it uses.
objs=""
for f in $(ls src/*.c src/*/*.c | grep -v '^src/main.c$'); do
  o="$out/$(echo "$f" | tr / _).o"
  clang $cflags -c "$f" -o "$o"
  objs="$objs $o"
done
rm -f "$out/libkeyless.a"
ar rcs "$out/libkeyless.a" $objs
# A target that finds a crash, a leak or undefined behaviour fails the run
# (and make test with it), its report shown: a finding is a bug.
failed=""
for t in tests/fuzz/fuzz_*.c; do
  name=$(basename "$t" .c)
  clang $cflags -fsanitize=fuzzer "$t" "$out/libkeyless.a" -o "$out/$name" $libs
  echo "== $name (${secs}s)"
  mkdir -p "$out/corpus-$name"
  if "$out/$name" -max_total_time="$secs" -max_len=65536 -artifact_prefix="$out/crashes/$name-" \
    "$out/corpus-$name" tests/fuzz/seeds/ >"$out/$name.log" 2>&1; then
    tail -n 2 "$out/$name.log"
  else
    grep -E "ERROR|SUMMARY|runtime error|^    #[0-9]+ |Test unit written|Base64" "$out/$name.log" | head -n 40
    failed="$failed $name"
  fi
done
if [ -n "$failed" ]; then
  echo "fuzz: findings in:$failed (inputs in $out/crashes/)" >&2
  exit 1
fi
