// `npm run bench`: bench/run.mjs with the options given (npm run bench -- --configs none …), then the
// MCP row (bench/mcp.mjs, its defaults). Exit status: the first non-zero one.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const run = (script, argv) => spawnSync(process.execPath, [path.join(HERE, script), ...argv], { stdio: 'inherit' }).status ?? 1;
const main = run('run.mjs', process.argv.slice(2));
if (process.argv.includes('--help') || process.argv.includes('-h')) process.exit(main);
const mcp = run('mcp.mjs', []);
process.exit(main !== 0 ? main : mcp);
