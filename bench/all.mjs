// `npm run bench`: bench/run.mjs with the options given (npm run bench -- --configs none …), then the
// MCP row (bench/mcp.mjs) and the LLM streaming row (bench/llm.mjs), with their defaults. Exit status:
// the first non-zero one.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const run = (script, argv) => spawnSync(process.execPath, [path.join(HERE, script), ...argv], { stdio: 'inherit' }).status ?? 1;
const main = run('run.mjs', process.argv.slice(2));
if (process.argv.includes('--help') || process.argv.includes('-h')) process.exit(main);
const mcp = run('mcp.mjs', []);
const llm = run('llm.mjs', []);
process.exit([main, mcp, llm].find((s) => s !== 0) ?? 0);
