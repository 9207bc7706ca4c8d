#!/usr/bin/env node
/**
 * The `firma` executable. It only sets two V8 flags, then loads the CLI. Both are read by V8 when it
 * acts, not only at start-up, so `setFlagsFromString` works here (and `node dist/cli/firma.js` gets
 * them without command-line flags). Figures: bench/README.md "Memory".
 *
 * --liftoff-only: must be in place before cedar-wasm's 4.3 MB module is compiled, which happens when it
 * is first imported. V8 otherwise also compiles the Cedar module with its optimising tier, which costs
 * memory in every sidecar replica. Measured on this 2-core box (policy engine loaded with the shipped
 * packs, 20,000 uncached evaluations): RSS 124–144 MiB → 75 MiB, load 190–250 ms → 97 ms, per-call
 * Cedar time 69–79 µs → 84–88 µs (noise of the same size; most decisions are served from the engine's
 * exact cache and never reach Cedar).
 *
 * --semi-space-growth-factor=1: the young generation keeps its initial size instead of growing up to
 * 2 × 16 MiB after start-up and under load, pages V8 keeps committed long after. A sidecar's young
 * objects live for one request, so a small nursery costs little scavenging. (`--max-semi-space-size`
 * would do the same but is only read when the heap is set up, i.e. on the command line.)
 */
import { setFlagsFromString } from 'node:v8';

setFlagsFromString('--liftoff-only');
setFlagsFromString('--semi-space-growth-factor=1');
await import('./main.js');
