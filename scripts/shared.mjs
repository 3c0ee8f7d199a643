// The repo's shared data folder (../shared beside the checkout, or $LAYERFOLD_SHARED), for the
// demo and the benches only: the installed package never reads it.
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** A file of the shared folder, e.g. `data/text/wikitext2_raw_test.txt`. */
export function sharedFile(rel) {
  return path.join(process.env.LAYERFOLD_SHARED ?? path.resolve(root, '..', 'shared'), rel);
}
