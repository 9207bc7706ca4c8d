import t from 'tap';
import { ProxyAgent, WebSocket } from 'undici';
import { useUpstream } from '../helpers/upstream.js';
import { useTestSidecar } from '../helpers/sidecar.js';
import { tlsThroughProxy, exchange } from '../helpers/tunnel.js';

const up = useUpstream(t, { tls: true });
const sc = useTestSidecar(t);

/** Open a WebSocket through the proxy with undici's client and exchange messages. */
async function echoThrough(url: string, messages: string[]): Promise<string[]> {
  const dispatcher = new ProxyAgent({ uri: sc.proxyUrl, requestTls: { ca: sc.caPem } });
  const ws = new WebSocket(url, { dispatcher });
  const received: string[] = [];
  await new Promise<void>((resolve, reject) => {
    ws.addEventListener('open', () => {
      for (const m of messages) ws.send(m);
    });
    ws.addEventListener('message', (ev) => {
      received.push(String(ev.data));
      if (received.length === messages.length) ws.close();
    });
    ws.addEventListener('close', () => resolve());
    ws.addEventListener('error', (ev) => reject(new Error(`websocket error: ${String((ev as unknown as { message?: string }).message)}`)));
  });
  await dispatcher.close();
  return received;
}

t.test('WebSocket echo through TLS MITM (wss://)', async (t) => {
  const messages = ['hello', 'x'.repeat(3000), 'bye'];
  const got = await echoThrough(`wss://127.0.0.1:${up.port}/ws`, messages);
  t.same(got, messages, 'every message echoed in order');
  t.ok(sc.logs.some((l) => l.includes('"path":"/ws"') && l.includes('"status":101')), 'the upgrade is logged with status 101');
});

t.test('an upstream that refuses the upgrade: its answer is relayed, then the connection closes', async (t) => {
  const s = await tlsThroughProxy(sc.proxyPort, up.hostPort, { ca: sc.caPem });
  const res = await exchange(
    s,
    `GET /not-a-socket HTTP/1.1\r\nHost: ${up.hostPort}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
  );
  t.match(res, /^HTTP\/1\.1 404 /);
});

t.test('a WebSocket handshake whose Host differs from the CONNECT target → 400', async (t) => {
  const s = await tlsThroughProxy(sc.proxyPort, up.hostPort, { ca: sc.caPem });
  const res = await exchange(
    s,
    'GET /ws HTTP/1.1\r\nHost: evil.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
  );
  t.match(res, /^HTTP\/1\.1 400 /);
  t.match(res, /host_mismatch/);
});
