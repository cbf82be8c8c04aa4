// make install: the binary, its price table, a systemd unit and a server
// configuration, under a prefix; the installed binary finds its price table
// from anywhere, the installed configuration passes `keyless check`, the
// unit passes `systemd-analyze verify` (where systemd is), and a second
// install never replaces a configuration already there.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';
import { ROOT, BUILD, tempDir } from './lib/harness.mjs';

describe('make install', () => {
  it('installs a working binary, price table, unit and configuration; keeps a configuration already there', () => {
    const dir = tempDir('kl-install-');
    const vars = [`BUILD=${relative(ROOT, BUILD)}`, `PREFIX=${dir}/usr`, `SYSCONFDIR=${dir}/etc`,
      `UNITDIR=${dir}/lib/systemd/system`];
    // -o: the binary the other tests run is installed as it is, never rebuilt under them
    const install = () => spawnSync('make', ['--no-print-directory', '-o', `${relative(ROOT, BUILD)}/keyless`, 'install', ...vars],
      { cwd: ROOT, encoding: 'utf8' });
    try {
      let r = install();
      assert.equal(r.status, 0, r.stdout + r.stderr);
      const bin = `${dir}/usr/bin/keyless`, config = `${dir}/etc/keyless/keyless.hujson`;
      const unitPath = `${dir}/lib/systemd/system/keyless.service`;
      for (const f of [bin, config, unitPath, `${dir}/usr/share/keyless/prices.json`])
        assert.ok(existsSync(f), `${f} installed`);
      // from another directory: the price table is found beside the binary (share/keyless); the
      // other places it is looked for, /usr/share/keyless and ./data, are not on a build machine
      assert.ok(!existsSync('/usr/share/keyless/prices.json'), 'a packaged price table would hide the lookup');
      r = spawnSync(bin, ['check', '--config', config], { cwd: '/', encoding: 'utf8',
        env: { ...process.env, OPENAI_API_KEY: 'x', ANTHROPIC_API_KEY: 'x', GEMINI_API_KEY: 'x' } });
      assert.equal(r.status, 0, r.stdout + r.stderr);
      assert.match(r.stdout + r.stderr, /0 errors, 0 warnings/);
      const unit = readFileSync(unitPath, 'utf8');
      assert.match(unit, new RegExp(`^ExecStart=${bin} serve --config ${config}$`, 'm'));
      assert.doesNotMatch(unit, /@[A-Z]+@/, 'every placeholder filled');
      // getifaddrs(3) asks a netlink socket: without it keyless cannot tell a caller on this host from a tailnet one
      assert.match(unit, /^RestrictAddressFamilies=.*\bAF_NETLINK\b/m);
      const analyze = spawnSync('systemd-analyze', ['verify', unitPath], { encoding: 'utf8' });
      if (!analyze.error)
        assert.equal(analyze.status, 0, analyze.stdout + analyze.stderr);
      // a second install leaves the operator's configuration alone
      writeFileSync(config, '{"providers": {}} // mine\n');
      r = install();
      assert.equal(r.status, 0, r.stdout + r.stderr);
      assert.equal(readFileSync(config, 'utf8'), '{"providers": {}} // mine\n');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
