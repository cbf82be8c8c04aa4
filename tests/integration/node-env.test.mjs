// scripts/node-env.sh (sourced by the integration and stress scripts) runs
// npm ci when node_modules is missing or older than the lock file, but never
// through a node_modules that links to another checkout's: npm ci empties
// the directory a link points to.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, symlinkSync, utimesSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, tempDir } from './lib/harness.mjs';

describe('node-env.sh', () => {
  const dir = tempDir('keyless-node-env-');
  after(() => rmSync(dir, { recursive: true, force: true }));
  // an npm that only says it was asked
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  writeFileSync(join(bin, 'npm'), `#!/bin/sh\necho "$@" >>"${join(dir, 'npm-called')}"\n`);
  chmodSync(join(bin, 'npm'), 0o755);
  const source = (cwd) => spawnSync('sh', ['-c', `. ${JSON.stringify(join(ROOT, 'scripts/node-env.sh'))}`],
    { cwd, env: { ...process.env, PATH: `${bin}:${process.env.PATH}` }, encoding: 'utf8' });
  const checkout = (name) => {
    const d = join(dir, name);
    mkdirSync(d);
    writeFileSync(join(d, 'package-lock.json'), '{}');
    return d;
  };

  it('leaves a linked node_modules alone, though the lock file is newer', () => {
    const shared = join(dir, 'shared-node_modules');
    mkdirSync(shared);
    writeFileSync(join(shared, '.package-lock.json'), '{}');
    utimesSync(join(shared, '.package-lock.json'), new Date(1e12), new Date(1e12));
    const d = checkout('linked');
    symlinkSync(shared, join(d, 'node_modules'));
    const r = source(d);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(existsSync(join(dir, 'npm-called')), false, 'npm ci ran through the link');
  });

  it('installs again over a node_modules an install left unfinished (no .package-lock.json)', () => {
    const d = checkout('unfinished');
    mkdirSync(join(d, 'node_modules'));
    rmSync(join(dir, 'npm-called'), { force: true });
    const r = source(d);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(existsSync(join(dir, 'npm-called')), true, 'npm ci did not run over an unfinished install');
  });

  it('refuses a linked node_modules whose install did not finish, without touching it', () => {
    const shared = join(dir, 'emptied-node_modules');
    mkdirSync(shared);
    const d = checkout('linked-unfinished');
    symlinkSync(shared, join(d, 'node_modules'));
    rmSync(join(dir, 'npm-called'), { force: true });
    const r = source(d);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /links to an install that did not finish/);
    assert.equal(existsSync(join(dir, 'npm-called')), false, 'npm ci ran through the link');
  });

  it('still installs into a checkout without node_modules', () => {
    const r = source(checkout('fresh'));
    assert.equal(r.status, 0, r.stderr);
    assert.match(String(spawnSync('cat', [join(dir, 'npm-called')]).stdout), /^ci /);
  });
});
