import { availableParallelism } from 'node:os';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { createPublicKey, sign, type KeyObject } from 'node:crypto';

/**
 * Ed25519 signatures of audit hashes, made on a worker thread so the ~20–40 µs each costs stays off the
 * event loop (and so off every request's critical path). Requests are answered strictly in order (one
 * worker, FIFO). If the worker cannot start or dies, signing falls back to the calling thread: slower,
 * never unsigned.
 */
export interface HashSigner {
  /** Sign each 32-byte hash of `hashes` (concatenated); `done` gets the 64-byte signatures, same order. */
  sign(hashes: Buffer, done: (signatures: Buffer) => void): void;
  close(): Promise<void>;
}

/** The part of sodium-native's API used here. */
interface Sodium {
  crypto_sign_detached(signature: Uint8Array, message: Uint8Array, secretKey: Uint8Array): void;
  crypto_sign_seed_keypair(publicKey: Uint8Array, secretKey: Uint8Array, seed: Uint8Array): void;
}

/**
 * How signatures are computed. Ed25519 is deterministic, so both give the same bytes; libsodium is
 * about twice as fast as OpenSSL 3.0 here (18.5 vs 35 µs per signature on the 2-core bench box), and
 * an audited request costs two. sodium-native ships prebuilt addons (glibc/musl are not both covered
 * on every arch), so it is optional: where it does not load, node:crypto signs.
 */
export type Ed25519Backend = { readonly kind: 'sodium'; readonly path: string; readonly sodium: Sodium } | { readonly kind: 'node' };

function loadSodium(): Ed25519Backend {
  try {
    const require = createRequire(import.meta.url);
    const path = require.resolve('sodium-native');
    return { kind: 'sodium', path, sodium: require(path) as Sodium };
  } catch {
    return { kind: 'node' };
  }
}

let detected: Ed25519Backend | null = null;
/** sodium-native when it loads, else node:crypto; looked up once. */
export function defaultBackend(): Ed25519Backend {
  detected ??= loadSodium();
  return detected;
}

/** libsodium's 64-byte secret key (seed ‖ public key) from a Node Ed25519 private key. */
function sodiumSecretKey(sodium: Sodium, privateKey: KeyObject): Buffer {
  // PKCS#8 of an Ed25519 key is a fixed 16-byte header and the 32-byte seed (RFC 8410).
  const pkcs8 = privateKey.export({ type: 'pkcs8', format: 'der' });
  const seed = pkcs8.subarray(pkcs8.length - 32);
  const publicKey = Buffer.alloc(32);
  const secretKey = Buffer.alloc(64);
  sodium.crypto_sign_seed_keypair(publicKey, secretKey, seed);
  const spki = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  if (!spki.subarray(spki.length - 32).equals(publicKey)) throw new Error('libsodium derived another public key');
  return secretKey;
}

/** Signs a batch of 32-byte hashes on the calling thread. */
export type BatchSign = (hashes: Buffer) => Buffer;

export function inlineSigner(privateKey: KeyObject, backend: Ed25519Backend = defaultBackend()): BatchSign {
  if (backend.kind === 'sodium') {
    const { sodium } = backend;
    const secretKey = sodiumSecretKey(sodium, privateKey);
    return (hashes) => {
      const n = hashes.length / 32;
      const out = Buffer.allocUnsafe(n * 64);
      for (let i = 0; i < n; i++) sodium.crypto_sign_detached(out.subarray(i * 64, i * 64 + 64), hashes.subarray(i * 32, i * 32 + 32), secretKey);
      return out;
    };
  }
  return (hashes) => {
    const n = hashes.length / 32;
    const out = Buffer.allocUnsafe(n * 64);
    for (let i = 0; i < n; i++) sign(null, hashes.subarray(i * 32, i * 32 + 32), privateKey).copy(out, i * 64);
    return out;
  };
}

