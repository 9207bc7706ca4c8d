import { close, constants, fstat, fsync, ftruncate, open, rename, write } from 'node:fs';
import { rotatedName } from './files.js';

export const LIVE_FILE_FLAGS = constants.O_APPEND | constants.O_CREAT | constants.O_WRONLY;

// Callback fs wrapped by hand: the fd-based API is what O_APPEND batching needs, and it keeps the types exact.
export const writeAsync = (fd: number, buf: Buffer, off: number, len: number): Promise<number> =>
  new Promise((res, rej) => write(fd, buf, off, len, null, (err, n) => (err ? rej(err) : res(n))));
export const fsyncAsync = (fd: number): Promise<void> => new Promise((res, rej) => fsync(fd, (err) => (err ? rej(err) : res())));
export const ftruncateAsync = (fd: number, len: number): Promise<void> => new Promise((res, rej) => ftruncate(fd, len, (err) => (err ? rej(err) : res())));
export const closeAsync = (fd: number): Promise<void> => new Promise((res, rej) => close(fd, (err) => (err ? rej(err) : res())));
const renameAsync = (a: string, b: string): Promise<void> => new Promise((res, rej) => rename(a, b, (err) => (err ? rej(err) : res())));
const openAsync = (p: string): Promise<number> => new Promise((res, rej) => open(p, LIVE_FILE_FLAGS, 0o600, (err, fd) => (err ? rej(err) : res(fd))));
const sizeAsync = (fd: number): Promise<number> => new Promise((res, rej) => fstat(fd, (err, st) => (err ? rej(err) : res(st.size))));

/**
 * The live audit file as the writer holds it: an O_APPEND descriptor (null while closed or failed),
 * its size, whether bytes were written since the last fsync, and the number the next rotation takes.
 */
export interface LiveFile {
  fd: number | null;
  bytes: number;
  dirty: boolean;
  nextRotation: number;
}

/** (Re)opens the live file at `path`, e.g. after a rotation or once the disk works again. */
export async function reopenLiveFile(path: string, live: LiveFile): Promise<void> {
  const fd = await openAsync(path);
  live.fd = fd;
  live.bytes = await sizeAsync(fd);
}

/**
 * `<path>` → `<path>.<n>` (one rename), then a fresh live file; the chain simply continues in it
 * (rotation naming: files.ts). `fd` is the open live descriptor, fsynced first unless `sync` is false.
 */
export async function rotateLiveFile(path: string, live: LiveFile, fd: number, sync: boolean): Promise<void> {
  if (sync) await fsyncAsync(fd);
  live.fd = null;
  await closeAsync(fd);
  await renameAsync(path, rotatedName(path, live.nextRotation));
  live.nextRotation++;
  live.dirty = false;
  await reopenLiveFile(path, live);
}

/**
 * A write failed after `off` bytes of `batch`: cut the file back to the end of its last whole line,
 * so a kill during the outage cannot leave a torn line (docs/audit.md "Fail closed"). Returns the
 * bytes that stay written. If the cut fails too, the partial line stays and the queue finishes it on
 * the next write (the start of a later run moves it aside if none comes).
 */
export async function keepWholeLines(fd: number, batch: Buffer, off: number, fileBytes: number): Promise<number> {
  if (off === 0) return 0;
  const whole = batch.lastIndexOf(0x0a, off - 1) + 1;
  if (whole === off) return off;
  try {
    await ftruncateAsync(fd, fileBytes + whole);
    return whole;
  } catch {
    return off;
  }
}
