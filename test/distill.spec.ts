import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

import { loadModel, type Progress } from '../ts/index';
import { cli, runCli, shared, tmpDir } from './fixtures';

const stories = () => shared('models/stories260K');

const run = runCli;

describe('distill()', () => {
  it('trains a pruned model toward its teacher, reports every step and leaves both inputs alone', async () => {
    await using teacher = await loadModel(stories());
    const pruned = await teacher.prune({ method: 'come', target: { removeLayers: 1 }, calibration: { seqLen: 64, nSamples: 4 } });
    await using student = pruned.model;
    const progress: Progress[] = [];
    const r = await student.distill({ teacher, steps: 12, lr: 3e-3, seqLen: 64, windows: 8, onProgress: (p) => progress.push(p) });
    await using healed = r.model;
    expect(r.report.curve.map((s) => s.step)).toEqual([...Array(12).keys()].map((k) => k + 1));
    expect(r.report.tokens).toBe(12 * 4 * 64);
    expect(r.data).toMatchObject({ kind: 'chunked', seqLen: 64, nSamples: 8 });
    expect(r.options).toMatchObject({ steps: 12, warmupSteps: 1, trainable: 'all' });
    const first = r.report.curve[0].loss;
    const last = r.report.curve.at(-1)!.loss;
    expect(last).toBeLessThan(0.8 * first);
    expect(progress.filter((p) => p.stage === 'distill').at(-1)).toMatchObject({ done: 12, total: 12 });
    // The trained model keeps the pruning record and adds the run.
    expect(healed.provenance()?.method).toBe('come');
    expect(healed.provenance()?.record).toEqual(pruned.record);
    expect(student.provenance()).not.toHaveProperty('distill');
    expect(healed.info().numLayers).toBe(4);
  });

  it('rejects a teacher that is not a model, and bad options, with E_CONFIG', async () => {
    await using teacher = await loadModel(stories());
    const pruned = await teacher.prune({ method: 'drop-last', target: { removeLayers: 1 } });
    await using student = pruned.model;
    // @ts-expect-error: a path is not a loaded model
    await expect(student.distill({ teacher: stories() })).rejects.toMatchObject({ code: 'E_CONFIG' });
    await expect(student.distill({ teacher, steps: 0 })).rejects.toMatchObject({ code: 'E_CONFIG' });
    // @ts-expect-error: not one of all | merged | lora
    await expect(student.distill({ teacher, trainable: 'embeddings' })).rejects.toMatchObject({ code: 'E_CONFIG' });
    await expect(student.distill({ teacher, resume: true })).rejects.toMatchObject({ code: 'E_CONFIG' });
  });
});

describe('distill() with LoRA and the mp schedule', () => {
  it('trains only the adapters, first the merged layer alone, and saves plain weights', async () => {
    await using teacher = await loadModel(stories());
    const pruned = await teacher.prune({ method: 'come', target: { removeLayers: 1 }, calibration: { seqLen: 64, nSamples: 4 } });
    await using student = pruned.model;
    const r = await student.distill({ teacher, steps: 8, localSteps: 4, schedule: 'mp', trainable: 'lora', loraRank: 4, lr: 3e-3, seqLen: 64, windows: 8 });
    await using healed = r.model;
    const merged = pruned.record.findIndex((o) => Array.isArray(o));
    expect(r.report.spans).toEqual([{ layer: merged, start: merged, end: merged + 2 }]);
    expect(r.report.curve.map((s) => s.local)).toEqual([true, true, true, true, false, false, false, false]);
    // Rank 4 on 4 layers × 7 linears: (in + out) × 4 each; stories260K: d 64, kv 32, FFN 172 (the merged layer wider).
    expect(r.report.parameters).toBeGreaterThan(0);
    expect(r.report.parameters).toBeLessThan(0.2 * healed.info().parameters);
    expect(r.options).toMatchObject({ schedule: 'mp', localSteps: 4, trainable: 'lora', lora: { rank: 4, alpha: 16 } });
    const dir = tmpDir();
    await healed.save(path.join(dir, 'out'));
    const header = fs.readFileSync(path.join(dir, 'out', 'model.safetensors'));
    expect(header.subarray(8, 8 + Number(header.readBigUInt64LE(0))).toString()).not.toContain('lora');
  });
});

