/**
 * Counts of generated text by character class, and the token estimate made from them when a response
 * carries no usage (docs/llm.md "Estimated usage"). Only counts are kept while a stream passes, never the
 * text: a word split across two deltas is still one word because the counter remembers whether the last
 * character was a letter.
 *
 * The weights were fitted against OpenAI's o200k_base tokenizer on English, code, JSON, Chinese,
 * Japanese, Russian and Spanish samples (bench/README.md "LLM usage"): within 5 % of the real count on
 * each of those kinds of text, where 4 characters a token is off by 14 % on English and 44 % on Chinese.
 */

/** Where each class is counted in `TextCounts.n`. */
const LETTER = 0;
const DIGIT = 1;
const PUNCTUATION = 2;
const SPACE = 3;
const NEWLINE = 4;
const CONTROL = 5;
const TWO_BYTE = 6;
const THREE_BYTE = 7;
const FOUR_BYTE = 8;
const WORD = 9;

/** ASCII byte → its class. */
const ASCII_CLASS = (() => {
  const table = new Uint8Array(128).fill(PUNCTUATION);
  for (let c = 0; c < 32; c++) table[c] = CONTROL;
  table[0x7f] = CONTROL;
  for (let c = 0x30; c <= 0x39; c++) table[c] = DIGIT;
  for (let c = 0x41; c <= 0x5a; c++) table[c] = LETTER;
  for (let c = 0x61; c <= 0x7a; c++) table[c] = LETTER;
  table[0x20] = SPACE;
  table[0x09] = NEWLINE;
  table[0x0a] = NEWLINE;
  table[0x0d] = NEWLINE;
  return table;
})();

/** Tokens per character of each class (o200k_base, bench/README.md "LLM usage"); a word adds half a token. */
const WEIGHTS = [1 / 8, 1, 0.6, 0, 0.5, 0, 0.3, 0.75, 1, 0.5];

/** Hex digit byte → value (255 for a byte that is not one). */
const HEX = (() => {
  const table = new Uint8Array(256).fill(255);
  for (let c = 0; c < 10; c++) table[0x30 + c] = c;
  for (let c = 0; c < 6; c++) {
    table[0x41 + c] = 10 + c;
    table[0x61 + c] = 10 + c;
  }
  return table;
})();

const BACKSLASH = 0x5c;
const QUOTE = 0x22;

/** The class of a UTF-16 code unit or code point at or above 0x80; -1 for a low surrogate (its pair was counted). */
function wideClass(c: number): number {
  if (c < 0x800) return TWO_BYTE;
  if (c >= 0xd800 && c <= 0xdbff) return FOUR_BYTE; // a high surrogate stands for its pair
  if (c >= 0xdc00 && c <= 0xdfff) return -1;
  return c < 0x10000 ? THREE_BYTE : FOUR_BYTE;
}

export class TextCounts {
  /**
   * Characters per class: letters, digits, punctuation, spaces, newlines and tabs, other controls,
   * characters of two, three and four UTF-8 bytes (Cyrillic and accented Latin; CJK, kana, Hangul and
   * typographic punctuation; emoji), then words (runs of ASCII letters).
   */
  readonly n = new Float64Array(10);
  /** The last character counted was an ASCII letter: a word may go on in the next delta. */
  private inWord = false;

  /** Whether nothing but blanks was counted. */
  get empty(): boolean {
    const n = this.n;
    return n[LETTER] === 0 && n[DIGIT] === 0 && n[PUNCTUATION] === 0 && n[NEWLINE] === 0 && n[TWO_BYTE] === 0 && n[THREE_BYTE] === 0 && n[FOUR_BYTE] === 0;
  }

  /** Output tokens the counted text is estimated at (docs/llm.md "Estimated usage"). */
  estimateTokens(): number {
    let tokens = 0;
    for (let i = 0; i < WEIGHTS.length; i++) tokens += (this.n[i] as number) * (WEIGHTS[i] as number);
    return Math.round(tokens);
  }

