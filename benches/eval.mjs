#!/usr/bin/env node
// Benchmark: the seven zero-shot tasks (METHODS.md §4.2) on SmolLM2-135M, layerfold against
// lm-evaluation-harness (HF transformers, its default batch size 1) in the same run: the same
// weights (the folder `layerfold convert` writes from the GGUF), the same first N examples of each
// task, f32, the same thread count. Reports examples per second and their ratio.
//
//   npm run bench:eval -- [--limit 40] [--threads 2] [--python <python with lm_eval>]
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { sharedFile } from '../scripts/shared.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const { values: a } = parseArgs({
  options: {
    limit: { type: 'string', default: '40' },
    threads: { type: 'string', default: String(os.availableParallelism()) },
    python: { type: 'string', default: process.env.LAYERFOLD_ORACLE_PYTHON ?? 'python3' },
  },
});
const cache = process.env.LAYERFOLD_CACHE ?? path.join(os.homedir(), '.cache', 'layerfold');
const gguf = path.join(cache, 'SmolLM2-135M-Instruct.Q4_1.gguf');
const dataDir = process.env.LAYERFOLD_DATA ?? sharedFile('data/eval');
const env = { ...process.env, RAYON_NUM_THREADS: a.threads, OMP_NUM_THREADS: a.threads, MKL_NUM_THREADS: a.threads, LAYERFOLD_DATA: dataDir };
const cli = path.join(here, '..', 'dist', 'cli.js');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'layerfold-bench-eval-'));
try {
  const folder = path.join(tmp, 'smollm2');
  const conv = spawnSync(process.execPath, [cli, 'convert', gguf, '--out', folder, '--json'], { encoding: 'utf8', env });
  if (conv.status !== 0) throw new Error(`convert failed:\n${conv.stdout}${conv.stderr}`);
  const lf = spawnSync(process.execPath, [cli, 'eval', gguf, '--limit', a.limit, '--json'], { encoding: 'utf8', env });
  if (lf.status !== 0) throw new Error(`layerfold eval failed:\n${lf.stdout}${lf.stderr}`);
  const mine = JSON.parse(lf.stdout);
  const examples = Object.values(mine.tasks).reduce((n, t) => n + t.n, 0);
  const py = spawnSync(a.python, [path.join(here, 'eval_lm_eval.py'), '--folder', folder, '--limit', a.limit, '--threads', a.threads], { encoding: 'utf8', env });
  if (py.status !== 0) throw new Error(`lm_eval failed:\n${py.stderr.slice(-2000)}`);
  const theirs = JSON.parse(py.stdout.trim().split('\n').at(-1));
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  const rows = [
    { impl: `layerfold ${JSON.parse(fs.readFileSync(path.join(here, '..', 'package.json'), 'utf8')).version}`, seconds: mine.seconds, examples },
    { impl: theirs.impl, seconds: theirs.seconds, examples: theirs.examples },
  ];
  console.log(`SmolLM2-135M f32, 7 tasks × first ${a.limit} examples, ${a.threads} threads, ${cpu}`);
  console.log('impl'.padEnd(52), 'examples'.padStart(9), 'seconds'.padStart(9), 'examples/s'.padStart(11));
  for (const r of rows) console.log(r.impl.padEnd(52), String(r.examples).padStart(9), r.seconds.toFixed(1).padStart(9), (r.examples / r.seconds).toFixed(2).padStart(11));
  console.log(`layerfold / lm_eval: ${((rows[0].examples / rows[0].seconds) / (rows[1].examples / rows[1].seconds)).toFixed(2)}× examples/s`);
  console.log(JSON.stringify({ config: a, cpu, rows }));
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
