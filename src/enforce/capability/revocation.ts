/**
 * The capability revocation list (docs/architecture.md "Enforce", docs/commands.md `firma token revoke`):
 * one token id per line. The verifier keeps it in memory and follows the file live: a watch on its
 * folder, plus a stat poll as fallback. Fail closed: a list that vanishes or cannot be re-read keeps the
 * ids already loaded.
 */
import fs from 'node:fs';
import path from 'node:path';
import { FirmaError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';

/** One token id per line; blank lines and `#` comments ignored; surrounding whitespace trimmed. */
export function parseRevocationList(text: string): Set<string> {
  const out = new Set<string>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line !== '' && !line.startsWith('#')) out.add(line);
  }
  return out;
}

/** The revoked token ids, re-read whenever the file changes. */
export class RevocationList {
  readonly #revocationFile: string;
  readonly #revocationDir: string;
  readonly #revocationBase: string;
  readonly #log: Logger | undefined;

  #revoked: Set<string>;
  /** stat signature of the revocation file as last read ('' = absent). */
  #revocationStamp: string;
  #watcher: fs.FSWatcher | null = null;
  #poll: NodeJS.Timeout | null = null;
  #reloading = false;
  #reloadAgain = false;
  #closed = false;

  /** Throws FIRMA_CAPABILITY_REVOCATION_UNREADABLE if the file exists but cannot be read. */
  constructor(file: string, log: Logger | undefined, pollIntervalMs: number | undefined) {
    this.#revocationFile = file;
    this.#revocationDir = path.dirname(file);
    this.#revocationBase = path.basename(file);
    this.#log = log;
    // Initial load is synchronous so the verifier never starts with an empty list by accident.
    const initial = readRevocationSync(file);
    this.#revoked = initial.set;
    this.#revocationStamp = initial.stamp;
    this.#startWatch();
    const interval = Math.max(10, pollIntervalMs ?? 1000);
    this.#poll = setInterval(() => this.#pollTick(), interval);
    this.#poll.unref();
  }

  has(tokenId: string): boolean {
    return this.#revoked.has(tokenId);
  }

  get size(): number {
    return this.#revoked.size;
  }

  /** Stops watching and polling. Idempotent. */
  close(): void {
    this.#closed = true;
    if (this.#poll !== null) clearInterval(this.#poll);
    this.#poll = null;
    this.#watcher?.close();
    this.#watcher = null;
  }

  /** Re-reads the file synchronously (for a closed list, which no longer follows the file). */
  readNow(): void {
    try {
      const { set, stamp } = readRevocationSync(this.#revocationFile);
      // As in #reloadOnce: a vanished list does not un-revoke anything.
      if (stamp !== '') this.#revoked = set;
    } catch {
      // Unreadable: keep what was loaded.
    }
  }

  #startWatch(): void {
    if (this.#watcher !== null || this.#closed) return;
    try {
      // The directory, not the file: `firma token revoke` may create the file later, and editors and
      // atomic writers replace it (rename), which a watch on the old inode would never report.
      const w = fs.watch(this.#revocationDir, { persistent: false }, (_event, filename) => {
        if (filename === null || filename === this.#revocationBase) this.#reload();
      });
      w.on('error', (err) => {
        this.#log?.warn({ err, file: this.#revocationFile }, 'capability revocation watch failed; polling instead');
        w.close();
        if (this.#watcher === w) this.#watcher = null;
      });
      this.#watcher = w;
    } catch {
      // Directory missing (or watch unsupported): the poll retries and also catches changes meanwhile.
      this.#watcher = null;
    }
  }

  #pollTick(): void {
    if (this.#closed) return;
    if (this.#watcher === null) this.#startWatch();
    fs.stat(this.#revocationFile, (err, st) => {
      if (this.#closed) return;
      const stamp = err ? '' : statStamp(st);
      if (stamp !== this.#revocationStamp) this.#reload();
    });
  }

  /** Re-reads the file; serialised, and coalesces bursts of watch events into one extra read. */
  #reload(): void {
    if (this.#closed) return;
    if (this.#reloading) {
      this.#reloadAgain = true;
      return;
    }
    this.#reloading = true;
    void this.#reloadOnce().finally(() => {
      this.#reloading = false;
      if (this.#reloadAgain) {
        this.#reloadAgain = false;
        this.#reload();
      }
    });
  }

  async #reloadOnce(): Promise<void> {
    const file = this.#revocationFile;
    try {
      // stat before read: if the file changes after the stat, the next poll sees a newer stamp.
      const st = await fs.promises.stat(file);
      const text = await fs.promises.readFile(file, 'utf8');
      if (this.#closed) return;
      const next = parseRevocationList(text);
      const before = this.#revoked.size;
      this.#revoked = next;
      this.#revocationStamp = statStamp(st);
      if (next.size !== before) this.#log?.info({ file, revoked: next.size }, 'capability revocation list reloaded');
    } catch (err) {
      if (this.#closed) return;
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') {
        // Fail closed: a vanished list does not un-revoke anything. Keep the old set until it reappears.
        if (this.#revocationStamp !== '') {
          this.#log?.warn({ file, revoked: this.#revoked.size }, 'capability revocation file disappeared; keeping the revoked ids already loaded');
        }
        this.#revocationStamp = '';
        return;
      }
      this.#log?.warn({ file, code }, 'cannot reload the capability revocation file; keeping the previous list');
    }
  }
}

function statStamp(st: fs.Stats): string {
  return `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
}

function readRevocationSync(file: string): { set: Set<string>; stamp: string } {
  try {
    const st = fs.statSync(file);
    return { set: parseRevocationList(fs.readFileSync(file, 'utf8')), stamp: statStamp(st) };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { set: new Set(), stamp: '' };
    throw new FirmaError('FIRMA_CAPABILITY_REVOCATION_UNREADABLE', `cannot read the capability revocation file ${file}: ${code ?? 'error'}`, {
      cause: err,
    });
  }
}