// CommonJS source for `eval: true`: no file to resolve, so it works from dist/ and from ts-node alike.
// sodium-native is required by the absolute path the main thread resolved.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
let signInto;
if (workerData.sodiumPath !== null) {
  const sodium = require(workerData.sodiumPath);
  const secretKey = Buffer.from(workerData.secretKey);
  signInto = (out, hash) => sodium.crypto_sign_detached(out, hash, secretKey);
} else {
  const { sign } = require('node:crypto');
  const key = workerData.key;
  signInto = (out, hash) => out.set(sign(null, hash, key));
}
parentPort.on('message', (hashes) => {
  const n = hashes.length / 32;
  const out = new Uint8Array(n * 64);
  for (let i = 0; i < n; i++) signInto(out.subarray(i * 64, i * 64 + 64), hashes.subarray(i * 32, i * 32 + 32));
  parentPort.postMessage(out, [out.buffer]);
});
`;

/**
 * The signer for this process: a worker thread when the process may run on more than one CPU; inline
 * when it is confined to one (e.g. `taskset`/cpuset pinning), where a worker only adds a thread switch
 * per batch (measured in the shared bench: +5–15 % CPU per request on one pinned core).
 */
export function createSigner(privateKey: KeyObject, cpus: number = availableParallelism(), backend: Ed25519Backend = defaultBackend()): HashSigner {
  if (cpus > 1) return new WorkerSigner(privateKey, { backend });
  const signBatch = inlineSigner(privateKey, backend);
  return {
    sign: (hashes, done) => done(signBatch(hashes)),
    close: () => Promise.resolve(),
  };
}

export class WorkerSigner implements HashSigner {
  readonly #inline: BatchSign;
  #worker: Worker | null;
  /** Callbacks of batches sent and not answered yet, oldest first. */
  readonly #waiting: Array<{ hashes: Buffer; done: (signatures: Buffer) => void }> = [];

  /** `workerSource` replaces the worker's code (tests make it fail to prove the fallback). */
  constructor(privateKey: KeyObject, opts: { workerSource?: string; backend?: Ed25519Backend } = {}) {
    const backend = opts.backend ?? defaultBackend();
    this.#inline = inlineSigner(privateKey, backend);
    const workerData = backend.kind === 'sodium'
      ? { sodiumPath: backend.path, secretKey: sodiumSecretKey(backend.sodium, privateKey), key: null }
      : { sodiumPath: null, secretKey: null, key: privateKey };
    let worker: Worker | null = null;
    try {
      worker = new Worker(opts.workerSource ?? WORKER_SOURCE, { eval: true, workerData, resourceLimits: { maxOldGenerationSizeMb: 16 } });
    } catch {
      worker = null;
    }
    this.#worker = worker;
    if (worker === null) return;
    worker.unref();
    worker.on('message', (sigs: Uint8Array) => {
      const w = this.#waiting.shift();
      if (this.#waiting.length === 0) worker.unref();
      w?.done(Buffer.from(sigs.buffer, sigs.byteOffset, sigs.byteLength));
    });
    const fallBack = (): void => {
      if (this.#worker !== worker) return;
      this.#worker = null;
      // Whatever the worker had not answered is signed here, in order.
      const pending = this.#waiting.splice(0);
      for (const p of pending) p.done(this.#inline(p.hashes));
    };
    worker.on('error', fallBack);
    worker.on('exit', fallBack);
  }

  sign(hashes: Buffer, done: (signatures: Buffer) => void): void {
    const worker = this.#worker;
    if (worker === null) {
      done(this.#inline(hashes));
      return;
    }
    // Referenced while answers are due, so the process does not exit with events unsigned.
    if (this.#waiting.length === 0) worker.ref();
    this.#waiting.push({ hashes, done });
    worker.postMessage(hashes);
  }

  async close(): Promise<void> {
    const worker = this.#worker;
    if (worker === null) return;
    if (this.#waiting.length > 0) {
      await new Promise<void>((resolve) => {
        const last = this.#waiting[this.#waiting.length - 1];
        if (last === undefined) return resolve();
        const done = last.done;
        last.done = (s) => {
          done(s);
          resolve();
        };
      });
    }
    this.#worker = null;
    await worker.terminate();
  }
}
