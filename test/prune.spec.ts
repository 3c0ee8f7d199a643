import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

import { loadModel, methodDefaults, METHOD_NAMES, schemas, type Progress } from '../ts/index';
import { METHOD_OPTIONS } from '../ts/config';
import { runCli, shared, tmpDir } from './fixtures';

const stories = () => shared('models/stories260K');
const calibration = { seqLen: 64, nSamples: 4 };

const run = runCli;

describe('prune()', () => {
  it('runs every method to the target and leaves the input model alone', async () => {
    await using model = await loadModel(stories());
    for (const method of METHOD_NAMES) {
      const r = await model.prune({ method, target: { removeLayers: 1 }, calibration, ...(method === 'laco' ? { layersPerMerge: 2 } : {}) });
      expect(r.method).toBe(method);
      expect(r.layersBefore).toBe(5);
      expect(r.layersAfter).toBe(4);
      expect(r.model.info().numLayers).toBe(4);
      expect(r.record.flat(Infinity)).toEqual([0, 1, 2, 3, 4].filter((i) => r.record.flat(Infinity).includes(i)));
      expect(r.report.steps.length).toBeGreaterThan(0);
      expect(r.model.provenance()?.method).toBe(method);
      await r.model.dispose();
    }
    expect(model.info().numLayers).toBe(5);
    expect(model.provenance()).toBeNull();
  });

  it('saves the record as layerfold.json beside the weights', async () => {
    await using model = await loadModel(stories());
    const r = await model.prune({ method: 'slm', target: { threshold: 0.9 }, calibration });
    const out = path.join(tmpDir(), 'slm');
    const saved = await r.model.save(out);
    expect(saved.files).toContain('layerfold.json');
    const record = JSON.parse(fs.readFileSync(path.join(out, 'layerfold.json'), 'utf8'));
    expect(record).toMatchObject({ method: 'slm', layersBefore: 5, layersAfter: r.layersAfter, record: r.record });
    expect(JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')).num_hidden_layers).toBe(r.layersAfter);
  });

  it('rejects bad options with E_CONFIG naming the field, and empty text with E_DATA', async () => {
    await using model = await loadModel(stories());
    const cases: [unknown, string][] = [
      [{ method: 'drop-bi', target: { removeLayers: 5 } }, 'larger than the model'],
      [{ method: 'drop-bi', target: { ratio: 1.5 } }, 'target.ratio'],
      [{ method: 'drop-bi', target: { threshold: 0.5 } }, 'target.threshold'],
      [{ method: 'drop-bi', target: {} }, 'target'],
      [{ method: 'slm', target: { removeLayers: 1 }, layersPerMerge: 3 }, 'layersPerMerge'],
      [{ method: 'frobnicate', target: { removeLayers: 1 } }, 'method'],
    ];
    for (const [options, field] of cases) {
      const e = await model.prune(options as never).catch((x) => x);
      expect(e.code, JSON.stringify(options)).toBe('E_CONFIG');
      expect(e.message).toContain(field);
    }
    const empty = await model.prune({ method: 'drop-bi', target: { removeLayers: 1 }, calibration: { text: '\n  \n' } }).catch((x) => x);
    expect(empty.code).toBe('E_DATA');
  });

  it('stops on an AbortSignal during calibration', async () => {
    await using model = await loadModel(stories());
    const controller = new AbortController();
    const seen: Progress[] = [];
    const e = await model
      .prune({
        method: 'sleb',
        target: { removeLayers: 2 },
        calibration,
        signal: controller.signal,
        onProgress: (p) => {
          seen.push(p);
          if (p.stage === 'score') controller.abort('stop');
        },
      })
      .catch((x) => x);
    expect(e).toBe('stop');
    expect(seen.some((p) => p.stage === 'calibrate' || p.stage === 'score')).toBe(true);
  });
});

describe('layerfold prune', () => {
  it('prints {method, layersBefore, layersAfter, record, out, seconds} with --json', () => {
    const out = path.join(tmpDir(), 'bi');
    const r = run('prune', stories(), '--method', 'drop-bi', '--remove-layers', '2', '--seq-len', '64', '--samples', '4', '--out', out, '--json');
    expect(r.status, r.stderr).toBe(0);
    const j = r.json();
    expect(j).toMatchObject({ method: 'drop-bi', layersBefore: 5, layersAfter: 3, out });
    expect(j.record).toHaveLength(3);
    expect(j.seconds).toBeGreaterThan(0);
    expect(fs.existsSync(path.join(out, 'layerfold.json'))).toBe(true);
  });

  it('prints a readable table', () => {
    const out = path.join(tmpDir(), 'slm');
    const r = run('prune', stories(), '--method', 'slm', '--threshold', '0.9', '--seq-len', '64', '--samples', '3', '--out', out);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/slm: 5 → \d layers/);
    expect(r.stdout).toMatch(/step 1: S = /);
    expect(r.stdout).toMatch(/record \(new layer ← original layers/);
  });

  it('reads --config (YAML) and lets flags override it', () => {
    const dir = tmpDir();
    const config = path.join(dir, 'prune.yaml');
    fs.writeFileSync(config, 'method: laco\ntarget:\n  removeLayers: 1\nlayersPerMerge: 2\nmerge: mean\ncalibration:\n  nSamples: 3\n  seqLen: 32\n');
    const out = path.join(dir, 'out');
    const r = run('prune', stories(), '--config', config, '--merge', 'top', '--out', out, '--json');
    expect(r.status, r.stderr).toBe(0);
    expect(r.json().options).toMatchObject({ merge: 'top', layersPerMerge: 2 });
    expect(r.json().calibration).toMatchObject({ nSamples: 3, seqLen: 32, kind: 'sentences' });
  });

  it('exposes CoMe\'s options as flags, noRepeat as --no-repeat / --repeat', () => {
    const dir = tmpDir();
    const come = (name: string, ...args: string[]) =>
      run('prune', stories(), '--method', 'come', '--remove-layers', '3', '--seq-len', '64', '--samples', '2', '--out', path.join(dir, name), '--json', ...args);
    const lifted = come('a', '--repeat', '--gqa-layout', 'tiled');
    expect(lifted.status, lifted.stderr).toBe(0);
    expect(lifted.json().options).toEqual({ noRepeat: false, gqaLayout: 'tiled', prefixCache: true });
    expect(lifted.json().layersAfter).toBe(2);
    const kept = come('b', '--no-repeat');
    expect(kept.json().options.noRepeat).toBe(true);
    expect(kept.json().report.warnings.join(' ')).toMatch(/noRepeat lifted/);
  });

  it('fails before loading the model on bad options or a non-empty output folder', () => {
    const dir = tmpDir();
    const bad = (args: string[], code: string, status: number, field?: string) => {
      const r = run('prune', '/no/such/model', ...args, '--json');
      expect(r.status, args.join(' ')).toBe(status);
      expect(r.json().error.code, args.join(' ')).toBe(code);
      if (field) expect(r.json().error.message).toContain(field);
    };
    const out = path.join(dir, 'out');
    bad(['--method', 'drop-bi', '--ratio', '1.5', '--out', out], 'E_CONFIG', 2, 'target.ratio');
    bad(['--method', 'drop-bi', '--threshold', '0.5', '--out', out], 'E_CONFIG', 2, 'target.threshold');
    bad(['--method', 'slm', '--remove-layers', '2', '--ratio', '0.2', '--out', out], 'E_CONFIG', 2, 'target');
    bad(['--method', 'drop-bi', '--remove-layers', '2', '--merge', 'top', '--out', out], 'E_CONFIG', 2, 'merge');
    bad(['--method', 'nope', '--remove-layers', '2', '--out', out], 'E_CONFIG', 2);
    const config = path.join(dir, 'c.json');
    fs.writeFileSync(config, JSON.stringify({ method: 'drop-bi', target: { removeLayers: 1 }, colour: 'blue' }));
    bad(['--config', config, '--out', out], 'E_CONFIG', 2, 'colour');
    fs.mkdirSync(out);
    fs.writeFileSync(path.join(out, 'mine.txt'), 'keep');
    bad(['--method', 'drop-bi', '--remove-layers', '2', '--out', out], 'E_OUTPUT_EXISTS', 1);
    expect(fs.readdirSync(out)).toEqual(['mine.txt']);
  });

  it('reports runtime failures with their codes and writes nothing', () => {
    const dir = tmpDir();
    const empty = path.join(dir, 'empty.txt');
    fs.writeFileSync(empty, '\n\n   \n');
    const out = path.join(dir, 'out');
    const r = run('prune', stories(), '--method', 'drop-bi', '--remove-layers', '1', '--calib', empty, '--out', out, '--json');
    expect(r.status).toBe(1);
    expect(r.json().error.code).toBe('E_DATA');
    const big = run('prune', stories(), '--method', 'drop-bi', '--remove-layers', '9', '--out', out, '--json');
    expect(big.status).toBe(2);
    expect(big.json().error.message).toContain('larger than the model');
    expect(fs.readdirSync(dir)).toEqual(['empty.txt']);
  });
});

describe('layerfold analyze', () => {
  it('writes the matrices as JSON and heatmaps as SVG and PNG', () => {
    const out = path.join(tmpDir(), 'analysis');
    const r = run('analyze', stories(), '--seq-len', '64', '--samples', '2', '--out', out, '--json');
    expect(r.status, r.stderr).toBe(0);
    expect(r.json().files).toEqual(['analysis.json', 'cka.png', 'cka.svg', 'cosine.png', 'cosine.svg']);
    const a = JSON.parse(fs.readFileSync(path.join(out, 'analysis.json'), 'utf8'));
    expect(a.states).toHaveLength(6);
    expect(a.cka).toHaveLength(6);
    for (let i = 0; i < 6; i++) expect(a.cka[i][i]).toBeCloseTo(1, 5);
    expect(a.cosine[0][5]).toBeLessThan(a.cosine[4][5]);
    expect(fs.readFileSync(path.join(out, 'cka.svg'), 'utf8')).toMatch(/^<svg/);
    expect(fs.readFileSync(path.join(out, 'cka.png')).subarray(1, 4).toString()).toBe('PNG');
  });
});

describe('method options', () => {
  it('mirror the core registry: same methods, same option keys, documented defaults', () => {
    const core = methodDefaults();
    expect(Object.keys(core.methods).sort()).toEqual([...METHOD_NAMES].sort());
    for (const method of METHOD_NAMES) {
      const coreOptions = core.methods[method].options;
      expect(Object.keys(METHOD_OPTIONS[method]).sort(), method).toEqual(Object.keys(coreOptions).sort());
      for (const [key, schema] of Object.entries(METHOD_OPTIONS[method])) {
        const description = (schema as { description?: string }).description ?? '';
        const value = coreOptions[key];
        expect(description, `${method}.${key}`).toMatch(/Default/);
        if (value !== null) expect(description, `${method}.${key}`).toContain(String(value));
      }
    }
    expect(schemas.prune).toBeDefined();
  });
});
