/**
 * What the npm package holds and reads: it ships its default calibration text (with its licence)
 * and nothing it runs resolves into ../shared, which serves this repo's tests, benches and demo.
 */
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

import { DEFAULT_CALIBRATION, packageFile } from '../ts/paths';
import { repoRoot, shared } from './fixtures';

const sha256 = (p: string) => crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');

function walk(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)]));
}

describe('the package', () => {
  it('ships the default calibration text and its licence, and no other data', () => {
    const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: repoRoot, encoding: 'utf8' });
    const files: string[] = JSON.parse(out)[0].files.map((f: { path: string }) => f.path);
    const data = files.filter((f) => f.startsWith('data/')).sort();
    expect(data).toEqual(['data/calibration/README.md', DEFAULT_CALIBRATION]);
    expect(fs.readFileSync(packageFile('data/calibration/README.md'), 'utf8')).toMatch(/Attribution-ShareAlike 3\.0/);
  });

  it('calibrates by default on a byte-for-byte copy of ../shared\'s WikiText-2 validation text', () => {
    expect(packageFile(DEFAULT_CALIBRATION)).toBe(path.join(repoRoot, DEFAULT_CALIBRATION));
    expect(sha256(packageFile(DEFAULT_CALIBRATION))).toBe(sha256(shared('data/text/wikitext2_valid_tokenized.txt')));
  });

  it('runs no code that resolves into ../shared', () => {
    const sources = [...walk(path.join(repoRoot, 'dist')).filter((f) => f.endsWith('.js')), ...walk(path.join(repoRoot, 'crates/core/src')), ...walk(path.join(repoRoot, 'crates/node/src'))];
    expect(sources.length).toBeGreaterThan(20);
    const offenders = sources.filter((f) => /LAYERFOLD_SHARED|['"/]\.\.\/shared\b|'\.\.', 'shared'|'shared'\)/.test(fs.readFileSync(f, 'utf8')));
    expect(offenders).toEqual([]);
  });
});
