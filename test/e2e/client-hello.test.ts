import t from 'tap';
import crypto from 'node:crypto';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { parseClientHello, readClientHello, type ClientHelloResult } from '../../src/intercept/tls/client-hello.js';
import { initCa } from '../../src/intercept/tls/ca.js';
import { LeafCertificates } from '../../src/intercept/tls/leaf-certs.js';
import { parseHost } from '../../src/core/host.js';

/** Starts a plain TCP server, points tls.connect at it and returns the bytes of the ClientHello. */
async function captureClientHello(opts: tls.ConnectionOptions): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const server = net.createServer();
  const got = new Promise<Buffer>((resolve) => {
    server.on('connection', (s) => {
      s.on('data', (b: Buffer) => {
        chunks.push(b);
        const all = Buffer.concat(chunks);
        if (parseClientHello(all).state !== 'incomplete') {
          resolve(all);
          s.destroy();
        }
      });
      s.on('error', () => {});
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  const client = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...opts });
  client.on('error', () => {});
  try {
    return await got;
  } finally {
    client.destroy();
    server.close();
  }
}

/** Re-frames the handshake bytes of a single-record ClientHello into records of `size` bytes. */
function refragment(hello: Buffer, size: number): Buffer {
  const hs = hello.subarray(5, 5 + hello.readUInt16BE(3));
  const out: Buffer[] = [];
  for (let i = 0; i < hs.length; i += size) {
    const frag = hs.subarray(i, i + size);
    const hdr = Buffer.from([0x16, 0x03, 0x01, 0, 0]);
    hdr.writeUInt16BE(frag.length, 3);
    out.push(hdr, frag);
  }
  return Buffer.concat(out);
}

function ok(r: ClientHelloResult): Extract<ClientHelloResult, { state: 'ok' }> {
  if (r.state !== 'ok') throw new Error(`expected ok, got ${JSON.stringify(r)}`);
  return r;
}

let withSni: Buffer;
let withoutSni: Buffer;
t.before(async () => {
  withSni = await captureClientHello({ servername: 'api.example.com', ALPNProtocols: ['h2', 'http/1.1'] });
  withoutSni = await captureClientHello({ servername: '' });
});

t.test('real ClientHellos from tls.connect', async (t) => {
  const a = ok(parseClientHello(withSni));
  t.equal(a.serverName, 'api.example.com');
  t.same(a.alpn, ['h2', 'http/1.1']);
  t.equal(a.bytesConsumed, withSni.length);

  const b = ok(parseClientHello(withoutSni));
  t.equal(b.serverName, null, 'no SNI');
  t.same(b.alpn, []);
  t.equal(b.bytesConsumed, withoutSni.length);

  const tls12 = ok(parseClientHello(await captureClientHello({ servername: 'x.test', maxVersion: 'TLSv1.2' })));
  t.equal(tls12.serverName, 'x.test');
});

t.test('every strict prefix is incomplete', async (t) => {
  let wrong = 0;
  for (let n = 0; n < withSni.length; n++) {
    if (parseClientHello(withSni.subarray(0, n)).state !== 'incomplete') wrong++;
  }
  t.equal(wrong, 0);
});

t.test('a ClientHello split over several TLS records', async (t) => {
  for (const size of [1, 2, 3, 4, 5, 7, 64, 100, 511]) {
    const framed = refragment(withSni, size);
    const r = ok(parseClientHello(framed));
    t.equal(r.serverName, 'api.example.com', `records of ${size} bytes`);
    t.same(r.alpn, ['h2', 'http/1.1']);
    t.equal(r.bytesConsumed, framed.length);
    let wrong = 0;
    for (let n = 0; n < framed.length; n += Math.max(1, Math.floor(framed.length / 300))) {
      if (parseClientHello(framed.subarray(0, n)).state !== 'incomplete') wrong++;
    }
    t.equal(wrong, 0, 'prefixes incomplete');
  }
});

t.test('bytes after the ClientHello are not consumed', async (t) => {
  const extra = Buffer.concat([withSni, Buffer.from([0x17, 0x03, 0x03, 0x00, 0x02, 0xaa, 0xbb])]);
  t.equal(ok(parseClientHello(extra)).bytesConsumed, withSni.length);
});

t.test('not TLS', async (t) => {
  for (const s of ['GET / HTTP/1.1\r\nHost: a\r\n\r\n', 'CONNECT a:443 HTTP/1.1\r\n', 'P', 'SSH-2.0-OpenSSH_9.6\r\n']) {
    t.same(parseClientHello(Buffer.from(s)), { state: 'not_tls' }, JSON.stringify(s));
  }
  t.same(parseClientHello(Buffer.from([0x80, 0x2e, 0x01, 0x03, 0x01])), { state: 'not_tls' }, 'SSLv2 hello');
  t.same(parseClientHello(Buffer.alloc(0)), { state: 'incomplete' });
  t.same(parseClientHello(Buffer.from([0x16])), { state: 'incomplete' });
});

t.test('invalid inputs', async (t) => {
  const mut = (f: (b: Buffer) => void): Buffer => {
    const b = Buffer.from(withSni);
    f(b);
    return b;
  };
  const hsLen = withSni.readUInt16BE(3);
  const cases: Array<[string, Buffer]> = [
    ['record version 2.0', mut((b) => (b[1] = 0x02))],
    ['record version 3.0', mut((b) => (b[2] = 0x00))],
    ['record version 3.5', mut((b) => (b[2] = 0x05))],
    ['zero-length record', Buffer.from([0x16, 0x03, 0x01, 0x00, 0x00])],
    ['record too long', Buffer.from([0x16, 0x03, 0x01, 0x40, 0x01])],
    ['ServerHello', mut((b) => (b[5] = 0x02))],
    ['handshake length too large', mut((b) => b.writeUIntBE(0x010000, 6, 3))],
    ['handshake length too small', mut((b) => b.writeUIntBE(10, 6, 3))],
    ['trailing handshake data in record', mut((b) => b.writeUIntBE(hsLen - 4 - 1, 6, 3))],
    ['app data in the middle', Buffer.concat([refragment(withSni, 100).subarray(0, 105), Buffer.from([0x17, 3, 3, 0, 1, 0])])],
    ['session id too long', mut((b) => (b[5 + 4 + 34] = 33))],
    ['ALPN + SNI duplicated', dupExtension()],
  ];
  for (const [name, buf] of cases) {
    const r = parseClientHello(buf);
    t.equal(r.state, 'invalid', `${name}: ${r.state === 'invalid' ? r.reason : JSON.stringify(r)}`);
  }
  // A handshake record followed by garbage that claims to be a continuation is bounded, not buffered forever.
  const r = parseClientHello(Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x40, 0x00]), Buffer.alloc(5, 0x16)]));
  t.equal(r.state, 'invalid');
});

