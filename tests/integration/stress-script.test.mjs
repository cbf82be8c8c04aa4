// scripts/stress-tsan.sh (make stress, in CI) must not pass a run that did
// not do what it stands for: here on the plain build, through a stand-in
// keyless that crashes under the load, or whose reloads all fail.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BUILD, ROOT, tempDir } from './lib/harness.mjs';

const dirs = [];
// A build directory whose keyless is the shell script body, then the real one.
function standIn(body) {
  const dir = tempDir('keyless-standin-');
  dirs.push(dir);
  for (const f of ['mockllm', 'fake-tailscaled']) symlinkSync(join(BUILD, f), join(dir, f));
  writeFileSync(join(dir, 'keyless'), `#!/bin/sh\nreal=${JSON.stringify(join(BUILD, 'keyless'))}\n${body}\nexec "$real" "$@"\n`);
  chmodSync(join(dir, 'keyless'), 0o755);
  return dir;
}

function stress(build, seconds) {
  return new Promise((resolve) => {
    const p = spawn('sh', [join(ROOT, 'scripts/stress-tsan.sh'), String(seconds)],
      { env: { ...process.env, KEYLESS_STRESS_BUILD: build }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('exit', (code) => resolve({ code, out, err }));
  });
}

describe('the TSan stress script', () => {
  after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

  it('fails when the gateway crashed as it stopped, though it had served enough', async () => {
    // the real one stops cleanly, then the stand-in dies of SIGABRT, as an
    // abort in the gateway's own shutdown would (ThreadSanitizer reports none)
    const r = await stress(standIn(`if [ "$1" = serve ]; then
  "$real" "$@" & pid=$!
  trap 'kill -HUP $pid' HUP
  trap 'kill -TERM $pid; wait $pid; trap - ABRT; kill -ABRT $$' TERM
  while kill -0 $pid 2>/dev/null; do wait $pid; done
  exit 0
fi`), 6);
    assert.notEqual(r.code, 0, r.out + r.err);
    assert.match(r.err, /the sqlite run's gateway did not exit cleanly: keyless exited \{"code":null,"signal":"SIGABRT"\}/);
  });

  it('fails when the reloads did not take', async () => {
    // the gateway reads a copy of its configuration, made invalid once it
    // has started: every reload has errors
    const r = await stress(standIn(`if [ "$1" = serve ]; then
  cp "$3" "$3.copy"
  (sleep 0.3; echo '{' >"$3.copy") </dev/null >/dev/null 2>&1 &
  exec "$real" serve --config "$3.copy"
fi`), 6);
    assert.notEqual(r.code, 0, r.out + r.err);
    assert.match(r.err, /the sqlite run served \d+ requests and took \d+ reloads; reloads not taken: 'reload SIGHUP: \//);
  });
});
