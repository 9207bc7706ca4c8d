/**
 * `npm pack` makes a package that installs globally: `firma` on PATH works from any folder with the
 * mapping packs, policies, LLM prices and schema it ships (no clone, no dev dependencies). The test packs the dist/
 * that `npm test` built (--ignore-scripts): a rebuild here would rewrite files other tests are loading.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from '../helpers/sidecar.js';

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd, env: { ...process.env, ...env }, encoding: 'utf8', timeout: 240_000, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1, stdout, stderr }));
  });
}

t.test('npm pack, npm install -g, then firma from an empty folder', async (t) => {
  const work = mkdtempSync(join(tmpdir(), 'firma-pack-'));
  const packed = await run('npm', ['pack', '--silent', '--ignore-scripts', '--pack-destination', work], REPO);
  t.equal(packed.code, 0, packed.stderr);
  const tarball = readdirSync(work).find((f) => f.endsWith('.tgz'));
  t.ok(tarball !== undefined, 'a tarball');
  const listing = await run('tar', ['-tzf', join(work, tarball!)], work);
  const files = listing.stdout.split('\n');
  for (const f of ['package/dist/cli/firma.js', 'package/firma.schema.json', 'package/policies/default.cedar', 'package/mappings/openai.toml', 'package/prices/llm-prices.toml']) {
    t.ok(files.includes(f), `ships ${f}`);
  }
  t.notOk(files.some((f) => f.startsWith('package/test/') || f.startsWith('package/src/')), 'no tests or sources');

  const prefix = join(work, 'global');
  const installed = await run('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', join(work, tarball!)], work);
  t.equal(installed.code, 0, installed.stderr);
  const empty = mkdtempSync(join(tmpdir(), 'firma-empty-'));
  const path = `${join(prefix, 'bin')}:${process.env['PATH'] ?? ''}`;
  const version = await run('firma', ['version'], empty, { PATH: path });
  t.match(version.stdout, /^firma \d+\.\d+\.\d+/, `firma on PATH: ${version.stderr}`);
  const check = await run('firma', ['check'], empty, { PATH: path });
  t.equal(check.code, 0, check.stderr);
  t.match(check.stdout, /^\(built-in defaults\): ok — [1-9]\d* mapping rules in [1-9]\d* files, [1-9]\d* policies/, 'the shipped packs and policies');
  const schema = await run('firma', ['schema'], empty, { PATH: path });
  t.match(schema.stdout, /"title": "firma\.toml"/, 'the schema');
  const token = await run('firma', ['token', 'issue', '--agent', 'a', '--actions', 'llm.*', '--scope', 'api.openai.com'], empty, { PATH: path });
  t.match(token.stdout, /^v4\.public\./, 'a token, keys made in the current folder');
});
