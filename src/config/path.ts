/**
 * Key paths into a TOML document: table keys are strings, array indices are numbers.
 * Shared by the schema DSL (where an issue is) and the position scanner (where that is in the text).
 */
export type PathSegment = string | number;
export type KeyPath = readonly PathSegment[];

/** A stable map key for a path (distinguishes the key "0" from the index 0). */
export function pathKey(path: KeyPath): string {
  return JSON.stringify(path);
}

const BARE_KEY = /^[A-Za-z0-9_-]+$/;

/** Human form: `sidecar.connector.hosts[1].rps`; keys that are not bare are quoted: `a."b c"`. */
export function formatKeyPath(path: KeyPath): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') {
      out += `[${seg}]`;
      continue;
    }
    const text = BARE_KEY.test(seg) ? seg : JSON.stringify(seg);
    out += out === '' ? text : `.${text}`;
  }
  return out;
}
