import t from 'tap';
import { USAGE_REASONS } from '../../../src/normalize/llm/usage-draft.js';
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FIRMA_ERROR_CODES, type FirmaErrorCodeInfo } from '../../../src/core/errors.js';
import { AUDIT_ONLY_REASONS, REPLY_REASONS, type ReplyReasonInfo } from '../../../src/core/reasons.js';

/**
 * The error and reason catalogues (src/core/errors.ts, src/core/reasons.ts) against the source and
 * docs/errors.md: every code the source raises or replies with is catalogued, every catalogued code is
 * still used somewhere, and the page lists each one as the catalogue says. Plain regexes over the
 * source text; each shape below is one way the source writes a code.
 */

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const CATALOGUES = new Set(['src/core/errors.ts', 'src/core/reasons.ts']);

interface Source {
  readonly path: string;
  readonly text: string;
}

function tsFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...tsFiles(full));
    else if (entry.name.endsWith('.ts')) out.push(full);
  }
  return out.sort();
}

const sources: Source[] = tsFiles(join(ROOT, 'src'))
  .map((f) => ({ path: relative(ROOT, f).split('\\').join('/'), text: readFileSync(f, 'utf8') }))
  .filter((s) => !CATALOGUES.has(s.path));

/** code → the places (`file:line`) it was found. */
type Found = Map<string, string[]>;

function add(found: Found, code: string, src: Source, index: number): void {
  const where = `${src.path}:${src.text.slice(0, index).split('\n').length}`;
  const list = found.get(code);
  if (list === undefined) found.set(code, [where]);
  else if (!list.includes(where)) list.push(where);
}

function scan(found: Found, pattern: RegExp, pick: (m: RegExpExecArray, src: Source) => readonly string[] = (m) => [m[1] as string]): void {
  for (const src of sources) {
    for (const m of src.text.matchAll(new RegExp(pattern, 'g'))) {
      for (const code of pick(m as RegExpExecArray, src)) add(found, code, src, m.index ?? 0);
    }
  }
}

const SNAKE = /'([a-z][a-z0-9_]*)'/g;
const snakeLiterals = (text: string): string[] => [...text.matchAll(SNAKE)].map((m) => m[1] as string);

// FirmaError codes.

/** Environment variable names, not error codes. */
const NOT_ERROR_CODES = new Set(['FIRMA_CONFIG', 'FIRMA_ADMIN_TOKEN']);

const errorCodes: Found = new Map();
// Any quoted FIRMA_* literal: direct FirmaError/VaultError/AuditKeyError calls, `super('…')`, code unions,
// `export const X = 'FIRMA_…'` constants, a CredentialError's source code, fallbacks.
scan(errorCodes, /'(FIRMA_[A-Z0-9_]*[A-Z0-9])'/, (m) => (NOT_ERROR_CODES.has(m[1] as string) ? [] : [m[1] as string]));
// Whatever else is given to FirmaError or, in a subclass, to super(): a literal (FIRMA_ or not), or a
// constant of the same file; anything computed at run time is reported as such.
scan(errorCodes, /\b(?:new FirmaError|super)\(\s*(?:'([^']*)'|([A-Za-z_$][\w$]*)\s*,)/, (m, src) => {
  if (m[1] !== undefined) return m[1].startsWith('FIRMA_') ? [] : [m[1]]; // FIRMA_ literals: scanned above
  if (m[0].startsWith('super') && !/extends FirmaError\b/.test(src.text)) return [];
  const name = m[2] as string;
  // A typed constructor parameter (`code: VaultErrorCode`): its literals were scanned above.
  if (new RegExp(`constructor\\(\\s*${name}:`).test(src.text)) return [];
  const constant = new RegExp(`\\bconst ${name}\\s*=\\s*'([^']+)'`).exec(src.text);
  return [constant?.[1] ?? `<${name}: computed at run time>`];
});

/** `code at file:line, …` for each found code `keep` selects. */
function listed(found: Found, keep: (code: string) => boolean): string[] {
  return [...found].filter(([code]) => keep(code)).map(([code, where]) => `${code} at ${where.join(', ')}`);
}

t.test('every FirmaError code in src is catalogued', async (t) => {
  t.strictSame(listed(errorCodes, (c) => !Object.hasOwn(FIRMA_ERROR_CODES, c)), [], 'codes missing from FIRMA_ERROR_CODES (src/core/errors.ts)');
});

