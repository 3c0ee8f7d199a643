/**
 * `model.evaluate()` and `layerfold eval` (METHODS.md 4.2). The numbers themselves are checked
 * against lm-evaluation-harness in crates/core/tests/eval.rs; these specs cover the API, the CLI
 * and the terminal.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

import { loadModel } from '../ts/index';
import { cli, oracle, shared, tmpDir, wikitext } from './fixtures';

const stories = () => shared('models/stories260K');
const REPORTED = { boolq: 'acc', piqa: 'acc', hellaswag: 'acc_norm', winogrande: 'acc', arc_easy: 'acc', arc_challenge: 'acc_norm', openbookqa: 'acc_norm' };

function run(args: string[], env: Record<string, string | undefined> = {}) {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
  return { ...r, json: () => JSON.parse(r.stdout) };
}

describe('Model.evaluate', () => {
  it('scores the seven tasks with the metric METHODS.md reports for each, and their average', async () => {
    await using model = await loadModel(stories());
    const r = await model.evaluate({ limit: 12 });
    expect(Object.keys(r.tasks)).toEqual(Object.keys(REPORTED));
    for (const [name, t] of Object.entries(r.tasks)) {
      expect(t.metric, name).toBe(REPORTED[name as keyof typeof REPORTED]);
      expect(t.value).toBe(t.metric === 'acc' ? t.acc : t.accNorm);
      expect(t.n).toBe(12);
    }
    const values = Object.values(r.tasks).map((t) => t.value);
    expect(r.average).toBeCloseTo((100 * values.reduce((a, b) => a + b)) / values.length, 10);
    expect(r.samples).toHaveLength(7 * 12);
    // The oracle's first examples, through the API (the full comparison is the Rust test's).
    const want = oracle('eval-stories260K').tasks.piqa.samples[0];
    const got = r.samples.find((s) => s.task === 'piqa' && s.doc === 0)!;
    got.loglik.forEach((ll, i) => expect(Math.abs(ll - want.ll[i])).toBeLessThan(1e-4 * Math.abs(want.ll[i])));
  });

  it('reads the data folder from dataDir, else LAYERFOLD_DATA, and says so when neither is set', async () => {
    await using model = await loadModel(stories());
    const saved = process.env.LAYERFOLD_DATA;
    try {
      delete process.env.LAYERFOLD_DATA;
      const err = await model.evaluate({ tasks: ['piqa'], limit: 1 }).catch((e) => e);
      expect(err.code).toBe('E_CONFIG');
      expect(err.message).toMatch(/dataDir/);
      const r = await model.evaluate({ tasks: ['piqa'], limit: 2, dataDir: shared('data/eval') });
      expect(r.tasks.piqa.n).toBe(2);
    } finally {
      process.env.LAYERFOLD_DATA = saved;
    }
  });

  it('evaluates text the vocabulary cannot spell (unknown tokens are fine)', async () => {
    const dir = tmpDir();
    const file = path.join(dir, 'unicode.jsonl');
    fs.writeFileSync(file, JSON.stringify({ query: 'Frage: 日本語 🙂 ≠ ∑?', choices: ['是', 'нет ∅'], gold: 1 }) + '\n');
    await using model = await loadModel(stories());
    const r = await model.evaluate({ tasks: [file] });
    expect(r.tasks[file]).toMatchObject({ metric: 'acc', n: 1 });
    expect(r.samples[0].loglik.every(Number.isFinite)).toBe(true);
  });
});

describe('layerfold eval', () => {
  it('prints {tasks: {name: {metric, value, stderr, n, acc, acc_norm}}, average, seconds} with --json', () => {
    const r = run(['eval', stories(), '--tasks', 'piqa,winogrande', '--limit', '4', '--json']);
    expect(r.status, r.stderr).toBe(0);
    const doc = r.json();
    expect(Object.keys(doc)).toEqual(['tasks', 'average', 'seconds']);
    expect(Object.keys(doc.tasks)).toEqual(['piqa', 'winogrande']);
    expect(Object.keys(doc.tasks.piqa)).toEqual(['metric', 'value', 'stderr', 'n', 'acc', 'acc_norm']);
  });

  it('writes --log-samples as jsonl, one example per line', () => {
    const dir = tmpDir();
    const log = path.join(dir, 'samples.jsonl');
    const r = run(['eval', stories(), '--tasks', 'arc_easy', '--limit', '3', '--log-samples', log]);
    expect(r.status, r.stderr).toBe(0);
    const rows = fs.readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(rows.map((x) => x.doc)).toEqual([0, 1, 2]);
    expect(rows[0].loglik).toHaveLength(4);
    expect(fs.readdirSync(dir)).toEqual(['samples.jsonl']);
  });
});

describe('progress on a terminal', () => {
  // `script` gives the command a pseudo-terminal, so the bars are drawn as a user sees them.
  const onTerminal = (args: string[]) => {
    const command = [process.execPath, cli, ...args].map((a) => `'${a}'`).join(' ');
    // A bar left running keeps the process alive (the bug this guards against): time out, do not hang.
    const r = spawnSync('script', ['-qec', command, '/dev/null'], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, COLUMNS: '100' } });
    return { status: r.status, screen: r.stdout };
  };

  for (const [name, args, result] of [
    ['ppl', ['ppl', stories(), '--seq-len', '64', '--max-windows', '12', '--data', wikitext()], /perplexity \d/],
    ['eval', ['eval', stories(), '--tasks', 'piqa', '--limit', '8'], /average \(METHODS/],
  ] as const) {
    it(`${name}: the bar is erased before the result, and nothing is drawn after it`, () => {
      const { status, screen } = onTerminal([...args]);
      expect(status).toBe(0);
      const at = screen.search(result);
      expect(at, screen).toBeGreaterThan(0);
      expect(screen.slice(0, at)).toContain('['); // a bar was drawn
      const after = screen.slice(at);
      expect(after, 'no bar after the result').not.toMatch(/\[[█░=\- ]{5,}\]|\u001b\[2K/);
    });
  }
});
