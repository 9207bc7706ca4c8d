/**
 * Every firma.toml under deploy/ passes `firma check`.
 */
import t from 'tap';
import { readdirSync } from 'node:fs';
import { posix } from 'node:path';
import { CLI } from '../../helpers/sidecar.js';
import { demoConfigFile, k8sConfigFile, repoPath, run } from '../../helpers/deploy.js';

t.test('every firma.toml under deploy/ passes `firma check`', async (t) => {
  const files = readdirSync(repoPath('deploy'), { recursive: true, encoding: 'utf8' })
    .filter((f) => posix.basename(f) === 'firma.toml')
    .map((f) => repoPath('deploy', f));
  t.ok(files.includes(k8sConfigFile) && files.includes(demoConfigFile), `found ${files.join(', ')}`);
  for (const f of files) {
    const r = run(process.execPath, [CLI, 'check', '--config', f]);
    t.equal(r.status, 0, `firma check ${f}: ${r.stdout}${r.stderr}`);
    t.match(r.stdout, /: ok — [1-9]\d* mapping rules/, `${f} loads mapping rules`);
  }
});
