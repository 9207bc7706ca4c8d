import { formatConfigIssue, unsetCredentialVariables } from '../../config/index.js';
import { createLogger } from '../../core/log.js';
import { errorCode } from '../../core/errors.js';
import { Sidecar } from '../../sidecar.js';
import { readConfig } from '../read-config.js';
import { fail } from '../usage.js';

/** `firma start`: run the sidecar until SIGTERM or SIGINT; SIGHUP reloads. */
export async function start(configFlag: string | undefined): Promise<void> {
  const config = readConfig(configFlag);
  // Only the process that injects credentials needs their variables (docs/configuration.md "[[credentials]]").
  const unset = unsetCredentialVariables(config, process.env);
  if (unset.length > 0) fail(unset.map(formatConfigIssue).join('\n'));
  const log = createLogger(config.sidecar.log_level);
  let sidecar: Sidecar | null = null;
  // SIGHUP reloads (the daemon convention) instead of ending the process. One that arrives while
  // starting is kept and done once ready (files may have changed after they were read). The reloader
  // logs and audits the result, so nothing is left to do with it here.
  let stopping = false;
  let hupWhileStarting = false;
  process.on('SIGHUP', () => {
    if (sidecar === null) hupWhileStarting = true;
    else if (!stopping) void sidecar.reload('SIGHUP');
  });
  let started: Sidecar;
  try {
    started = await Sidecar.start({ config, log });
    sidecar = started;
    if (hupWhileStarting) void started.reload('SIGHUP');
  } catch (err) {
    const code = errorCode(err);
    const message = err instanceof Error ? err.message : String(err);
    log.fatal({ code }, `cannot start: ${message}`);
    log.flush();
    fail(`firma: cannot start: ${message}`);
  }
  const shutdown = (signal: string): void => {
    if (stopping) {
      if (signal === 'SIGINT') process.exit(130);
      return;
    }
    stopping = true;
    log.info({ signal }, 'shutdown requested');
    started.stop().then(
      () => log.flush(() => process.exit(0)),
      (err: unknown) => {
        log.error({ err }, 'error while stopping');
        log.flush(() => process.exit(1));
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('uncaughtException', (err) => {
    // Every socket has an error handler; reaching this is a bug. Exit so the supervisor restarts a
    // clean process rather than serve from an unknown state.
    log.fatal({ err }, 'uncaught exception');
    log.flush(() => process.exit(1));
  });
}
