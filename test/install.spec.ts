/**
 * The package as users get it (issue 12): `npm run pack` makes the root tarball (no addon) and the
 * CPU addon's per-platform package; both install into an empty folder with no Rust on PATH and no
 * ../shared beside it, and `npx layerfold info` and a small `prune` run there, the prune on the
 * calibration text the package ships.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { addon } from '../ts/index';
import { DEFAULT_CALIBRATION } from '../ts/paths';
import { repoRoot, shared } from './fixtures';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'layerfold-install-'));
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));
// Node and the system tools only: no cargo, rustc or nvcc.
const env = { ...process.env, PATH: [path.dirname(process.execPath), '/usr/bin', '/bin'].join(':'), LAYERFOLD_SHARED: '' };
const tarList = (tgz: string) => execFileSync('tar', ['tzf', tgz], { encoding: 'utf8' }).split('\n');

describe('npm pack and install', () => {
  const tarballs: string[] = JSON.parse(execFileSync(process.execPath, ['scripts/pack.mjs', '--out', path.join(work, 'pack')], { cwd: repoRoot, encoding: 'utf8' }));
  const consumer = path.join(work, 'consumer');

  it('packs the root package without an addon and the CPU addon on its own', () => {
    const [root, cpu] = tarballs;
    expect(path.basename(root)).toBe('layerfold-0.1.0.tgz');
    expect(path.basename(cpu)).toBe('layerfold-linux-x64-gnu-0.1.0.tgz');
    expect(tarList(root).filter((f) => f.endsWith('.node'))).toEqual([]);
    expect(tarList(root)).toContain(`package/${DEFAULT_CALIBRATION}`);
    expect(tarList(cpu)).toContain('package/layerfold.linux-x64-gnu.node');
    // An addon that links Intel MKL carries Intel's licence; one built without it does not.
    const licence = tarList(cpu).includes('package/intel-mkl-LICENSE.txt');
    expect(licence).toBe(addon().blas === 'mkl');
  });

  it('installs and runs with no Rust and no ../shared', { timeout: 300_000 }, () => {
    fs.mkdirSync(consumer);
    fs.writeFileSync(path.join(consumer, 'package.json'), '{"name": "consumer", "private": true}\n');
    expect(() => execFileSync('sh', ['-c', 'command -v cargo || command -v rustc'], { env })).toThrow();
    expect(fs.existsSync(path.join(work, 'shared'))).toBe(false);
    execFileSync('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', ...tarballs], { cwd: consumer, env, stdio: 'pipe' });

    const npx = (...args: string[]) => execFileSync('npx', ['layerfold', ...args], { cwd: consumer, env, encoding: 'utf8' });
    const model = shared('models/stories260K');
    const info = JSON.parse(npx('info', model, '--json'));
    expect(info.numLayers).toBe(5);
    // The addon the installed package loaded is the per-platform package's, not this checkout's.
    expect(info.addon.variant).toBe('cpu');
    expect(info.addon.blas).toBe(addon().blas);
    expect(info.addon.file).toBe(path.join(consumer, 'node_modules', 'layerfold-linux-x64-gnu', 'layerfold.linux-x64-gnu.node'));

    npx('prune', model, '--method', 'come', '--remove-layers', '2', '--samples', '4', '--seq-len', '64', '--out', 'pruned', '--json');
    expect(fs.existsSync(path.join(consumer, 'pruned', 'model.safetensors'))).toBe(true);
    const saved = JSON.parse(fs.readFileSync(path.join(consumer, 'pruned', 'layerfold.json'), 'utf8'));
    expect(saved.layersAfter).toBe(3);
    // No --calib: the text the installed package ships.
    expect(saved.calibration.source).toBe(path.join(consumer, 'node_modules', 'layerfold', DEFAULT_CALIBRATION));
  });
});
