#!/usr/bin/env node
// Benchmark: one whole CoMe run on SmolLM2-135M, 30 → 21 layers, on this machine: time split by
// stage (load, calibration forward, scoring, merge, save) and the process's peak RSS.
//
//   npm run bench:come -- [--remove 9] [--seq-len 512] [--samples 32] [--method come|come-p]
//   LAYERFOLD_STATE_CACHE_BYTES=N npm run bench:come   (cap the cached layer inputs: checkpoints)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { loadModel } = require(path.join(root, 'dist', 'index.js'));
const { cacheDir } = require(path.join(root, 'dist', 'paths.js'));

const { values: a } = parseArgs({
  options: {
    remove: { type: 'string', default: '9' },
    'seq-len': { type: 'string', default: '512' },
    samples: { type: 'string', default: '32' },
    method: { type: 'string', default: 'come' },
  },
});
const peakMb = () => Number(/VmHWM:\s+(\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1]) / 1024;
const out = fs.mkdtempSync(path.join(os.tmpdir(), 'layerfold-come-'));
const total0 = performance.now();
let t = performance.now();
const model = await loadModel(path.join(cacheDir(), 'SmolLM2-135M-Instruct.Q4_1.gguf'));
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
  `${a.method} on SmolLM2-135M (f32), ${r.layersBefore} → ${r.layersAfter} layers, calibration ${r.calibration.nSamples} × ${r.calibration.seqLen} tokens, ` +
    `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'CPU'}`,
);
console.log('| stage | seconds | share |');
console.log('| --- | --- | --- |');
for (const [k, v] of Object.entries(stages)) console.log(`| ${k} | ${v.toFixed(2)} | ${((100 * v) / total).toFixed(1)} % |`);
console.log(`| total (wall) | ${total.toFixed(2)} | |`);
for (const w of r.report.warnings) console.log(`note: ${w}`);
console.log(`peak RSS ${peakMb().toFixed(0)} MB; prune() itself reported ${r.seconds.toFixed(2)} s`);
console.log(JSON.stringify({ method: a.method, stages, total, peakRssMb: peakMb(), record: r.record }));
await r.model.dispose();
await model.dispose();
fs.rmSync(out, { recursive: true, force: true });
