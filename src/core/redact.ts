/**
 * `path` + redacted `query`: keys kept (they say what was asked), values replaced by `REDACTED` (they may
 * carry API keys or personal data). `query` is the raw text after `?`, without it; null or '' → no `?`.
 * A key without `=` stays bare; empty values are redacted too so their presence leaks no information.
 */
export function redactQuery(path: string, query: string | null): string {
  if (query === null || query === '') return path;
  const parts = query.split('&');
  let out = '';
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i] ?? '';
    const eq = p.indexOf('=');
    out += (i === 0 ? '' : '&') + (eq < 0 ? p : `${p.slice(0, eq)}=REDACTED`);
  }
  return `${path}?${out}`;
}
