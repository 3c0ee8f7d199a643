#!/usr/bin/env node
// The quick-start demo: SmolLM2-135M (30 layers, GGUF Q4_1) from the model cache, its summary and
// its WikiText-2 perplexity on a few windows. Later issues extend it to the whole pruning job.
//
//   npm run demo            (fetches the model first)
//   node scripts/demo.mjs [--windows N] [--seq-len N]
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { loadModel } = require(path.join(root, 'dist', 'index.js'));
const { cacheDir, sharedFile, DEFAULT_PPL_DATA } = require(path.join(root, 'dist', 'paths.js'));

const { values } = parseArgs({ options: { windows: { type: 'string', default: '4' }, 'seq-len': { type: 'string', default: '512' } } });
const model = path.join(cacheDir(), 'SmolLM2-135M-Instruct.Q4_1.gguf');
const data = sharedFile(DEFAULT_PPL_DATA);

const started = performance.now();
const m = await loadModel(model); // Node 20 has no `await using` in plain JS
const info = m.info();
console.log(`SmolLM2-135M-Instruct (${model})`);
console.log(
  `  ${info.architecture}, ${info.numLayers} layers, hidden ${info.hiddenSize}, FFN ${info.intermediateSize}, ` +
    `heads ${info.numAttentionHeads}/${info.numKeyValueHeads}, ${info.parameters.toLocaleString('en-US')} parameters, ` +
    `GGUF ${info.quantization.map((q) => `${q.type}×${q.count}`).join(' ')} → ${info.dtype} on ${info.device}`,
);
const seqLen = Number(values['seq-len']);
const maxWindows = Number(values.windows);
const r = await m.perplexity(
  { file: data },
  {
    seqLen,
    maxWindows,
    onProgress: (p) => process.stderr.isTTY && p.stage === 'eval' && process.stderr.write(`\r  evaluating window ${p.done}/${p.total}`),
  },
);
if (process.stderr.isTTY) process.stderr.write('\n');
console.log(`  WikiText-2 perplexity ${r.ppl.toFixed(3)} (seqLen ${r.seqLen}, first ${r.windows} windows, ${r.tokens} predicted tokens, ${r.seconds.toFixed(1)} s)`);
await m.dispose();
console.log(`done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
