#!/usr/bin/env node
// Benchmark: one perplexity pass (METHODS.md §4.1) of SmolLM2-135M on WikiText-2, layerfold against
// transformers in the same run: same GGUF, same text, same seqLen and windows, f32, same thread
// count. Each side runs in its own process so its peak RSS is its own.
//
//   npm run bench -- [--seq-len 2048] [--windows 2] [--threads 2] [--python <python with torch>]
//
// The transformers side needs `pip install torch transformers gguf accelerate` (see README,
// "Oracle"); point --python (or LAYERFOLD_ORACLE_PYTHON) at that interpreter.
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { sharedFile } from '../scripts/shared.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const { values: a } = parseArgs({
  options: {
    'seq-len': { type: 'string', default: '2048' },
    windows: { type: 'string', default: '2' },
    threads: { type: 'string', default: String(os.availableParallelism()) },
    python: { type: 'string', default: process.env.LAYERFOLD_ORACLE_PYTHON ?? 'python3' },
    'skip-transformers': { type: 'boolean', default: false },
  },
});
const cache = process.env.LAYERFOLD_CACHE ?? path.join(os.homedir(), '.cache', 'layerfold');
const model = path.join(cache, 'SmolLM2-135M-Instruct.Q4_1.gguf');
const data = sharedFile('data/text/wikitext2_raw_test.txt');
const common = ['--seq-len', a['seq-len'], '--windows', a.windows];
const env = { ...process.env, RAYON_NUM_THREADS: a.threads, OMP_NUM_THREADS: a.threads, MKL_NUM_THREADS: a.threads };

function side(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed:\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1));
}

const results = [side(process.execPath, [path.join(here, 'ppl-layerfold.mjs'), '--model', model, '--data', data, ...common])];
if (!a['skip-transformers']) {
  results.push(side(a.python, [path.join(here, 'ppl_transformers.py'), '--gguf', model, '--data', data, ...common, '--threads', a.threads]));
}
const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
console.log(`SmolLM2-135M f32, WikiText-2, seqLen ${a['seq-len']} × ${a.windows} windows, ${a.threads} threads, ${cpu}`);
console.log('impl'.padEnd(50), 'tokens/s'.padStart(9), 'forward s'.padStart(10), 'tokenize s'.padStart(11), 'load s'.padStart(7), 'peak RSS MB'.padStart(12), 'ppl'.padStart(9));
for (const r of results) {
  console.log(
    r.impl.padEnd(50), r.tokens_per_s.toFixed(1).padStart(9), r.forward_s.toFixed(2).padStart(10), r.tokenize_s.toFixed(2).padStart(11),
    r.load_s.toFixed(2).padStart(7), r.peak_rss_mb.toFixed(0).padStart(12), r.ppl.toFixed(4).padStart(9),
  );
}
if (results.length === 2) {
  console.log(`layerfold / transformers: ${(results[0].tokens_per_s / results[1].tokens_per_s).toFixed(2)}× tokens/s, ${(results[0].peak_rss_mb / results[1].peak_rss_mb).toFixed(2)}× peak RSS`);
}
console.log(JSON.stringify({ config: a, cpu, results }));
