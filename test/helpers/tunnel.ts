import net from 'node:net';
import tls from 'node:tls';

/** Open a CONNECT tunnel through the proxy by hand; resolves with the socket and the proxy's answer head. */
export function openConnect(proxyPort: number, authority: string, headers: Record<string, string> = {}): Promise<{ socket: net.Socket; head: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(proxyPort, '127.0.0.1');
    let extra = '';
    for (const [k, v] of Object.entries(headers)) extra += `${k}: ${v}\r\n`;
    socket.once('connect', () => socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${extra}\r\n`));
    let buf = Buffer.alloc(0);
    const onData = (c: Buffer): void => {
      buf = Buffer.concat([buf, c]);
      const end = buf.indexOf('\r\n\r\n');
      if (end === -1) return;
      socket.off('data', onData);
      const head = buf.subarray(0, end).toString('latin1');
      const rest = buf.subarray(end + 4);
      if (rest.length > 0) socket.unshift(rest);
      resolve({ socket, head });
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.once('end', () => resolve({ socket, head: buf.toString('latin1') }));
  });
}

/** CONNECT then a TLS handshake inside the tunnel. */
export async function tlsThroughProxy(
  proxyPort: number,
  authority: string,
  opts: { ca: string; servername?: string; rejectUnauthorized?: boolean },
): Promise<tls.TLSSocket> {
  const { socket, head } = await openConnect(proxyPort, authority);
  if (!head.startsWith('HTTP/1.1 200')) throw new Error(`CONNECT refused: ${head}`);
  return new Promise((resolve, reject) => {
    const host = authority.startsWith('[') ? authority.slice(1, authority.indexOf(']')) : authority.slice(0, authority.lastIndexOf(':'));
    const s = tls.connect({
      socket,
      host,
      ca: opts.ca,
      ...(opts.servername !== undefined ? { servername: opts.servername } : {}),
      rejectUnauthorized: opts.rejectUnauthorized ?? true,
      ALPNProtocols: ['http/1.1'],
    });
    s.once('secureConnect', () => resolve(s));
    s.once('error', reject);
  });
}

/** Write one raw HTTP request on an established stream and read until the server closes or the timeout. */
export function exchange(s: net.Socket | tls.TLSSocket, request: string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const done = (): void => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('utf8'));
    };
    const timer = setTimeout(() => {
      s.destroy();
      done();
    }, timeoutMs);
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', done);
    s.on('close', done);
    s.on('error', () => undefined);
    s.write(request);
  });
}
