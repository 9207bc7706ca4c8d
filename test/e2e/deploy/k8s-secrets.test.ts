/**
 * deploy/k8s/create-secrets.sh makes the Secrets the Deployment mounts.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { loadConfig } from '../../../src/config/index.js';
import { loadCa } from '../../../src/intercept/tls/ca.js';
import { CLI, REPO } from '../../helpers/sidecar.js';
import { type Obj, arr, containersOf, envOf, findKind, hasCommand, k8sConfigFile, k8sDocuments, mounts, obj, optArr, podSpec, readText, repoPath, run, securityContext, str, volumesOf } from '../../helpers/deploy.js';

t.test('deploy/k8s/create-secrets.sh makes the Secrets the Deployment mounts', { skip: hasCommand('kubectl') ? false : 'kubectl is not installed (it renders the Secret manifests)' }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'firma-secrets-'));
  const r = run('sh', [repoPath('deploy', 'k8s', 'create-secrets.sh'), 'agents'], {
    env: { FIRMA_SECRETS_OUT: join(dir, 'out'), FIRMA_SIGNING_DIR: join(dir, 'signing') },
    cwd: dir,
  });
  t.equal(r.status, 0, `create-secrets.sh: ${r.stderr}`);
  const secrets = new Map<string, Record<string, Buffer>>();
  for (const f of readdirSync(join(dir, 'out'))) {
    const s = obj(parseYaml(readFileSync(join(dir, 'out', f), 'utf8')), f);
    t.equal(obj(s.metadata, 'metadata').namespace, 'agents', `${f}: in the namespace given`);
    const data = obj(s.data, 'data');
    secrets.set(str(obj(s.metadata, 'metadata').name, 'name'), Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(str(v, k), 'base64')])));
  }
  // Every Secret key the Deployment references exists.
  const spec = podSpec(findKind(k8sDocuments(), 'Deployment'));
  const wanted: string[] = [];
  for (const v of volumesOf(spec).values()) {
    if (v.secret === undefined) continue;
    const s = obj(v.secret, 'secret');
    const name = str(s.secretName, 'secretName');
    const items = optArr(s.items, 'items').map((i) => str(obj(i, 'i').key, 'key'));
    for (const k of items.length > 0 ? items : ['capability.pub', 'token']) wanted.push(`${name}/${k}`);
  }
  for (const c of [...containersOf(spec, 'initContainers'), ...containersOf(spec, 'containers')]) {
    for (const e of envOf(c.c).values()) {
      const ref = (e.valueFrom as Obj | undefined)?.secretKeyRef as Obj | undefined;
      if (ref !== undefined) wanted.push(`${str(ref.name, 'name')}/${str(ref.key, 'key')}`);
    }
  }
  for (const w of new Set(wanted)) {
    const [name, key] = w.split('/');
    t.ok(secrets.get(name!)?.[key!]?.length, `Secret ${w} is made`);
  }
  // The CA pair loads as the sidecar would load it after firma-ca-setup (0600 key).
  const caDir = join(dir, 'ca');
  mkdirSync(caDir);
  writeFileSync(join(caDir, 'ca.crt'), secrets.get('firma-ca')!['ca.crt']!);
  writeFileSync(join(caDir, 'ca.key'), secrets.get('firma-ca')!['ca.key']!, { mode: 0o600 });
  t.doesNotThrow(() => loadCa(caDir), 'ca.crt and ca.key belong together');
  t.match(secrets.get('firma-capability')!.token!.toString(), /^v4\.public\./, 'a PASETO v4.public token');
  t.ok(existsSync(join(dir, 'signing', 'capability.key')), 'the signing key stays in FIRMA_SIGNING_DIR');
  t.notOk([...secrets.values()].some((s) => Object.keys(s).includes('capability.key')), 'no Secret carries the signing key');

  // The pod's file layout, for real: in a private mount + network namespace, /etc holds exactly what the
  // manifest mounts under /etc/firma (ConfigMaps from the generator files, Secrets from these manifests,
  // group-readable by the fsGroup as the kubelet leaves them) and /var/lib/firma the emptyDirs. Then
  // firma-ca-setup's command and the sidecar's args run as the manifest's UID, and /readyz must pass.
  const podSkip = process.getuid?.() !== 0 ? 'needs root' : !hasCommand('unshare') || !hasCommand('setpriv') || !hasCommand('ip') ? 'needs unshare, setpriv and ip' : false;
  t.test('the sidecar starts on the Deployment\'s mounts, Secrets and UID', { skip: podSkip }, async (t) => {
    const pod = podSpec(findKind(k8sDocuments(), 'Deployment'));
    const vols = volumesOf(pod);
    const inits = containersOf(pod, 'initContainers');
    const firma = inits.find((c) => c.name === 'firma')!.c;
    const caSetup = inits.find((c) => c.name === 'firma-ca-setup')!.c;
    const uid = Number(securityContext(firma).runAsUser);
    const fsGroup = Number(obj(pod.securityContext, 'pod securityContext').fsGroup);
    const kustomization = obj(parseYaml(readText('deploy', 'k8s', 'kustomization.yaml')), 'kustomization');
    const generated = new Map(arr(kustomization.configMapGenerator, 'g').map((g) => [str(obj(g, 'g').name, 'name'), arr(obj(g, 'g').files, 'files').map((f) => str(f, 'f'))] as const));
    const etc = join(dir, 'etc');
    const emptyDirs: string[] = [];
    for (const m of [...mounts(caSetup), ...mounts(firma)]) {
      const v = vols.get(m.name)!;
      if (v.emptyDir !== undefined) {
        t.ok(m.mountPath.startsWith('/var/lib/firma/'), `emptyDir ${m.mountPath} under /var/lib/firma`);
        emptyDirs.push(m.mountPath);
        continue;
      }
      t.ok(m.mountPath.startsWith('/etc/firma/'), `${m.mountPath} under /etc/firma`);
      const target = join(etc, m.mountPath.slice('/etc/'.length));
      mkdirSync(target, { recursive: true });
      if (v.configMap !== undefined) {
        for (const f of generated.get(str(obj(v.configMap, 'cm').name, 'name'))!) writeFileSync(join(target, posix.basename(f)), readText('deploy', 'k8s', f));
      } else {
        const sec = obj(v.secret, 'secret');
        const data = secrets.get(str(sec.secretName, 'secretName'))!;
        const items = optArr(sec.items, 'items').map((i) => str(obj(i, 'i').key, 'key'));
        for (const k of items.length > 0 ? items : Object.keys(data)) {
          const f = join(target, k);
          writeFileSync(f, data[k]!);
          run('chown', [`0:${fsGroup}`, f]);
          run('chmod', ['0440', f]); // defaultMode | the kubelet's fsGroup read bits
        }
      }
    }
    const args = arr(firma.args, 'args').map((a) => str(a, 'arg'));
    const config = loadConfig(k8sConfigFile, REPO);
    const script = `set -eu
unset NODE_OPTIONS NODE_EXTRA_CA_CERTS
ip link set lo up
mount --make-rprivate /
mount -t tmpfs -o mode=0755 tmpfs /var/lib
for d in $EMPTY_DIRS; do mkdir -p "$d"; chown "$FIRMA_UID:$FS_GROUP" "$d"; chmod 2770 "$d"; done
mount --bind "$POD_ETC" /etc
setpriv --reuid="$FIRMA_UID" --regid="$FIRMA_UID" --groups="$FS_GROUP" /bin/sh -c "$CA_SETUP"
echo "KEYMODE $(stat -c '%a %u' /var/lib/firma/certs/ca.key)"
setpriv --reuid="$FIRMA_UID" --regid="$FIRMA_UID" --groups="$FS_GROUP" "$NODE" "$CLI" $FIRMA_ARGS >"$LOG" 2>&1 &
pid=$!
i=0
until "$NODE" -e "fetch('http://127.0.0.1:$ADMIN_PORT/readyz').then(r=>process.exit(r.status===200?0:1),()=>process.exit(1))"; do
  i=$((i+1)); if [ "$i" -ge 150 ] || ! kill -0 "$pid" 2>/dev/null; then echo NOTREADY; kill "$pid" 2>/dev/null || true; exit 1; fi; sleep 0.2
done
echo READY
"$NODE" -e "fetch('http://127.0.0.1:$ADMIN_PORT/healthz').then(r=>console.log('HEALTHZ '+r.status))"
"$NODE" -e "require('http').request({host:'127.0.0.1',port:$PROXY_PORT,path:'http://unmapped.example/x',headers:{host:'unmapped.example'}},r=>{let b='';r.on('data',c=>b+=c);r.on('end',()=>console.log('PROXY '+r.statusCode+' '+JSON.parse(b).reason))}).end()"
kill -TERM "$pid"
set +e; wait "$pid"; echo "EXIT $?"
`;
    const log = join(dir, 'sidecar.log');
    const r = spawnSync('unshare', ['-m', '-n', 'sh', '-c', script], {
      encoding: 'utf8',
      timeout: 90_000,
      // The script unsets this runner's Node settings: tap's --import hooks (added to every child) would
      // write into .tap as the sidecar UID, and NODE_EXTRA_CA_CERTS names a file under the hidden /etc.
      env: {
        ...process.env,
        EMPTY_DIRS: emptyDirs.join(' '),
        FIRMA_UID: String(uid),
        FS_GROUP: String(fsGroup),
        POD_ETC: etc,
        CA_SETUP: arr(caSetup.command, 'command').map((c) => str(c, 'c')).at(-1)!,
        NODE: process.execPath,
        CLI,
        FIRMA_ARGS: args.join(' '),
        LOG: log,
        ADMIN_PORT: String(config.sidecar.admin.listen.port),
        PROXY_PORT: String(config.sidecar.interceptor.listen.port),
      },
    });
    const sidecarLog = existsSync(log) ? readFileSync(log, 'utf8') : '';
    t.equal(r.status, 0, `pod simulation: ${r.stdout}${r.stderr}\n${sidecarLog}`);
    t.match(r.stdout, `KEYMODE 600 ${uid}`, 'firma-ca-setup leaves ca.key 0600, owned by the sidecar UID');
    t.match(r.stdout, 'READY', '/readyz 200 with the pod layout');
    t.match(r.stdout, 'HEALTHZ 200');
    t.match(r.stdout, 'PROXY 403 unclassified', 'the explicit proxy decides (an unmapped host is denied)');
    t.match(r.stdout, 'EXIT 0', 'SIGTERM: drained and exited 0');
  });
});
