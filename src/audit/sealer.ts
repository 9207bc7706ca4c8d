import { chainHash } from './chain.js';
import { canonicalEventJson } from './event-json.js';
import type { AuditEventBody } from './events.js';
import type { HashSigner } from './signer.js';
import type { WriteQueue } from './write-queue.js';

/**
 * The head of the chain. `seal` decides an event's place in it on the event loop, in call order (seq,
 * ts, prev_hash, hash: ~10 µs); the events sealed in one tick go to the signer (signer.ts) as one
 * batch, and their signed lines join the write queue in the same order, then `onQueued` runs.
 */
export class ChainSealer {
  private seqN: number;
  private head: string;
  /** Sealed events waiting for their signature: the line up to `"sig":"`, and the 32-byte hashes. */
  private unsignedLines: string[] = [];
  private unsignedHashes: Buffer[] = [];
  private signScheduled = false;
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
  /** Events sealed but not yet in the queue (unsigned, or being signed). */
  get sealing(): number {
    return this.sealingN;
  }

  /** Throws only for a body that cannot be serialised; the chain is then unchanged. */
  seal(body: AuditEventBody): void {
    const seq = this.seqN + 1;
    const prev = this.head;
    const canonical = canonicalEventJson(body as unknown as Readonly<Record<string, unknown>>, { v: 1, seq, ts: new Date().toISOString(), prev_hash: prev });
    const hash = chainHash(prev, canonical);
    // The line is the canonical text plus hash and sig; the verifier re-canonicalises, so key order here is free.
    this.unsignedLines.push(`${canonical.slice(0, -1)},"hash":"${hash}","sig":"`);
    this.unsignedHashes.push(Buffer.from(hash, 'hex'));
    this.seqN = seq;
    this.head = hash;
    this.sealingN++;
    if (!this.signScheduled) {
      this.signScheduled = true;
      // setImmediate: the events sealed in this tick go to the signer as one batch.
      setImmediate(() => this.signBatch());
    }
  }

  close(): Promise<void> {
    return this.signer.close();
  }

  private signBatch(): void {
    this.signScheduled = false;
    const lines = this.unsignedLines;
    const hashes = this.unsignedHashes;
    this.unsignedLines = [];
    this.unsignedHashes = [];
    if (lines.length === 0) return;
    this.signer.sign(Buffer.concat(hashes, hashes.length * 32), (sigs) => {
      for (let i = 0; i < lines.length; i++) {
        this.queue.push(Buffer.from(`${lines[i] as string}${sigs.toString('base64', i * 64, i * 64 + 64)}"}\n`, 'utf8'));
      }
      this.sealingN -= lines.length;
      this.onQueued();
    });
  }
}
