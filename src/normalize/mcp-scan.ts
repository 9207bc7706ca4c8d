/**
 * Repeated keys in a JSON-RPC body (docs/mcp.md "Ambiguity"). `JSON.parse` keeps the last of a repeated
 * key; an MCP server in another language may keep the first. So a key the sidecar reads that appears
 * twice in the same object is refused, never resolved: in a message object (`method`, `id`, `params`…),
 * in its `params` (`name`, `arguments`), and on the path of an opted-in argument field.
 *
 * A linear scan of text `JSON.parse` already accepted. Strings are skipped with `indexOf`; only keys of
 * the objects above are decoded.
 */

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

type Role = 'root' | 'batch' | 'message' | 'params' | 'arguments' | 'skip';

interface Frame {
  readonly array: boolean;
  readonly role: Role;
  /** For objects under `arguments`: the dotted path of this object ('' = arguments itself). */
  readonly path: string;
  /** The message this frame belongs to. */
  readonly message: number;
  readonly keys: Set<string> | null;
  expectKey: boolean;
  lastKey: string | null;
}

export interface RepeatedKey {
  /** Which message of the body (0 for a single message). */
  readonly message: number;
  /** `method`, `params.name`, `params.arguments.project`… */
  readonly key: string;
}

/** End index (the closing quote) of the string that opens at `i`. */
function stringEnd(text: string, i: number): number {
  let j = i;
  for (;;) {
    j = text.indexOf('"', j + 1);
    if (j === -1) return text.length;
    let k = j - 1;
    while (text.charCodeAt(k) === BACKSLASH) k--;
    // An even number of backslashes before the quote: it closes the string.
    if ((j - 1 - k) % 2 === 0) return j;
  }
}

/**
 * The first repeated key the sidecar reads, or null. `argumentPaths(message)` gives the opted-in
 * argument fields of that message and every prefix of them (`issue`, `issue.labels`).
 */
export function repeatedMcpKey(text: string, argumentPaths: (message: number) => ReadonlySet<string>): RepeatedKey | null {
  const stack: Frame[] = [];
  let messages = 0;
  const join = (base: string, key: string): string => (base === '' ? key : `${base}.${key}`);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      const array = c === 0x5b;
      const top = stack[stack.length - 1];
      let role: Role = 'skip';
      let path = '';
      let message = top?.message ?? 0;
      if (top === undefined) role = array ? 'batch' : 'message';
      else if (top.role === 'batch' && !array) {
        role = 'message';
        message = messages++;
      } else if (!top.array && top.lastKey !== null) {
        if (top.role === 'message' && top.lastKey === 'params') role = 'params';
        // Arguments nobody opted into are not read, so their keys are not tracked either.
        else if (top.role === 'params' && top.lastKey === 'arguments') role = argumentPaths(message).size > 0 ? 'arguments' : 'skip';
        else if (top.role === 'arguments') {
          const child = join(top.path, top.lastKey);
          if (argumentPaths(message).has(child)) {
            role = 'arguments';
            path = child;
          }
        }
      }
      if (top === undefined && !array) messages = 1;
      if (array) role = role === 'batch' ? 'batch' : 'skip';
      stack.push({ array, role, path, message, keys: role === 'skip' || array ? null : new Set(), expectKey: !array, lastKey: null });
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
    } else if (c === 0x2c /* , */) {
      const top = stack[stack.length - 1];
      if (top !== undefined && !top.array) top.expectKey = true;
    } else if (c === QUOTE) {
      const j = stringEnd(text, i);
      const top = stack[stack.length - 1];
      if (top !== undefined && !top.array && top.expectKey) {
        top.expectKey = false;
        if (top.keys !== null) {
          const raw = text.slice(i + 1, j);
          const key = raw.includes('\\') ? (JSON.parse(text.slice(i, j + 1)) as string) : raw;
          const where = top.role === 'message' ? key : top.role === 'params' ? `params.${key}` : `params.arguments.${join(top.path, key)}`;
          const counts = top.role !== 'arguments' || argumentPaths(top.message).has(join(top.path, key));
          if (counts) {
            if (top.keys.has(key)) return { message: top.message, key: where };
            top.keys.add(key);
          }
          top.lastKey = key;
        }
      }
      i = j;
    }
  }
  return null;
}
