/**
 * An agent process using the official `openai` and `@anthropic-ai/sdk` packages the way the README sets
 * them up (HTTPS_PROXY, NODE_EXTRA_CA_CERTS, undici's EnvHttpProxyAgent as the SDK's fetch dispatcher),
 * run from the repository so the packages resolve. The script prints one JSON object.
 */
import { execFile } from 'node:child_process';
import { REPO } from './sidecar.js';

export interface AgentRun {
  readonly code: number;
  readonly out: Record<string, unknown>;
  readonly stderr: string;
}

export interface AgentTarget {
  /** `http://agent:token@127.0.0.1:port`, or without credentials. */
  readonly proxyUrl: string;
  /** The sidecar's CA, trusted by the agent process. */
  readonly caPath: string;
  /** Replaces OPENAI_PORT in the script: `openai` is built with baseURL https://127.0.0.1:OPENAI_PORT/v1. */
  readonly openaiPort?: number;
  /** Replaces ANTHROPIC_PORT: `anthropic` is built with baseURL https://127.0.0.1:ANTHROPIC_PORT. */
  readonly anthropicPort?: number;
}

/** The README's setup, then `openai` and `anthropic` clients without keys and without retries. */
const SETUP = `
import { EnvHttpProxyAgent, fetch as undiciFetch } from 'undici';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
const dispatcher = new EnvHttpProxyAgent();
const viaSidecar = { fetch: undiciFetch, fetchOptions: { dispatcher }, maxRetries: 0 };
const openai = new OpenAI({ apiKey: 'sk-placeholder', baseURL: 'https://127.0.0.1:OPENAI_PORT/v1', ...viaSidecar });
const anthropic = new Anthropic({ apiKey: 'placeholder', baseURL: 'https://127.0.0.1:ANTHROPIC_PORT', ...viaSidecar });
const text = async (stream) => { let s = ''; for await (const e of stream) s += e.choices?.[0]?.delta?.content ?? e.delta?.text ?? e.delta ?? ''; return s; };
const sdkError = (e) => ({ name: e.constructor.name, status: e.status, message: e.message, error: e.error ?? null, headers: e.headers ? Object.fromEntries(e.headers) : null });
`;

/** Run `body` after the setup in a fresh Node process with the agent's environment. */
export function runSdkAgent(target: AgentTarget, body: string): Promise<AgentRun> {
  const source = (SETUP + body).replaceAll('OPENAI_PORT', String(target.openaiPort ?? 0)).replaceAll('ANTHROPIC_PORT', String(target.anthropicPort ?? 0));
  return runAgentScript(source, { HTTPS_PROXY: target.proxyUrl, NODE_EXTRA_CA_CERTS: target.caPath });
}

/** An ES module run in a fresh Node process from the repository, with `env` (and PATH) only. */
export function runAgentScript(source: string, env: NodeJS.ProcessEnv): Promise<AgentRun> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--input-type=module', '-e', source], {
      cwd: REPO,
      env: { PATH: process.env['PATH'], ...env },
      encoding: 'utf8',
      timeout: 30_000,
    }, (err, stdout, stderr) => {
      let out: Record<string, unknown> = {};
      try {
        out = JSON.parse(stdout) as Record<string, unknown>;
      } catch {
        out = { unparsed: stdout };
      }
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1, out, stderr });
    });
  });
}
