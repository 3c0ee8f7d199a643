import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

import { loadModel, type Progress } from '../ts/index';
import { runCli, shared, tmpDir } from './fixtures';

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
    // @ts-expect-error: not one of all | merged
    await expect(student.distill({ teacher, trainable: 'lora' })).rejects.toMatchObject({ code: 'E_CONFIG' });
  });
});

describe('layerfold distill', () => {
  it('heals a saved pruned folder and saves it with the record and the loss curve', () => {
    const dir = tmpDir();
    const come = path.join(dir, 'come');
    const p = run('prune', stories(), '--method', 'come', '--remove-layers', '1', '--seq-len', '64', '--samples', '4', '--out', come, '--json');
    expect(p.status, p.stderr).toBe(0);
    const out = path.join(dir, 'healed');
    const d = run('distill', come, '--teacher', stories(), '--steps', '5', '--seq-len', '32', '--windows', '4', '--out', out, '--json');
    expect(d.status, d.stderr).toBe(0);
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
  });
});
