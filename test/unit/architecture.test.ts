import t from 'tap';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { REPO } from '../helpers/sidecar.js';

// The shape of the house (docs/architecture.md "Import rules"), checked on the source text: which
// folder may import which, no cycles, no file over 400 lines, and only the pipeline issues Allowed.

const SRC = join(REPO, 'src');
const STAGES = ['normalize', 'enforce', 'connector', 'audit'];
/** Folder → the folders its files may import (besides their own). `.` is src/sidecar.ts. */
const MAY_IMPORT: Readonly<Record<string, readonly string[]>> = {
  core: [],
  config: ['core'],
  ...Object.fromEntries(STAGES.map((s) => [s, ['config', 'core']])),
  pipeline: [...STAGES, 'config', 'core'],
  intercept: ['pipeline', 'config', 'core'],
  admin: ['enforce', 'config', 'core'],
  reload: ['pipeline', ...STAGES, 'config', 'core'],
  '.': ['intercept', 'pipeline', ...STAGES, 'admin', 'reload', 'config', 'core'],
  cli: ['.', 'intercept', 'pipeline', ...STAGES, 'admin', 'reload', 'config', 'core'],
};
const MAX_LINES = 400;

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return sourceFiles(p);
    return name.endsWith('.ts') ? [p] : [];
  });
}

/** `src/a/b/c.ts` → `a` (the top folder), `src/x.ts` → `.`. */
function folderOf(file: string): string {
  const rel = relative(SRC, file);
  const slash = rel.indexOf('/');
  return slash === -1 ? '.' : rel.slice(0, slash);
}

