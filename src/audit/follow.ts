import { closeSync, fstatSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { auditFileSet, listRotated, liveAuditFile } from './files.js';

/**
 * The lines of an audit log for `firma audit tail` (docs/commands.md): its files in chain order, each
 * line handed to `print` (blank ones included). With `follow`, the lines appended afterwards too,
 * across rotations, calling `follow.tick` before each look; the promise then never resolves.
 */
export async function readAuditLog(path: string, print: (line: string) => void, follow: { readonly tick: () => void } | null): Promise<void> {
  const files = auditFileSet(path);
  // The live file is read once and followed from exactly the bytes read: an event appended between
  // the read and the follow's first look is printed once, neither lost nor doubled.
  const live = liveAuditFile(path);
  let liveBytes: Buffer = Buffer.alloc(0);
  for (const f of files) {
    let bytes: Buffer;
    try {
      bytes = readFileSync(f);
    } catch {
      continue;
    }
    if (f === live) liveBytes = bytes;
    const lines = bytes.toString('utf8').split('\n');
    const last = lines.pop() ?? '';
    for (const line of lines) print(line);
    if (f !== live) print(last);
  }
  if (follow !== null) {
    const end = liveBytes.lastIndexOf(0x0a) + 1; // an unfinished last line is re-read once complete
    await followFile(live, end, print, follow.tick);
  } else if (liveBytes.length > 0) {
    print(liveBytes.subarray(liveBytes.lastIndexOf(0x0a) + 1).toString('utf8'));
  }
}

function inodeOf(path: string): number | null {
  try {
    return statSync(path).ino;
  } catch {
    return null;
  }
}

/**
 * `tail -f` for the live audit file: print lines appended after byte `from`. Reads through an open
 * descriptor, so when the file is rotated (renamed away, a new one created) the rest of the old file
 * is still read to its end before the new one is read from its start: nothing lost, nothing mixed.
 */
async function followFile(path: string, from: number, print: (line: string) => void, tick: () => void): Promise<never> {
  let fd: number | null = null;
  let offset = from;
  let partial = '';
  const drain = (d: number): void => {
    const size = fstatSync(d).size;
    if (size <= offset) return;
    const buf = Buffer.alloc(size - offset);
    const n = readSync(d, buf, 0, buf.length, offset);
    offset += n;
    const lines = (partial + buf.subarray(0, n).toString('utf8')).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) print(line);
  };
  for (;;) {
    tick();
    try {
      if (fd === null) fd = openSync(path, 'r');
      drain(fd);
      let current: number | null = null;
      try {
        current = statSync(path).ino;
      } catch {
        // Between the rename and the new file's creation: keep the old one for now.
      }
      if (current !== null && current !== fstatSync(fd).ino) {
        const oldIno = fstatSync(fd).ino;
        drain(fd); // whatever was written to it before the rename
        closeSync(fd);
        fd = null;
        offset = 0; // whatever is opened next is read from its start
        if (partial !== '') print(partial); // a rotated file ends with a whole line
        partial = '';
        // Several rotations may have happened since the last look: the files renamed after ours are
        // read whole, oldest first, and the list is looked at again once the new live file is open.
        let rotated = listRotated(path);
        const ours = rotated.find((r) => inodeOf(r.path) === oldIno);
        let last = ours?.n ?? Infinity; // not found (removed already): only the live file is left to read
        fd = openSync(path, 'r');
        for (;;) {
          rotated = listRotated(path);
          const newer = rotated.filter((r) => r.n > last);
          if (newer.length === 0) break;
          for (const r of newer) for (const line of readFileSync(r.path, 'utf8').split('\n')) print(line);
          last = newer[newer.length - 1]?.n ?? last;
          // The live file opened above may itself have been rotated meanwhile: start over with the current one.
          closeSync(fd);
          fd = openSync(path, 'r');
        }
        continue; // read the new live file at once
      }
    } catch {
      if (fd !== null) closeSync(fd);
      fd = null;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}
