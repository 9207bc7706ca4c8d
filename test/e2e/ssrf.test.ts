import t from 'tap';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { TLSSocket } from 'node:tls';
import { once } from 'node:events';
import { networkInterfaces } from 'node:os';
import { Agent, request } from 'undici';
import { FirmaError } from '../../src/core/errors.js';
import { parseCidrRule, type CidrRule } from '../../src/core/cidr.js';
import { DestinationDeniedError, EgressGuard } from '../../src/connector/ssrf/guard.js';
import { classifyAddress, describeAddress } from '../../src/connector/ssrf/classify.js';
import type { AddressClass } from '../../src/connector/ssrf/blocks.js';
import type { LookupFunction } from '../../src/connector/ssrf/resolve.js';
import { createGuardedConnect, dialTcp } from '../../src/connector/dial.js';
import { classifyUpstreamError, findDestinationDenied } from '../../src/connector/errors.js';
import { upstreamPki } from '../helpers/pki.js';

// ------------------------------------------------------------------------------------------ helpers

function rules(...texts: string[]): CidrRule[] {
  return texts.map((text) => {
    const r = parseCidrRule(text);
    if (typeof r === 'string') throw new Error(`${text}: ${r}`);
    return r;
  });
}

type Answer = string | { code: string };

/** A resolver with the dns.lookup shape: `answer(host, callNumber)` gives addresses or an error code. */
function fakeLookup(answer: (host: string, call: number) => Answer[] | Answer): { lookup: LookupFunction; calls: string[] } {
  const calls: string[] = [];
  const lookup: LookupFunction = (hostname, options, cb) => {
    calls.push(hostname);
    if (options.all !== true) throw new Error('the guard must ask for all addresses');
    const a = answer(hostname, calls.length);
    const list = Array.isArray(a) ? a : [a];
    const first = list[0];
    setImmediate(() => {
      if (first !== undefined && typeof first === 'object') {
        cb(Object.assign(new Error(`getaddrinfo ${first.code} ${hostname}`), { code: first.code, hostname }), []);
      } else {
        cb(null, (list as string[]).map((address) => ({ address, family: net.isIP(address) })));
      }
    });
  };
  return { lookup, calls };
}

const noListeners = (): [] => [];

function guardWith(opts: { allow?: string[]; lookup?: LookupFunction; listeners?: Array<{ address: string; port: number }> }): EgressGuard {
  const listeners = opts.listeners ?? [];
  return new EgressGuard({
    allowPrivate: rules(...(opts.allow ?? [])),
    ownListeners: () => listeners,
    ...(opts.lookup !== undefined ? { lookup: opts.lookup } : {}),
  });
}

async function denied(p: Promise<unknown>): Promise<DestinationDeniedError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof DestinationDeniedError) return err;
    throw err;
  }
  throw new Error('expected a DestinationDeniedError, the destination was allowed');
}

async function rejection(p: Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await p;
  } catch (err) {
    return err as Error & { code?: string };
  }
  throw new Error('expected a rejection');
}

async function listen<S extends net.Server>(server: S, host: string, port = 0): Promise<number> {
  server.listen(port, host);
  await once(server, 'listening');
  return (server.address() as net.AddressInfo).port;
}

function close(server: net.Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    if ('closeAllConnections' in server) (server as http.Server).closeAllConnections();
  });
}

// ----------------------------------------------------------------------------------- classification