describe('prune({distill}) and compare --distill', () => {
  it('prune({distill}) is the prune followed by the same distill()', async () => {
    await using teacher = await loadModel(stories());
    const distill = { steps: 4, lr: 3e-3, seqLen: 64, windows: 8 };
    const base = { method: 'come' as const, target: { removeLayers: 1 }, calibration: { seqLen: 64, nSamples: 4 } };
    const healed = await teacher.prune({ ...base, distill });
    await using healedModel = healed.model;
    const pruned = await teacher.prune(base);
    await using student = pruned.model;
    const alone = await student.distill({ teacher, ...distill });
    await using aloneModel = alone.model;
    expect(healed.record).toEqual(pruned.record);
    expect(healed.distill?.report.curve).toEqual(alone.report.curve);
    expect(healedModel.provenance()?.distill?.teacher).toBe(stories());
    // Bad distill options fail before the prune starts.
    await expect(teacher.prune({ ...base, distill: { steps: 0 } })).rejects.toMatchObject({ code: 'E_CONFIG' });
    const wiki = shared('data/text/wikitext2_raw_test.txt');
    const started = Date.now();
    await expect(teacher.prune({ ...base, distill: { data: wiki, heldOut: wiki } })).rejects.toThrow(/held-out text/);
    expect(Date.now() - started, 'the overlap is found before the prune runs').toBeLessThan(5000);
  });

  it('compare --distill heals every method with one budget and adds a row for each', () => {
    const dir = tmpDir();
    const out = path.join(dir, 'cmp');
    const r = run('compare', stories(), '--methods', 'drop-bi,come', '--remove-layers', '1', '--tasks', 'piqa', '--limit', '6', '--ppl-data', shared('data/text/wikitext2_raw_test.txt'), '--ppl-windows', '3', '--ppl-seq-len', '64', '--seq-len', '64', '--samples', '4', '--distill-steps', '12', '--distill-lr', '3e-3', '--distill-seq-len', '64', '--distill-windows', '8', '--save', '--out', out, '--json');
    expect(r.status, r.stderr).toBe(0);
    const rows = r.json().rows;
    expect(rows.map((x: { method: string }) => x.method)).toEqual(['dense', 'drop-bi', 'drop-bi+distill', 'come', 'come+distill']);
    for (const m of ['drop-bi', 'come']) {
      const [plain, healed] = [rows.find((x: { method: string }) => x.method === m), rows.find((x: { method: string }) => x.method === `${m}+distill`)];
      expect(healed.distillSeconds).toBeGreaterThan(0);
      expect(plain.distillSeconds ?? null).toBeNull();
      expect(healed.record).toEqual(plain.record);
      expect(healed.ppl).toBeLessThan(plain.ppl);
      const saved = JSON.parse(fs.readFileSync(path.join(out, `${m}+distill`, 'layerfold.json'), 'utf8'));
      expect(saved.distill.options).toMatchObject({ steps: 12, lr: 3e-3 });
      expect(saved.distill.report.tokens).toBe(12 * 4 * 64);
    }
  });
});

/** SHA-256 of a file. */
const digest = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');

