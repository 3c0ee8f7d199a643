#!/usr/bin/env node
// Benchmark: every depth-pruning method on SmolLM2-135M (30 layers) removing the same number of
// layers, with WikiText-2 perplexity at seqLen 512 and the time each took, from one command; then
// SLEB and LaCo with the cached-prefix candidate evaluation against a full forward per candidate,
// in the same run.
//
//   npm run bench:prune -- [--remove 9] [--windows 64] [--skip-speed]
//
// Calibration: the methods' reference settings where they fit a 2-core CPU (LaCo: 5 sentences;
// SLM: 10 sampled windows of 128 tokens); drop-bi and drop-angular use 32 chunked windows of 512
// tokens and SLEB 8 sampled windows of 128 instead of 128 × 2048 (hours here); CoMe uses 32
// chunked windows of 512 and CoMe-P 4 (its 21 ratio trials per merge each run the model from the
// merged layer) instead of 256 × 2048. Perplexity uses the
// first `--windows` windows of the test split (all 589 with --windows 0).
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { sharedFile } from '../scripts/shared.mjs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { loadModel } = require(path.join(root, 'dist', 'index.js'));
const { cacheDir } = require(path.join(root, 'dist', 'paths.js'));

const { values: a } = parseArgs({
  options: {
    remove: { type: 'string', default: '9' },
    windows: { type: 'string', default: '64' },
    'skip-speed': { type: 'boolean', default: false },
    'skip-table': { type: 'boolean', default: false },
    only: { type: 'string' },
  },
});
const remove = Number(a.remove);
const maxWindows = Number(a.windows) || undefined;
const data = sharedFile('data/text/wikitext2_raw_test.txt');
const model = await loadModel(path.join(cacheDir(), 'SmolLM2-135M-Instruct.Q4_1.gguf'));
const layers = model.info().numLayers;
const cpu = `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'CPU'}`;
const ppl = async (m) => (await m.perplexity({ file: data }, { seqLen: 512, maxWindows })).ppl;
const log = (s) => process.stderr.write(`${s}\n`);

const chunked = { kind: 'chunked', seqLen: 512, nSamples: 32 };
const runs = [
  ['drop-bi', { calibration: chunked }],
  ['drop-angular', { calibration: chunked }],
  ['drop-last', {}],
  ['sleb', { calibration: { kind: 'sampled', seqLen: 128, nSamples: 8 } }],
  ['laco', {}],
  ['slm', {}],
  ['come', { calibration: chunked }],
  ['come-p', { calibration: { kind: 'chunked', seqLen: 512, nSamples: 4 } }],
];

const rows = [];
if (!a['skip-table']) {
  log(`dense model: perplexity…`);
  rows.push({ method: 'dense', layers, removed: 0, ppl: await ppl(model), seconds: 0, detail: '' });
  for (const [method, extra] of runs.filter(([m]) => !a.only || a.only.split(',').includes(m))) {
    log(`${method}: pruning ${layers} → ${layers - remove}…`);
    const r = await model.prune({ method, target: { removeLayers: remove }, ...extra });
    const t = r.report.threshold;
    rows.push({
      method,
      layers: r.layersAfter,
      removed: r.layersBefore - r.layersAfter,
      ppl: await ppl(r.model),
      seconds: r.seconds,
      detail: (t ? `T=${t.threshold.toFixed(4)}${t.exact ? '' : ' (not exact)'} ` : '') + JSON.stringify(r.record),
    });
    await r.model.dispose();
  }
  console.log(`\nSmolLM2-135M-Instruct (GGUF Q4_1 → f32), ${layers} layers, remove ${remove}; WikiText-2 test perplexity at seqLen 512 on ${maxWindows ? `the first ${maxWindows} windows` : 'every window'}; ${cpu}`);
  console.log('| method | layers | removed | perplexity | prune time (s) | record |');
  console.log('| --- | --- | --- | --- | --- | --- |');
  for (const r of rows) console.log(`| ${r.method} | ${r.layers} | ${r.removed} | ${r.ppl.toFixed(2)} | ${r.seconds.toFixed(1)} | ${r.detail} |`);
}

const speed = [];
if (!a['skip-speed']) {
  for (const [method, target, extra] of [
    ['sleb', { removeLayers: 2 }, { calibration: { kind: 'sampled', seqLen: 128, nSamples: 4 } }],
    ['laco', { removeLayers: remove }, {}],
  ]) {
    const times = {};
    for (const prefixCache of [true, false]) {
      log(`${method} prefixCache=${prefixCache}…`);
      const r = await model.prune({ method, target, prefixCache, ...extra });
      times[prefixCache] = { seconds: r.seconds, record: JSON.stringify(r.record) };
      await r.model.dispose();
    }
    speed.push({ method, target, cached: times.true.seconds, full: times.false.seconds, same: times.true.record === times.false.record });
  }
  console.log(`\nCandidate evaluation on SmolLM2, cached prefix vs a full forward per candidate (same run, ${cpu}):`);
  console.log('| method | target | cached prefix (s) | full forward (s) | speed-up | same result |');
  console.log('| --- | --- | --- | --- | --- | --- |');
  for (const s of speed) {
    console.log(`| ${s.method} | ${JSON.stringify(s.target)} | ${s.cached.toFixed(1)} | ${s.full.toFixed(1)} | ${(s.full / s.cached).toFixed(2)}× | ${s.same} |`);
  }
}
console.log(JSON.stringify({ remove, maxWindows: maxWindows ?? 'all', cpu, rows, speed }));
await model.dispose();
