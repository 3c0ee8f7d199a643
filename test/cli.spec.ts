import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

import { cli, shared, smollm2, tmpDir, wikitext } from './fixtures';

function run(...args: string[]) {
  return runWith({}, ...args);
}

function runWith(env: Record<string, string>, ...args: string[]) {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, FORCE_COLOR: '0', ...env } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, json: () => JSON.parse(r.stdout) };
}

const stories = () => shared('models/stories260K');

describe('layerfold info', () => {
  it('prints one JSON object with --json', () => {
    const r = run('info', smollm2(), '--json');
    expect(r.status).toBe(0);
    expect(r.json()).toMatchObject({ architecture: 'llama', format: 'gguf', numLayers: 30, numAttentionHeads: 9 });
  });

  it('reports an unusable forced CUDA addon as E_DEVICE, not a stack trace', () => {
    const r = runWith({ LAYERFOLD_ADDON: 'cuda' }, 'info', stories(), '--json');
    if (r.status === 0) {
      // A machine with the CUDA addon and a driver: it must be the one running.
      expect(r.json().addon.variant).toBe('cuda');
      return;
    }
    expect(r.status).toBe(1);
    expect(r.json().error.code).toBe('E_DEVICE');
    expect(r.json().error.message).toMatch(/CUDA addon|did not load/);
    expect(r.stderr).not.toMatch(/\bat .*native/);
    const plain = runWith({ LAYERFOLD_ADDON: 'cuda' }, 'info', stories());
    expect(plain.stderr).toMatch(/^layerfold: .*\[E_DEVICE\]\n$/);
  });

  it('prints a readable table without it', () => {
    const r = run('info', stories());
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/layers\s+5/);
    expect(r.stderr).toBe(''); // no progress bar when stderr is not a terminal
  });
});

describe('layerfold ppl', () => {
  it('prints {ppl, tokens, windows, seqLen, seconds}', () => {
    const r = run('ppl', stories(), '--seq-len', '128', '--max-windows', '3', '--data', wikitext(), '--json');
    expect(r.status).toBe(0);
    const out = r.json();
    expect(out).toMatchObject({ tokens: 3 * 127, windows: 3, seqLen: 128 });
    expect(out.ppl).toBeGreaterThan(1);
    expect(out.seconds).toBeGreaterThan(0);
    expect(out.data).toContain('wikitext2_raw_test.txt');
  });

  it('reads --data', () => {
    const dir = tmpDir();
    const data = path.join(dir, 'rows.jsonl');
    fs.writeFileSync(data, '{"text": "Once upon a time there was a girl."}\n{"text": "She liked to play."}\n');
    const r = run('ppl', stories(), '--data', data, '--json');
    expect(r.status).toBe(0);
    expect(r.json().windows).toBe(1);
  });

  it('exits 2 with E_CONFIG on bad options, before loading', () => {
    for (const args of [['--seq-len', '0'], ['--seq-len', 'ten'], ['--dtype', 'f64'], ['--frobnicate']]) {
      const r = run('ppl', '/no/such/model', ...args, '--json');
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.json().error.code).toBe('E_CONFIG');
    }
  });

  it('exits 1 with the error code of a runtime failure', () => {
    const r = run('ppl', '/no/such/model', '--data', wikitext(), '--json');
    expect(r.status).toBe(1);
    expect(r.json().error).toMatchObject({ code: 'E_NOT_FOUND' });
    expect(r.json().error.message).toContain('/no/such/model');
  });
});

describe('layerfold convert', () => {
  it('fails on a truncated safetensors file with E_MODEL_FORMAT and writes nothing', () => {
    const dir = tmpDir();
    const model = path.join(dir, 'broken');
    fs.cpSync(stories(), model, { recursive: true });
    const weights = path.join(model, 'model.safetensors');
    fs.truncateSync(weights, fs.statSync(weights).size - 4096);
    const before = fs.readdirSync(model).sort();
    const out = path.join(dir, 'out');
    const r = run('convert', model, '--out', out, '--json');
    expect(r.status).toBe(1);
    expect(r.json().error.code).toBe('E_MODEL_FORMAT');
    expect(r.json().error.message).toContain('model.safetensors');
    expect(fs.existsSync(out)).toBe(false);
    expect(fs.readdirSync(dir).sort()).toEqual(['broken']);
    expect(fs.readdirSync(model).sort()).toEqual(before);
  });

  it('writes a loadable folder and never over its input', () => {
    const dir = tmpDir();
    const out = path.join(dir, 'stories-f16');
    const r = run('convert', stories(), '--out', out, '--dtype', 'f16', '--json');
    expect(r.status).toBe(0);
    expect(r.json()).toMatchObject({ layers: 5, path: out });
    expect(run('info', out, '--json').json()).toMatchObject({ numLayers: 5 });
    const over = run('convert', out, '--out', out, '--force', '--json');
    expect(over.status).toBe(2);
    expect(over.json().error.code).toBe('E_CONFIG');
  });
});

describe('--stream', () => {
  it('prunes with the layers read one at a time, to the same record and weights', () => {
    const dir = tmpDir();
    const args = (out: string) => ['prune', stories(), '--method', 'come', '--remove-layers', '2', '--seq-len', '32', '--samples', '4', '--out', out, '--json'];
    const memory = run(...args(path.join(dir, 'memory')));
    const streamed = run(...args(path.join(dir, 'streamed')), '--stream');
    expect(memory.status, memory.stderr).toBe(0);
    expect(streamed.status, streamed.stderr).toBe(0);
    expect(streamed.json().record).toEqual(memory.json().record);
    const weights = (d: string) => fs.readFileSync(path.join(dir, d, 'model.safetensors'));
    expect(weights('streamed').equals(weights('memory'))).toBe(true);
    expect(run('info', stories(), '--stream', '--json').json().streamed).toMatch(/stream/);
    expect(run('info', stories(), '--json').json().streamed).toBeUndefined();
  });
});
