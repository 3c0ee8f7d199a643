/**
 * `model.compare()` and `layerfold compare`: every row is the model that `prune` makes, measured
 * as `perplexity` and `evaluate` measure it alone; the dense row comes first; the CLI writes
 * compare.json and the chart (SVG, PNG) atomically and, with --save, each pruned model.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

import { loadModel } from '../ts/index';
import { cli, shared, tmpDir, wikitext } from './fixtures';

const stories = () => shared('models/stories260K');
const wiki = () => shared('data/text/wikitext2_raw_test.txt');
const calibration = { kind: 'chunked' as const, seqLen: 64, nSamples: 4 };
const TASKS = ['piqa', 'arc_easy', 'winogrande'];

describe('Model.compare', () => {
  it('gives each method the row its own prune + perplexity + evaluate give', async () => {
    await using model = await loadModel(stories());
    const r = await model.compare({
      methods: ['drop-bi', 'slm'],
      target: { removeLayers: 2 },
      calibration,
      tasks: TASKS,
      limit: 6,
      pplData: wiki(),
      pplWindows: 3,
      pplSeqLen: 64,
    });
    expect(r.rows.map((row) => row.method)).toEqual(['dense', 'drop-bi', 'slm']);
    expect(r.rows[0].layers).toBe(5);
    expect(r.rows[0].retained).toBe(100);
    expect(r.rows[0].record).toEqual([0, 1, 2, 3, 4]);
    for (const row of r.rows) {
      const m = row.method === 'dense' ? null : (await model.prune({ method: row.method as 'drop-bi', target: { removeLayers: 2 }, calibration })).model;
      const subject = m ?? model;
      try {
        expect(row.layers).toBe(subject.info().numLayers);
        expect(row.parameters).toBe(subject.info().parameters);
        const ppl = await subject.perplexity({ file: wiki() }, { seqLen: 64, maxWindows: 3 });
        expect(row.ppl).toBeCloseTo(ppl.ppl, 9);
        const ev = await subject.evaluate({ tasks: TASKS, limit: 6 });
        expect(row.tasks.map((t) => t.task)).toEqual(TASKS);
        row.tasks.forEach((t) => {
          expect(t.metric).toBe(ev.tasks[t.task].metric);
          expect(t.value).toBeCloseTo(100 * ev.tasks[t.task].value, 9);
        });
        expect(row.average).toBeCloseTo(ev.average, 9);
        expect(row.retained).toBeCloseTo((100 * row.average) / r.rows[0].average, 9);
        if (m) expect(row.pruneSeconds).toBeGreaterThan(0);
      } finally {
        m?.dispose();
      }
    }
  });

  it('refuses options for a method it does not compare, before any work', async () => {
    await using model = await loadModel(stories());
    const err = await model.compare({ methods: ['slm'], target: { removeLayers: 1 }, methodOptions: { laco: { merge: 'top' } } }).catch((e) => e);
    expect(err.code).toBe('E_CONFIG');
    expect(err.message).toMatch(/laco/);
  });
});

describe('layerfold compare', () => {
  it('prints the table, writes compare.json, the chart and, with --save, every pruned model', () => {
    const dir = tmpDir();
    const out = path.join(dir, 'cmp');
    const args = ['compare', stories(), '--methods', 'drop-last,come', '--remove-layers', '2', '--tasks', 'piqa,boolq', '--limit', '4', '--ppl-data', wikitext(), '--ppl-windows', '2', '--ppl-seq-len', '64', '--calib-kind', 'chunked', '--seq-len', '64', '--samples', '4', '--out', out, '--save'];
    const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^method\s+layers\s+params\s+ppl\s+piqa\s+boolq\s+avg\s+retained\s+prune s$/m);
    expect(r.stdout).toMatch(/^dense\s+5\s/m);
    expect(r.stdout).toContain(path.join(out, 'compare.png'));
    expect(fs.readdirSync(out).sort()).toEqual(['come', 'compare.json', 'compare.png', 'compare.svg', 'drop-last']);
    const doc = JSON.parse(fs.readFileSync(path.join(out, 'compare.json'), 'utf8'));
    expect(doc.rows.map((row: { method: string }) => row.method)).toEqual(['dense', 'drop-last', 'come']);
    expect(doc.rows[0].record).toEqual([0, 1, 2, 3, 4]);
    expect(doc.target).toEqual({ removeLayers: 2 });
    expect(fs.readFileSync(path.join(out, 'compare.svg'), 'utf8')).toMatch(/^<svg[^>]*>[\s\S]*drop-last \(3\)[\s\S]*<\/svg>$/);
    expect(fs.readFileSync(path.join(out, 'compare.png')).subarray(1, 4).toString()).toBe('PNG');
    // The saved models are the rows' models.
    for (const [i, method] of [[1, 'drop-last'], [2, 'come']] as const) {
      const saved = JSON.parse(fs.readFileSync(path.join(out, method, 'layerfold.json'), 'utf8'));
      expect(saved.record).toEqual(doc.rows[i].record);
      expect(saved.layersAfter).toBe(3);
    }
    expect(fs.readdirSync(dir).filter((f) => f.startsWith('.')), 'no staging folder is left').toEqual([]);

    // --force replaces a flat folder (a folder with subfolders, like --save's, it never replaces).
    const flat = path.join(dir, 'flat');
    fs.mkdirSync(flat);
    fs.writeFileSync(path.join(flat, 'old.txt'), 'x');
    const again = args.filter((a) => a !== '--save').map((a) => (a === out ? flat : a));
    const json = spawnSync(process.execPath, [cli, ...again, '--force', '--json'], { encoding: 'utf8' });
    expect(json.status, json.stderr).toBe(0);
    const parsed = JSON.parse(json.stdout);
    expect(parsed.rows[1]).toMatchObject({ method: 'drop-last', layers: 3, tasks: [{ task: 'piqa', metric: 'acc' }, { task: 'boolq', metric: 'acc' }] });
    expect(parsed.rows[1].tasks[0].value).toBe(doc.rows[1].tasks[0].value);
    expect(fs.readdirSync(flat).sort()).toEqual(['compare.json', 'compare.png', 'compare.svg']);
  });
});