describe('layerfold distill --resume', () => {
  it('continues a run killed with SIGKILL to the same loss and weights, bit for bit', async () => {
    const dir = tmpDir();
    const come = path.join(dir, 'come');
    const p = run('prune', stories(), '--method', 'come', '--remove-layers', '1', '--seq-len', '64', '--samples', '4', '--out', come, '--json');
    expect(p.status, p.stderr).toBe(0);
    const args = (out: string, ckpt: string) => ['distill', come, '--teacher', stories(), '--steps', '150', '--lr', '2e-3', '--seq-len', '64', '--windows', '8', '--batch-size', '2', '--checkpoint-dir', ckpt, '--checkpoint-every', '10', '--out', out, '--json'];

    const whole = run(...args(path.join(dir, 'whole'), path.join(dir, 'ckpt-whole')));
    expect(whole.status, whole.stderr).toBe(0);

    // Kill the second run once its first checkpoint is on disk.
    const ckpt = path.join(dir, 'ckpt');
    const out = path.join(dir, 'resumed');
    const killed = await new Promise<string | null>((resolve, reject) => {
      const child = spawn(process.execPath, [cli, ...args(out, ckpt)], { stdio: 'ignore' });
      const poll = setInterval(() => {
        if (fs.existsSync(path.join(ckpt, 'distill-checkpoint.safetensors'))) child.kill('SIGKILL');
      }, 5);
      child.on('error', reject);
      child.on('exit', (_code, signal) => {
        clearInterval(poll);
        resolve(signal);
      });
    });
    expect(killed, 'the run ended before its first checkpoint could be killed').toBe('SIGKILL');
    expect(fs.existsSync(out)).toBe(false);
    // Without --resume the folder's checkpoint is not overwritten.
    const again = run(...args(out, ckpt));
    expect(again.status).toBe(1);
    expect(again.json().error.code).toBe('E_OUTPUT_EXISTS');
    const resumed = run(...args(out, ckpt), '--resume');
    expect(resumed.status, resumed.stderr).toBe(0);
    const [a, b] = [whole.json().report, resumed.json().report];
    expect(b.resumedFrom).toBeGreaterThan(0);
    expect(b.resumedFrom).toBeLessThan(150);
    expect(b.curve).toEqual(a.curve);
    expect(digest(path.join(out, 'model.safetensors'))).toBe(digest(path.join(dir, 'whole', 'model.safetensors')));
  }, 120_000);
});

describe('layerfold distill', () => {
  it('heals a saved pruned folder and saves it with the record and the loss curve', () => {
    const dir = tmpDir();
    const come = path.join(dir, 'come');
    const p = run('prune', stories(), '--method', 'come', '--remove-layers', '1', '--seq-len', '64', '--samples', '4', '--out', come, '--json');
    expect(p.status, p.stderr).toBe(0);
    const out = path.join(dir, 'healed');
    const chart = path.join(dir, 'loss.png');
    const d = run('distill', come, '--teacher', stories(), '--steps', '5', '--seq-len', '32', '--windows', '4', '--out', out, '--chart', chart, '--json');
    expect(d.status, d.stderr).toBe(0);
    // The loss curve as a PNG (its signature, and a size no empty chart has).
    const png = fs.readFileSync(chart);
    expect(png.subarray(1, 4).toString()).toBe('PNG');
    expect(png.length).toBeGreaterThan(10_000);
    const result = d.json();
    expect(result.report.curve).toHaveLength(5);
    expect(result.out).toBe(path.resolve(out));
    const saved = JSON.parse(fs.readFileSync(path.join(out, 'layerfold.json'), 'utf8'));
    expect(saved.method).toBe('come');
    expect(saved.distill.report.curve).toHaveLength(5);
    expect(saved.distill.teacher).toBe(stories());
    // A teacher with another depth than the record names fails before training, and writes nothing.
    const bad = run('distill', come, '--teacher', come, '--steps', '2', '--out', path.join(dir, 'bad'), '--json');
    expect(bad.status).toBe(2);
    expect(bad.json().error.code).toBe('E_CONFIG');
    expect(fs.existsSync(path.join(dir, 'bad'))).toBe(false);
    // Training on the text the model is measured on is refused.
    const valid = shared('data/text/wikitext2_valid_tokenized.txt');
    const leak = run('distill', come, '--teacher', stories(), '--data', valid, '--held-out', valid, '--steps', '2', '--out', path.join(dir, 'leak'), '--json');
    expect(leak.status).toBe(2);
    expect(leak.json().error.message).toContain('held-out text');
  });
});
