/**
 * The Kubernetes manifests under deploy/k8s agree with config/firma.toml, the Dockerfile and each other.
 */
import t from 'tap';
import { existsSync, readdirSync } from 'node:fs';
import { join, posix } from 'node:path';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { loadConfig } from '../../../src/config/index.js';
import { REPO } from '../../helpers/sidecar.js';
import { type Obj, POD_CONFIG_DIR, arr, caExportEnvNames, containersOf, envOf, envValue, findKind, hasCommand, k8sConfigFile, k8sDocuments, mountFor, mounts, obj, optArr, parseDockerfile, podPath, podSpec, probePort, readText, repoPath, run, securityContext, str, volumesOf } from '../../helpers/deploy.js';

t.test('deploy/k8s: manifests agree with config/firma.toml, the Dockerfile and each other', async (t) => {
  if (hasCommand('kubectl')) {
    const r = run('kubectl', ['kustomize', repoPath('deploy', 'k8s')]);
    t.equal(r.status, 0, `kubectl kustomize: ${r.stderr}`);
    const kinds = parseAllDocuments(r.stdout).map((d) => obj(d.toJS(), 'doc').kind);
    t.same([...kinds].sort(), ['ConfigMap', 'ConfigMap', 'ConfigMap', 'Deployment', 'NetworkPolicy', 'ServiceAccount'], 'kustomize builds every object');
  } else t.comment('kubectl not installed: kustomize build not checked');

  const docs = k8sDocuments();
  const deployment = findKind(docs, 'Deployment');
  const spec = podSpec(deployment);
  const inits = containersOf(spec, 'initContainers');
  const mains = containersOf(spec, 'containers');
  const all = [...inits, ...mains];
  const get = (name: string): Obj => all.find((c) => c.name === name)!.c;
  const firma = get('firma');
  const iptables = get('firma-iptables');
  const caSetup = get('firma-ca-setup');
  const agent = get('agent');
  const config = loadConfig(k8sConfigFile, REPO);

  // Order and the native sidecar.
  t.same(inits.map((c) => c.name), ['firma-iptables', 'firma-ca-setup', 'firma'], 'init order: rules, CA copy, then the sidecar');
  t.equal(firma.restartPolicy, 'Always', 'the sidecar is a native sidecar (init container, restartPolicy Always)');
  t.same(mains.map((c) => c.name), ['agent']);
  t.equal(obj(findKind(docs, 'ServiceAccount').metadata, 'md').name, spec.serviceAccountName, 'the pod uses the ServiceAccount');
  t.equal(spec.automountServiceAccountToken, false, 'no API token mounted');

  // UIDs: the redirect exempts exactly the UID the sidecar runs as, which is the image's USER.
  const sidecarUid = Number(securityContext(firma).runAsUser);
  t.equal(Number(envValue(iptables, 'FIRMA_PROXY_UID')), sidecarUid, 'FIRMA_PROXY_UID = the firma container runAsUser');
  const dockerUser = parseDockerfile(readText('Dockerfile')).at(-1)!.instructions.filter((i) => i.op === 'USER').at(-1)!.args;
  t.equal(Number(dockerUser.split(':')[0]), sidecarUid, 'and = the image USER');
  t.equal(Number(securityContext(caSetup).runAsUser), sidecarUid, 'firma-ca-setup writes the CA copy as that UID');
  const agentUid = Number(securityContext(agent).runAsUser);
  t.not(agentUid, sidecarUid, 'the agent does not run as the exempt UID');
  t.not(agentUid, 0, 'the agent is not root');

  // The redirect goes to the transparent listener; 80 and 443 are redirected.
  const transparent = config.sidecar.interceptor.transparent_listen;
  t.ok(transparent, 'transparent_listen is set');
  t.equal(Number(envValue(iptables, 'FIRMA_REDIRECT_TO_PORT')), transparent!.port, 'FIRMA_REDIRECT_TO_PORT = transparent_listen port');
  t.same(envValue(iptables, 'FIRMA_REDIRECT_PORTS').split(',').map(Number).sort(), [443, 80], 'redirects 80 and 443');
  const named = (c: Obj, n: string): number => Number(optArr(c.ports, 'ports').map((p) => obj(p, 'port')).find((p) => p.name === n)?.containerPort);
  t.equal(named(firma, 'transparent'), transparent!.port, 'container port "transparent" = transparent_listen');
  t.equal(named(firma, 'proxy'), config.sidecar.interceptor.listen.port, 'container port "proxy" = listen');
  t.equal(named(firma, 'admin'), config.sidecar.admin.listen.port, 'container port "admin" = admin listen');
  t.equal(config.sidecar.interceptor.listen.host, '127.0.0.1', 'explicit proxy on loopback (shared inside the pod only)');
  t.equal(config.sidecar.admin.listen.host, '0.0.0.0', 'admin on the pod IP: kubelet probes reach it');

  // Capabilities: NET_ADMIN/NET_RAW in the iptables init container only; every container drops ALL.
  for (const { name, c } of all) {
    const caps = obj(securityContext(c).capabilities, `${name} capabilities`);
    t.same(caps.drop, ['ALL'], `${name}: drops ALL capabilities`);
    t.same(caps.add ?? [], name === 'firma-iptables' ? ['NET_ADMIN', 'NET_RAW'] : [], `${name}: added capabilities`);
    t.equal(securityContext(c).allowPrivilegeEscalation, false, `${name}: no privilege escalation`);
    t.equal(securityContext(c).readOnlyRootFilesystem, true, `${name}: read-only root filesystem`);
    if (name !== 'firma-iptables') t.equal(securityContext(c).runAsNonRoot, true, `${name}: runAsNonRoot`);
  }
  t.equal(spec.shareProcessNamespace, false, 'process namespaces not shared');

  // Probes on the admin listener.
  t.same(probePort(firma, 'readinessProbe'), { path: '/readyz', port: config.sidecar.admin.listen.port }, 'readiness: /readyz on admin');
  t.same(probePort(firma, 'startupProbe'), { path: '/readyz', port: config.sidecar.admin.listen.port }, 'startup: /readyz on admin (the agent starts after it)');
  t.same(probePort(firma, 'livenessProbe'), { path: '/healthz', port: config.sidecar.admin.listen.port }, 'liveness: /healthz on admin');

  // Files: the config the sidecar runs is this firma.toml, and every path in it is mounted right.
  const args = arr(firma.args, 'args').map((a) => str(a, 'arg'));
  const configPath = args[args.indexOf('--config') + 1]!;
  t.equal(configPath, `${POD_CONFIG_DIR}/firma.toml`);
  const vols = volumesOf(spec);
  const volumeOf = (c: Obj, path: string): { volume: Obj; readOnly: boolean } => {
    const m = mountFor(c, path);
    if (m === undefined) throw new Error(`${path} is not on a mounted volume`);
    return { volume: vols.get(m.name)!, readOnly: m.readOnly };
  };
  const kustomization = obj(parseYaml(readText('deploy', 'k8s', 'kustomization.yaml')), 'kustomization');
  const generated = new Map(
    arr(kustomization.configMapGenerator, 'configMapGenerator').map((g) => {
      const o = obj(g, 'generator');
      return [str(o.name, 'name'), arr(o.files, 'files').map((f) => str(f, 'file'))] as const;
    }),
  );
  for (const files of generated.values()) for (const f of files) t.ok(existsSync(repoPath('deploy', 'k8s', f)), `ConfigMap file ${f} exists`);
  /** The ConfigMap behind a pod path, and that it carries the local file(s). */
  const configMapFor = (path: string, localFiles: string[]): void => {
    const { volume, readOnly } = volumeOf(firma, path);
    const name = str(obj(volume.configMap, `${path} volume configMap`).name, 'configMap name');
    t.ok(readOnly, `${path}: mounted read-only`);
    const files = generated.get(name) ?? [];
    for (const lf of localFiles) t.ok(files.map((f) => repoPath('deploy', 'k8s', f)).includes(lf), `ConfigMap ${name} carries ${lf}`);
  };
  configMapFor(configPath, [k8sConfigFile]);
  const rulesFiles = config.sidecar.mapping.rules_paths.flatMap((p) => {
    const dir = posix.dirname(p);
    return readdirSync(dir).filter((f) => f.endsWith('.toml')).map((f) => join(dir, f));
  });
  t.ok(rulesFiles.length > 0, 'mapping files exist beside the config');
  for (const p of config.sidecar.mapping.rules_paths) configMapFor(podPath(config, posix.dirname(p)) + '/x.toml', rulesFiles.filter((f) => f.startsWith(posix.dirname(p))));
  const policyFiles = readdirSync(config.sidecar.policy.dir).filter((f) => f.endsWith('.cedar')).map((f) => join(config.sidecar.policy.dir, f));
  configMapFor(podPath(config, config.sidecar.policy.dir) + '/x.cedar', policyFiles);
  // The copies kustomize needs (it reads nothing above deploy/k8s) stay the repo's files.
  for (const f of [...generated.get('firma-mappings')!, ...generated.get('firma-policies')!]) {
    t.equal(readText('deploy', 'k8s', f), readText(f), `deploy/k8s/${f} is the same as ${f}: update both`);
  }

  // Writable paths are emptyDirs; secrets are Secret volumes.
  for (const path of [config.sidecar.interceptor.mitm.ca_dir, config.audit.path, config.audit.key_dir, config.sidecar.capabilities.revocation_file]) {
    const { volume, readOnly } = volumeOf(firma, podPath(config, path));
    t.ok(volume.emptyDir !== undefined && !readOnly, `${path}: on a writable emptyDir`);
  }
  const capability = new Set<string>();
  for (const path of [config.sidecar.capabilities.public_key_file, config.sidecar.capabilities.token_file]) {
    const { volume } = volumeOf(firma, podPath(config, path));
    const secret = obj(volume.secret, `${path} secret`);
    capability.add(`${str(secret.secretName, 'secretName')}/${posix.basename(path)}`);
  }
  t.same([...capability].sort(), ['firma-capability/capability.pub', 'firma-capability/token'], 'capability key and token from the Secret');

  // The CA: firma-ca-setup copies ca.crt + ca.key from the Secret into the sidecar's ca_dir emptyDir.
  const caDir = podPath(config, config.sidecar.interceptor.mitm.ca_dir);
  const setupScript = arr(caSetup.command, 'command').map((c) => str(c, 'command')).join(' ');
  const caSecretMount = mounts(caSetup).find((m) => vols.get(m.name)?.secret !== undefined)!;
  for (const f of ['ca.crt', 'ca.key']) t.match(setupScript, `${caSecretMount.mountPath}/${f} ${caDir}/${f}`, `firma-ca-setup installs ${f} into ca_dir`);
  t.match(setupScript, `-m 0600 ${caSecretMount.mountPath}/ca.key`, 'ca.key ends up 0600 (the sidecar refuses group-readable keys)');
  t.equal(mountFor(caSetup, caDir)?.name, mountFor(firma, caDir)?.name, 'firma-ca-setup and the sidecar share the ca_dir volume');
  const secretItems = (volName: string): string[] =>
    arr(obj(vols.get(volName)!.secret, 'secret').items, 'items').map((i) => str(obj(i, 'item').key, 'key')).sort();
  t.same(secretItems(caSecretMount.name), ['ca.crt', 'ca.key']);

  // The agent: ca.crt only, the trust variables of `firma ca export --env`, proxy env, no admin token.
  const names = caExportEnvNames();
  const agentEnvNames = [...envOf(agent).keys()];
  const trust = new Set(names.map((n) => envValue(agent, n)));
  t.equal(trust.size, 1, `agent: ${names.join(', ')} set to one file`);
  const agentCa = [...trust][0]!;
  const agentCaMount = mountFor(agent, agentCa)!;
  t.same(secretItems(agentCaMount.name), ['ca.crt'], 'the agent mounts ca.crt only');
  t.equal(str(obj(vols.get(agentCaMount.name)!.secret, 's').secretName, 'secretName'), str(obj(vols.get(caSecretMount.name)!.secret, 's').secretName, 'secretName'), 'from the same Secret');
  t.equal(posix.basename(agentCa), 'ca.crt');
  for (const m of mounts(agent)) {
    const secret = vols.get(m.name)?.secret;
    if (secret !== undefined) t.notOk(secretItems(m.name).includes('ca.key'), `agent volume ${m.name} has no ca.key`);
    t.not(m.name, mountFor(firma, config.audit.path)!.name, 'agent does not mount the audit log');
  }
  for (const n of ['HTTPS_PROXY', 'HTTP_PROXY']) {
    const u = new URL(envValue(agent, n));
    t.equal(`${u.hostname}:${Number(u.port)}`, `${config.sidecar.interceptor.listen.host}:${config.sidecar.interceptor.listen.port}`, `${n} = the explicit proxy listener`);
  }
  t.match(envValue(agent, 'NO_PROXY'), /127\.0\.0\.1/);
  t.notOk(agentEnvNames.includes(config.sidecar.admin.token_env), 'agent has no admin token');
  const tokenRef = obj(obj(envOf(firma).get(config.sidecar.admin.token_env)?.valueFrom, 'valueFrom').secretKeyRef, 'secretKeyRef');
  t.same(tokenRef, { name: 'firma-admin', key: 'token' }, `sidecar ${config.sidecar.admin.token_env} from Secret firma-admin`);

  // NetworkPolicy: selects this pod; egress DNS + TCP 443 only, no private ranges; ingress admin only.
  const np = obj(findKind(docs, 'NetworkPolicy').spec, 'np spec');
  t.same(obj(np.podSelector, 'podSelector').matchLabels, obj(obj(obj(obj(deployment.spec, 's').template, 't').metadata, 'm').labels, 'labels'), 'NetworkPolicy selects the agent pod');
  t.same(np.policyTypes, ['Egress', 'Ingress']);
  const egressPorts = arr(np.egress, 'egress').flatMap((e) => arr(obj(e, 'egress rule').ports, 'ports').map((p) => `${String(obj(p, 'p').protocol)}/${String(obj(p, 'p').port)}`));
  t.same(egressPorts.sort(), ['TCP/443', 'TCP/53', 'UDP/53'], 'egress: DNS and TCP 443, nothing else');
  const blocks = arr(np.egress, 'egress').flatMap((e) => arr(obj(e, 'rule').to, 'to').map((x) => obj(x, 'peer').ipBlock).filter((b) => b !== undefined));
  for (const b of blocks) t.ok(arr(obj(b, 'ipBlock').except, 'except').includes('169.254.0.0/16'), 'metadata range excluded');
  const ingressPorts = arr(np.ingress, 'ingress').flatMap((e) => arr(obj(e, 'rule').ports, 'ports').map((p) => Number(obj(p, 'p').port)));
  t.same(ingressPorts, [config.sidecar.admin.listen.port], 'ingress: the admin port only');
});
