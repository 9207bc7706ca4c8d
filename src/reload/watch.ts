import { watch, statSync, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { FirmaConfig } from '../config/index.js';
import type { Logger } from '../core/log.js';
import { ruleLocations } from '../pipeline/setup.js';
import { compileNameGlob, hasNameWildcard } from '../normalize/glob.js';

/** A folder to watch and which of its entry names matter. */
export interface WatchSpec {
  readonly dir: string;
  readonly matches: (name: string) => boolean;
}

/**
 * The folders whose changes can change the configuration: firma.toml's, each rules_paths pattern's and
 * the policy folder. Folders are watched rather than files because editors and config management
 * replace files by rename (a watch on the old inode would go silent); names are filtered so swap files
 * and unrelated entries do not reload. The parent of each rule and policy folder is watched for that
 * folder's name too, so replacing the whole folder is noticed (the reload then re-arms on the new one).
 */
export function watchSpecs(config: FirmaConfig): WatchSpec[] {
  const specs: WatchSpec[] = [];
  const configPath = config.source.path;
  if (configPath !== null) {
    const name = basename(configPath);
    specs.push({ dir: dirname(configPath), matches: (n) => n === name });
  }
  const { rulesPaths, policyDir } = ruleLocations(config);
  const folders = new Set<string>();
  for (const pattern of rulesPaths) {
    const dir = dirname(pattern);
    const name = basename(pattern);
    const glob = hasNameWildcard(name) ? compileNameGlob(name) : null;
    specs.push({ dir, matches: glob ?? ((n) => n === name) });
    folders.add(dir);
  }
  specs.push({ dir: policyDir, matches: (n) => n.endsWith('.cedar') });
  folders.add(policyDir);
  for (const folder of folders) {
    const name = basename(folder);
    specs.push({ dir: dirname(folder), matches: (n) => n === name });
  }
  return specs;
}

interface Watched {
  readonly watcher: FSWatcher;
  /** dev:ino of the folder when the watch was set, to notice a folder replaced under the same name. */
  readonly identity: string;
  matchers: Array<(name: string) => boolean>;
}

function folderIdentity(dir: string): string | null {
  try {
    const st = statSync(dir);
    return st.isDirectory() ? `${st.dev}:${st.ino}` : null;
  } catch {
    return null;
  }
}

/**
 * Kubernetes ConfigMap volumes publish a new version by swapping a `..data` symlink: the file names
 * themselves see no event. Entries starting with `..` are that machinery.
 */
function isAtomicSwapEntry(name: string): boolean {
  return name.startsWith('..');
}

/**
 * fs.watch on folders, debounced into one `onChange` call per burst. Non-persistent: it never keeps the
 * process alive; `close()` releases every watch and the pending timer.
 */
export class ReloadWatcher {
  readonly #log: Logger;
  readonly #onChange: () => void;
  readonly #watched = new Map<string, Watched>();
  #debounceMs = 300;
  #timer: NodeJS.Timeout | null = null;
  /** When the first event of the current burst came (performance.now()), or null between bursts. */
  #burstStart: number | null = null;
  #closed = false;

  constructor(opts: { log: Logger; onChange: () => void }) {
    this.#log = opts.log;
    this.#onChange = opts.onChange;
  }

  /**
   * Watch exactly `specs` (an empty list stops watching). Existing watches on unchanged folders are
   * kept; a folder that cannot be watched now (missing) is tried again at the next arm.
   */
  arm(specs: readonly WatchSpec[], debounceMs: number): void {
    if (this.#closed) return;
    this.#debounceMs = debounceMs;
    const wanted = new Map<string, Array<(name: string) => boolean>>();
    for (const s of specs) {
      const list = wanted.get(s.dir);
      if (list === undefined) wanted.set(s.dir, [s.matches]);
      else list.push(s.matches);
    }
    for (const [dir, w] of this.#watched) {
      if (!wanted.has(dir) || folderIdentity(dir) !== w.identity) {
        w.watcher.close();
        this.#watched.delete(dir);
      }
    }
    for (const [dir, matchers] of wanted) {
      const existing = this.#watched.get(dir);
      if (existing !== undefined) {
        existing.matchers = matchers;
        continue;
      }
      const identity = folderIdentity(dir);
      if (identity === null) continue;
      try {
        const watcher = watch(dir, { persistent: false }, (_event, filename) => this.#event(dir, filename));
        watcher.on('error', (err) => {
          // The folder went away (or the watch broke): drop it; the reload this triggers re-arms.
          this.#log.warn({ dir, code: (err as NodeJS.ErrnoException).code }, 'config watch failed; reloading to re-arm it');
          watcher.close();
          if (this.#watched.get(dir)?.watcher === watcher) this.#watched.delete(dir);
          this.#schedule();
        });
        this.#watched.set(dir, { watcher, identity, matchers });
      } catch (err) {
        this.#log.warn({ dir, code: (err as NodeJS.ErrnoException).code }, 'cannot watch folder for config changes; SIGHUP still reloads');
      }
    }
  }

  close(): void {
    this.#closed = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    for (const w of this.#watched.values()) w.watcher.close();
    this.#watched.clear();
  }

  #event(dir: string, filename: string | Buffer | null): void {
    const w = this.#watched.get(dir);
    if (w === undefined) return;
    // Some platforms do not say which entry changed: then any change counts.
    const name = filename === null ? null : filename.toString();
    if (name !== null && !isAtomicSwapEntry(name) && !w.matchers.some((m) => m(name))) return;
    this.#schedule();
  }

  /**
   * Restart the quiet period: one reload after the last event of a burst. A file rewritten without
   * pause still reloads every 10 periods rather than never.
   */
  #schedule(): void {
    if (this.#closed) return;
    const now = performance.now();
    this.#burstStart ??= now;
    const wait = Math.max(0, Math.min(this.#debounceMs, this.#burstStart + this.#debounceMs * 10 - now));
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#burstStart = null;
      if (!this.#closed) this.#onChange();
    }, wait);
    this.#timer.unref();
  }
}
