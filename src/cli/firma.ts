#!/usr/bin/env node
/**
 * The `firma` executable. It only sets one V8 flag, then loads the CLI: the flag must be in place
 * before cedar-wasm's 4.3 MB module is compiled, which happens when it is first imported.
 *
 * Why --liftoff-only: V8 otherwise also compiles the Cedar module with its optimising tier, which
 * costs memory in every sidecar replica. Measured on this 2-core box (policy engine loaded with the
 * shipped packs, 20,000 uncached evaluations): RSS 124–144 MiB → 75 MiB, load 190–250 ms → 97 ms,
 * per-call Cedar time 69–79 µs → 84–88 µs (noise of the same size; most decisions are served from the
 * engine's exact cache and never reach Cedar).
 */
import { setFlagsFromString } from 'node:v8';

setFlagsFromString('--liftoff-only');
await import('./main.js');
