/** Folders the TypeScript side writes (analysis results): atomically, and never over a non-empty one. */
import fs from 'node:fs';
import path from 'node:path';

import { LayerfoldError } from './errors';

/** Fails with `E_OUTPUT_EXISTS` when `dir` exists and is not empty, unless `force`. */
export function checkOutputFolder(dir: string, force: boolean): void {
  if (!fs.existsSync(dir)) return;
  if (!fs.statSync(dir).isDirectory() || (fs.readdirSync(dir).length > 0 && !force)) {
    throw new LayerfoldError('E_OUTPUT_EXISTS', `output folder \`${dir}\` already exists and is not empty: choose another or pass force`);
  }
}

/** Writes `files` into a temporary folder beside `dir`, then renames it into place. */
export function writeFolderAtomically(dir: string, files: Record<string, string | Buffer>, force: boolean): string[] {
  checkOutputFolder(dir, force);
  const parent = path.dirname(path.resolve(dir));
  fs.mkdirSync(parent, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(parent, `.${path.basename(dir)}.layerfold-tmp-`));
  try {
    for (const [name, content] of Object.entries(files)) fs.writeFileSync(path.join(tmp, name), content);
    if (fs.existsSync(dir)) fs.rmSync(dir, { recursive: true });
    fs.renameSync(tmp, dir);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    const code = (e as NodeJS.ErrnoException).code === 'ENOSPC' ? 'E_DISK_FULL' : 'E_IO';
    throw new LayerfoldError(code, `writing \`${dir}\` failed: ${(e as Error).message}`, { cause: e });
  }
  return Object.keys(files).sort();
}
