import fs from 'node:fs';

/**
 * Write a new file that must not exist yet (keys, certificates): 'wx' never overwrites, the file is
 * created with `mode` so it is never briefly wider, and fsynced so a crash cannot leave it empty.
 */
export function writeExclusive(p: string, data: string, mode: number): void {
  const fd = fs.openSync(p, 'wx', mode);
  try {
    fs.fchmodSync(fd, mode); // the umask may have narrowed 0644; make the mode exact
    fs.writeFileSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
