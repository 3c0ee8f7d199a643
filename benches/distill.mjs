#!/usr/bin/env node
// Benchmark: healing SmolLM2-135M pruned 30 → 21 by distillation (METHODS.md §3.5), every
// combination of method × schedule × trainable under one budget of steps and tokens. Each
// combination runs in its own process, and the peak RSS is the distillation's (the high-water
// mark is reset after pruning). Per row: tokens, minutes,
// tokens/s, peak RSS, WikiText-2 perplexity (test split, 40 windows of 512) before → after, and the
// seven-task average (first --limit examples) after, and with --eval-before also before (once per
// method: pruning is deterministic, so every row of a method starts from the same model).
//
//   npm run bench:distill -- [--methods come,drop-bi] [--schedules sp,mp] [--trainable all,lora]
//                            [--steps 40] [--batch-size 2] [--seq-len 256] [--windows 64]
//                            [--lr 2e-4] [--lora-lr 1e-3] [--limit 100] [--eval-before] [--alpha A] [--beta B]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { sharedFile } from '../scripts/shared.mjs';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { loadModel } = require(path.join(root, 'dist', 'index.js'));
const { cacheDir } = require(path.join(root, 'dist', 'paths.js'));

const options = {
  methods: { type: 'string', default: 'come,drop-bi' },
  schedules: { type: 'string', default: 'sp,mp' },
  trainable: { type: 'string', default: 'all,lora' },
  steps: { type: 'string', default: '40' },
  'batch-size': { type: 'string', default: '2' },
  'seq-len': { type: 'string', default: '256' },
  windows: { type: 'string', default: '64' },
  lr: { type: 'string', default: '2e-4' },
  'lora-lr': { type: 'string', default: '1e-3' },
  limit: { type: 'string', default: '100' },
  'ppl-windows': { type: 'string', default: '40' },
  'eval-before': { type: 'boolean', default: false },
  alpha: { type: 'string' },
  beta: { type: 'string' },
  one: { type: 'string' },
};
const { values: a } = parseArgs({ options });
const pplText = sharedFile('data/text/wikitext2_raw_test.txt');
const evalData = process.env.LAYERFOLD_DATA ?? sharedFile('data/eval');
const peakMb = () => Number(/VmHWM:\s+(\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1]) / 1024;

async function one(method, schedule, trainable) {
  const teacher = await loadModel(path.join(cacheDir(), 'SmolLM2-135M-Instruct.Q4_1.gguf'));
  // The calibration of the compare table (issue 10): 32 chunked windows of 128 tokens.
  const pruned = await teacher.prune({ method, target: { removeLayers: 9 }, calibration: { kind: 'chunked', seqLen: 128, nSamples: 32 } });
  const ppl = async (m) => (await m.perplexity({ file: pplText }, { seqLen: 512, maxWindows: Number(a['ppl-windows']) })).ppl;
  const average = async (m) => (await m.evaluate({ limit: Number(a.limit), dataDir: evalData })).average;
  const before = { ppl: await ppl(pruned.model), average: a['eval-before'] ? await average(pruned.model) : null };
  // Peak RSS of the distillation itself: reset the high-water mark after pruning (Linux: 5 > clear_refs).
  fs.writeFileSync('/proc/self/clear_refs', '5');
  const t = performance.now();
  const r = await pruned.model.distill({
    teacher,
    steps: Number(a.steps),
    batchSize: Number(a['batch-size']),
    seqLen: Number(a['seq-len']),
    windows: Number(a.windows),
    lr: Number(trainable === 'lora' ? a['lora-lr'] : a.lr),
    schedule,
    trainable,
    heldOut: pplText,
    ...(a.alpha ? { alpha: Number(a.alpha) } : {}),
    ...(a.beta ? { beta: Number(a.beta) } : {}),
  });
  const seconds = (performance.now() - t) / 1000;
  const rss = peakMb();
  const after = { ppl: await ppl(r.model), average: await average(r.model) };
  return { method, schedule, trainable, tokens: r.report.tokens, parameters: r.report.parameters, seconds, tokensPerSecond: r.report.tokensPerSecond, peakRssMb: rss, before, after, data: r.data, spans: r.report.spans };
}

if (a.one) {
  const [method, schedule, trainable] = a.one.split(':');
  console.log(JSON.stringify(await one(method, schedule, trainable)));
  process.exit(0);
}

const cpu = `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'CPU'}`;
console.log(
  `distillation of SmolLM2-135M pruned 30 → 21, ${a.steps} steps × ${a['batch-size']} windows × ${a['seq-len']} tokens each, ` +
    `lr ${a.lr} (LoRA ${a['lora-lr']}), on ${cpu}; perplexity on ${a['ppl-windows']} windows of 512 of ${path.basename(pplText)}; ` +
    `average of the seven tasks' first ${a.limit} examples`,
);
const flags = Object.entries(a).flatMap(([k, v]) =>
  k === 'one' || k === 'eval-before' || v === false ? [] : v === true ? [`--${k}`] : [`--${k}`, String(v)],
);
const rows = [];
for (const method of a.methods.split(','))
  for (const schedule of a.schedules.split(','))
    for (const trainable of a.trainable.split(',')) {
      const first = schedule === a.schedules.split(',')[0] && trainable === a.trainable.split(',')[0];
      const evalBefore = a['eval-before'] && first ? ['--eval-before'] : [];
      const args = [fileURLToPath(import.meta.url), ...flags, ...evalBefore, '--one', `${method}:${schedule}:${trainable}`];
      const r = spawnSync(process.execPath, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
      if (r.status !== 0) {
        console.error(`${method} ${schedule} ${trainable} failed (status ${r.status})`);
        continue;
      }
      const row = JSON.parse(r.stdout.trim().split('\n').at(-1));
      rows.push(row);
      console.error(JSON.stringify(row));
    }
const f = (x) => (x == null ? '–' : x >= 1e4 ? x.toExponential(2) : x.toFixed(2));
console.log('| method | schedule | trainable | trained params | tokens | minutes | tokens/s | peak RSS MB | PPL before → after | average before → after |');
console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
for (const r of rows) {
  const avg = (x) => (x == null ? '–' : x.toFixed(2));
  console.log(
    `| ${r.method} | ${r.schedule} | ${r.trainable} | ${(r.parameters / 1e6).toFixed(2)}M | ${r.tokens} | ${(r.seconds / 60).toFixed(1)} | ${r.tokensPerSecond.toFixed(0)} | ${r.peakRssMb.toFixed(0)} | ${f(r.before.ppl)} → ${f(r.after.ppl)} | ${avg(r.before.average)} → ${avg(r.after.average)} |`,
  );
}
console.log(JSON.stringify(rows));
