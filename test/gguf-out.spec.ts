/**
 * GGUF output runs in llama.cpp: node-llama-cpp (its prebuilt llama.cpp, CPU) loads layerfold's
 * 21-layer SmolLM2 in f16 and q8_0 and continues prompts given as layerfold's token ids. At f16
 * its greedy continuation equals layerfold's own (f32) for 16 tokens; at both types its
 * probabilities of each step's most probable tokens agree with layerfold's within the stated
 * tolerances. (Reloading into layerfold with equal f32 logits: crates/core/tests/gguf_out.rs.)
 */
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getLlama, type Llama } from 'node-llama-cpp';

import { loadModel, type Generation } from '../dist/index';
import { cli, smollm2, tmpDir } from './fixtures';

const PROMPTS = ['Once upon a time', 'The capital of France is', 'def fibonacci(n):'];
const STEPS = 16;
/**
 * Largest |p_llama.cpp − p_layerfold| over each step's 10 most probable tokens (layerfold's).
 * Measured on this CPU: f16 2.2e-3; q8_0 0.10 (llama.cpp also quantizes the activations to Q8_0
 * in its CPU matmuls, and the 21-layer model's distributions are flat).
 */
const PROB_TOLERANCE = { f16: 0.01, q8_0: 0.2 } as const;

let dir: string;
let llama: Llama;
const reference: Generation[] = [];

beforeAll(async () => {
  dir = tmpDir();
  // The pruned model through the CLI, as users make it, in both GGUF types.
  for (const dtype of ['f16', 'q8_0']) {
    execFileSync('node', [cli, 'prune', smollm2(), '--method', 'drop-last', '--remove-layers', '9', '--dtype', dtype, '--out', path.join(dir, `smol21-${dtype}.gguf`)], {
      stdio: 'pipe',
    });
  }
  const model = await loadModel(smollm2());
  const pruned = (await model.prune({ method: 'drop-last', target: { removeLayers: 9 } })).model;
  for (const prompt of PROMPTS) reference.push(await pruned.generate(prompt, { maxTokens: STEPS, topK: 10 }));
  pruned.dispose();
  model.dispose();
  llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' });
}, 300_000);

afterAll(async () => {
  await llama?.dispose();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** llama.cpp's greedy steps for `tokens`, with its probabilities of `watch[k]` at step k. */
async function llamaCppSteps(file: string, tokens: number[], watch: number[][]) {
  const model = await llama.loadModel({ modelPath: file });
  try {
    const context = await model.createContext({ contextSize: 128, batchSize: 128, threads: 2 });
    const sequence = context.getSequence();
    const steps: { token: number; probs: number[] }[] = [];
    for await (const out of sequence.evaluateWithMetadata(tokens as never, { probabilities: true }, { temperature: 0 })) {
      const k = steps.length;
      steps.push({ token: out.token as number, probs: watch[k].map((t) => out.probabilities.get(t as never) ?? 0) });
      if (steps.length >= watch.length) break;
    }
    await context.dispose();
    return steps;
  } finally {
    await model.dispose();
  }
}

describe.each(['f16', 'q8_0'] as const)('llama.cpp runs layerfold GGUF (%s)', (dtype) => {
  it('continues every prompt as layerfold does', async () => {
    const file = path.join(dir, `smol21-${dtype}.gguf`);
    let worst = 0;
    for (const ref of reference) {
      const watch = ref.steps.map((s) => s.top.map((t) => t.token));
      const steps = await llamaCppSteps(file, ref.promptTokens, watch);
      const ours = ref.steps.map((s) => s.token);
      const theirs = steps.map((s) => s.token);
      if (dtype === 'f16') expect(theirs, `greedy continuation of ${JSON.stringify(ref.promptTokens)}`).toEqual(ours);
      // Probabilities are compared where the two sequences still agree (q8_0 may part ways).
      const agree = ours.findIndex((t, k) => t !== theirs[k]);
      const upTo = agree === -1 ? ours.length : agree + 1;
      for (let k = 0; k < upTo; k++) {
        ref.steps[k].top.forEach((t, j) => {
          worst = Math.max(worst, Math.abs(t.prob - steps[k].probs[j]));
        });
      }
      expect(upTo, 'at least the first step is compared').toBeGreaterThan(0);
    }
    console.log(`${dtype}: max |Δp| over the compared steps' top-10 tokens = ${worst.toExponential(2)}`);
    expect(worst).toBeLessThan(PROB_TOLERANCE[dtype]);
  });
});
