import t from 'tap';
import {
  formatAuthority,
  hostPatternMatches,
  ipBytes,
  parseAuthority,
  parseHost,
  type ParsedHost,
} from '../../../src/core/host.js';

const label63 = 'a'.repeat(63);
const label64 = 'a'.repeat(64);
// 4 * 63 + 3 dots = 255; trim to exact sizes
const name253 = [label63, label63, label63, 'a'.repeat(61)].join('.'); // 63*3 + 61 + 3 = 253
const name254 = [label63, label63, label63, 'a'.repeat(62)].join('.');

t.equal(name253.length, 253);
t.equal(name254.length, 254);

t.test('parseHost accepts and canonicalises', async (t) => {
  const accepted: Array<[string, string, ParsedHost['kind']]> = [
    ['example.com', 'example.com', 'dns'],
    ['EXAMPLE.com.', 'example.com', 'dns'],
    ['Api.Example.COM', 'api.example.com', 'dns'],
    ['localhost', 'localhost', 'dns'],
    ['a', 'a', 'dns'],
    ['xn--bcher-kva.example', 'xn--bcher-kva.example', 'dns'],
    ['my_host.example.com', 'my_host.example.com', 'dns'],
    ['_dmarc.example.com', '_dmarc.example.com', 'dns'],
    ['a-b.c-d.com', 'a-b.c-d.com', 'dns'],
    ['123.example.com', '123.example.com', 'dns'],
    ['example.123a', 'example.123a', 'dns'],
    [`${label63}.com`, `${label63}.com`, 'dns'],
    [name253, name253, 'dns'],
    [name253 + '.', name253, 'dns'],
    ['1.2.3.4', '1.2.3.4', 'ipv4'],
    ['0.0.0.0', '0.0.0.0', 'ipv4'],
    ['255.255.255.255', '255.255.255.255', 'ipv4'],
    ['127.0.0.1', '127.0.0.1', 'ipv4'],
    ['::1', '::1', 'ipv6'],
    ['::', '::', 'ipv6'],
    ['2001:DB8::1', '2001:db8::1', 'ipv6'],
    ['2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8::1', 'ipv6'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1', 'ipv6'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1', 'ipv6'],
    ['1:2:3:4:5:6:7::', '1:2:3:4:5:6:7:0', 'ipv6'],
    ['fe80::1', 'fe80::1', 'ipv6'],
    ['::ffff:1.2.3.4', '::ffff:1.2.3.4', 'ipv6'],
    ['::FFFF:0102:0304', '::ffff:1.2.3.4', 'ipv6'],
    ['64:ff9b::1.2.3.4', '64:ff9b::102:304', 'ipv6'],
  ];
  for (const [input, host, kind] of accepted) {
    t.same(parseHost(input), { host, kind }, `accepts ${JSON.stringify(input)}`);
  }
});

t.test('parseHost rejects', async (t) => {
  const rejected = [
    '',
    '.',
    '..',
    '../../x',
    '..\\x',
    'a..b',
    '.a.com',
    'a.com..',
    'a/b',
    'a b',
    ' a.com',
    'a.com ',
    'a\tb',
    'a\nb',
    '%',
    'a%2ecom',
    '*.x',
    '*',
    'a.*.com',
    '-a.com',
    'a-.com',
    'a.-b.com',
    'a.b-.com',
    `${label64}.com`,
    name254,
    name254 + '.',
    'bücher.example',
    'exa\u0000mple.com',
    'example.com\u200b',
    'ｅxample.com',
    'a@b.com',
    'a:b',
    'example.com:443',
    'a,b',
    'a;b',
    "a'b",
    'a"b',
    // IPv4: ambiguous spellings are rejected, not reinterpreted
    '010.1.1.1',
    '1.1.1.01',
    '1.1.1',
    '1.1',
    '1',
    '1.2.3.4.5',
    '256.1.1.1',
    '1.2.3.4.',
    '0x7f.1',
    '0x7f.0.0.1',
    '127.0.0.0x1',
    '2130706433',
    '017700000001',
    'a.1',
    'example.0x1',
    '1.2.3.-4',
    '1.2.3.+4',
    // IPv6
    '[::1]',
    '[::1',
    'fe80::1%eth0',
    'fe80::1%25eth0',
    '1::2::3',
    ':::',
    '1:2:3:4:5:6:7:8:9',
    '::1.2.3.04',
    '::g',
    '12345::',
    ' ::1',
  ];
  for (const input of rejected) {
    t.equal(parseHost(input), null, `rejects ${JSON.stringify(input)}`);
  }
});

t.test('ipBytes', async (t) => {
  t.same(ipBytes({ host: '10.1.2.3', kind: 'ipv4' }), Buffer.from([10, 1, 2, 3]));
  t.same(ipBytes(parseHost('2001:db8::1')!), Buffer.from('20010db8000000000000000000000001', 'hex'));
  t.same(ipBytes(parseHost('::ffff:1.2.3.4')!), Buffer.from('00000000000000000000ffff01020304', 'hex'));
  t.equal(ipBytes({ host: 'example.com', kind: 'dns' }), null);
});

