/**
 * Folders the TypeScript side writes (analysis results), under core's one output rule
 * (`layerfold_core::output`, README "Output safety"): never over, around or inside an input;
 * written into a staging folder beside the target and renamed into place.
 */
import fs from 'node:fs';
import path from 'node:path';

import native from './native';
import { LayerfoldError, toLayerfoldError } from './errors';

/**
 * Fails unless `dir` may receive the output of a command that reads `inputs`: `E_CONFIG` for the
 * input itself or a folder around or inside it (and a file in place of a folder),
 * `E_OUTPUT_EXISTS` for a non-empty folder without `force`, `E_IO` for one that cannot be written.
 */
export function checkOutputFolder(dir: string, inputs: string[], force: boolean): void {
  try {
    native.checkOutput(dir, inputs, force);
  } catch (e) {
    throw toLayerfoldError(e);
  }
}

/**
 * Fails unless `out` may receive `save(out, options)` of a model read from `inputs` (a folder or
 * a GGUF file, as core decides), before anything is loaded.
 */
export function checkSaveTarget(out: string, inputs: string[], options: { format?: string; dtype?: string; force?: boolean }): void {
  try {
    native.checkSaveTarget(out, inputs, { format: options.format, dtype: options.dtype, force: options.force });
  } catch (e) {
    throw toLayerfoldError(e);
  }
}

/**
 * Writes a folder atomically: `fill` gets the staging folder beside `dir` (to write into, e.g.
 * saved models) and returns the files to add; then the folder is moved into place. Nothing
 * appears at `dir` unless `fill` and every write succeed. Returns the names in the folder.
 */
export async function fillFolderAtomically(
  dir: string,
  inputs: string[],
  force: boolean,
  fill: (staged: string) => Promise<Record<string, string | Buffer>>,
): Promise<string[]> {
  let staged: InstanceType<typeof native.BindingStagedOutput>;
  try {
    staged = native.BindingStagedOutput.stage(dir, inputs, force);
  } catch (e) {
    throw toLayerfoldError(e);
  }
  try {
    const files = await fill(staged.path);
    for (const [name, content] of Object.entries(files)) {
      try {
        fs.writeFileSync(path.join(staged.path, name), content);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code === 'ENOSPC' ? 'E_DISK_FULL' : 'E_IO';
        throw new LayerfoldError(code, `writing \`${path.join(dir, name)}\` failed: ${(e as Error).message}`, { cause: e });
      }
    }
    const names = fs.readdirSync(staged.path).sort();
    staged.commit();
    return names;
  } catch (e) {
    staged.discard();
    throw toLayerfoldError(e);
  }
}

/** Fails unless the file `file` may be written for a command that reads `inputs` (core's rule for files). */
export function checkOutputFile(file: string, inputs: string[], force: boolean): void {
  try {
    native.checkOutputFile(file, inputs, force);
  } catch (e) {
    throw toLayerfoldError(e);
  }
}

/** Writes `content` to `file` atomically under core's output rule (`OutputTarget::write_file`). */
export function writeOutputFile(file: string, inputs: string[], content: string | Buffer, force: boolean): string {
  try {
    return native.writeOutputFile(file, Buffer.from(content), inputs, force);
  } catch (e) {
    throw toLayerfoldError(e);
  }
}
