#!/usr/bin/env node
// The quick-start demo, the headline job on a small real model: SmolLM2-135M-Instruct (30 layers,
// GGUF Q4_1) from the model cache, 30 → 21 layers (30% of the layers) by CoMe, ShortGPT's
// block-influence drop (drop-bi), LaCo and SLM, compared with the dense model by `layerfold
// compare`: WikiText-2 perplexity and the seven zero-shot tasks on their first examples, one
// table, compare.json and a bar chart; each pruned model is saved under the output folder
// (out/demo by default), the CoMe one also as a GGUF file that llama.cpp runs; then the CoMe model
// is healed by a short distillation and measured again.
//
//   npm run demo            (fetches the model first)
//   node scripts/demo.mjs [--limit N] [--windows N] [--remove N] [--distill-steps N] [--out DIR]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { sharedFile } from './shared.mjs';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { loadModel } = require(path.join(root, 'dist', 'index.js'));
const { cacheDir } = require(path.join(root, 'dist', 'paths.js'));
const { lossCurveSvg, svgToPng } = require(path.join(root, 'dist', 'charts.js'));

const { values } = parseArgs({
  options: {
    limit: { type: 'string', default: '10' },
    windows: { type: 'string', default: '8' },
    remove: { type: 'string', default: '9' },
    'distill-steps': { type: 'string', default: '20' },
    out: { type: 'string', default: path.join('out', 'demo') },
  },
});
const modelPath = path.join(cacheDir(), 'SmolLM2-135M-Instruct.Q4_1.gguf');
const started = performance.now();

const model = await loadModel(modelPath); // Node 20 has no `await using` in plain JS
const info = model.info();
console.log(`SmolLM2-135M-Instruct (${modelPath})`);
console.log(
  `  ${info.architecture}, ${info.numLayers} layers, hidden ${info.hiddenSize}, FFN ${info.intermediateSize}, ` +
    `heads ${info.numAttentionHeads}/${info.numKeyValueHeads}, ${info.parameters.toLocaleString('en-US')} parameters, ` +
    `GGUF ${info.quantization.map((q) => `${q.type}×${q.count}`).join(' ')} → ${info.dtype} on ${info.device}\n`,
);
await model.dispose();

// Calibration: 32 chunked windows of 128 tokens for CoMe and drop-bi, which share one forward
// pass over them (the papers use 128–256 windows of 2048, hours on a laptop CPU). CoMe's skip
// score reads one state per window (the last token), so few windows make it noisy: at the same
// cost, 8 × 512 merged layers 27–28 and gave perplexity 2344, 32 × 128 gives 256. LaCo and SLM
// use their references' own (5 sentences; 10 × 128): their threshold searches run every
// candidate over the whole set. The task examples are the first --limit of each file.
const cli = path.join(root, 'dist', 'cli.js');
const run = (args) => {
  const r = spawnSync(process.execPath, [cli, ...args], {
    stdio: 'inherit',
    env: { ...process.env, LAYERFOLD_DATA: process.env.LAYERFOLD_DATA ?? sharedFile('data/eval') },
  });
  if (r.status !== 0) process.exit(r.status ?? 1);
};
console.log(
  `layerfold compare: ${values.remove} of ${info.numLayers} layers removed; WikiText-2 perplexity on the first ` +
    `${values.windows} windows of 512 tokens; each task's first ${values.limit} examples (× 100)`,
);
const config = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'layerfold-demo-')), 'compare.json');
fs.writeFileSync(config, JSON.stringify({ methodOptions: { laco: { calibration: {} }, slm: { calibration: {} } } }));
// A previous demo's output folder holds the saved models, which --force does not replace.
if (fs.existsSync(path.join(values.out, 'compare.json'))) fs.rmSync(values.out, { recursive: true });
run([
  'compare', modelPath, '--config', config,
  '--methods', 'come,drop-bi,laco,slm',
  '--remove-layers', values.remove,
  '--calib-kind', 'chunked', '--seq-len', '128', '--samples', '32',
  '--limit', values.limit,
  '--ppl-data', sharedFile('data/text/wikitext2_raw_test.txt'), '--ppl-windows', values.windows,
  '--out', values.out, '--save', '--force',
]);

// Healing: the CoMe model trained toward the dense one (METHODS.md §3.5, schedule sp), a short
// run: --distill-steps steps of 2 windows of 256 tokens from the shipped calibration text (not
// the perplexity text), then the same perplexity and tasks as above.
const compared = JSON.parse(fs.readFileSync(path.join(values.out, 'compare.json'), 'utf8'));
const before = compared.rows.find((r) => r.method === 'come');
const dense = compared.rows.find((r) => r.method === 'dense');
const steps = Number(values['distill-steps']);
console.log(`\nlayerfold distill: CoMe's model healed toward the dense model, ${steps} steps × 2 windows × 256 tokens`);
const teacher = await loadModel(modelPath);
const student = await loadModel(path.join(values.out, 'come'));
const healedDir = path.join(values.out, 'come+distill');
const pplText = sharedFile('data/text/wikitext2_raw_test.txt');
const r = await student.distill({ teacher, steps, lr: 2e-4, batchSize: 2, seqLen: 256, windows: 64, heldOut: pplText });
const ppl = await r.model.perplexity({ file: pplText }, { seqLen: 512, maxWindows: Number(values.windows) });
const evaluated = await r.model.evaluate({ limit: Number(values.limit), dataDir: process.env.LAYERFOLD_DATA ?? sharedFile('data/eval') });
await r.model.save(healedDir, { force: true });
const lossChart = path.join(values.out, 'come+distill-loss.png');
fs.writeFileSync(lossChart, svgToPng(await lossCurveSvg(r.report, 'CoMe, SmolLM2 30 → 21')));
const f = (x) => (x == null ? 'n/a' : x >= 1e4 ? x.toExponential(2) : x.toFixed(2));
const pct = (x) => (x == null || !Number.isFinite(x) ? 'n/a' : `${x.toFixed(1)}%`);
console.log(
  `  ${r.report.tokens} tokens in ${r.report.seconds.toFixed(0)} s (${r.report.tokensPerSecond.toFixed(0)} tokens/s); ` +
    `loss ${r.report.curve[0].loss.toFixed(3)} → ${r.report.curve.at(-1).loss.toFixed(3)}`,
);
console.log(`  come          perplexity ${f(before.ppl)}, average ${before.average.toFixed(2)} (${pct(before.retained)} of dense ${dense.average.toFixed(2)})`);
console.log(`  come+distill  perplexity ${f(ppl.ppl)}, average ${evaluated.average.toFixed(2)} (${pct((100 * evaluated.average) / dense.average)} of dense), saved to ${healedDir}, loss curve ${lossChart}`);
for (const m of [r.model, student, teacher]) await m.dispose();

const gguf = path.join(values.out, 'come.gguf');
console.log(`\nCoMe model as GGUF (f16) for llama.cpp:`);
run(['convert', path.join(values.out, 'come'), '--out', gguf, '--dtype', 'f16', '--force']);
console.log(`done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