t.test('parseAuthority', async (t) => {
  const ok: Array<[string, number | null, { host: string; kind: ParsedHost['kind']; port: number }]> = [
    ['example.com:443', null, { host: 'example.com', kind: 'dns', port: 443 }],
    ['EXAMPLE.com:8080', null, { host: 'example.com', kind: 'dns', port: 8080 }],
    ['example.com.:443', null, { host: 'example.com', kind: 'dns', port: 443 }],
    ['example.com', 443, { host: 'example.com', kind: 'dns', port: 443 }],
    ['example.com', 80, { host: 'example.com', kind: 'dns', port: 80 }],
    ['1.2.3.4:1', null, { host: '1.2.3.4', kind: 'ipv4', port: 1 }],
    ['1.2.3.4:65535', null, { host: '1.2.3.4', kind: 'ipv4', port: 65535 }],
    ['[::1]:443', null, { host: '::1', kind: 'ipv6', port: 443 }],
    ['[2001:DB8::0:1]:8443', null, { host: '2001:db8::1', kind: 'ipv6', port: 8443 }],
    ['[::1]', 443, { host: '::1', kind: 'ipv6', port: 443 }],
  ];
  for (const [input, def, want] of ok) {
    t.same(parseAuthority(input, def), want, `accepts ${JSON.stringify(input)} (default ${def})`);
  }
  const bad: Array<[string, number | null]> = [
    ['example.com', null],
    ['[::1]', null],
    ['example.com:', 443],
    ['example.com:0', null],
    ['example.com:65536', null],
    ['example.com:99999', null],
    ['example.com:123456', null],
    ['example.com:+1', null],
    ['example.com:-1', null],
    ['example.com: 80', null],
    ['example.com:80 ', null],
    ['example.com:080', null],
    ['example.com:0x50', null],
    ['example.com:80:80', null],
    ['example.com:1e3', null],
    [':443', null],
    ['', 443],
    ['::1', 443],
    ['::1:443', null],
    ['[::1]443', null],
    ['[::1]:', 443],
    ['[::1]:0', null],
    ['[1.2.3.4]:443', null],
    ['[example.com]:443', null],
    ['[fe80::1%eth0]:443', null],
    ['[::1', 443],
    ['example.com]:443', null],
    ['../../x:443', null],
    ['a/b:443', null],
    ['user@example.com:443', null],
    ['*.example.com:443', null],
    ['010.1.1.1:443', null],
  ];
  for (const [input, def] of bad) {
    t.equal(parseAuthority(input, def), null, `rejects ${JSON.stringify(input)} (default ${def})`);
  }
});

t.test('formatAuthority', async (t) => {
  t.equal(formatAuthority({ host: 'example.com', kind: 'dns', port: 443 }), 'example.com:443');
  t.equal(formatAuthority({ host: 'example.com', kind: 'dns', port: 443 }, 443), 'example.com');
  t.equal(formatAuthority({ host: 'example.com', kind: 'dns', port: 8443 }, 443), 'example.com:8443');
  t.equal(formatAuthority({ host: '::1', kind: 'ipv6', port: 443 }), '[::1]:443');
  t.equal(formatAuthority({ host: '::1', kind: 'ipv6', port: 443 }, 443), '[::1]');
  t.equal(formatAuthority({ host: '1.2.3.4', kind: 'ipv4', port: 80 }, 443), '1.2.3.4:80');
  for (const s of ['example.com:443', '[2001:db8::1]:8443', '1.2.3.4:80']) {
    t.equal(formatAuthority(parseAuthority(s, null)!), s, `round-trips ${s}`);
  }
});

t.test('hostPatternMatches', async (t) => {
  const cases: Array<[string, string, boolean]> = [
    ['example.com', 'example.com', true],
    ['Example.COM', 'example.com', true],
    ['example.com', 'a.example.com', false],
    ['example.com', 'example.co', false],
    ['example.com', 'xexample.com', false],
    ['*.example.com', 'a.example.com', true],
    ['*.example.com', 'a.b.example.com', true],
    ['*.EXAMPLE.com', 'a.example.com', true],
    ['*.example.com', 'example.com', false],
    ['*.example.com', 'badexample.com', false],
    ['*.example.com', '.example.com', false],
    ['*.example.com', 'a.example.com.evil.net', false],
    ['*.example.com', 'example.com.a', false],
    ['*.0.0.1', '127.0.0.1', false],
    ['*.', 'a.', false],
    ['*', 'example.com', false],
    ['', 'example.com', false],
    ['1.2.3.4', '1.2.3.4', true],
    ['1.2.3.4', '1.2.3.40', false],
    ['::1', '::1', true],
    ['2001:DB8:0:0::1', '2001:db8::1', true],
    ['2001:db8::2', '2001:db8::1', false],
    ['*.example.com', '::1', false],
  ];
  for (const [pattern, host, want] of cases) {
    t.equal(hostPatternMatches(pattern, host), want, `${pattern} vs ${host}`);
  }
});