const IMPORT = /(?:^|\n)\s*(?:import|export)\s[^'";]*?from\s*['"](\.[^'"]+)['"]|import\(\s*['"](\.[^'"]+)['"]\s*\)/g;

interface Edge {
  readonly from: string;
  readonly to: string;
  readonly line: string;
}

function edgesOf(file: string, text: string): Edge[] {
  const edges: Edge[] = [];
  for (const m of text.matchAll(IMPORT)) {
    const spec = (m[1] ?? m[2]) as string;
    const to = normalize(join(dirname(file), spec.replace(/\.js$/, '.ts')));
    edges.push({ from: file, to, line: m[0].trim().split('\n')[0] as string });
  }
  return edges;
}

const files = sourceFiles(SRC);
const texts = new Map(files.map((f) => [f, readFileSync(f, 'utf8')]));
const edges = files.flatMap((f) => edgesOf(f, texts.get(f) as string));

t.test('every import points at a file that exists (the checker reads them right)', async (t) => {
  t.ok(edges.length > 200, `${edges.length} imports read`);
  t.same(edges.filter((e) => !texts.has(e.to)).map((e) => `${relative(REPO, e.from)}: ${e.line}`), []);
});

t.test('arrows point down: each folder imports only the folders below it', async (t) => {
  const bad = edges
    .filter((e) => {
      const from = folderOf(e.from);
      const to = folderOf(e.to);
      return from !== to && !(MAY_IMPORT[from] ?? []).includes(to);
    })
    .map((e) => `${relative(REPO, e.from)} → ${relative(REPO, e.to)}`);
  t.same(bad, [], 'no forbidden import');
  t.ok(Object.keys(MAY_IMPORT).every((f) => f === '.' || texts.has(join(SRC, f)) || files.some((x) => folderOf(x) === f)), 'every folder in the rules exists');
  t.same(files.map(folderOf).filter((f) => MAY_IMPORT[f] === undefined), [], 'every folder has rules');
});

t.test('the rules themselves catch what they must (the checker can fail)', async (t) => {
  const probe = (from: string, to: string): boolean => from === to || (MAY_IMPORT[from] ?? []).includes(to);
  t.notOk(probe('connector', 'enforce'), 'connector → enforce is forbidden');
  t.notOk(probe('enforce', 'connector'), 'enforce → connector is forbidden');
  t.notOk(probe('normalize', 'connector'), 'normalize → connector is forbidden');
  for (const s of ['normalize', 'enforce', 'connector', 'pipeline', 'intercept']) t.notOk(probe('audit', s), `audit → ${s} is forbidden`);
  for (const f of ['pipeline', ...STAGES, 'admin', 'reload', 'config', 'core']) t.notOk(probe(f, 'intercept'), `${f} → intercept is forbidden`);
  t.notOk(probe('core', 'config'), 'core imports nothing else');
  const fake = edgesOf(join(SRC, 'connector', 'x.ts'), "import { a } from '../enforce/enforcer.js';\nexport type { B } from './y.js';\nconst c = await import('../audit/record.js');");
  t.same(fake.map((e) => relative(SRC, e.to)), ['enforce/enforcer.ts', 'connector/y.ts', 'audit/record.ts'], 'import, export-from and dynamic import are all read');
});

t.test('no import cycles', async (t) => {
  const out = new Map<string, string[]>();
  for (const e of edges) out.set(e.from, [...(out.get(e.from) ?? []), e.to]);
  const state = new Map<string, 'open' | 'done'>();
  const cycles: string[] = [];
  const visit = (f: string, path: string[]): void => {
    state.set(f, 'open');
    for (const to of out.get(f) ?? []) {
      if (state.get(to) === 'open') cycles.push([...path.slice(path.indexOf(to)), to].map((p) => relative(SRC, p)).join(' → '));
      else if (state.get(to) === undefined) visit(to, [...path, to]);
    }
    state.set(f, 'done');
  };
  for (const f of files) if (state.get(f) === undefined) visit(f, [f]);
  t.same(cycles, [], 'no file reaches itself through its imports');
});

t.test(`no source file over ${MAX_LINES} lines`, async (t) => {
  const long = files
    .map((f) => [relative(REPO, f), (texts.get(f) as string).split('\n').length - 1] as const)
    .filter(([, n]) => n > MAX_LINES);
  t.same(long, []);
});

t.test('only the pipeline issues the Allowed the connector accepts', async (t) => {
  const issuers = files.filter((f) => /\bissueAllowed\b/.test(texts.get(f) as string)).map((f) => relative(SRC, f)).sort();
  t.same(issuers.filter((f) => !f.startsWith('pipeline/') && f !== 'core/decision.ts'), [], 'issueAllowed appears only in core/decision.ts and src/pipeline/');
  t.ok(issuers.some((f) => f.startsWith('pipeline/')), 'the pipeline does issue it');
  const connector = files.filter((f) => folderOf(f) === 'connector');
  t.ok(connector.some((f) => /\bisIssuedAllowed\b/.test(texts.get(f) as string)), 'the connector checks it at run time');
});

t.test('every src/ path the docs and comments name exists (a move updates them)', async (t) => {
  const docs = [join(REPO, 'README.md'), join(REPO, 'bench', 'README.md'), ...readdirSync(join(REPO, 'docs')).map((f) => join(REPO, 'docs', f))];
  const named = [...docs, ...files].flatMap((f) => [...readFileSync(f, 'utf8').matchAll(/\bsrc\/[A-Za-z0-9_./-]*[A-Za-z0-9_/]/g)].map((m) => [relative(REPO, f), m[0]] as const));
  t.ok(named.length > 20, `${named.length} mentions read`);
  const missing = named.filter(([, p]) => {
    try {
      statSync(join(REPO, p.replace(/\.js$/, '.ts')));
      return false;
    } catch {
      return true;
    }
  });
  t.same(missing.map(([f, p]) => `${f}: ${p}`), []);
});

t.test('every docs/ section a source comment cites is a heading of that page', async (t) => {
  const cited = files.flatMap((f) => [...(texts.get(f) as string).matchAll(/docs\/([a-z-]+\.md) "([^"]+)"/g)].map((m) => [relative(REPO, f), m[1] as string, m[2] as string] as const));
  t.ok(cited.length >= 10, `${cited.length} citations read`);
  const headings = new Map<string, string[]>();
  const missing = cited.filter(([, page, section]) => {
    let list = headings.get(page);
    if (list === undefined) {
      list = readFileSync(join(REPO, 'docs', page), 'utf8').split('\n').filter((l) => /^#{1,4} /.test(l)).map((l) => l.replace(/^#+ /, ''));
      headings.set(page, list);
    }
    return !list.some((h) => h.startsWith(section));
  });
  t.same(missing.map(([f, page, section]) => `${f}: docs/${page} "${section}"`), []);
});
