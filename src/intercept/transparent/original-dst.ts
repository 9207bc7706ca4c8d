/**
 * The destination a connection had before iptables `REDIRECT` rewrote it to the transparent listener.
 *
 * The kernel's own answer is `getsockopt(SOL_IP, SO_ORIGINAL_DST)`, which Node cannot make without a
 * native addon (a build step in every install, tied to the Node ABI). The same fact is in the
 * connection-tracking table that REDIRECT itself uses, which Linux exposes per network namespace as
 * `/proc/net/nf_conntrack`: a redirected connection is one entry whose *reply* tuple is the accepted
 * socket seen from our side (src = our local address:port, dst = the client's address:port) and whose
 * *original* tuple holds the address:port the client dialled. Reading it needs root or group 0 (the file
 * is 0440 root:root) and the kernel's CONFIG_NF_CONNTRACK_PROCFS; where either is missing the caller
 * falls back to the protocol's default port (see README "Transparent mode").
 */
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { formatIpv6, ipv6ToBytes } from '../../core/host.js';

export const CONNTRACK_PATH = '/proc/net/nf_conntrack';
/** Start of a TCP entry: "ipv4     2 tcp      6 …". */
const TCP_ENTRY = /^ipv[46] +\d+ tcp /;

export interface SocketEndpoint {
  readonly address: string;
  readonly port: number;
}

/**
 * For an accepted socket (`local` = our end, `remote` = the client), the original destination, or null
 * when there is none to tell: no entry, or an entry that was not rewritten (a direct connection).
 */
export type OriginalDestinationLookup = (local: SocketEndpoint, remote: SocketEndpoint) => Promise<SocketEndpoint | null>;

/**
 * Canonical text of an IP address so the kernel's spelling (`0000:…:0001`, zero-padded) and Node's
 * (`::1`, `::ffff:10.0.0.1` for IPv4 on a dual-stack socket) compare equal. Null if not an IP.
 */
export function canonicalIp(address: string): string | null {
  if (isIP(address) === 4) return address;
  const bytes = ipv6ToBytes(address);
  if (bytes === null) return null;
  const text = formatIpv6(bytes);
  return text.startsWith('::ffff:') && text.includes('.') ? text.slice(7) : text;
}

/** The four `key=value` fields of one tuple, read from `line` at `from`. */
interface Tuple {
  src: string;
  dst: string;
  sport: number;
  dport: number;
}

/** Reads the next `src= dst= sport= dport=` group starting at or after `from`; returns it and where it ended. */
function readTuple(line: string, from: number): { tuple: Tuple; end: number } | null {
  const field = (key: string, at: number): { value: string; end: number } | null => {
    const i = line.indexOf(` ${key}=`, at);
    if (i === -1) return null;
    const start = i + key.length + 2;
    let end = line.indexOf(' ', start);
    if (end === -1) end = line.length;
    return { value: line.slice(start, end), end };
  };
  const src = field('src', from);
  if (src === null) return null;
  const dst = field('dst', src.end);
  if (dst === null) return null;
  const sport = field('sport', dst.end);
  if (sport === null) return null;
  const dport = field('dport', sport.end);
  if (dport === null) return null;
  return {
    tuple: { src: src.value, dst: dst.value, sport: Number(sport.value), dport: Number(dport.value) },
    end: dport.end,
  };
}

/**
 * Finds, in the text of /proc/net/nf_conntrack, the TCP entry whose reply tuple matches the accepted
 * socket and returns its original destination. Only lines holding the reply's port pair are parsed, so
 * the cost is one substring search over the table plus a few fields.
 */
export function findOriginalDestination(table: string, local: SocketEndpoint, remote: SocketEndpoint): SocketEndpoint | null {
  const localIp = canonicalIp(local.address);
  const remoteIp = canonicalIp(remote.address);
  if (localIp === null || remoteIp === null) return null;
  const needle = ` sport=${local.port} dport=${remote.port} `;
  let at = table.indexOf(needle);
  while (at !== -1) {
    const lineStart = table.lastIndexOf('\n', at) + 1;
    let lineEnd = table.indexOf('\n', at);
    if (lineEnd === -1) lineEnd = table.length;
    const found = matchLine(table.slice(lineStart, lineEnd), localIp, local.port, remoteIp, remote.port);
    if (found !== null) return found === 'direct' ? null : found;
    at = table.indexOf(needle, lineEnd);
  }
  return null;
}

function matchLine(line: string, localIp: string, localPort: number, remoteIp: string, remotePort: number): SocketEndpoint | 'direct' | null {
  // "ipv4     2 tcp      6 431999 ESTABLISHED src=… dst=… sport=… dport=… src=… dst=… sport=… dport=… [ASSURED] …"
  if (!TCP_ENTRY.test(line)) return null;
  const original = readTuple(line, 0);
  if (original === null) return null;
  const reply = readTuple(line, original.end);
  if (reply === null) return null;
  const r = reply.tuple;
  if (r.sport !== localPort || r.dport !== remotePort) return null;
  if (canonicalIp(r.src) !== localIp || canonicalIp(r.dst) !== remoteIp) return null;
  const o = original.tuple;
  const dst = canonicalIp(o.dst);
  if (dst === null || !Number.isInteger(o.dport) || o.dport < 1 || o.dport > 65535) return null;
  // Not rewritten: the client dialled the listener itself.
  if (dst === localIp && o.dport === localPort) return 'direct';
  return { address: dst, port: o.dport };
}

/**
 * Lookups against the live conntrack table. Concurrent lookups share one read of the table: a lookup
 * joins the next read that starts after it was asked (an entry is in the table before its connection
 * can be accepted, so a read that started later always sees it).
 */
export class ConntrackTable {
  readonly #path: string;
  #reading = false;
  #queued: Array<{ local: SocketEndpoint; remote: SocketEndpoint; resolve: (d: SocketEndpoint | null) => void }> = [];

  constructor(path: string = CONNTRACK_PATH) {
    this.#path = path;
  }

  /** Whether the table can be read here; the error code (ENOENT, EACCES) when not. */
  async probe(): Promise<{ ok: true } | { ok: false; code: string }> {
    try {
      await readFile(this.#path, 'latin1');
      return { ok: true };
    } catch (err) {
      return { ok: false, code: (err as NodeJS.ErrnoException).code ?? 'error' };
    }
  }

  readonly lookup: OriginalDestinationLookup = (local, remote) =>
    new Promise((resolve) => {
      this.#queued.push({ local, remote, resolve });
      if (!this.#reading) void this.#readBatch();
    });

  async #readBatch(): Promise<void> {
    this.#reading = true;
    while (this.#queued.length > 0) {
      const batch = this.#queued;
      this.#queued = [];
      let table = '';
      try {
        table = await readFile(this.#path, 'latin1');
      } catch {
        // Unreadable now (e.g. permissions changed): every lookup of this batch falls back.
      }
      for (const q of batch) q.resolve(table === '' ? null : findOriginalDestination(table, q.local, q.remote));
    }
    this.#reading = false;
  }
}
