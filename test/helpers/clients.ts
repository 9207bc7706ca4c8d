import { execFile } from 'node:child_process';
import { join, resolve } from 'node:path';

/** The built CLI (helpers/sidecar.ts has the same as CLI; clients stay free of the sidecar's imports). */
const FIRMA_CLI = join(resolve(import.meta.dirname, '..', '..'), 'dist', 'cli', 'firma.js');

export interface CurlResult {
  readonly exitCode: number;
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: string;
  readonly stderr: string;
}

const MARK = '\n__FIRMA_STATUS__';

/** Run the real curl binary; response headers are parsed from `-D -` (last response block). */
export function curl(args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<CurlResult> {
  return new Promise((resolve) => {
    execFile(
      'curl',
      ['-sS', '--noproxy', '', '-D', '-', '-w', `${MARK}%{http_code}`, ...args],
      { env: { PATH: process.env['PATH'], ...opts.env }, timeout: opts.timeoutMs ?? 30_000, maxBuffer: 256 * 1024 * 1024, encoding: 'utf8' },
      (err, stdout, stderr) => {
        const exitCode = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
        const at = stdout.lastIndexOf(MARK);
        const status = at === -1 ? 0 : Number(stdout.slice(at + MARK.length));
        const out = at === -1 ? stdout : stdout.slice(0, at);
        // Split off header blocks (there may be a CONNECT 200 block and 100-continue blocks first).
        let rest = out;
        let headerBlock = '';
        while (/^HTTP\/\d(\.\d)? \d{3}/.test(rest)) {
          const end = rest.indexOf('\r\n\r\n');
          if (end === -1) break;
          headerBlock = rest.slice(0, end);
          rest = rest.slice(end + 4);
        }
        const headers: Record<string, string> = {};
        for (const line of headerBlock.split('\r\n').slice(1)) {
          const c = line.indexOf(':');
          if (c > 0) {
            const k = line.slice(0, c).trim().toLowerCase();
            const v = line.slice(c + 1).trim();
            headers[k] = headers[k] === undefined ? v : `${headers[k]}, ${v}`;
          }
        }
        resolve({ exitCode, status, headers, body: rest, stderr });
      },
    );
  });
}

export interface PythonResult {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Debian's /usr/bin/python3 (which has python3-requests), never the first python3 on PATH. */
export function python(script: string, env: NodeJS.ProcessEnv): Promise<PythonResult> {
  return new Promise((resolve) => {
    execFile('/usr/bin/python3', ['-c', script], { env: { PATH: '/usr/bin:/bin', ...env }, timeout: 30_000, encoding: 'utf8' },
      (err, stdout, stderr) => {
        resolve({ exitCode: err === null ? 0 : typeof err.code === 'number' ? err.code : 1, stdout, stderr });
      });
  });
}

export interface CliRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * The built CLI (`node dist/cli/firma.js …`) as a person runs it, from `cwd`. `env` replaces the
 * environment (PATH is kept), so a test states every variable the command may see.
 */
export function runFirma(args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env): Promise<CliRun> {
  return new Promise((resolve) => {
    execFile(process.execPath, [FIRMA_CLI, ...args], { cwd, env: { PATH: process.env['PATH'], ...env }, encoding: 'utf8', timeout: 20_000 },
      (err, stdout, stderr) => resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1, stdout, stderr }));
  });
}
