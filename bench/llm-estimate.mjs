// How well the output-token estimate of a response without usage matches a real tokenizer, and what a
// tokenizer would cost instead (docs/llm.md "Estimated usage"). Compares src/normalize/llm/text-counts.ts
// (character classes), 4 bytes a token and 4 characters a token against OpenAI's o200k_base as
// gpt-tokenizer implements it, on English, code, JSON, Chinese, Japanese, Russian and Spanish texts
// read from files found on a Debian machine with a Rust toolchain (a kind whose files are missing is
// left out). The tokenizers are not dependencies: install them aside first,
//   npm install --prefix /tmp/tok gpt-tokenizer@4.0.0 js-tiktoken@1.0.21
// then, after `npm run build`: node bench/llm-estimate.mjs /tmp/tok
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { TextCounts } from '../dist/normalize/llm/text-counts.js';

const tokDir = process.argv[2];
if (tokDir === undefined) throw new Error('usage: node bench/llm-estimate.mjs <folder where gpt-tokenizer and js-tiktoken are installed>');
const mod = (path) => pathToFileURL(join(tokDir, 'node_modules', path)).href;
const REPO = new URL('..', import.meta.url).pathname;

// ---- samples: pieces of about 1,500 characters (600 for CJK), 40 a kind (odd ones measured) ----
function pieces(text, size, max) {
  const out = [];
  for (let i = 0; i < text.length && out.length < max;) {
    let j = Math.min(text.length, i + size);
    if (j < text.length) {
      const k = text.lastIndexOf('\n', j);
      if (k > i + size / 2) j = k;
    }
    const p = text.slice(i, j);
    if (p.trim().length > 200) out.push(p);
    i = j;
  }
  return out;
}
const files = (dir, re) => (existsSync(dir) ? readdirSync(dir, { recursive: true }).filter((f) => re.test(f)).sort().map((f) => join(dir, f)) : []);
const read = (f) => readFileSync(f, 'utf8');
const rbe = (() => {
  const toolchains = join(homedir(), '.rustup', 'toolchains');
  const tc = existsSync(toolchains) ? readdirSync(toolchains).find((d) => d.startsWith('stable')) : undefined;
  return tc === undefined ? null : join(toolchains, tc, 'share/doc/rust/html/rust-by-example');
})();
const entities = { '&lt;': '<', '&gt;': '>', '&amp;': '&', '&quot;': '"', '&#39;': "'", '&#x27;': "'" };
const unhtml = (s) => s.replace(/<[^>]+>/g, '').replace(/&[#a-z0-9]+;/g, (e) => entities[e] ?? ' ').replace(/\n\s*\n+/g, '\n\n');
function rustByExample(lang, code) {
  if (rbe === null) return '';
  const base = lang === 'en' ? rbe : join(rbe, lang);
  const others = /^(es|ja|ko|zh)\//;
  return files(base, /\.html$/).filter((f) => lang !== 'en' || !others.test(f.slice(base.length + 1))).map((f) => {
    const main = /<main>([\s\S]*?)<\/main>/.exec(read(f))?.[1] ?? '';
    if (code) return [...main.matchAll(/<code class="language-rust[^"]*">([\s\S]*?)<\/code>/g)].map((m) => unhtml(m[1])).join('\n\n');
    return unhtml(main.replace(/<pre>[\s\S]*?<\/pre>/g, '')).trim();
  }).join('\n\n');
}
/** The translations of a gettext .mo catalogue. */
function moStrings(file) {
  if (!existsSync(file)) return [];
  const b = readFileSync(file);
  const n = b.readUInt32LE(8);
  const table = b.readUInt32LE(16);
  const out = [];
  for (let i = 0; i < n; i++) {
    const len = b.readUInt32LE(table + i * 8);
    const off = b.readUInt32LE(table + i * 8 + 4);
    const s = b.toString('utf8', off, off + len);
    if (s.length > 20 && !s.includes('Content-Type:')) out.push(s);
  }
  return out;
}
const src = files(join(REPO, 'src'), /\.ts$/).map(read).join('\n');
const pyLib = existsSync('/usr/lib') ? readdirSync('/usr/lib').filter((d) => /^python3\.\d+$/.test(d)).sort().pop() : undefined;
const python = pyLib === undefined ? '' : [...files(`/usr/lib/${pyLib}/json`, /\.py$/), ...files(`/usr/lib/${pyLib}/http`, /\.py$/)].map(read).join('\n');
const packages = files(join(REPO, 'node_modules'), /^[^/@]+\/package\.json$/).slice(0, 400).map(read).join('\n');
const samples = {
  english: [...pieces(existsSync('/usr/share/common-licenses/GPL-3') ? read('/usr/share/common-licenses/GPL-3') : '', 1500, 20), ...pieces(rustByExample('en', false), 1500, 20)],
  code: [...pieces(src, 1500, 14), ...pieces(python, 1500, 13), ...pieces(rustByExample('en', true), 1500, 13)],
  json: [...pieces(read(join(REPO, 'firma.schema.json')), 1500, 20), ...pieces(packages, 1500, 20)],
  chinese: pieces(rustByExample('zh', false), 600, 40),
  japanese: pieces(rustByExample('ja', false), 600, 20),
  russian: pieces(['git', 'apt', 'bash', 'PackageKit'].flatMap((p) => moStrings(`/usr/share/locale/ru/LC_MESSAGES/${p}.mo`)).join('\n'), 1000, 40),
  spanish: pieces(rustByExample('es', false), 1500, 20),
};

// ---- accuracy ----
const { countTokens } = await import(mod('gpt-tokenizer/esm/encoding/o200k_base.js'));
const classes = (s) => {
  const c = new TextCounts();
  c.addText(s);
  return c.estimateTokens();
};
const estimators = {
  'character classes (shipped)': classes,
  '4 bytes a token': (s) => Buffer.byteLength(s) / 4,
  '4 characters a token': (s) => [...s].length / 4,
};
const accuracy = {};
for (const [name, estimate] of Object.entries(estimators)) {
  const row = {};
  for (const [kind, list] of Object.entries(samples)) {
    const measured = list.filter((_, i) => i % 2 === 1);
    if (measured.length === 0) continue;
    const truth = measured.map((s) => countTokens(s));
    const est = measured.map(estimate);
    const total = est.reduce((a, b) => a + b, 0) / truth.reduce((a, b) => a + b, 0) - 1;
    const perPiece = est.reduce((a, e, i) => a + Math.abs(e - truth[i]) / truth[i], 0) / measured.length;
    row[kind] = `${total >= 0 ? '+' : ''}${(total * 100).toFixed(0)} % / ${(perPiece * 100).toFixed(0)} %`;
  }
  accuracy[name] = row;
}
console.log('Estimate vs o200k_base: error of the total / mean error per piece (odd pieces of each kind)');
console.table(accuracy);

// ---- cost: CPU per KiB, and what loading a tokenizer costs (each in a fresh process) ----
function speed(count) {
  const out = {};
  for (const [kind, list] of Object.entries(samples)) {
    if (list.length === 0) continue;
    const kib = list.reduce((a, s) => a + Buffer.byteLength(s), 0) / 1024;
    for (let k = 0; k < 3; k++) for (const s of list) count(s);
    const start = process.hrtime.bigint();
    for (let k = 0; k < 10; k++) for (const s of list) count(s);
    out[kind] = (Number(process.hrtime.bigint() - start) / 1000 / 10 / kib).toFixed(1);
  }
  return out;
}
const { Tiktoken } = await import(mod('js-tiktoken/dist/lite.js'));
const o200k = (await import(mod('js-tiktoken/dist/ranks/o200k_base.js'))).default;
const tiktoken = new Tiktoken(o200k);
console.log('CPU µs per KiB of text');
console.table({
  'character classes (shipped)': speed(classes),
  'gpt-tokenizer 4.0.0 countTokens': speed(countTokens),
  'js-tiktoken 1.0.21 encode': speed((s) => tiktoken.encode(s).length),
});
const loadCost = (code) => JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', `
  const rss0 = process.memoryUsage().rss; const t0 = performance.now();
  ${code}
  const ms = performance.now() - t0; globalThis.gc?.();
  console.log(JSON.stringify({ loadMs: Math.round(ms), rssMiB: +((process.memoryUsage().rss - rss0) / 1048576).toFixed(1) }));`], { encoding: 'utf8' }));
console.log('Loading (and counting one word), in a fresh process');
console.table({
  'character classes (shipped)': loadCost(`const { TextCounts } = await import(${JSON.stringify(new URL('../dist/normalize/llm/text-counts.js', import.meta.url).href)}); new TextCounts().addText('warm');`),
  'gpt-tokenizer 4.0.0 (o200k_base)': loadCost(`const m = await import(${JSON.stringify(mod('gpt-tokenizer/esm/encoding/o200k_base.js'))}); m.countTokens('warm');`),
  'js-tiktoken 1.0.21 (o200k_base)': loadCost(`const { Tiktoken } = await import(${JSON.stringify(mod('js-tiktoken/dist/lite.js'))}); const r = (await import(${JSON.stringify(mod('js-tiktoken/dist/ranks/o200k_base.js'))})).default; new Tiktoken(r).encode('warm');`),
});
