import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Allowed } from '../core/decision.js';
import type { ConnectorErrorKind, DispatchOutcome } from '../core/outcome.js';
import type { SidecarReply } from '../core/reply.js';
import type { EgressGuard } from './ssrf/guard.js';
import { dialTcp } from './dial.js';
import { describeFailure } from './failure.js';
import type { Cleared } from './preflight.js';

export type TunnelDial =
  | { readonly ok: true; readonly socket: Socket }
  | { readonly ok: false; readonly error: ConnectorErrorKind; readonly reply: Omit<SidecarReply, 'requestId'> };

/** Open the upstream TCP connection of a blind tunnel through the SSRF guard, within the host's deadline. */
export async function dialUpstream(guard: EgressGuard, allowed: Allowed, pre: Cleared): Promise<TunnelDial> {
  const t = allowed.envelope.target;
  try {
    const socket = await dialTcp(guard, t.host, t.port, Math.max(1, pre.deadline - performance.now()));
    return { ok: true, socket };
  } catch (err) {
    const failure = describeFailure(err, t);
    return { ok: false, error: failure.kind, reply: failure.reply };
  }
}

/**
 * Relay a blind tunnel's bytes both ways until either side closes. `firstBytes` (the ClientHello the
 * interceptor read and checked) go upstream first. Resolves with the byte counts when it is over.
 */
export function relayBlind(client: Duplex, upstream: Socket, firstBytes: Buffer): Promise<DispatchOutcome> {
  return new Promise<DispatchOutcome>((resolve) => {
    upstream.write(firstBytes);
    let bytesIn = firstBytes.length;
    let bytesOut = 0;
    client.on('data', (b: Buffer) => (bytesIn += b.length));
    upstream.on('data', (b: Buffer) => (bytesOut += b.length));
    client.pipe(upstream);
    upstream.pipe(client);
    client.resume();
    let done = false;
    const close = (): void => {
      if (done) return;
      done = true;
      client.destroy();
      upstream.destroy();
      resolve({
        status: 200,
        upstreamStatus: null,
        error: null,
        errorCode: null,
        bytesIn,
        bytesOut,
        clientAborted: false,
        credentialInjected: false,
        waitedMs: 0,
        responseHash: null,
      });
    };
    client.on('close', close);
    upstream.on('close', close);
    upstream.on('error', close);
  });
}
