import { chainHash } from './chain.js';
import { canonicalEventJson } from './event-json.js';
import type { SealedBody } from './events.js';
import type { HashSigner } from './signer.js';
import type { WriteQueue } from './write-queue.js';

let lastMs = -1;
let lastTs = '';
/** `new Date().toISOString()`, formatted once per millisecond: a busy log seals several events in each. */
function isoNow(): string {
  const ms = Date.now();
  if (ms !== lastMs) {
    lastMs = ms;
    lastTs = new Date(ms).toISOString();
  }
  return lastTs;
}

/** An event given its place in the chain (seq, ts, prev_hash, hash) but not committed to it yet. */
export interface SealedEvent {
  readonly seq: number;
  readonly prev: string;
  readonly hash: string;
  /** The line up to and without its closing `}`: canonical text plus `hash`. */
  readonly text: string;
  /** The line's length in bytes once written: unsigned (`…}\n`) or signed (`…,"sig":"<88>"}\n`). */
  readonly bytes: number;
}

/** `,"sig":"` + 88 base64 characters of a 64-byte signature + `"`. */
const SIG_BYTES = 8 + 88 + 1;

/** Lines of one tick on their way to the queue; `hashes` of those to sign, `signAt` their index in `lines`. */
interface Batch {
  readonly lines: string[];
  readonly hashes: Buffer[];
  readonly signAt: number[];
  /** Set once signed (or at once when nothing in it needs a signature). */
  sigs: Buffer | null;
}

/**
 * The head of the chain. `seal` decides an event's place in it on the event loop, in call order (seq,
 * ts, prev_hash, hash: ~6–10 µs). An event sealed `signed` gets its Ed25519 signature from the signer
 * (signer.ts): the events sealed in one tick go to it as one batch. Unsigned events (checkpoint mode,
 * checkpoint.ts) skip the signer. Either way lines join the write queue strictly in seal order — a
 * batch waiting for signatures holds back every line sealed after it — and then `onQueued` runs.
 */
export class ChainSealer {
  private seqN: number;
  private head: string;
  /** Batches sealed and not yet in the queue, oldest first; the last one may still be filling (this tick). */
  private readonly batches: Batch[] = [];
  private filling: Batch | null = null;
  private sealingN = 0;

  constructor(
    private readonly signer: HashSigner,
    start: { readonly seq: number; readonly head: string },
    private readonly queue: WriteQueue,
    private readonly onQueued: () => void,
  ) {
    this.seqN = start.seq;
    this.head = start.head;
  }

  /** `seq` of the last sealed event. */
  get seq(): number {
    return this.seqN;
  }
  /** `hash` of the last sealed event. */
  get headHash(): string {
    return this.head;
  }
  /** Events sealed but not yet in the queue (waiting for their tick, or being signed). */
  get sealing(): number {
    return this.sealingN;
  }

  /** Throws only for a body that cannot be serialised; the chain is then unchanged. */
  seal(body: SealedBody, signed = true): void {
    this.commit(this.build(body), signed);
  }

  /** The event as it would be sealed next, without sealing it (so a caller can see its size first). */
  build(body: SealedBody): SealedEvent {
    const seq = this.seqN + 1;
    const prev = this.head;
    const canonical = canonicalEventJson(body as unknown as Readonly<Record<string, unknown>>, { v: 1, seq, ts: isoNow(), prev_hash: prev });
    const hash = chainHash(prev, canonical);
    // The line is the canonical text plus hash (and sig); the verifier re-canonicalises, so key order here is free.
    const text = `${canonical.slice(0, -1)},"hash":"${hash}"`;
    return { seq, prev, hash, text, bytes: Buffer.byteLength(text, 'utf8') + 2 };
  }

  /** Sealed size of `e` with its signature. */
  static signedBytes(e: SealedEvent): number {
    return e.bytes + SIG_BYTES;
  }

  /** Commits `e` (built from the current head) to the chain. */
  commit(e: SealedEvent, signed: boolean): void {
    if (e.seq !== this.seqN + 1 || e.prev !== this.head) throw new Error('audit event built on a stale chain head');
    this.seqN = e.seq;
    this.head = e.hash;
    if (!signed && this.batches.length === 0) {
      // Nothing ahead of it: straight into the queue, no batch, no signer.
      this.queue.push(Buffer.from(`${e.text}}\n`, 'utf8'));
      this.onQueued();
      return;
    }
    this.sealingN++;
    let b = this.filling;
    if (b === null) {
      b = { lines: [], hashes: [], signAt: [], sigs: null };
      this.filling = b;
      this.batches.push(b);
      // setImmediate: the events sealed in this tick go to the signer as one batch.
      setImmediate(() => this.sendBatch(b as Batch));
    }
    if (signed) {
      b.signAt.push(b.lines.length);
      b.hashes.push(Buffer.from(e.hash, 'hex'));
    }
    b.lines.push(e.text);
  }

  close(): Promise<void> {
    return this.signer.close();
  }

  private sendBatch(b: Batch): void {
    if (this.filling === b) this.filling = null;
    if (b.hashes.length === 0) {
      b.sigs = Buffer.alloc(0);
      this.drain();
      return;
    }
    this.signer.sign(Buffer.concat(b.hashes, b.hashes.length * 32), (sigs) => {
      b.sigs = sigs;
      this.drain();
    });
  }

  /** Queues every batch at the head that is ready, in order. */
  private drain(): void {
    let queued = false;
    for (let b = this.batches[0]; b !== undefined && b.sigs !== null; b = this.batches[0]) {
      this.batches.shift();
      const sigs = b.sigs;
      let k = 0;
      for (let i = 0; i < b.lines.length; i++) {
        const line = b.lines[i] as string;
        if (b.signAt[k] === i) {
          this.queue.push(Buffer.from(`${line},"sig":"${sigs.toString('base64', k * 64, k * 64 + 64)}"}\n`, 'utf8'));
          k++;
        } else {
          this.queue.push(Buffer.from(`${line}}\n`, 'utf8'));
        }
      }
      this.sealingN -= b.lines.length;
      queued = true;
    }
    if (queued) this.onQueued();
  }
}
