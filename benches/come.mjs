#!/usr/bin/env node
// Benchmark: one whole CoMe run on SmolLM2-135M, 30 → 21 layers, on this machine: time split by
// stage (load, calibration forward, scoring, merge, save) and the process's peak RSS; then, in the
// same run, the published loop in PyTorch (benches/come_reference.py: every step a full pass of
// transformers with hooks) on the same GGUF, text, windows and thread count, with both totals,
// their ratio and whether the two merge records agree.
//
//   npm run bench:come -- [--remove 9] [--seq-len 512] [--samples 32] [--method come|come-p]
//                         [--python <python with torch>] [--skip-reference]
//   LAYERFOLD_STATE_CACHE_BYTES=N npm run bench:come   (cap the cached layer inputs: checkpoints)
//
// The reference needs `pip install torch transformers gguf accelerate`; point --python (or
// LAYERFOLD_ORACLE_PYTHON) at that interpreter. It runs `come` only.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { addon, loadModel } = require(path.join(root, 'dist', 'index.js'));
const { cacheDir } = require(path.join(root, 'dist', 'paths.js'));

const { values: a } = parseArgs({
  options: {
    remove: { type: 'string', default: '9' },
    'seq-len': { type: 'string', default: '512' },
    samples: { type: 'string', default: '32' },
    method: { type: 'string', default: 'come' },
    python: { type: 'string', default: process.env.LAYERFOLD_ORACLE_PYTHON ?? 'python3' },
    'skip-reference': { type: 'boolean', default: false },
  },
});
const peakMb = () => Number(/VmHWM:\s+(\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1]) / 1024;
const out = fs.mkdtempSync(path.join(os.tmpdir(), 'layerfold-come-'));
const total0 = performance.now();
let t = performance.now();
const gguf = path.join(cacheDir(), 'SmolLM2-135M-Instruct.Q4_1.gguf');
const model = await loadModel(gguf);
const load = (performance.now() - t) / 1000;
const r = await model.prune({
  method: a.method,
  target: { removeLayers: Number(a.remove) },
  calibration: { kind: 'chunked', seqLen: Number(a['seq-len']), nSamples: Number(a.samples) },
});
t = performance.now();
await r.model.save(path.join(out, 'model'));
const save = (performance.now() - t) / 1000;
const stages = { load, ...r.report.timings, save };
const total = (performance.now() - total0) / 1000;
console.log(
  `${a.method} on SmolLM2-135M (f32, CPU products by ${addon().blas}), ${r.layersBefore} → ${r.layersAfter} layers, calibration ${r.calibration.nSamples} × ${r.calibration.seqLen} tokens, ` +
    `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'CPU'}`,
);
console.log('| stage | seconds | share |');
console.log('| --- | --- | --- |');
for (const [k, v] of Object.entries(stages)) console.log(`| ${k} | ${v.toFixed(2)} | ${((100 * v) / total).toFixed(1)} % |`);
console.log(`| total (wall) | ${total.toFixed(2)} | |`);
for (const w of r.report.warnings) console.log(`note: ${w}`);
console.log(`peak RSS ${peakMb().toFixed(0)} MB; prune() itself reported ${r.seconds.toFixed(2)} s`);
// The work, in layer passes over the whole calibration set: layerfold's first pass, then after each
// merge but the last a pass from the merged layer on (every layer's input cached; with checkpoints
// only, up to stride − 1 more each) whose last layer runs at the last tokens only (lastToken: about a
// sixth of a pass each; a pair with the last layer adds one whole pass of it); the published loop
// runs the whole model at every step.
const passes = { layerfold: r.layersBefore, lastToken: 0, reference: 0 };
let layers = r.layersBefore;
r.report.steps.forEach((step, k) => {
  passes.reference += layers;
  // A chosen pair that holds the last layer after a last-token re-scoring: its whole pass.
  if (k > 0 && step.details.pair[1] === layers - 1) passes.layerfold += 1;
  layers -= 1;
  if (k < r.report.steps.length - 1) {
    passes.layerfold += layers - step.details.pair[0] - 1;
    passes.lastToken += 1;
  }
});
if (a.method === 'come')
  console.log(
    `layer passes: layerfold ${passes.layerfold} (and ${passes.lastToken} of the last layer at the last tokens), the published loop ${passes.reference} (${(passes.reference / passes.layerfold).toFixed(2)}×)`,
  );
const ours = { method: a.method, stages, total, peakRssMb: peakMb(), record: r.record, passes };
await r.model.dispose();
await model.dispose();
fs.rmSync(out, { recursive: true, force: true });

let reference = null;
if (a.method === 'come' && !a['skip-reference']) {
  // The package's default calibration text, which the layerfold run above read.
  const data = path.join(root, 'data', 'calibration', 'wikitext2_valid_tokenized.txt');
  const threads = String(os.availableParallelism());
  const args = [path.join(root, 'benches', 'come_reference.py'), '--gguf', gguf, '--data', data, '--seq-len', a['seq-len'], '--samples', a.samples, '--remove', a.remove, '--threads', threads];
  const env = { ...process.env, OMP_NUM_THREADS: threads, MKL_NUM_THREADS: threads };
  const p = spawnSync(a.python, args, { encoding: 'utf8', env });
  if (p.status !== 0) throw new Error(`${a.python} ${args.join(' ')} failed:\n${p.stderr}`);
  reference = JSON.parse(p.stdout.trim().split('\n').at(-1));
  const row = (name, st, tot, rss) =>
    console.log(`| ${name} | ${['calibrate', 'score', 'merge'].map((k) => (st[k] ?? 0).toFixed(2)).join(' | ')} | ${tot.toFixed(2)} | ${rss.toFixed(0)} |`);
  console.log('\n| implementation | calibrate s | score s | merge s | total s | peak RSS MB |');
  console.log('| --- | --- | --- | --- | --- | --- |');
  row('layerfold', stages, total, ours.peakRssMb);
  row(reference.impl, reference.stages, reference.total, reference.peakRssMb);
  const same = JSON.stringify(reference.record) === JSON.stringify(ours.record);
  const pruning = (st) => st.calibrate + st.score + st.merge;
  console.log(
    `reference / layerfold: ${(reference.total / total).toFixed(2)}× the time end to end (load to save), ` +
      `${(pruning(reference.stages) / pruning(stages)).toFixed(2)}× in calibrate + score + merge; merge records ${same ? 'agree' : 'DIFFER'}`,
  );
  const perPass = (st, n) => (st.calibrate + st.score) / n;
  const [ourPass, refPass] = [perPass(stages, passes.layerfold), perPass(reference.stages, passes.reference)];
  console.log(
    `seconds per layer pass (calibrate + score over passes): layerfold ${ourPass.toFixed(3)}, reference ${refPass.toFixed(3)} (${(refPass / ourPass).toFixed(2)}×); ` +
      `passes ${passes.reference} / ${passes.layerfold} = ${(passes.reference / passes.layerfold).toFixed(2)}×`,
  );
  if (!same) console.log(`layerfold ${JSON.stringify(ours.record)}\nreference ${JSON.stringify(reference.record)}`);
}
console.log(JSON.stringify({ ...ours, reference }));
