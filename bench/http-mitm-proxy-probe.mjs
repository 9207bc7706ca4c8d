// Measures the http-mitm-proxy 1.1.0 behaviours that decided against using it for interception
// (README "Dependencies"), beside the sidecar's own leaf minting. Run: node bench/http-mitm-proxy-probe.mjs
import { mkdtempSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import forge from 'node-forge';
import CA from 'http-mitm-proxy/dist/lib/ca.js';
import { initCa } from '../dist/intercept/tls/ca.js';
import { LeafCertificates } from '../dist/intercept/tls/leaf-certs.js';
import { parseHost } from '../dist/core/host.js';

const N = Number(process.argv[2] ?? 20);
const dir = mkdtempSync(join(tmpdir(), 'hmp-probe-'));
const ca = await new Promise((resolve, reject) =>
  CA.default.create(dir, (err, c) => (err ? reject(err) : resolve(c))),
);

// 1. Per-host leaf: fresh RSA-2048 key generated synchronously (blocks the event loop), then written to disk.
const times = [];
let negative = 0;
for (let i = 0; i < N; i++) {
  const t0 = performance.now();
  const pem = await new Promise((resolve) =>
    ca.generateServerCertificateKeys(`host${i}.example.test`, (certPem) => resolve(certPem)),
  );
  times.push(performance.now() - t0);
  // Read the DER INTEGER itself: Node's X509Certificate.serialNumber hides the sign.
  const tbs = forge.asn1.fromDer(forge.pem.decode(pem)[0].body).value[0];
  if (tbs.value[1].value.charCodeAt(0) & 0x80) negative++;
}
// 2. A CONNECT host is used as a file name: `../x` escapes the keys folder.
await new Promise((resolve) => ca.generateServerCertificateKeys('../escaped', () => resolve()));
const escaped = readdirSync(dir).filter((f) => f.startsWith('escaped'));
const keyMode = (statSync(join(dir, 'keys', 'host0.example.test.key')).mode & 0o777).toString(8);

// The sidecar's minting: one reused ECDSA key, TBS built with node-forge, signed with native crypto.
const ours = new LeafCertificates(initCa(mkdtempSync(join(tmpdir(), 'firma-probe-'))).ca);
const oursTimes = [];
for (let i = 0; i < N * 10; i++) {
  const t0 = performance.now();
  ours.secureContextFor(parseHost(`host${i}.example.test`));
  oursTimes.push(performance.now() - t0);
}
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
console.log(JSON.stringify({
  http_mitm_proxy_mint_ms_median: Number(median(times).toFixed(2)),
  http_mitm_proxy_negative_serials: `${negative}/${N}`,
  http_mitm_proxy_path_traversal_files_outside_keys_dir: escaped,
  http_mitm_proxy_leaf_key_mode: keyMode,
  firma_mint_ms_median: Number(median(oursTimes).toFixed(3)),
}, null, 2));
