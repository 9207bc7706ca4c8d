import t from 'tap';
import { EventEmitter } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { ConnectionGate, autoMaxConnections } from '../../../src/intercept/limits.js';

function limitsFile(soft: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'firma-limits-'));
  const file = join(dir, 'limits');
  writeFileSync(file, `Limit                     Soft Limit           Hard Limit           Units\nMax open files            ${soft}                 1048576              files\n`);
  return file;
}

t.test('max_connections = 0: half the descriptors left after a reserve, capped', async (t) => {
  t.equal(autoMaxConnections(limitsFile('1024')), 448, '(1024 - 128) / 2');
  t.equal(autoMaxConnections(limitsFile('300')), 86, 'a tight prlimit still leaves room for the rest');
  t.equal(autoMaxConnections(limitsFile('1048576')), 16_384, 'capped');
  t.equal(autoMaxConnections(limitsFile('unlimited')), 1024, 'unreadable: a fixed cap');
  t.equal(autoMaxConnections('/nonexistent/limits'), 1024, 'not Linux: a fixed cap');
  t.ok(autoMaxConnections() >= 1, 'this process');
});

/** Enough of a socket for the gate: an address and a close event. */
function socketFrom(address: string): Socket & EventEmitter {
  return Object.assign(new EventEmitter(), { remoteAddress: address }) as unknown as Socket & EventEmitter;
}

t.test('ConnectionGate: the overall cap, the per-address cap, and slots freed on close', async (t) => {
  const gate = new ConnectionGate(3, 2);
  const a1 = socketFrom('10.0.0.1');
  const a2 = socketFrom('10.0.0.1');
  t.equal(gate.admit(a1), null);
  t.equal(gate.admit(a2), null);
  t.equal(gate.admit(socketFrom('10.0.0.1')), 'max_connections_per_client');
  const b1 = socketFrom('10.0.0.2');
  t.equal(gate.admit(b1), null);
  t.equal(gate.open, 3);
  t.equal(gate.admit(socketFrom('10.0.0.3')), 'max_connections', 'a refused socket is not counted');
  a1.emit('close');
  t.equal(gate.open, 2);
  t.equal(gate.admit(socketFrom('10.0.0.1')), null, 'a slot freed is used again');
  t.equal(new ConnectionGate(10, 0).admit(socketFrom('x')), null, 'per-client 0: no cap of its own');
});
