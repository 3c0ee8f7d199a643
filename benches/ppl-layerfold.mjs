#!/usr/bin/env node
// The layerfold side of benches/ppl.mjs: load the model, one perplexity pass, print one JSON
// object with the timings and this process's peak RSS. Threads: RAYON_NUM_THREADS.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { addon, loadModel } = require(path.join(root, 'dist', 'index.js'));

const { values: a } = parseArgs({ options: { model: { type: 'string' }, data: { type: 'string' }, 'seq-len': { type: 'string' }, windows: { type: 'string' } } });
let t0 = performance.now();
const model = await loadModel(a.model);
const loadS = (performance.now() - t0) / 1000;
let tokenizeS = 0;
let evalStart = 0;
t0 = performance.now();
const r = await model.perplexity(
  { file: a.data },
  {
    seqLen: Number(a['seq-len']),
    maxWindows: Number(a.windows),
    onProgress: (p) => {
      if (p.stage === 'tokenize' && p.done === 1) tokenizeS = (performance.now() - t0) / 1000;
      if (p.stage === 'eval' && p.done === 0) evalStart = performance.now();
    },
  },
);
const forwardS = (performance.now() - evalStart) / 1000;
const hwm = Number(/VmHWM:\s+(\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1]) / 1024;
console.log(JSON.stringify({
  impl: `layerfold (CPU, ${addon().blas})`, ppl: r.ppl, tokens: r.windows * r.seqLen, load_s: loadS, tokenize_s: tokenizeS,
  forward_s: forwardS, tokens_per_s: (r.windows * r.seqLen) / forwardS, peak_rss_mb: hwm,
}));
await model.dispose();
