#!/usr/bin/env node
// The quick-start demo, the headline job on a small real model: SmolLM2-135M-Instruct (30 layers,
// GGUF Q4_1) from the model cache, 30 → 21 layers by CoMe, beside ShortGPT's block-influence drop
// (drop-bi), LaCo and SLM at the same size; WikiText-2 perplexity of each and of the dense model in
// one table; the CoMe model saved as a Hugging Face folder (out/smollm2-come-21 by default).
//
//   npm run demo            (fetches the model first)
//   node scripts/demo.mjs [--windows N] [--seq-len N] [--remove N] [--out DIR]
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { loadModel } = require(path.join(root, 'dist', 'index.js'));
const { cacheDir, sharedFile, DEFAULT_PPL_DATA } = require(path.join(root, 'dist', 'paths.js'));

const { values } = parseArgs({
  options: {
    windows: { type: 'string', default: '8' },
    'seq-len': { type: 'string', default: '512' },
    remove: { type: 'string', default: '9' },
    out: { type: 'string', default: path.join('out', 'smollm2-come-21') },
  },
});
const modelPath = path.join(cacheDir(), 'SmolLM2-135M-Instruct.Q4_1.gguf');
const data = sharedFile(DEFAULT_PPL_DATA);
const seqLen = Number(values['seq-len']);
const maxWindows = Number(values.windows);
const remove = Number(values.remove);
const progress = (label) => (p) => {
  if (process.stderr.isTTY) process.stderr.write(`\r  ${label}: ${p.stage} ${p.done}/${p.total || '?'}   `);
};
const clear = () => process.stderr.isTTY && process.stderr.write('\r'.padEnd(60) + '\r');

const started = performance.now();
const model = await loadModel(modelPath); // Node 20 has no `await using` in plain JS
const info = model.info();
console.log(`SmolLM2-135M-Instruct (${modelPath})`);
console.log(
  `  ${info.architecture}, ${info.numLayers} layers, hidden ${info.hiddenSize}, FFN ${info.intermediateSize}, ` +
    `heads ${info.numAttentionHeads}/${info.numKeyValueHeads}, ${info.parameters.toLocaleString('en-US')} parameters, ` +
    `GGUF ${info.quantization.map((q) => `${q.type}×${q.count}`).join(' ')} → ${info.dtype} on ${info.device}`,
);

const perplexity = async (m, label) => {
  const r = await m.perplexity({ file: data }, { seqLen, maxWindows, onProgress: progress(label) });
  clear();
  return r.ppl;
};
const rows = [['dense', info.numLayers, await perplexity(model, 'dense'), 0]];
// Calibration: 32 chunked windows of 128 tokens for CoMe and drop-bi (the papers use 128–256 windows
// of 2048, hours on a laptop CPU); LaCo and SLM use their references' own (5 sentences; 10 × 128).
// CoMe's skip score reads one state per window (the last token), so few windows make it noisy: at
// the same cost, 8 × 512 merged layers 27–28 and gave perplexity 2344, 32 × 128 gives 256.
const calibration = { kind: 'chunked', seqLen: 128, nSamples: 32 };
let saved;
for (const [method, extra] of [
  ['come', { calibration }],
  ['drop-bi', { calibration }],
  ['laco', {}],
  ['slm', {}],
]) {
  const r = await model.prune({ method, target: { removeLayers: remove }, ...extra, onProgress: progress(method) });
  clear();
  rows.push([method, r.layersAfter, await perplexity(r.model, method), r.seconds, r.record]);
  if (method === 'come') saved = await r.model.save(values.out, { force: true });
  await r.model.dispose();
}
console.log(`\n  WikiText-2 perplexity, seqLen ${seqLen}, first ${maxWindows} windows:`);
console.log('  method    layers  perplexity  prune s  record (new layer ← original layers)');
for (const [method, layers, ppl, seconds, record] of rows) {
  const rec = record ? JSON.stringify(record) : '';
  console.log(`  ${method.padEnd(8)}  ${String(layers).padStart(6)}  ${ppl.toFixed(2).padStart(10)}  ${seconds.toFixed(1).padStart(7)}  ${rec}`);
}
console.log(`\n  CoMe model saved to ${saved.path} (${saved.files.join(', ')})`);
await model.dispose();
console.log(`done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