t.test('classifyAddress: every class, IPv4 and IPv6', async (t) => {
  const table: Array<[string, AddressClass]> = [
    ['8.8.8.8', 'public'],
    ['93.184.215.14', 'public'],
    ['1.1.1.1', 'public'],
    ['2606:4700:4700::1111', 'public'],
    ['2a00:1450:4001:80b::200e', 'public'],
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['::1', 'loopback'],
    ['10.0.0.5', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['fc00::1', 'private'],
    ['fd12:3456::1', 'private'],
    ['fec0::1', 'private'],
    ['100.64.0.1', 'cgnat'],
    ['100.127.255.255', 'cgnat'],
    ['169.254.1.1', 'link_local'],
    ['fe80::1', 'link_local'],
    ['fe80::1%eth0', 'link_local'],
    ['febf::1', 'link_local'],
    ['169.254.169.254', 'metadata'],
    ['169.254.170.2', 'metadata'],
    ['169.254.170.23', 'metadata'],
    ['100.100.100.200', 'metadata'],
    ['fd00:ec2::254', 'metadata'],
    ['FD00:EC2:0:0:0:0:0:254', 'metadata'],
    ['fd20:ce::254', 'metadata'],
    ['0.0.0.0', 'unspecified'],
    ['0.1.2.3', 'unspecified'],
    ['::', 'unspecified'],
    ['224.0.0.251', 'multicast'],
    ['239.255.255.250', 'multicast'],
    ['ff02::1', 'multicast'],
    ['255.255.255.255', 'broadcast'],
    ['240.0.0.1', 'reserved'],
    ['192.0.0.8', 'reserved'],
    ['192.0.2.1', 'reserved'],
    ['198.18.0.1', 'reserved'],
    ['198.19.255.255', 'reserved'],
    ['198.51.100.7', 'reserved'],
    ['203.0.113.9', 'reserved'],
    ['2001:db8::1', 'reserved'],
    ['3fff::1', 'reserved'],
    ['100::1', 'reserved'],
    ['4000::1', 'reserved'],
    // Boundaries just outside the blocks.
    ['172.32.0.1', 'public'],
    ['100.128.0.1', 'public'],
    ['11.0.0.1', 'public'],
    ['198.20.0.1', 'public'],
    ['223.255.255.255', 'public'],
  ];
  for (const [address, expected] of table) t.equal(classifyAddress(address), expected, `${address} → ${expected}`);
});

t.test('IPv6 forms that embed an IPv4 address are classified by that address', async (t) => {
  const table: Array<[string, AddressClass, string, string]> = [
    ['::ffff:127.0.0.1', 'loopback', 'ipv4-mapped', '127.0.0.1'],
    ['::ffff:7f00:1', 'loopback', 'ipv4-mapped', '127.0.0.1'],
    ['0:0:0:0:0:ffff:a9fe:a9fe', 'metadata', 'ipv4-mapped', '169.254.169.254'],
    ['::ffff:8.8.8.8', 'public', 'ipv4-mapped', '8.8.8.8'],
    ['::ffff:0:10.0.0.1', 'private', 'ipv4-translated', '10.0.0.1'],
    ['::127.0.0.1', 'loopback', 'ipv4-compatible', '127.0.0.1'],
    ['::a00:1', 'private', 'ipv4-compatible', '10.0.0.1'],
    ['64:ff9b::a9fe:a9fe', 'metadata', 'nat64', '169.254.169.254'],
    ['64:ff9b::127.0.0.1', 'loopback', 'nat64', '127.0.0.1'],
    ['64:ff9b::808:808', 'public', 'nat64', '8.8.8.8'],
    ['64:ff9b:1::a00:1', 'private', 'nat64', '10.0.0.1'],
    ['64:ff9b:1::a9fe:a9fe', 'metadata', 'nat64', '169.254.169.254'],
    ['2002:7f00:0001::1', 'loopback', '6to4', '127.0.0.1'],
    ['2002:a00:1::1', 'private', '6to4', '10.0.0.1'],
    ['2002:a9fe:a9fe::', 'metadata', '6to4', '169.254.169.254'],
    ['2002:808:808::1', 'public', '6to4', '8.8.8.8'],
    // Teredo: the client IPv4 is the last 32 bits inverted (RFC 4380 example: 192.0.2.45).
    ['2001:0:4136:e378:8000:63bf:3fff:fdd2', 'reserved', 'teredo', '192.0.2.45'],
    ['2001:0:4136:e378:8000:63bf:80ff:fffe', 'loopback', 'teredo', '127.0.0.1'],
    ['2001::5601:5601', 'metadata', 'teredo', '169.254.169.254'],
    ['2001:0:4136:e378:8000:63bf:f7f7:f7f7', 'public', 'teredo', '8.8.8.8'],
  ];
  for (const [address, expected, form, ipv4] of table) {
    const d = describeAddress(address);
    t.equal(d?.class, expected, `${address} → ${expected}`);
    t.same(d?.via, { form, ipv4 }, `${address} embeds ${ipv4} (${form})`);
  }
  // A NAT64 local-use address whose /48 reading (RFC 6052) is the metadata IPv4 is refused as metadata.
  t.equal(classifyAddress('64:ff9b:1:a9fe:a9:fea9:fe00:0'), 'metadata', 'local-use NAT64, /48 layout');
  t.equal(describeAddress('::1')?.via, undefined, '::1 is loopback itself, not ::0.0.0.1');
  t.equal(describeAddress('example.com'), null);
  t.throws(() => classifyAddress('example.com'), { code: 'FIRMA_INVALID_ADDRESS' });
  t.throws(() => classifyAddress('[::1]'), { code: 'FIRMA_INVALID_ADDRESS' }, 'brackets are URL syntax, not an address');
});

// -------------------------------------------------------------------------------------------- guard

t.test('denials: class, reason and a message that names host, address and class', async (t) => {
  const { lookup } = fakeLookup((h) => ({ 'api.example.com': '10.0.0.5', 'md.test': '169.254.169.254', 'v6.test': 'fd12::1', 'bench.test': '198.18.0.7' })[h] ?? { code: 'ENOTFOUND' });
  const guard = guardWith({ lookup });
  const e = await denied(guard.vet('api.example.com', 443));
  t.ok(e instanceof FirmaError, 'a FirmaError');
  t.equal(e.code, 'FIRMA_DESTINATION_DENIED');
  t.equal(e.name, 'DestinationDeniedError');
  t.equal(e.reason, 'private_address');
  t.equal(e.addressClass, 'private');
  t.equal(e.address, '10.0.0.5');
  t.equal(e.host, 'api.example.com');
  t.equal(e.port, 443);
  t.match(e.message, 'api.example.com resolved to 10.0.0.5 (private, RFC 1918); add it to [sidecar.connector] allow_private to allow (e.g. "10.0.0.5/32:443")');
  const md = await denied(guard.vet('md.test', 80));
  t.equal(md.reason, 'metadata_address');
  t.match(md.message, /md\.test resolved to 169\.254\.169\.254 \(metadata, .*never allowed/);
  const v6 = await denied(guard.vet('v6.test', 443));
  t.match(v6.message, '"[fd12::1/128]:443"', 'the example rule is valid IPv6 syntax');
  t.equal(typeof parseCidrRule('[fd12::1/128]:443'), 'object', 'and parses as a rule');
  const bench = await denied(guard.vet('bench.test', 80));
  t.equal(bench.reason, 'reserved_address');
  t.match(bench.message, 'reserved, benchmarking, RFC 2544');
  const lit = await denied(guard.vet('127.0.0.1', 80));
  t.match(lit.message, /^127\.0\.0\.1 \(loopback, RFC 1122\);/, 'IP literal: no "resolved to"');
  const nat = await denied(guard.vet('64:ff9b::a00:1', 80));
  t.match(nat.message, 'via nat64 10.0.0.1');
  for (const reason of ['private_address', 'metadata_address']) {
    const f = findDestinationDenied(reason === 'private_address' ? e : md);
    t.equal(f?.reason, reason, 'the connector recognises it');
  }
});

t.test('allow_private with and without a port; public needs no rule', async (t) => {
  const guard = guardWith({ allow: ['10.0.0.0/8:5432', '192.168.0.0/16', '[fd00::/8]:443', '198.18.0.0/15'] });
  t.same(await guard.vet('10.1.2.3', 5432), { address: '10.1.2.3', family: 4, class: 'private' });
  t.equal((await denied(guard.vet('10.1.2.3', 5433))).reason, 'private_address', 'another port: refused');
  t.equal((await guard.vet('192.168.7.7', 1)).address, '192.168.7.7', 'no port in the rule: any port');
  t.equal((await guard.vet('192.168.7.7', 65535)).address, '192.168.7.7');
  t.same(await guard.vet('fd12::1', 443), { address: 'fd12::1', family: 6, class: 'private' });
  t.equal((await denied(guard.vet('fd12::1', 80))).reason, 'private_address');
  t.equal((await denied(guard.vet('[fd12::1]', 80))).address, 'fd12::1', 'bracketed literal');
  t.equal((await guard.vet('198.18.3.4', 80)).class, 'reserved', 'non-routable blocks can be allowed explicitly (fake-IP DNS setups)');
  t.equal((await denied(guard.vet('64:ff9b::a00:1', 5432))).reason, 'private_address', 'an IPv4 rule does not cover IPv6 forms (NAT64)');
  t.equal((await denied(guard.vet('::ffff:10.1.2.3', 5432))).reason, 'private_address', 'nor the IPv4-mapped form');
  t.equal((await guardWith({ allow: ['[::ffff:10.0.0.0/104]:5432'] }).vet('::ffff:10.1.2.3', 5432)).address, '::ffff:10.1.2.3', 'an IPv6 rule does');
  t.equal((await denied(guard.vet('127.0.0.1', 5432))).reason, 'private_address', 'loopback is not in any rule');
  t.equal((await denied(guard.vet('172.16.0.1', 5432))).reason, 'private_address');
  t.same(await guard.vet('8.8.8.8', 53), { address: '8.8.8.8', family: 4, class: 'public' });
  t.equal((await guardWith({}).vet('2606:4700::1', 443)).family, 6);
});

t.test('metadata addresses are refused even when a rule covers them', async (t) => {
  const guard = guardWith({ allow: ['0.0.0.0/0', '169.254.0.0/16', '100.64.0.0/10', '::/0', 'fd00::/8', '64:ff9b::/96'] });
  for (const address of ['169.254.169.254', '169.254.170.2', '100.100.100.200', 'fd00:ec2::254', '64:ff9b::a9fe:a9fe', '::ffff:169.254.169.254', '2002:a9fe:a9fe::1']) {
    const e = await denied(guard.vet(address, 80));
    t.equal(e.reason, 'metadata_address', `${address} refused`);
  }
  t.equal((await guard.vet('169.254.1.1', 80)).class, 'link_local', 'the rules themselves are in force');
  t.equal((await guard.vet('100.100.100.199', 80)).class, 'cgnat');
  t.equal((await guard.vet('fd00:ec2::253', 80)).class, 'private');
});

t.test('loops to the sidecar’s own listeners are refused', async (t) => {
  const listeners = [{ address: '127.0.0.1', port: 8080 }];
  const { lookup } = fakeLookup(() => '127.0.0.1');
  const guard = guardWith({ allow: ['0.0.0.0/0', '::/0'], listeners, lookup });
  const e = await denied(guard.vet('127.0.0.1', 8080));
  t.equal(e.reason, 'loop');
  t.match(e.message, "this sidecar's own listener 127.0.0.1:8080");
  t.equal((await denied(guard.vet('me.test', 8080))).reason, 'loop', 'by name too');
  t.match((await denied(guard.vet('me.test', 8080))).message, /^me\.test resolved to 127\.0\.0\.1/);
  t.equal((await denied(guard.vet('::ffff:127.0.0.1', 8080))).reason, 'loop', 'IPv4-mapped spelling');
  t.equal((await denied(guard.vet('0.0.0.0', 8080))).reason, 'loop', '0.0.0.0 is this host');
  t.equal((await guard.vet('127.0.0.1', 8081)).address, '127.0.0.1', 'another port is not a loop');
  t.equal((await guard.vet('127.0.0.2', 8080)).address, '127.0.0.2', 'a listener on 127.0.0.1 is not on 127.0.0.2');
  // The listener list is read at every check: listeners are bound after the guard is built.
  listeners.push({ address: '0.0.0.0', port: 9000 });
  t.equal((await denied(guard.vet('127.0.0.9', 9000))).reason, 'loop', 'wildcard listener: any loopback address');
  t.equal((await denied(guard.vet('::1', 9000))).reason, 'loop');
  const external = Object.values(networkInterfaces()).flat().find((i) => i !== undefined && !i.internal);
  if (external !== undefined) {
    t.equal((await denied(guard.vet(external.address, 9000))).reason, 'loop', `wildcard listener: local interface ${external.address}`);
  }
  t.equal((await guard.vet('8.8.8.8', 9000)).address, '8.8.8.8', 'a remote address on the same port is fine');
  listeners.push({ address: '::', port: 9001 });
  t.equal((await denied(guard.vet('::1', 9001))).reason, 'loop');
  t.equal((await denied(guard.vet('127.0.0.1', 9001))).reason, 'loop', ':: is dual-stack');
  // A loop is refused even though allow_private covers the address.
  t.equal((await denied(guardWith({ allow: ['127.0.0.1/32'], listeners: [{ address: '127.0.0.1', port: 1 }] }).vet('127.0.0.1', 1))).reason, 'loop');
});

t.test('a name with several addresses: all are checked, the first is dialled', async (t) => {
  const { lookup, calls } = fakeLookup((h) =>
    ({
      'mixed.test': ['93.184.215.14', '10.0.0.1'],
      'mixedmd.test': ['93.184.215.14', '2606:4700::1', '169.254.169.254'],
      'dual.test': ['2606:4700::1', '93.184.215.14'],
      'internal.test': ['10.0.0.1', '93.184.215.14'],
    })[h] ?? { code: 'ENOTFOUND' },
  );
  const guard = guardWith({ lookup });
  const mixed = await denied(guard.vet('mixed.test', 443));
  t.equal(mixed.address, '10.0.0.1', 'the refused answer is named even though the first one is public');
  t.match(mixed.message, 'mixed.test resolved to 10.0.0.1');
  t.equal((await denied(guard.vet('mixedmd.test', 443))).reason, 'metadata_address');
  t.same(await guard.vet('dual.test', 443), { address: '2606:4700::1', family: 6, class: 'public' }, 'resolver order kept');
  t.same(calls, ['mixed.test', 'mixedmd.test', 'dual.test'], 'one lookup per vet');
  const allowed = guardWith({ lookup, allow: ['10.0.0.0/8'] });
  t.same(await allowed.vet('internal.test', 443), { address: '10.0.0.1', family: 4, class: 'private' });
});

t.test('resolution failures are network errors, not denials', async (t) => {
  const { lookup, calls } = fakeLookup((h) =>
    ({ 'nx.test': { code: 'ENOTFOUND' }, 'flaky.test': { code: 'EAI_AGAIN' }, 'empty.test': [], 'junk.test': 'not-an-ip' } as Record<string, Answer[] | Answer>)[h] ?? '8.8.8.8',
  );
  const guard = guardWith({ lookup });
  const nx = await rejection(guard.vet('nx.test', 443));
  t.notOk(nx instanceof DestinationDeniedError);
  t.ok(nx instanceof Error);
  t.equal(nx.code, 'ENOTFOUND');
  t.match(nx.message, 'nx.test');
  t.equal(findDestinationDenied(nx), null);
  t.same(classifyUpstreamError(nx), { kind: 'network', code: 'ENOTFOUND' }, 'the connector maps it to 502');
  t.equal((await rejection(guard.vet('flaky.test', 443))).code, 'EAI_AGAIN', 'the resolver’s code is kept');
  t.equal((await rejection(guard.vet('empty.test', 443))).code, 'ENOTFOUND', 'no answers');
  const junk = await denied(guard.vet('junk.test', 443));
  t.equal(junk.reason, 'unresolvable', 'an answer that is not an IP address fails closed');
  // IP literals never reach the resolver.
  const before = calls.length;
  await guard.vet('8.8.4.4', 53);
  await guard.vet('[2606:4700::1]', 443);
  t.equal(calls.length, before, 'no lookup for literals');
});

t.test('the default resolver is the system one (dns.lookup)', async (t) => {
  const guard = new EgressGuard({ allowPrivate: [], ownListeners: noListeners });
  const e = await denied(guard.vet('localhost', 80));
  t.equal(e.addressClass, 'loopback', `localhost resolved through /etc/hosts to ${e.address}`);
});

// --------------------------------------------------------------------------- dialling through undici

t.test('DNS rebinding: one lookup per connection, the socket goes to the vetted address', async (t) => {
  // The vetted server listens on 127.0.0.2; a decoy on 127.0.0.1 at the same port stands for the internal
  // service a rebinding answer points at. Only 127.0.0.2:port is allowed.
  const seen: string[] = [];
  const vetted = http.createServer((req, res) => {
    seen.push(req.socket.localAddress ?? '');
    res.end('vetted');
  });
  let connections = 0;
  vetted.on('connection', () => connections++);
  const port = await listen(vetted, '127.0.0.2');
  let decoyHits = 0;
  const decoy = http.createServer((_req, res) => {
    decoyHits++;
    res.end('decoy');
  });
  await listen(decoy, '127.0.0.1', port);
  t.teardown(async () => {
    await close(vetted);
    await close(decoy);
  });

  // Rebinding resolver: a "public" answer for the check, 127.0.0.1 ever after.
  const { lookup, calls } = fakeLookup((_h, n) => (n === 1 ? '127.0.0.2' : '127.0.0.1'));
  const guard = guardWith({ allow: [`127.0.0.2/32:${port}`], lookup });
  // One connection per origin, so "same connection" below is certain rather than up to the pool.
  const agent = new Agent({ connections: 1, connect: createGuardedConnect(guard, { timeoutMs: 5000 }) });
  t.teardown(() => agent.close());
  const origin = `http://rebind.test:${port}`;

  const r1 = await request(`${origin}/one`, { dispatcher: agent });
  t.equal(await r1.body.text(), 'vetted');
  t.same(calls, ['rebind.test'], 'resolved once');
  // Same connection (keep-alive): no new lookup. `reset` closes it after this response.
  const r2 = await request(`${origin}/two`, { dispatcher: agent, reset: true });
  t.equal(await r2.body.text(), 'vetted');
  t.equal(calls.length, 1, 'a reused connection is not re-resolved');
  t.equal(connections, 1);
  t.same(seen, ['127.0.0.2', '127.0.0.2'], 'the server saw both requests on the vetted address');
  // A new connection resolves again; this time the answer is 127.0.0.1, which is refused — it is never
  // dialled, and the refusal comes out of undici as the guard's own error.
  const err = await rejection(request(`${origin}/three`, { dispatcher: agent }));
  t.equal(calls.length, 2, 'the new connection resolved once');
  t.ok(err instanceof DestinationDeniedError, 'undici passes the connector error through unchanged');
  t.equal(err.code, 'FIRMA_DESTINATION_DENIED');
  t.equal((err as DestinationDeniedError).address, '127.0.0.1');
  t.equal(findDestinationDenied(err)?.reason, 'private_address');
  t.equal(decoyHits, 0, 'nothing ever reached the rebinding target');
  t.equal(connections, 1);

  // With both addresses allowed, a second lookup anywhere on the path would land on the decoy.
  const second = fakeLookup((_h, n) => (n === 1 ? '127.0.0.2' : '127.0.0.1'));
  const both = guardWith({ allow: [`127.0.0.2/32:${port}`, `127.0.0.1/32:${port}`], lookup: second.lookup });
  const agent2 = new Agent({ connect: createGuardedConnect(both, { timeoutMs: 5000 }) });
  t.teardown(() => agent2.close());
  const r4 = await request(`${origin}/four`, { dispatcher: agent2 });
  t.equal(await r4.body.text(), 'vetted', 'the connection went to the address that was checked');
  t.equal(second.calls.length, 1);
  t.equal(decoyHits, 0);

  // Blind tunnels: same guard, same single resolution.
  const third = fakeLookup((_h, n) => (n === 1 ? '127.0.0.2' : '127.0.0.1'));
  const tunnelGuard = guardWith({ allow: [`127.0.0.2/32:${port}`], lookup: third.lookup });
  const socket = await dialTcp(tunnelGuard, 'rebind.test', port, 5000);
  t.equal(socket.remoteAddress, '127.0.0.2');
  t.equal(third.calls.length, 1);
  socket.destroy();
  const tunnelErr = await rejection(dialTcp(tunnelGuard, 'rebind.test', port, 5000));
  t.ok(tunnelErr instanceof DestinationDeniedError, 'the second dial is refused, not redirected');
  t.equal(decoyHits, 0);
});

t.test('TLS: SNI and verification use the name for names, nothing for IP literals', async (t) => {
  const pki = upstreamPki();
  const sni: Array<string | false | null> = [];
  const alpn: Array<string | false | null> = [];
  const server = https.createServer({ cert: pki.certPem, key: pki.keyPem, ALPNProtocols: ['h2', 'http/1.1'] }, (_req, res) => res.end('ok'));
  server.on('secureConnection', (s: TLSSocket) => {
    sni.push(s.servername);
    alpn.push(s.alpnProtocol);
  });
  const port = await listen(server, '127.0.0.1');
  t.teardown(() => close(server));
  // The certificate names localhost, upstream.test and IP 127.0.0.1; every name resolves to 127.0.0.1.
  const { lookup } = fakeLookup(() => '127.0.0.1');
  const guard = guardWith({ allow: [`127.0.0.1/32:${port}`], lookup });
  const agent = new Agent({ connect: createGuardedConnect(guard, { ca: [pki.caPem], timeoutMs: 5000 }) });
  t.teardown(() => agent.close());

  const byName = await request(`https://upstream.test:${port}/`, { dispatcher: agent, reset: true });
  t.equal(await byName.body.text(), 'ok');
  t.same(sni, ['upstream.test'], 'SNI is the hostname, not the dialled IP');
  t.same(alpn, ['http/1.1'], 'ALPN offers http/1.1 only');

  const byIp = await request(`https://127.0.0.1:${port}/`, { dispatcher: agent, reset: true });
  t.equal(await byIp.body.text(), 'ok', 'the certificate is checked against the IP');
  t.same(sni, ['upstream.test', false], 'no SNI for an IP literal');

  const dotted = await request(`https://upstream.test.:${port}/`, { dispatcher: agent, reset: true });
  t.equal(await dotted.body.text(), 'ok');
  t.equal(sni[2], 'upstream.test', 'no trailing dot in SNI');

  // other.test resolves to 127.0.0.1, which the certificate does carry: verifying against the IP would pass.
  const wrongName = await rejection(request(`https://other.test:${port}/`, { dispatcher: agent }));
  t.equal(wrongName.code, 'ERR_TLS_CERT_ALTNAME_INVALID', 'verified against the name that was asked for');

  const noCa = new Agent({ connect: createGuardedConnect(guard, { timeoutMs: 5000 }) });
  t.teardown(() => noCa.close());
  const untrusted = await rejection(request(`https://upstream.test:${port}/`, { dispatcher: noCa }));
  t.match(untrusted.code, /SELF_SIGNED|UNABLE_TO|CERT/, `verification is always on (${untrusted.code})`);
});

t.test('connect errors and deadlines come through the callback', async (t) => {
  // A resolver that never answers: the deadline covers resolution.
  const hang: LookupFunction = () => undefined;
  const guard = guardWith({ lookup: hang, allow: ['127.0.0.1/32'] });
  const slow = await rejection(dialTcp(guard, 'slow.test', 80, 50));
  t.equal(slow.code, 'ETIMEDOUT');
  t.same(classifyUpstreamError(slow), { kind: 'timeout', code: 'ETIMEDOUT' }, 'the connector maps it to 504');
  const agent = new Agent({ connect: createGuardedConnect(guard, { timeoutMs: 50 }) });
  t.teardown(() => agent.close());
  t.equal((await rejection(request('http://slow.test/', { dispatcher: agent }))).code, 'ETIMEDOUT', 'through undici too');

  // Nothing listens on this port.
  const probe = net.createServer();
  const closedPort = await listen(probe, '127.0.0.1');
  await close(probe);
  const refused = await rejection(dialTcp(guard, '127.0.0.1', closedPort, 5000));
  t.equal(refused.code, 'ECONNREFUSED');
  t.equal((await rejection(request(`http://127.0.0.1:${closedPort}/`, { dispatcher: agent }))).code, 'ECONNREFUSED');

  const nx = guardWith({ lookup: fakeLookup(() => ({ code: 'ENOTFOUND' })).lookup });
  const agentNx = new Agent({ connect: createGuardedConnect(nx, { timeoutMs: 5000 }) });
  t.teardown(() => agentNx.close());
  const e = await rejection(request('http://nx.test/', { dispatcher: agentNx }));
  t.equal(e.code, 'ENOTFOUND', 'an unresolvable name comes out of undici as ENOTFOUND');
  t.notOk(e instanceof DestinationDeniedError);
  t.equal((await rejection(dialTcp(nx, 'nx.test', 443, 5000))).code, 'ENOTFOUND');
});
