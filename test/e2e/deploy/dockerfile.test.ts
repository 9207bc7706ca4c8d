/**
 * The Dockerfile: multi-stage, production dependencies only, non-root, tini, a health check.
 */
import t from 'tap';
import { existsSync } from 'node:fs';
import { posix } from 'node:path';
import { loadConfig } from '../../../src/config/index.js';
import { REPO } from '../../helpers/sidecar.js';
import { copySources, k8sConfigFile, parseDockerfile, readText, repoPath } from '../../helpers/deploy.js';

t.test('Dockerfile: multi-stage, npm ci --omit=dev without scripts, non-root, tini, healthcheck on /healthz', async (t) => {
  const stages = parseDockerfile(readText('Dockerfile'));
  const runtime = stages[stages.length - 1]!;
  t.equal(runtime.name, 'runtime', 'the runtime stage is last (the default build target)');
  const byName = new Map(stages.map((s) => [s.name, s]));

  // Build stage: npm ci (scripts off: prepare would run tsc before the sources are copied) + npm run build.
  const build = byName.get('build');
  t.ok(build, 'a build stage');
  const buildRuns = build!.instructions.filter((i) => i.op === 'RUN').map((i) => i.args);
  t.ok(buildRuns.some((r) => /\bnpm ci\b/.test(r) && r.includes('--ignore-scripts')), 'build: npm ci --ignore-scripts');
  t.ok(buildRuns.some((r) => /\bnpm run build\b/.test(r)), 'build: npm run build');

  // node_modules of the runtime come from a stage that installs production dependencies only.
  const copies = runtime.instructions.filter((i) => i.op === 'COPY').map((i) => copySources(i.args));
  const modules = copies.find((c) => c.from !== null && c.sources.some((s) => s.endsWith('node_modules')));
  t.ok(modules, 'runtime copies node_modules from another stage');
  const depsRuns = byName.get(modules!.from!)!.instructions.filter((i) => i.op === 'RUN').map((i) => i.args);
  t.ok(
    depsRuns.some((r) => /\bnpm ci\b/.test(r) && r.includes('--omit=dev') && r.includes('--ignore-scripts')),
    `${modules!.from}: npm ci --omit=dev --ignore-scripts (prepare needs tsc, a dev dependency)`,
  );
  const dist = copies.find((c) => c.from === 'build');
  t.ok(dist && dist.sources.some((s) => s.endsWith('/dist')), 'runtime copies dist/ from the build stage');

  // Every build-context path COPYd exists and is not excluded by .dockerignore.
  const ignore = readText('.dockerignore')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  const contextSources = stages.flatMap((s) => s.instructions.filter((i) => i.op === 'COPY').map((i) => copySources(i.args))).filter((c) => c.from === null);
  const sources = contextSources.flatMap((c) => c.sources);
  for (const want of ['dist', 'mappings', 'policies', 'firma.toml']) {
    t.ok(
      sources.some((s) => posix.basename(s) === want) || copies.some((c) => c.sources.some((s) => posix.basename(s) === want)),
      `runtime gets ${want}`,
    );
  }
  for (const src of sources) {
    t.ok(existsSync(repoPath(src)), `COPY source ${src} exists`);
    const excludedBy = ignore.find((p) => !p.includes('*') && (src === p || src.startsWith(p + '/')));
    t.equal(excludedBy, undefined, `COPY source ${src} is not excluded by .dockerignore`);
  }
  for (const secret of ['certs', 'keys', 'audit', 'node_modules', 'dist', '.git']) t.ok(ignore.includes(secret), `.dockerignore keeps ${secret} out`);

  // Non-root, the UID the k8s redirect exempts.
  const users = runtime.instructions.filter((i) => i.op === 'USER').map((i) => i.args.trim());
  const user = users[users.length - 1];
  t.ok(user !== undefined && /^\d+(:\d+)?$/.test(user), `numeric USER (${user}): Kubernetes runAsNonRoot can verify it`);
  t.not(Number(user!.split(':')[0]), 0, 'USER is not root');

  const expose = runtime.instructions.filter((i) => i.op === 'EXPOSE').flatMap((i) => i.args.split(/\s+/).map(Number));
  const k8s = loadConfig(k8sConfigFile, REPO);
  const shipped = loadConfig(repoPath('firma.toml'), REPO);
  for (const port of [k8s.sidecar.interceptor.listen.port, k8s.sidecar.interceptor.transparent_listen!.port, k8s.sidecar.admin.listen.port, shipped.sidecar.interceptor.listen.port, shipped.sidecar.admin.listen.port]) {
    t.ok(expose.includes(port), `EXPOSE ${port}`);
  }

  const entry = runtime.instructions.filter((i) => i.op === 'ENTRYPOINT').map((i) => JSON.parse(i.args) as string[])[0];
  t.ok(entry !== undefined && entry[0]!.endsWith('/tini') && entry.includes('--'), 'tini is PID 1 (signals forwarded, zombies reaped)');
  t.ok(runtime.instructions.some((i) => i.op === 'RUN' && /apt-get install[^&]*\btini\b/.test(i.args)), 'tini is installed');
  const cmd = runtime.instructions.filter((i) => i.op === 'CMD').map((i) => JSON.parse(i.args) as string[])[0];
  t.ok(cmd !== undefined && cmd.includes('/app/firma.toml'), 'default command runs the shipped firma.toml');

  const health = runtime.instructions.find((i) => i.op === 'HEALTHCHECK');
  t.ok(health && /CMD \["node"/.test(health.args), 'HEALTHCHECK runs node (no curl in slim images)');
  const healthEnv = runtime.instructions.filter((i) => i.op === 'ENV').map((i) => i.args).find((a) => a.startsWith('FIRMA_HEALTH_URL='));
  t.equal(healthEnv, `FIRMA_HEALTH_URL=http://127.0.0.1:${shipped.sidecar.admin.listen.port}/healthz`, 'healthcheck URL = the shipped admin listener /healthz');

  const init = byName.get('iptables-init');
  t.ok(init, 'an iptables-init stage for the Kubernetes init container');
  t.ok(init!.instructions.some((i) => i.op === 'COPY' && i.args.includes('deploy/k8s/firma-iptables.sh')), 'it carries deploy/k8s/firma-iptables.sh');
});