t.test('every catalogued FirmaError code is still raised somewhere', async (t) => {
  const stale = Object.keys(FIRMA_ERROR_CODES).filter((c) => !errorCodes.has(c));
  t.strictSame(stale, [], 'codes in FIRMA_ERROR_CODES that no file in src uses (remove them, and their rows in docs/errors.md)');
});

t.test('an error code\'s reply is sent with that status', async (t) => {
  const wrong: string[] = [];
  for (const [code, info] of Object.entries(FIRMA_ERROR_CODES) as Array<[string, FirmaErrorCodeInfo]>) {
    for (const reason of info.reply?.reasons ?? []) {
      const r: ReplyReasonInfo = REPLY_REASONS[reason];
      if (info.reply !== null && !r.statuses.includes(info.reply.status)) wrong.push(`${code}: ${reason} is never sent with ${info.reply.status}`);
    }
  }
  t.strictSame(wrong, []);
});

// Reply reasons.

/**
 * Reason literals that never reach an agent nor the audit log: the policy engine's own word for an allow
 * (the audit says `allowed`), and credential matching's reasons (for log lines).
 */
const INTERNAL_REASONS = new Set(['policy_allow', 'matched', 'no_entry', 'port_mismatch', 'plaintext_refused']);
const STAGES: ReadonlySet<string> = new Set(Object.values(REPLY_REASONS).flatMap((r: ReplyReasonInfo) => r.stages));

const reasons: Found = new Map();
// `reason: 'x'`, `reason: a ? 'x' : 'y'`, `reason = 'x'`, `reason: 'x' | 'y';` in types: the literals of the
// value, up to its end on that line. Literals it is compared with (`typeof r === 'string'`,
// `action === 'expired'`) and keys read (`b['reason']`) are not values.
scan(reasons, /\breason\??\s*(?::|=(?!=))\s*((?:'[^'\n]*'|[^,;(){}\n'])+)/, (m) =>
  snakeLiterals((m[1] as string).replace(/[!=]==\s*'[^']*'/g, '').replace(/\['[^']*'\]/g, '')));
