#!/usr/bin/env node
/**
 * The `firma` executable. It only sets one V8 flag, then loads the CLI. It is read by V8 when it
 * acts, not only at start-up, so `setFlagsFromString` works here (and `node dist/cli/firma.js` gets
 * it without command-line flags). Figures: bench/README.md "Memory".
 *
 * --liftoff-only: must be in place before cedar-wasm's 4.3 MB module is compiled, which happens when it
 * is first imported. V8 otherwise also compiles the Cedar module with its optimising tier, which costs
 * memory in every sidecar replica. Measured on this 2-core box (policy engine loaded with the shipped
 * packs, 20,000 uncached evaluations): RSS 124–144 MiB → 75 MiB, load 190–250 ms → 97 ms, per-call
 * Cedar time 69–79 µs → 84–88 µs (noise of the same size; most decisions are served from the engine's
 * exact cache and never reach Cedar).
 *
 * Not set: --semi-space-growth-factor=1 (a young generation that stays at its initial size) took
 * ~20 MiB off the peak RSS under load but cost +15 % CPU per request in scavenges (bench/README.md
 * "Memory").
 */
import { setFlagsFromString } from 'node:v8';

setFlagsFromString('--liftoff-only');
await import('./main.js');
