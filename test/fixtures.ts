/** Paths the specs read; a missing one fails naming the file (shared/README.md). */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const root = path.resolve(__dirname, '..');

export const repoRoot = root;
export const cli = path.join(root, 'dist', 'cli.js');

/** Runs the built CLI with `args`; `json()` parses its stdout. */
export function runCli(...args: string[]) {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, json: () => JSON.parse(r.stdout) };
}

function must(p: string, how: string): string {
  if (!fs.existsSync(p)) throw new Error(`missing test fixture ${p}: ${how}`);
  return p;
}

export function shared(rel: string): string {
  const base = process.env.LAYERFOLD_SHARED ?? path.resolve(root, '..', 'shared');
  return must(path.join(base, rel), 'the specs read ../shared beside the checkout');
}

/** The perplexity text the CLI specs pass (`ppl --data`, `compare --ppl-data`). */
export function wikitext(): string {
  return shared('data/text/wikitext2_raw_test.txt');
}

export function smollm2(): string {
  const cache = process.env.LAYERFOLD_CACHE ?? path.join(os.homedir(), '.cache', 'layerfold');
  return must(path.join(cache, 'SmolLM2-135M-Instruct.Q4_1.gguf'), 'run `npm run fetch-model` first');
}

export function oracle(name: string): any {
  const p = must(path.join(root, 'crates/core/tests/oracle', `${name}.json`), 'run crates/core/tests/oracle/make_fixtures.py');
  return JSON.parse(fs.readFileSync(p, 'utf8'));
}

export function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'layerfold-spec-'));
}
