import { closeSync, openSync, readSync, statSync } from 'node:fs';

/** An approval `requested` in the log with no end event after it. */
export interface OpenApproval {
  readonly approvalId: string;
  readonly requestId: string | null;
  readonly agentId: string | null;
}

/** Approval actions that end an approval (`revoked` ends a grant, not an approval). */
const ENDS: ReadonlySet<string> = new Set(['approved', 'denied', 'expired', 'cancelled', 'abandoned']);
/** How many of the newest files are read back: the live file and the one rotated before it. */
const FILES_READ = 2;

/** Calls `onLine` for every complete line of `file`, read in chunks (a live file may be 100 MiB). */
function eachLine(file: string, onLine: (line: string) => void): void {
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(1 << 20);
    // Split on bytes, not text: a chunk may end inside a multi-byte character, never inside '\n'.
    let rest: Buffer = Buffer.alloc(0);
    for (let pos = 0; ; ) {
      const n = readSync(fd, buf, 0, buf.length, pos);
      if (n === 0) return;
      pos += n;
      const chunk = buf.subarray(0, n);
      let start = 0;
      for (let i = chunk.indexOf(0x0a); i >= 0; i = chunk.indexOf(0x0a, start)) {
        const piece = chunk.subarray(start, i);
        onLine(rest.length === 0 ? piece.toString('utf8') : Buffer.concat([rest, piece]).toString('utf8'));
        rest = Buffer.alloc(0);
        start = i + 1;
      }
      rest = Buffer.concat([rest, chunk.subarray(start)]);
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * The approvals a previous run left open: `requested` since the newest `start` event, with no end
 * (`approved`, `denied`, `expired`, `cancelled`, `abandoned`) after it — what a SIGKILL leaves behind
 * (a clean stop denies every pending approval). Bounded: the live file and the file rotated before it
 * are read, newest first, until one holds a `start`; approvals older than that are not looked for
 * (docs/audit.md "Approvals in the log"). `files` is the log's files in chain order. Only lines whose
 * text names an approval or a start are parsed; the chain was checked where it resumes (resume.ts).
 */
export function openApprovals(files: readonly string[]): OpenApproval[] {
  const newest = files.slice(-FILES_READ).reverse();
  // Per file (newest first): its events after its last start, and whether it had one.
  const segments: Array<Array<{ action: string; a: OpenApproval }>> = [];
  for (const file of newest) {
    try {
      if (!statSync(file).isFile()) continue;
    } catch {
      continue;
    }
    let seg: Array<{ action: string; a: OpenApproval }> = [];
    let sawStart = false;
    eachLine(file, (line) => {
      const isApproval = line.includes('"type":"approval"');
      if (!isApproval && !line.includes('"event":"start"')) return;
      let e: Record<string, unknown>;
      try {
        e = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      if (e['type'] === 'lifecycle' && e['event'] === 'start') {
        seg = [];
        sawStart = true;
      } else if (isApproval && e['type'] === 'approval' && typeof e['approval_id'] === 'string' && typeof e['action'] === 'string') {
        const str = (k: string): string | null => (typeof e[k] === 'string' ? (e[k] as string) : null);
        seg.push({ action: e['action'], a: { approvalId: e['approval_id'], requestId: str('request_id'), agentId: str('agent_id') } });
      }
    });
    segments.push(seg);
    if (sawStart) break;
  }
  const open = new Map<string, OpenApproval>();
  for (const seg of segments.reverse()) {
    for (const { action, a } of seg) {
      if (action === 'requested') open.set(a.approvalId, a);
      else if (ENDS.has(action)) open.delete(a.approvalId);
    }
  }
  return [...open.values()];
}
