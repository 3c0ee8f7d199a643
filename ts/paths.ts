/** Where layerfold finds material it does not ship: the shared data folder and the model cache. */
import os from 'node:os';
import path from 'node:path';

/** `../shared` beside the package checkout, or `$LAYERFOLD_SHARED`. */
export function sharedDir(): string {
  return process.env.LAYERFOLD_SHARED ?? path.resolve(__dirname, '..', '..', 'shared');
}

/** A file of the shared folder, e.g. `data/text/wikitext2_raw_test.txt`. */
export function sharedFile(rel: string): string {
  return path.join(sharedDir(), rel);
}

/** The model cache: `$LAYERFOLD_CACHE`, default `~/.cache/layerfold`. */
export function cacheDir(): string {
  return process.env.LAYERFOLD_CACHE ?? path.join(os.homedir(), '.cache', 'layerfold');
}

/** The default perplexity corpus (METHODS.md §4.1). */
export const DEFAULT_PPL_DATA = 'data/text/wikitext2_raw_test.txt';