// `x.reason === 'timeout'`: a reason compared with (not `typeof x.reason === 'string'`).
scan(reasons, /(?<!typeof\s+[\w.]*)\breason\s*[!=]==\s*'([a-z][a-z0-9_]*)'/);
// Union types of reasons: `type CapabilityDenyReason = | 'token_missing' | …;`, and the connector error
// kinds, which are the connector's reply reasons.
scan(reasons, /\btype (?:\w*Reason|ConnectorErrorKind) =([^;]+);/, (m) => snakeLiterals(m[1] as string));
// A stage then a reason: `this.#deny(envelope, 'mapping', 'unclassified', …)`, `refuse(…, 'approval', 'body_incomplete', …)`.
scan(reasons, /(?:#deny|\brefuse)\([^;]*?'([a-z]+)',\s*'([a-z][a-z0-9_]*)'/, (m) => (STAGES.has(m[1] as string) ? [m[2] as string] : []));
// Helpers that take the reason first: `badRequest('bad_host', …)`, capability's `deny('token_expired', …)`,
// a blind tunnel's `refuse = 'not_tls'`.
scan(reasons, /\b(?:badRequest|deny)\(\s*'([a-z][a-z0-9_]*)'/);
scan(reasons, /\brefuse\s*=\s*'([a-z][a-z0-9_]*)'/);
// The approval queue's `denied(id, 'approval_timeout', …)`.
scan(reasons, /\bdenied\([^,()]+,\s*'([a-z][a-z0-9_]*)'/);

/** Why an LLM response's usage could not be read: outcome `usage_unread` codes, catalogued on their own (docs/llm.md "Reason codes"). */
const USAGE_UNREAD: ReadonlySet<string> = new Set(USAGE_REASONS);

t.test('every reason in src is catalogued', async (t) => {
  const known = (r: string): boolean => Object.hasOwn(REPLY_REASONS, r) || Object.hasOwn(AUDIT_ONLY_REASONS, r) || INTERNAL_REASONS.has(r) || USAGE_UNREAD.has(r);
  t.strictSame(listed(reasons, (r) => !known(r)), [], 'reasons missing from REPLY_REASONS / AUDIT_ONLY_REASONS (src/core/reasons.ts)');
});

t.test('every catalogued reason is still used somewhere', async (t) => {
  const stale = [...Object.keys(REPLY_REASONS), ...INTERNAL_REASONS].filter((r) => !reasons.has(r));
  // Allowed requests' reasons are derived (`d.approval.via`), so any occurrence of the literal counts.
  stale.push(...Object.keys(AUDIT_ONLY_REASONS).filter((r) => !sources.some((s) => s.text.includes(`'${r}'`))));
  t.strictSame(stale, [], 'catalogued reasons that no file in src gives (remove them, and their rows in docs/errors.md)');
});

// docs/errors.md.

const DELIVERY: Readonly<Record<ReplyReasonInfo['delivery'], string>> = {
  json: 'JSON',
  json_or_closed: 'JSON or closed',
  closed: 'closed',
};

/** The row docs/errors.md has for a reply reason, under the heading of each of its stages. */
function reasonRow(reason: string, r: ReplyReasonInfo): string {
  return `| \`${reason}\` | ${r.statuses.join(', ')} | ${r.decision} | ${DELIVERY[r.delivery]} | ${r.meaning} |`;
}

function auditReasonRow(reason: string, r: { readonly event: string; readonly meaning: string }): string {
  return `| \`${reason}\` | ${r.event} | ${r.meaning} |`;
}

function errorCodeRow(code: string, e: FirmaErrorCodeInfo): string {
  const reply = e.reply === null ? '—' : `${e.reply.status} ${e.reply.reasons.map((r) => `\`${r}\``).join(', ')}`;
  return `| \`${code}\` | ${e.meaning} | ${reply} | ${e.effect} |`;
}

/** Table rows of the page, by the heading (`## …` or `### …`) they are under. */
function rowsByHeading(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let heading = '';
  for (const line of text.split('\n')) {
    if (/^#{2,3} /.test(line)) {
      heading = line.replace(/^#+ /, '').trim();
      out.set(heading, out.get(heading) ?? []);
    } else if (line.startsWith('| `')) {
      out.get(heading)?.push(line.trimEnd());
    }
  }
  return out;
}

t.test('catalogue texts fit in a markdown table cell', async (t) => {
  const texts: Array<[string, string]> = [
    ...Object.entries(REPLY_REASONS).map(([k, r]): [string, string] => [k, r.meaning]),
    ...Object.entries(AUDIT_ONLY_REASONS).map(([k, r]): [string, string] => [k, r.meaning]),
    ...Object.entries(FIRMA_ERROR_CODES).flatMap(([k, e]): Array<[string, string]> => [[k, e.meaning], [k, e.effect]]),
  ];
  t.strictSame(texts.filter(([, text]) => /[|\n]/.test(text)), [], 'texts with a | or a line break');
});

t.test('docs/errors.md lists every code as the catalogues say', async (t) => {
  const rows = rowsByHeading(readFileSync(join(ROOT, 'docs', 'errors.md'), 'utf8'));
  /** heading → the rows the catalogues give for it. */
  const expected = new Map<string, string[]>();
  const expect = (heading: string, row: string): void => void expected.set(heading, [...(expected.get(heading) ?? []), row]);
  for (const [reason, r] of Object.entries(REPLY_REASONS) as Array<[string, ReplyReasonInfo]>) {
    for (const stage of r.stages) expect(`Stage \`${stage}\``, reasonRow(reason, r));
  }
  for (const [reason, r] of Object.entries(AUDIT_ONLY_REASONS)) expect('Reasons only in the audit log', auditReasonRow(reason, r));
  for (const [code, e] of Object.entries(FIRMA_ERROR_CODES) as Array<[string, FirmaErrorCodeInfo]>) expect('FirmaError codes', errorCodeRow(code, e));

  const missing: string[] = [];
  for (const [heading, list] of expected) {
    for (const row of list) if (!(rows.get(heading) ?? []).includes(row)) missing.push(`under "${heading}": ${row}`);
  }
  t.strictSame(missing, [], 'rows docs/errors.md needs (paste them under their heading)');

  // Rows of the other tables (exit statuses) are not checked; a row that names a catalogued code, or
  // sits in a catalogue's table, must be one the catalogue gives.
  const extra: string[] = [];
  for (const [heading, list] of rows) {
    for (const row of list) {
      const code = /^\| `([^`]+)` \|/.exec(row)?.[1] ?? '';
      const catalogued = Object.hasOwn(REPLY_REASONS, code) || Object.hasOwn(AUDIT_ONLY_REASONS, code) || Object.hasOwn(FIRMA_ERROR_CODES, code);
      if ((catalogued || expected.has(heading)) && !(expected.get(heading) ?? []).includes(row)) extra.push(`under "${heading}": ${row}`);
    }
  }
  t.strictSame(extra, [], 'rows in docs/errors.md that the catalogues do not give (stale or edited by hand)');
});
