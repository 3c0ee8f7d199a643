import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { expect, it } from 'vitest';

import { repoRoot } from './fixtures';

// The generated binding is committed; this catches an unintended change of the native API
// (napi-rs snapshots its typegen the same way). Update with `vitest -u` when the change is meant.
it('the generated index.d.ts is unchanged', async () => {
  await expect(fs.readFileSync(path.join(repoRoot, 'index.d.ts'), 'utf8')).toMatchFileSnapshot('__snapshots__/index.d.ts.snap');
});

// The TypeScript declarations of core's result types (PruneSummary, Report, …) are written by
// ts-rs when `npm test` runs the Rust tests first; committed files that differ from what the
// Rust structs give now mean a struct changed without its declarations.
it('ts/generated is what the Rust structs declare', () => {
  const r = spawnSync('git', ['status', '--porcelain', '--', 'ts/generated'], { cwd: repoRoot, encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  expect(r.stdout, 'run `cargo test -p layerfold-core --lib export_bindings` and commit ts/generated').toBe('');
  const files = fs.readdirSync(path.join(repoRoot, 'ts', 'generated'));
  expect(files).toEqual(expect.arrayContaining(['PruneSummary.ts', 'Report.ts', 'Step.ts', 'Origin.ts']));
  // CoMe fills these; the hand-written types of before lacked them.
  const report = fs.readFileSync(path.join(repoRoot, 'ts', 'generated', 'Report.ts'), 'utf8');
  expect(report).toMatch(/timings\?: \{ \[key in string\]\?: number \}/);
  expect(fs.readFileSync(path.join(repoRoot, 'ts', 'generated', 'Step.ts'), 'utf8')).toMatch(/details\?: JsonValue/);
});
