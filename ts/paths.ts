/** Where layerfold finds the material it ships and the models it caches. */
import os from 'node:os';
import path from 'node:path';

/** A file of the installed package, e.g. `data/calibration/…` (paths relative to its root). */
export function packageFile(rel: string): string {
  return path.resolve(__dirname, '..', rel);
}

/** The model cache: `$LAYERFOLD_CACHE`, default `~/.cache/layerfold`. */
export function cacheDir(): string {
  return process.env.LAYERFOLD_CACHE ?? path.join(os.homedir(), '.cache', 'layerfold');
}

/**
 * The default calibration text (METHODS.md §1; the papers calibrate on WikiText-2), shipped in the
 * package with its licence (data/calibration/README.md).
 */
export const DEFAULT_CALIBRATION = 'data/calibration/wikitext2_valid_tokenized.txt';