/** The real hello with its server_name extension appended a second time. */
function dupExtension(): Buffer {
  const hs = withSni.subarray(5);
  // Locate extensions: header(4) version(2) random(32) sid
  let p = 4 + 2 + 32;
  p += 1 + hs[p]!;
  p += 2 + hs.readUInt16BE(p);
  p += 1 + hs[p]!;
  const extStart = p + 2;
  const name = Buffer.from('dup.example.com');
  const sni = Buffer.alloc(9 + name.length);
  sni.writeUInt16BE(0, 0);
  sni.writeUInt16BE(5 + name.length, 2);
  sni.writeUInt16BE(3 + name.length, 4);
  sni[6] = 0;
  sni.writeUInt16BE(name.length, 7);
  name.copy(sni, 9);
  const exts = Buffer.concat([hs.subarray(extStart), sni]);
  const newHs = Buffer.concat([hs.subarray(0, extStart - 2), Buffer.from([exts.length >> 8, exts.length & 0xff]), exts]);
  newHs.writeUIntBE(newHs.length - 4, 1, 3);
  const rec = Buffer.from([0x16, 0x03, 0x01, newHs.length >> 8, newHs.length & 0xff]);
  return Buffer.concat([rec, newHs]);
}

t.test('fuzz: random mutations never throw', async (t) => {
  const seeds = [withSni, withoutSni, refragment(withSni, 50)];
  const states = new Map<string, number>();
  let threw = 0;
  let badOk = 0;
  for (let i = 0; i < 6000; i++) {
    const seed = seeds[i % seeds.length]!;
    let b = Buffer.from(seed);
    const kind = crypto.randomInt(5);
    const flips = 1 + crypto.randomInt(6);
    if (kind === 0) {
      for (let k = 0; k < flips; k++) b[crypto.randomInt(b.length)] = crypto.randomInt(256);
    } else if (kind === 1) {
      b = b.subarray(0, crypto.randomInt(b.length));
    } else if (kind === 2) {
      // corrupt a 16-bit length-looking field with an extreme value
      const at = crypto.randomInt(b.length - 1);
      b.writeUInt16BE([0, 1, 0xffff, 0x8000, b.length][crypto.randomInt(5)]! & 0xffff, at);
    } else if (kind === 3) {
      b = Buffer.concat([b.subarray(0, crypto.randomInt(b.length)), crypto.randomBytes(crypto.randomInt(64))]);
    } else {
      b = Buffer.concat([b.subarray(0, 5), crypto.randomBytes(crypto.randomInt(600))]);
    }
    try {
      const r = parseClientHello(b);
      states.set(r.state, (states.get(r.state) ?? 0) + 1);
      if (r.state === 'ok') {
        if (r.bytesConsumed > b.length) badOk++;
        if (r.serverName !== null && !/^[\x21-\x7e]+$/.test(r.serverName)) badOk++;
      }
    } catch {
      threw++;
    }
  }
  t.equal(threw, 0, 'never throws');
  t.equal(badOk, 0, 'ok results are well-formed');
  t.comment(`fuzz outcomes: ${JSON.stringify(Object.fromEntries(states))}`);
  t.ok((states.get('invalid') ?? 0) > 100, 'many invalid');
  // Pure random input, too.
  for (let i = 0; i < 2000; i++) {
    const b = crypto.randomBytes(crypto.randomInt(300));
    if (i % 2 === 0 && b.length > 0) b[0] = 0x16;
    if (i % 4 === 0 && b.length > 2) (b[1] = 3), (b[2] = 1);
    parseClientHello(b);
  }
  t.pass('random buffers parsed without throwing');
});