  /** Count a decoded string (a JSON body's message text). */
  addText(text: string): void {
    const n = this.n;
    let inWord = this.inWord;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      const cls = c < 0x80 ? (ASCII_CLASS[c] as number) : wideClass(c);
      if (cls === -1) continue;
      n[cls] = (n[cls] as number) + 1;
      if (cls === LETTER) {
        if (!inWord) n[WORD] = (n[WORD] as number) + 1;
        inWord = true;
      } else {
        inWord = false;
      }
    }
    this.inWord = inWord;
  }

  /**
   * Count the characters of the JSON string whose first byte (after its opening quote) is at `start`,
   * reading escapes as the characters they stand for. Returns the index just past the closing quote, or
   * `end` when the string does not close before it.
   */
  addJsonString(buf: Buffer, start: number, end: number): number {
    const n = this.n;
    let inWord = this.inWord;
    let i = start;
    let closed = -1;
    while (i < end) {
      const b = buf[i] as number;
      let cls: number;
      if (b < 0x80) {
        if (b === QUOTE) {
          closed = i + 1;
          break;
        }
        if (b !== BACKSLASH) {
          cls = ASCII_CLASS[b] as number;
          i++;
        } else {
          const e = i + 1 < end ? (buf[i + 1] as number) : 0;
          if (e === 0x75 && i + 5 < end) { // \uXXXX
            const unit = ((HEX[buf[i + 2] as number] as number) << 12) | ((HEX[buf[i + 3] as number] as number) << 8)
              | ((HEX[buf[i + 4] as number] as number) << 4) | (HEX[buf[i + 5] as number] as number);
            cls = unit > 0xffff ? PUNCTUATION : unit < 0x80 ? (ASCII_CLASS[unit] as number) : wideClass(unit);
            i += 6;
          } else {
            cls = e === 0x6e || e === 0x74 || e === 0x72 ? NEWLINE : PUNCTUATION; // \n \t \r; \" \\ \/ \b \f
            i += 2;
          }
        }
      } else if (b >= 0xf0) {
        cls = FOUR_BYTE;
        i += 4;
      } else if (b >= 0xe0) {
        cls = THREE_BYTE;
        i += 3;
      } else if (b >= 0xc0) {
        cls = TWO_BYTE;
        i += 2;
      } else {
        i++; // a stray continuation byte
        continue;
      }
      if (cls === -1) continue;
      n[cls] = (n[cls] as number) + 1;
      if (cls === LETTER) {
        if (!inWord) n[WORD] = (n[WORD] as number) + 1;
        inWord = true;
      } else {
        inWord = false;
      }
    }
    this.inWord = inWord;
    return closed === -1 ? end : closed;
  }
}

const OPEN = 0x7b;
const CLOSE = 0x7d;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
const COLON = 0x3a;

/**
 * The keys whose string values are generated text inside a stream's delta object: Chat Completions
 * `content`, `refusal`, `tool_calls[].function.arguments`; Anthropic `text`, `partial_json`, `thinking`.
 */
const TEXT_KEYS: ReadonlyArray<readonly number[]> = ['content', 'refusal', 'arguments', 'text', 'partial_json', 'thinking'].map((k) => Array.from(Buffer.from(k, 'latin1')));

function isTextKey(buf: Buffer, start: number, end: number): boolean {
  const length = end - start;
  for (const key of TEXT_KEYS) {
    if (key.length !== length) continue;
    let i = 0;
    while (i < length && buf[start + i] === key[i]) i++;
    if (i === length) return true;
  }
  return false;
}

function isBlank(b: number): boolean {
  return b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d;
}

/**
 * Count the text strings of the delta object opening at `open` (nested ones too: a tool call's
 * arguments), skipping every other value. Returns the index just past the object, or `end`.
 */
export function countDeltaText(buf: Buffer, open: number, end: number, text: TextCounts): number {
  let depth = 0;
  let i = open;
  while (i < end) {
    const b = buf[i] as number;
    if (b === QUOTE) {
      const keyStart = i + 1;
      let close = keyStart;
      while (close < end && buf[close] !== QUOTE) close += buf[close] === BACKSLASH ? 2 : 1;
      if (close >= end) return end;
      i = close + 1;
      while (i < end && isBlank(buf[i] as number)) i++;
      if (buf[i] !== COLON) continue; // a value, not a key
      i++;
      while (i < end && isBlank(buf[i] as number)) i++;
      if (buf[i] === QUOTE && isTextKey(buf, keyStart, close)) i = text.addJsonString(buf, i + 1, end);
      continue;
    }
    if (b === OPEN || b === OPEN_ARRAY) depth++;
    else if ((b === CLOSE || b === CLOSE_ARRAY) && --depth === 0) return i + 1;
    i++;
  }
  return end;
}
