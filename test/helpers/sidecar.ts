import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Writable } from 'node:stream';
import { createInterface } from 'node:readline';
import { parseConfigText } from '../../src/config/index.js';
import { createLogger } from '../../src/core/log.js';
import { Sidecar } from '../../src/sidecar.js';
import type { LookupFunction } from '../../src/connector/ssrf/resolve.js';
import type { OriginalDestinationLookup } from '../../src/intercept/transparent/original-dst.js';
import { upstreamPki } from './pki.js';
import { fixture, type FixtureHooks } from './fixture.js';

export const REPO = resolve(import.meta.dirname, '..', '..');
export const CLI = join(REPO, 'dist', 'cli', 'firma.js');

export interface TestSidecar {
  readonly sidecar: Sidecar;
  readonly proxyUrl: string;
  readonly proxyPort: number;
  readonly adminUrl: string;
  /** The transparent listener's port on 127.0.0.1 (`transparent: true`), else null. */
  readonly transparentPort: number | null;
  readonly caPem: string;
  readonly caPath: string;
  readonly dir: string;
  /** Every log line the sidecar wrote (JSON text). */
  readonly logs: string[];
  stop(): Promise<void>;
}

/**
 * An in-process sidecar on ephemeral ports, with its own CA in a fresh folder and the test upstream CA
 * trusted for upstream TLS. `extraToml` is appended to a minimal firma.toml.
 */
/** The repo's default policies (copied into test folders). */
export const DEFAULT_POLICY_TEXT = readFileSync(join(REPO, 'policies', 'default.cedar'), 'utf8');

/** A catch-all rule: every request is `test.call`, low risk (so the default policies permit it). */
export const CATCH_ALL_RULES = `[[rules]]
host = "*"
action_class = "test.call"
risk = "low"
`;

/**
 * Write mapping rules and policies into `dir` and return the config tables that point at them. Stage 1
 * is off unless `capabilities` says otherwise: tests of other features do not carry tokens.
 */
export function writeDecisionFiles(
  dir: string,
  opts: { rules?: string; policies?: Record<string, string>; capabilities?: string; mappingExtra?: string } = {},
): string {
  mkdirSync(join(dir, 'mappings'), { recursive: true });
  mkdirSync(join(dir, 'policies'), { recursive: true });
  writeFileSync(join(dir, 'mappings', 'test.toml'), opts.rules ?? CATCH_ALL_RULES);
  const policies = opts.policies ?? { 'default.cedar': DEFAULT_POLICY_TEXT };
  for (const [name, text] of Object.entries(policies)) writeFileSync(join(dir, 'policies', name), text);
  return `
[sidecar.mapping]
rules_paths = ["mappings/*.toml"]
${opts.mappingExtra ?? ''}
[sidecar.policy]
dir = "policies"
[sidecar.capabilities]
${opts.capabilities ?? 'required = false'}
`;
}

export interface TestSidecarOptions {
  /** Mapping rules (TOML text of [[rules]]); default: everything is `test.call`, low risk. */
  readonly rules?: string;
  /** Policy files by name; default: the repo's default.cedar. */
  readonly policies?: Record<string, string>;
  /** Lines for [sidecar.capabilities]; default `required = false`. */
  readonly capabilities?: string;
  /** More lines for [sidecar.mapping] (default_protected, body_limit_bytes). */
  readonly mappingExtra?: string;
  /** Lines for [sidecar]. */
  readonly sidecar?: string;
  /** More lines for [sidecar.admin] (tokens, approvers). */
  readonly adminExtra?: string;
  /** Lines for [sidecar.interceptor.mitm]. */
  readonly mitm?: string;
  /** More lines for [sidecar.interceptor] (timeouts, connection caps). */
  readonly interceptor?: string;
  /** Lines for [sidecar.connector]; default allows the loopback test upstreams past the SSRF guard. */
  readonly connector?: string;
  /** Name resolution for upstream dials (tests of the SSRF guard). */
  readonly lookup?: LookupFunction;
  /** Also start the transparent listener on 127.0.0.1:0. */
  readonly transparent?: boolean;
  /** How the transparent listener learns a connection's original port (loopback tests redirect nothing). */
  readonly originalDestination?: OriginalDestinationLookup | null;
}

