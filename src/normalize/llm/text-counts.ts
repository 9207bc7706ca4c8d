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

/** ASCII byte → class: 0 letter, 1 digit, 2 punctuation, 3 space, 4 newline or tab, 5 other control. */
const ASCII_CLASS = (() => {
  const table = new Uint8Array(128).fill(2);
  for (let c = 0; c < 32; c++) table[c] = 5;
  table[0x7f] = 5;
  for (let c = 0x30; c <= 0x39; c++) table[c] = 1;
  for (let c = 0x41; c <= 0x5a; c++) table[c] = 0;
  for (let c = 0x61; c <= 0x7a; c++) table[c] = 0;
  table[0x20] = 3;
  table[0x09] = 4;
  table[0x0a] = 4;
  table[0x0d] = 4;
  return table;
})();

/** Hex digit byte → value, 255 for a byte that is not one. */
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

export class TextCounts {
  letters = 0;
  words = 0;
  digits = 0;
  punctuation = 0;
  newlines = 0;
  /** Characters of two UTF-8 bytes (accented Latin, Greek, Cyrillic, Hebrew, Arabic). */
  twoByte = 0;
  /** Characters of three UTF-8 bytes (CJK, kana, Hangul, most other scripts, typographic punctuation). */
  threeByte = 0;
  /** Characters of four UTF-8 bytes (emoji, rare CJK). */
  fourByte = 0;
  private inWord = false;

  /** Whether any character was counted. */
  get empty(): boolean {
    return this.letters + this.digits + this.punctuation + this.newlines + this.twoByte + this.threeByte + this.fourByte === 0;
  }

  /** Output tokens the counted text is estimated at (docs/llm.md "Estimated usage"). */
  estimateTokens(): number {
    const tokens = this.letters / 8 + this.words / 2 + this.digits + this.punctuation * 0.6 + this.newlines * 0.5
      + this.twoByte * 0.3 + this.threeByte * 0.75 + this.fourByte;
    return Math.round(tokens);
  }

  /** Count one code unit or code point given as a number (below 0x80: its ASCII class). */
  private codePoint(c: number): void {
    if (c < 0x80) {
      this.ascii(c);
      return;
    }
    this.inWord = false;
    if (c < 0x800) this.twoByte++;
    else if (c >= 0xd800 && c <= 0xdbff) this.fourByte++; // a high surrogate; its low half is skipped
    else if (c >= 0xdc00 && c <= 0xdfff) return;
    else if (c < 0x10000) this.threeByte++;
    else this.fourByte++;
  }

  private ascii(c: number): void {
    const cls = ASCII_CLASS[c] as number;
    if (cls === 0) {
      this.letters++;
      if (!this.inWord) this.words++;
      this.inWord = true;
      return;
    }
    this.inWord = false;
    if (cls === 1) this.digits++;
    else if (cls === 2) this.punctuation++;
    else if (cls === 4) this.newlines++;
  }

  /** Count a decoded string (a JSON body's message text). */
  addText(text: string): void {
    for (let i = 0; i < text.length; i++) this.codePoint(text.charCodeAt(i));
  }

  /**
   * Count the characters of the JSON string whose first byte (after its opening quote) is at `start`,
   * reading escapes as the characters they stand for. Returns the index just past the closing quote, or
   * `end` when the string does not close before it.
   */
  addJsonString(buf: Buffer, start: number, end: number): number {
    let i = start;
    while (i < end) {
      const b = buf[i] as number;
      if (b === QUOTE) return i + 1;
      if (b < 0x80) {
        if (b !== BACKSLASH) {
          this.ascii(b);
          i++;
          continue;
        }
        const e = i + 1 < end ? (buf[i + 1] as number) : 0;
        if (e === 0x75 && i + 5 < end) { // \uXXXX
          const unit = ((HEX[buf[i + 2] as number] as number) << 12) | ((HEX[buf[i + 3] as number] as number) << 8)
            | ((HEX[buf[i + 4] as number] as number) << 4) | (HEX[buf[i + 5] as number] as number);
          this.codePoint(unit > 0xffff ? 0x3f : unit);
          i += 6;
          continue;
        }
        this.ascii(e === 0x6e || e === 0x74 || e === 0x72 ? 0x0a : 0x2e); // \n \t \r count as newlines, \" \\ \/ as punctuation
        i += 2;
        continue;
      }
      this.inWord = false;
      if (b >= 0xf0) {
        this.fourByte++;
        i += 4;
      } else if (b >= 0xe0) {
        this.threeByte++;
        i += 3;
      } else if (b >= 0xc0) {
        this.twoByte++;
        i += 2;
      } else {
        i++; // a stray continuation byte
      }
    }
    return end;
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
const TEXT_KEYS = ['content', 'refusal', 'arguments', 'text', 'partial_json', 'thinking'].map((k) => Buffer.from(k, 'latin1'));

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