/** A connected socket pair over loopback: [client side, server side]. */
async function socketPair(): Promise<[net.Socket, net.Socket, () => void]> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const client = net.connect(port, '127.0.0.1');
  client.setNoDelay(true);
  await new Promise<void>((r) => client.once('connect', () => r()));
  const srv = await accepted;
  return [client, srv, () => server.close()];
}

const tick = (ms = 1): Promise<void> => new Promise((r) => setTimeout(r, ms));

t.test('readClientHello: byte by byte over a socket, then unshift', async (t) => {
  const [client, srv, close] = await socketPair();
  t.teardown(() => {
    client.destroy();
    srv.destroy();
    close();
  });
  let chunks = 0;
  srv.on('data', () => chunks++); // counts 'data' events seen while reading
  const listenersBefore = ['data', 'end', 'close', 'error'].map((e) => srv.listenerCount(e));
  const reading = readClientHello(srv, { timeoutMs: 10_000 });
  const trailer = Buffer.from('after-the-hello');
  void (async () => {
    for (const byte of withSni) {
      client.write(Buffer.from([byte]));
      await tick();
    }
    await tick(20);
    client.write(trailer);
  })();
  const { bytes, result } = await reading;
  t.ok(chunks > 10, `arrived in ${chunks} chunks`);
  t.same(result, { state: 'ok', serverName: 'api.example.com', alpn: ['h2', 'http/1.1'], bytesConsumed: withSni.length });
  t.same(bytes, withSni, 'hands back exactly the bytes read');
  t.same(
    ['data', 'end', 'close', 'error'].map((e) => srv.listenerCount(e)),
    listenersBefore,
    'own listeners removed',
  );
  t.ok(srv.isPaused(), 'socket left paused');
  srv.removeAllListeners('data');
  srv.unshift(bytes);
  const rest: Buffer[] = [];
  await new Promise<void>((resolve) => {
    srv.on('data', (b: Buffer) => {
      rest.push(b);
      if (Buffer.concat(rest).length >= withSni.length + trailer.length) resolve();
    });
    srv.resume();
  });
  t.same(Buffer.concat(rest), Buffer.concat([withSni, trailer]), 'nothing lost, nothing duplicated');
});