export async function startTestSidecar(extraToml = '', sections: TestSidecarOptions = {}): Promise<TestSidecar> {
  const dir = mkdtempSync(join(tmpdir(), 'firma-sidecar-'));
  const toml = `
[sidecar]
${sections.sidecar?.includes('log_level') === true ? '' : 'log_level = "info"'}
${sections.sidecar?.includes('drain_timeout_ms') === true ? '' : 'drain_timeout_ms = 2000'}
${sections.sidecar ?? ''}
[sidecar.interceptor]
listen = "127.0.0.1:0"
${sections.transparent === true ? 'transparent_listen = "127.0.0.1:0"' : ''}
${sections.interceptor ?? ''}
[sidecar.interceptor.mitm]
ca_dir = "certs"
${sections.mitm ?? ''}
[sidecar.admin]
listen = "127.0.0.1:0"
${sections.adminExtra ?? ''}
[sidecar.connector]
${sections.connector ?? 'allow_private = ["127.0.0.1/32"]'}
${writeDecisionFiles(dir, sections)}
${extraToml}
`;
  const file = join(dir, 'firma.toml');
  writeFileSync(file, toml);
  const config = parseConfigText(toml, file, dir);
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) if (line !== '') logs.push(line);
      cb();
    },
  });
  const log = createLogger(config.sidecar.log_level, { destination: sink });
  const sidecar = await Sidecar.start({
    config,
    log,
    upstreamCaPems: [upstreamPki().caPem],
    ...(sections.lookup !== undefined ? { lookup: sections.lookup } : {}),
    ...(sections.originalDestination !== undefined ? { originalDestination: sections.originalDestination } : {}),
  });
  const caPath = sidecar.ca.certPath;
  return {
    sidecar,
    proxyUrl: `http://127.0.0.1:${sidecar.proxyAddress.port}`,
    proxyPort: sidecar.proxyAddress.port,
    adminUrl: `http://127.0.0.1:${sidecar.adminAddress.port}`,
    transparentPort: sidecar.transparentAddress?.port ?? null,
    caPem: readFileSync(caPath, 'utf8'),
    caPath,
    dir,
    logs,
    stop: async () => {
      await sidecar.stop();
    },
  };
}

/** The in-process sidecar a whole test file shares: started before its first subtest, stopped after its last. */
export function useTestSidecar(t: FixtureHooks, extraToml = '', sections: TestSidecarOptions = {}): TestSidecar {
  return fixture(t, () => startTestSidecar(extraToml, sections), (sc) => sc.stop());
}

/**
 * The [sidecar] tables of a process under test: info logs, ephemeral loopback listeners, loopback
 * upstreams allowed past the SSRF guard; `sidecarLines` go into [sidecar]. `configDir` adds the
 * decision files.
 */
export function loopbackSidecar(sidecarLines = ''): string {
  return `
[sidecar]
log_level = "info"
${sidecarLines}
[sidecar.interceptor]
listen = "127.0.0.1:0"
[sidecar.admin]
listen = "127.0.0.1:0"
[sidecar.connector]
allow_private = ["127.0.0.1/32"]
`;
}

export interface SidecarProcess {
  readonly proc: ChildProcess;
  readonly proxyPort: number;
  readonly adminPort: number;
  readonly lines: string[];
  /** Resolves with the exit code. */
  readonly exited: Promise<number | null>;
}

/**
 * `firma start` as a real process (what `npm start` runs). Waits for the "ready" log line and reads
 * the bound ports from it.
 */
export async function spawnSidecar(
  args: string[],
  opts: { cwd: string; env?: NodeJS.ProcessEnv; /** Runs `node` through this (e.g. `ip netns exec NS setpriv …`). */ prefix?: string[] },
): Promise<SidecarProcess> {
  const prefix = opts.prefix ?? [];
  const argv = [...prefix.slice(1), process.execPath, CLI, ...args];
  const proc = spawn(prefix[0] ?? process.execPath, prefix.length === 0 ? [CLI, ...args] : argv, {
    cwd: opts.cwd,
    env: { ...process.env, NODE_EXTRA_CA_CERTS: upstreamPki().caPath, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  const stderr: string[] = [];
  proc.stderr?.on('data', (c: Buffer) => stderr.push(c.toString()));
  const rl = createInterface({ input: proc.stdout! });
  const ready = await new Promise<{ proxy: string; admin: string }>((resolveReady, reject) => {
    const timer = setTimeout(() => reject(new Error(`sidecar not ready in 20 s: ${lines.join('\n')} ${stderr.join('')}`)), 20_000);
    rl.on('line', (line) => {
      lines.push(line);
      try {
        const o = JSON.parse(line) as { msg?: string; proxy?: string; admin?: string };
        if (o.msg === 'firma sidecar ready' && o.proxy !== undefined && o.admin !== undefined) {
          clearTimeout(timer);
          resolveReady({ proxy: o.proxy, admin: o.admin });
        }
      } catch {
        // not JSON: ignore
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`sidecar exited with ${code}: ${stderr.join('')} ${lines.join('\n')}`));
    });
  });
  const port = (hp: string): number => Number(hp.slice(hp.lastIndexOf(':') + 1));
  return { proc, proxyPort: port(ready.proxy), adminPort: port(ready.admin), lines, exited };
}

/**
 * Write a firma.toml into a fresh folder and return the folder. Unless the text has its own
 * [sidecar.mapping], the catch-all test rules and default policies are added (stage 1 off).
 */
export function configDir(toml: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'firma-proc-'));
  const decisions = toml.includes('[sidecar.mapping]') ? '' : writeDecisionFiles(dir);
  writeFileSync(join(dir, 'firma.toml'), toml + decisions);
  return dir;
}
