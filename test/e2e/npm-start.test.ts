/**
 * `npm start` — the README's start command — stops on SIGTERM: npm forwards the signal to the sidecar
 * (the script `exec`s node, so no shell sits between them), which drains and exits, closing its ports.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { REPO, configDir, loopbackSidecar } from '../helpers/sidecar.js';

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', () => resolve(true));
  });
}

t.test('SIGTERM to `npm start` drains the sidecar and closes its ports', async (t) => {
  const dir = configDir(loopbackSidecar());
  const npm = spawn('npm', ['start', '--silent'], {
    cwd: REPO,
    env: { ...process.env, FIRMA_CONFIG: join(dir, 'firma.toml') },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // its own process group, so nothing else here gets the signal
  });
  t.teardown(() => {
    try {
      process.kill(-(npm.pid as number), 'SIGKILL');
    } catch {
      // already gone
    }
  });
  const lines: string[] = [];
  const exited = new Promise<number | null>((r) => npm.on('exit', (code) => r(code)));
  const ready = await new Promise<{ proxy: number; admin: number }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not ready: ${lines.join('\n')}`)), 20_000);
    createInterface({ input: npm.stdout! }).on('line', (line) => {
      lines.push(line);
      const m = /"proxy":"[^"]*:(\d+)","admin":"[^"]*:(\d+)".*"msg":"firma sidecar ready"/.exec(line);
      if (m !== null) {
        clearTimeout(timer);
        resolve({ proxy: Number(m[1]), admin: Number(m[2]) });
      }
    });
  });
  t.equal(await refused(ready.proxy), false, 'listening');
  const stopped = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no "stopped" line 10 s after SIGTERM: the signal did not reach the sidecar')), 10_000);
    createInterface({ input: npm.stdout! }).on('line', (line) => {
      if (line.includes('"msg":"stopped"')) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  process.kill(npm.pid as number, 'SIGTERM'); // npm itself, as a user's kill or a supervisor would
  await stopped;
  t.pass('the sidecar drained and logged "stopped"');
  t.equal(await exited, 0, 'npm exits 0');
  // The sidecar's own exit closes its sockets; poll briefly for the kernel to release them.
  for (let i = 0; i < 50 && !(await refused(ready.proxy) && await refused(ready.admin)); i++) await new Promise((r) => setTimeout(r, 20));
  t.equal(await refused(ready.proxy), true, 'proxy port closed');
  t.equal(await refused(ready.admin), true, 'admin port closed');
});
