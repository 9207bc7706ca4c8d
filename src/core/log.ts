import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

/**
 * JSON lines on stdout for machines; pretty, coloured lines when a person watches a terminal.
 * Secrets are never passed to the logger in the first place; `redact` is a second net for the
 * header names that carry them, should a request object ever be logged whole by mistake.
 */
export function createLogger(
  level: LevelWithSilent,
  opts: { pretty?: boolean; destination?: NodeJS.WritableStream } = {},
): Logger {
  const pretty = opts.destination === undefined && (opts.pretty ?? process.stdout.isTTY === true);
  const base = {
    level,
    base: { svc: 'firma-sidecar' },
    redact: {
      paths: [
        '*.headers.authorization',
        '*.headers["proxy-authorization"]',
        '*.headers.cookie',
        '*.headers["set-cookie"]',
        'token',
        '*.token',
      ],
      censor: '[redacted]',
    },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (pretty) {
    return pino({ ...base, transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l' } } });
  }
  if (opts.destination !== undefined) return pino(base, opts.destination);
  return pino(base, pino.destination({ dest: 1, sync: false, minLength: 0 }));
}
