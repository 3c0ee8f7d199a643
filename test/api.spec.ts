import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

import { addon, cudaAvailable, LayerfoldError, loadModel, Model, type Progress } from '../ts/index';
import { oracle, shared, smollm2, tmpDir } from './fixtures';

const stories = () => shared('models/stories260K');
const wikitext = () => shared('data/text/wikitext2_raw_test.txt');

describe('loadModel', () => {
  it('loads a Hugging Face folder and describes it', async () => {
    await using model = await loadModel(stories());
    const info = model.info();
    expect(info).toMatchObject({
      architecture: 'llama',
      format: 'safetensors',
      numLayers: 5,
      hiddenSize: 64,
      numAttentionHeads: 8,
      numKeyValueHeads: 4,
      vocabSize: 512,
      tieWordEmbeddings: true,
      dtype: 'f32',
      device: 'cpu',
      quantization: [],
    });
    expect(info.parameters).toBeGreaterThan(250_000);
  });

  it('loads the SmolLM2 GGUF, reporting progress per layer', async () => {
    const seen: Progress[] = [];
    await using model = await loadModel(smollm2(), { onProgress: (p) => seen.push(p) });
    expect(model.info()).toMatchObject({ format: 'gguf', numLayers: 30, numKeyValueHeads: 3 });
    const loads = seen.filter((p) => p.stage === 'load');
    expect(loads.at(-1)).toEqual({ stage: 'load', done: 30, total: 30 });
  });

  it('rejects bad options before touching the model, naming the field', async () => {
    const err = await loadModel(stories(), { dtype: 'f64' as never }).catch((e) => e);
    expect(err).toBeInstanceOf(LayerfoldError);
    expect(err.code).toBe('E_CONFIG');
    expect(err.message).toContain('dtype');
    const unknown = await loadModel(stories(), { dtpe: 'f32' } as never).catch((e) => e);
    expect(unknown.code).toBe('E_CONFIG');
    expect(unknown.message).toContain('dtpe');
  });

  it('maps native failures to stable codes', async () => {
    const missing = await loadModel('/no/such/model').catch((e) => e);
    expect(missing).toBeInstanceOf(LayerfoldError);
    expect(missing.code).toBe('E_NOT_FOUND');
    const noCuda = await loadModel(stories(), { device: 'cuda' }).catch((e) => e);
    expect(noCuda.code).toBe('E_DEVICE');
    expect(noCuda.message).toMatch(/install .*layerfold-linux-x64-gnu-cuda/);
  });

  it("falls back to the CPU under device 'auto' and says why", async () => {
    await using model = await loadModel(stories(), { device: 'auto' });
    const info = model.info();
    // CI has no GPU; where the CUDA addon and a GPU are present, auto must pick CUDA instead.
    if (cudaAvailable()) {
      expect(info.device).toBe('cuda:0');
      expect(info.deviceFallback).toBeUndefined();
    } else {
      expect(info.device).toBe('cpu');
      expect(info.deviceFallback).toMatch(/CUDA/);
    }
    expect(fs.existsSync(addon().file)).toBe(true);
  });
});

describe('Model.perplexity', () => {
  it('agrees with the transformers oracle on stories260K', async () => {
    const want = oracle('stories260K').perplexity;
    await using model = await loadModel(stories());
    const seen: Progress[] = [];
    const r = await model.perplexity(
      { file: wikitext() },
      { seqLen: want.seq_len, maxWindows: want.windows, batchSize: 3, onProgress: (p) => seen.push(p) },
    );
    expect(r.tokens).toBe(want.tokens);
    expect(r.windows).toBe(want.windows);
    expect(Math.abs(r.ppl - want.ppl) / want.ppl).toBeLessThan(1e-4);
    const evals = seen.filter((p) => p.stage === 'eval').map((p) => p.done);
    expect(evals).toEqual([...evals].sort((a, b) => a - b));
    expect(evals.at(-1)).toBe(want.windows);
  });

  it('takes inline text and warns when it is shorter than one window', async () => {
    await using model = await loadModel(stories());
    const r = await model.perplexity('Once upon a time, there was a little girl named Lily.', { seqLen: 128 });
    expect(r.windows).toBe(1);
    expect(r.warnings[0]).toMatch(/fewer than seqLen/);
    expect(r.ppl).toBeGreaterThan(1);
  });

  it('rejects empty text, a seqLen of 0 and one above the context', async () => {
    await using model = await loadModel(stories());
    expect((await model.perplexity('  \n\n').catch((e) => e)).code).toBe('E_DATA');
    expect((await model.perplexity('hi', { seqLen: 0 }).catch((e) => e)).code).toBe('E_CONFIG');
    const tooLong = await model.perplexity('hi', { seqLen: 4096 }).catch((e) => e);
    expect(tooLong.code).toBe('E_CONFIG');
    expect(tooLong.message).toContain('512');
  });

  it('stops on an AbortSignal and rejects with its reason', async () => {
    await using model = await loadModel(stories());
    const controller = new AbortController();
    const reason = new Error('stop here');
    const err = await model
      .perplexity(
        { file: wikitext() },
        {
          seqLen: 64,
          onProgress: (p) => {
            if (p.stage === 'eval' && p.done === 2) controller.abort(reason);
          },
          signal: controller.signal,
        },
      )
      .catch((e) => e);
    expect(err).toBe(reason);
    // An already-aborted signal rejects at once; the model stays usable.
    await expect(model.perplexity('Once upon a time', { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    expect((await model.perplexity('Once upon a time there was a dog.')).ppl).toBeGreaterThan(1);
  });

  it('survives a progress callback that throws', async () => {
    await using model = await loadModel(stories());
    const logged: unknown[] = [];
    const orig = console.error;
    console.error = (...a: unknown[]) => logged.push(a);
    try {
      const r = await model.perplexity({ file: wikitext() }, {
        seqLen: 64,
        maxWindows: 2,
        onProgress: () => {
          throw new Error('boom');
        },
      });
      expect(r.windows).toBe(2);
    } finally {
      console.error = orig;
    }
    expect(logged.length).toBeGreaterThan(0);
  });
});

describe('Model.save and dispose', () => {
  it('saves atomically and refuses a non-empty folder', async () => {
    await using model = await loadModel(stories());
    const dir = tmpDir();
    const out = path.join(dir, 'copy');
    const r = await model.save(out, { dtype: 'bf16' });
    expect(r.files).toEqual(['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    const again = await model.save(out).catch((e) => e);
    expect(again.code).toBe('E_OUTPUT_EXISTS');
    await using copy = await loadModel(out, { dtype: 'bf16' });
    expect(copy.info()).toMatchObject({ numLayers: 5, dtype: 'bf16' });
    expect(fs.readdirSync(dir)).toEqual(['copy']);
  });

  it('throws E_DISPOSED after dispose, which is safe to repeat', async () => {
    const model = await Model.load(stories());
    await model.dispose();
    await model.dispose();
    expect(model.disposed).toBe(true);
    expect(() => model.info()).toThrow(expect.objectContaining({ code: 'E_DISPOSED' }));
    await expect(model.perplexity('hi')).rejects.toMatchObject({ code: 'E_DISPOSED' });
  });
});