t.test('readClientHello then a real TLS handshake on the same socket', async (t) => {
  const ca = initCa(path.join(t.testdir(), 'certs')).ca;
  const leaves = new LeafCertificates(ca);
  const server = net.createServer(async (socket) => {
    const { bytes, result } = await readClientHello(socket, { timeoutMs: 5000 });
    if (result.state !== 'ok' || result.serverName === null) return socket.destroy();
    socket.unshift(bytes);
    const h = parseHost(result.serverName);
    if (h === null) return socket.destroy();
    const tlsSock = new tls.TLSSocket(socket, {
      isServer: true,
      secureContext: leaves.secureContextFor(h),
      ALPNProtocols: ['http/1.1'],
    });
    tlsSock.on('error', () => {});
    tlsSock.on('secure', () => tlsSock.end(`hello ${result.serverName} ${result.alpn.join(',')}`));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  t.teardown(() => server.close());
  const answer = await new Promise<{ authorized: boolean; body: string }>((resolve, reject) => {
    const c = tls.connect({ host: '127.0.0.1', port, servername: 'api.example.com', ca: ca.certPem, ALPNProtocols: ['http/1.1'] });
    let body = '';
    c.on('data', (b: Buffer) => (body += b.toString()));
    c.on('end', () => resolve({ authorized: c.authorized, body }));
    c.on('error', reject);
  });
  t.equal(answer.authorized, true);
  t.equal(answer.body, 'hello api.example.com http/1.1');
});

t.test('readClientHello: not TLS, timeout, close, error', async (t) => {
  {
    const [client, srv, close] = await socketPair();
    client.write('GET / HTTP/1.1\r\n\r\n');
    const { bytes, result } = await readClientHello(srv, { timeoutMs: 5000 });
    t.same(result, { state: 'not_tls' });
    t.ok(bytes.length > 0 && bytes[0] === 0x47, 'bytes handed back');
    client.destroy();
    srv.destroy();
    close();
  }
  {
    const [client, srv, close] = await socketPair();
    client.write(withSni.subarray(0, 20));
    const started = Date.now();
    const { bytes, result } = await readClientHello(srv, { timeoutMs: 100 });
    t.same(result, { state: 'invalid', reason: 'timeout' });
    t.ok(Date.now() - started >= 90);
    t.equal(bytes.length, 20);
    t.equal(srv.listenerCount('data'), 0);
    client.destroy();
    srv.destroy();
    close();
  }
  {
    const [client, srv, close] = await socketPair();
    client.end(withSni.subarray(0, 30));
    const { result } = await readClientHello(srv, { timeoutMs: 5000 });
    t.equal(result.state, 'invalid', 'peer closed early');
    srv.destroy();
    close();
  }
  {
    const [client, srv, close] = await socketPair();
    const reading = readClientHello(srv, { timeoutMs: 5000 });
    srv.destroy(new Error('boom'));
    const { result } = await reading;
    t.equal(result.state, 'invalid', 'socket error');
    client.destroy();
    close();
  }
  {
    const [client, srv, close] = await socketPair();
    srv.destroy();
    const { result } = await readClientHello(srv, { timeoutMs: 5000 });
    t.equal(result.state, 'invalid', 'already destroyed');
    client.destroy();
    close();
  }
  {
    const [client, srv, close] = await socketPair();
    // A hello split into 1-byte records does not complete within maxBytes.
    client.write(refragment(withSni, 1).subarray(0, 1500));
    const { result } = await readClientHello(srv, { timeoutMs: 5000, maxBytes: 1000 });
    t.equal(result.state, 'invalid', 'maxBytes bound');
    client.destroy();
    srv.destroy();
    close();
  }
});
