import { closeSync, existsSync, fstatSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';
import type { FirmaConfig } from '../../config/index.js';
import { errorCode } from '../../core/errors.js';
import { auditFileSet, liveAuditFile } from '../../audit/files.js';
import { AUDIT_PRIVATE_KEY_FILE } from '../../audit/keys.js';
import { AuditWriter } from '../../audit/writer.js';
import { fail } from '../usage.js';

/** The newest non-empty file of the log, and whether it ends without a newline (a torn last line). */
function tornFile(files: readonly string[]): { file: string | null; torn: boolean } {
  for (const file of [...files].reverse()) {
    let fd: number;
    try {
      fd = openSync(file, 'r');
    } catch {
      continue;
    }
    try {
      const st = fstatSync(fd);
      if (!st.isFile() || st.size === 0) continue;
      const last = Buffer.alloc(1);
      readSync(fd, last, 0, 1, st.size - 1);
      return { file, torn: last[0] !== 0x0a };
    } finally {
      closeSync(fd);
    }
  }
  return { file: null, torn: false };
}

/**
 * `firma audit repair`: for a log an older version left with a torn last line (it refused to start on
 * it), does what `firma start` now does by itself — moves the fragment aside and records an
 * `audit_repaired` event (docs/audit.md "Torn last line"). Refuses when there is nothing to repair.
 * Run it with the sidecar stopped: it appends to the log.
 */
export async function auditRepair(config: FirmaConfig): Promise<void> {
  const live = liveAuditFile(config.audit.path);
  const { file, torn } = tornFile(auditFileSet(live));
  if (file === null) fail(`firma audit repair: nothing to repair: no audit events at ${live}`);
  if (!torn) fail(`firma audit repair: nothing to repair: ${file} ends with a complete line`);
  // Signing with a key made up now would give the log a second key: the log's own key must be there.
  if (!existsSync(join(config.audit.key_dir, AUDIT_PRIVATE_KEY_FILE))) {
    fail(`firma audit repair: no audit signing key at ${join(config.audit.key_dir, AUDIT_PRIVATE_KEY_FILE)}: the repair is recorded in the log, signed with its key`);
  }
  let w: AuditWriter;
  try {
    w = AuditWriter.open({ path: live, keyDir: config.audit.key_dir, fsync: 'always', maxFileBytes: config.audit.max_file_bytes });
    await w.close();
  } catch (err: unknown) {
    fail(`firma audit repair: ${errorCode(err) ?? 'error'}: ${(err as Error).message}`);
  }
  const out: string[] = [];
  for (const t of w.recovery.torn) {
    const where = t.movedTo !== null ? `moved to ${t.movedTo}` : `not saved (${t.notSaved ?? 'EUNKNOWN'}), only its hash is recorded`;
    out.push(`repaired: the torn last line of ${t.file} (${t.bytes} bytes, ${t.sha256}) ${where}`);
  }
  out.push(`recorded in the log as lifecycle audit_repaired; the chain continues to seq ${w.seq}`);
  if (w.recovery.abandoned > 0) out.push(`closed ${w.recovery.abandoned} approval(s) left open by the last run (approval abandoned)`);
  process.stdout.write(out.join('\n') + '\n');
}
