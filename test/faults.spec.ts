/**
 * Faults (issue 9): a prune killed while it saves leaves its target absent or complete, never
 * partial, and the next run cleans up after it; two prunes running at once in one process give the
 * same records and bytes as each alone.
 */
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

import { loadModel, type PruneOptions } from '../ts/index';
import { cli, shared, smollm2, tmpDir } from './fixtures';

/** File name → SHA-256 of every file in `dir` (flat, as layerfold writes). `layerfold.json` is
 * read with its timings removed: they differ from run to run. */
function contents(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of fs.readdirSync(dir).sort()) {
    let bytes: Buffer | string = fs.readFileSync(path.join(dir, name));
    if (name === 'layerfold.json') {
      const doc = JSON.parse(bytes.toString('utf8'));
      delete doc.seconds;
      delete doc.report.timings;
      bytes = JSON.stringify(doc);
    }
    out[name] = crypto.createHash('sha256').update(bytes).digest('hex');
  }
  return out;
}

const staging = (dir: string) => fs.readdirSync(dir).filter((n) => n.includes('.layerfold-'));

function pruneArgs(out: string): string[] {
  // drop-last needs no calibration, so the run is mostly load and save; bf16 keeps the save short.
  return [cli, 'prune', smollm2(), '--method', 'drop-last', '--remove-layers', '2', '--dtype', 'bf16', '--out', out, '--json'];
}

/** Starts a prune, SIGKILLs it `delayMs` after its staging folder appears; resolves when it is dead. */
function killWhileSaving(dir: string, out: string, delayMs: number): Promise<{ killedWhileStaging: boolean }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, pruneArgs(out), { stdio: 'ignore' });
    let seen = false;
    const poll = setInterval(() => {
      if (!seen && staging(dir).length > 0) {
        seen = true;
        setTimeout(() => child.kill('SIGKILL'), delayMs);
      }
    }, 2);
    child.on('error', reject);
    child.on('exit', (_code, signal) => {
      clearInterval(poll);
      resolve({ killedWhileStaging: seen && signal === 'SIGKILL' });
    });
  });
}

describe('a prune killed while saving', () => {
  it('leaves the target absent or complete, and the next run cleans up', async () => {
    const dir = tmpDir();
    try {
      const reference = path.join(dir, 'reference');
      const r = spawnSync(process.execPath, pruneArgs(reference), { encoding: 'utf8' });
      expect(r.status, r.stdout + r.stderr).toBe(0);
      const want = contents(reference);
      expect(Object.keys(want)).toContain('model.safetensors');

      const out = path.join(dir, 'out');
      let killed = 0;
      for (const delayMs of [0, 150, 400]) {
        const { killedWhileStaging } = await killWhileSaving(dir, out, delayMs);
        if (killedWhileStaging) killed++;
        if (fs.existsSync(out)) {
          expect(contents(out), `after a kill ${delayMs} ms into saving`).toEqual(want);
          fs.rmSync(out, { recursive: true });
        }
      }
      expect(killed, 'at least one run was killed with its staging folder on disk').toBeGreaterThan(0);
      expect(staging(dir).length, 'a killed run leaves its staging folder').toBeGreaterThan(0);

      const again = spawnSync(process.execPath, pruneArgs(out), { encoding: 'utf8' });
      expect(again.status, again.stdout + again.stderr).toBe(0);
      expect(contents(out)).toEqual(want);
      expect(staging(dir), 'the next run removed the stale staging folders').toEqual([]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 300_000);
});

describe('two prunes at once in one process', () => {
  it('give the same records and bytes as each alone', async () => {
    const dir = tmpDir();
    try {
      const calibration = { file: shared('data/text/wikitext2_valid_tokenized.txt'), seqLen: 64, nSamples: 4 };
      const jobs: PruneOptions[] = [
        { method: 'come', target: { removeLayers: 2 }, calibration },
        { method: 'laco', target: { removeLayers: 1 }, calibration },
        { method: 'sleb', target: { removeLayers: 1 }, calibration },
      ];
      await using model = await loadModel(shared('models/stories260K'));
      const run = async (job: PruneOptions, out: string) => {
        const r = await model.prune(job);
        await using pruned = r.model;
        await pruned.save(out);
        return r.record;
      };
      const alone = [];
      for (const [i, job] of jobs.entries()) alone.push(await run(job, path.join(dir, `alone-${i}`)));
      const together = await Promise.all(jobs.map((job, i) => run(job, path.join(dir, `together-${i}`))));
      expect(together).toEqual(alone);
      for (const i of jobs.keys()) {
        expect(contents(path.join(dir, `together-${i}`)), jobs[i].method).toEqual(contents(path.join(dir, `alone-${i}`)));
      }
      // Two saves of one model to one target at once: one wins, the other is told, nothing mixes.
      const target = path.join(dir, 'same');
      const results = await Promise.allSettled([model.save(target), model.save(target)]);
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      expect(lost.reason.code).toBe('E_OUTPUT_EXISTS');
      expect(staging(dir)).toEqual([]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 300_000);
});
