/**
 * The repository documents every user-visible behaviour itself (README.md and docs/). These checks keep
 * the reference pages complete where completeness can be computed: every firma.toml key, every CLI
 * command and option, every metric; and keep every relative link (and its #anchor) pointing somewhere.
 */
import t from 'tap';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { firmaConfigJsonSchema } from '../../../src/config/index.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const read = (path: string): string => readFileSync(join(ROOT, path), 'utf8');

interface SchemaNode {
  readonly type?: string;
  readonly properties?: Readonly<Record<string, SchemaNode>>;
  readonly items?: SchemaNode;
}

/** Dotted key paths of every key that is not itself a table; items of arrays of tables are `key[].sub`. */
function keyPaths(node: SchemaNode, prefix = ''): string[] {
  const out: string[] = [];
  for (const [key, child] of Object.entries(node.properties ?? {})) {
    const path = prefix === '' ? key : `${prefix}.${key}`;
    if (child.properties !== undefined) {
      out.push(...keyPaths(child, path));
    } else if (child.type === 'array' && child.items?.properties !== undefined) {
      out.push(path, ...keyPaths(child.items, `${path}[]`));
    } else {
      out.push(path);
    }
  }
  return out;
}

const docsPages = readdirSync(join(ROOT, 'docs'))
  .filter((f) => f.endsWith('.md'))
  .map((f) => `docs/${f}`);
const userDocs = ['README.md', ...docsPages];

t.test('every firma.toml key is documented in docs/configuration.md', async (t) => {
  const page = read('docs/configuration.md');
  const committed = keyPaths(JSON.parse(read('firma.schema.json')) as SchemaNode);
  const emitted = keyPaths(firmaConfigJsonSchema() as SchemaNode);
  t.ok(committed.length > 50, `found ${committed.length} keys in firma.schema.json`);
  for (const key of new Set([...committed, ...emitted])) {
    t.ok(page.includes(`\`${key}\``), `docs/configuration.md documents \`${key}\``);
  }
});

t.test('every CLI command and option in the usage is documented in docs/commands.md', async (t) => {
  const page = read('docs/commands.md');
  const source = read('src/cli/usage.ts');
  const usage = /const USAGE = `([^`]*)`/.exec(source)?.[1];
  if (usage === undefined) return t.fail('USAGE not found in src/cli/usage.ts');
  const commands = new Set<string>();
  for (const line of usage.split('\n')) {
    const m = /^ {2}firma ([a-z][a-z |]*?)(?:\s{2,}| \[| [A-Z-]|$)/.exec(line);
    if (m?.[1] === undefined) continue;
    // `approvals grants | revoke GRANT_ID` is two commands of one group.
    const [group, ...subs] = m[1].trim().split(' ');
    const alternatives = subs.join(' ').split('|').map((s) => s.trim().split(' ')[0] ?? '').filter((s) => s !== '');
    if (alternatives.length === 0) commands.add(group as string);
    for (const sub of alternatives) commands.add(`${group} ${sub}`);
  }
  t.ok(commands.size >= 15, `found ${commands.size} commands: ${[...commands].join(', ')}`);
  for (const c of commands) t.ok(page.includes(`firma ${c}`), `docs/commands.md documents \`firma ${c}\``);
  const options = new Set(usage.match(/--[a-z][a-z-]*/g) ?? []);
  t.ok(options.size >= 10, `found ${options.size} options`);
  for (const o of options) t.ok(page.includes(`\`${o}`), `docs/commands.md documents \`${o}\``);
  for (const short of usage.match(/(?<=\[)-[a-z](?=[\] ])/g) ?? []) t.ok(page.includes(`\`${short}`), `docs/commands.md documents \`${short}\``);
});

t.test('every metric registered in src/admin/metrics.ts (and llm-metrics.ts) is documented in docs/listeners.md', async (t) => {
  const page = read('docs/listeners.md');
  const names = ['src/admin/metrics.ts', 'src/admin/llm-metrics.ts'].flatMap((f) => [...read(f).matchAll(/name: '([a-z_]+)'/g)].map((m) => m[1] as string));
  t.ok(names.length >= 15, `found ${names.length} metrics`);
  for (const name of names) t.ok(page.includes(`\`${name}\``), `docs/listeners.md documents \`${name}\``);
});

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered. */
function anchorsOf(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (line.startsWith('```')) fenced = !fenced;
    const m = fenced ? null : /^#{1,6} (.+)$/.exec(line);
    if (m?.[1] === undefined) continue;
    const base = m[1]
      .trim()
      .toLowerCase()
      .replace(/[^\p{L}\p{N} _-]/gu, '')
      .replace(/ /g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    anchors.add(n === 0 ? base : `${base}-${n}`);
  }
  return anchors;
}

t.test('every relative link in README.md and docs/*.md points at an existing file and heading', async (t) => {
  for (const file of userDocs) {
    const text = read(file).replace(/```[\s\S]*?```/g, '');
    for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      const href = m[1] as string;
      if (/^[a-z]+:/i.test(href)) continue; // https:, mailto:
      const [path = '', anchor] = href.split('#', 2);
      const target = path === '' ? join(ROOT, file) : resolve(ROOT, dirname(file), path);
      const shown = relative(ROOT, target);
      if (!t.ok(existsSync(target), `${file}: link ${href} → ${shown} exists`)) continue;
      if (anchor !== undefined && anchor !== '' && target.endsWith('.md')) {
        t.ok(anchorsOf(readFileSync(target, 'utf8')).has(anchor), `${file}: link ${href} → heading #${anchor} exists in ${shown}`);
      }
    }
  }
});

t.test('README.md and docs/ stand on their own', async (t) => {
  for (const file of userDocs) {
    const text = read(file);
    t.notOk(text.includes('../shared'), `${file} does not mention ../shared`);
    t.notOk(text.includes('SPEC'), `${file} does not mention SPEC`);
  }
  const readme = read('README.md');
  t.ok(readme.includes('npm start'), 'README.md says `npm start`');
  t.ok(readme.includes('npm test'), 'README.md says `npm test`');
});
