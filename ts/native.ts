/**
 * The native addon, chosen once at load time. The CUDA variant (the optional package
 * `layerfold-linux-x64-gnu-cuda`, or this repo's `npm run build:cuda` output) is preferred when it
 * is installed and loads: it links the NVIDIA driver's libcuda.so.1, so on a machine without the
 * driver it does not load, and the CPU build (found by napi-rs's generated loader, `index.js`)
 * takes its place, with the reason kept for `addon()`. `LAYERFOLD_ADDON=cpu` skips the CUDA
 * variant; `LAYERFOLD_ADDON=cuda` makes its absence an error. The choice is made on first use,
 * not at import, so that such an error reaches the caller (and the CLI's error report) as a
 * LayerfoldError. Nothing outside `ts/` should import this: the facade in `index.ts` is the public
 * API.
 */
import path from 'node:path';

import type * as Generated from '../index';
import { LayerfoldError } from './errors';

/** Which addon this process runs. */
export interface AddonInfo {
  /** `cuda` when the CUDA variant loaded, else `cpu`. */
  variant: 'cpu' | 'cuda';
  /** The addon file loaded. */
  file: string;
  /** The library behind the CPU's f32 matrix products: Intel MKL when the build found it, else candle's gemm. */
  blas: 'mkl' | 'gemm';
  /** Why the CUDA variant, though installed, is not the one running. */
  fallback?: string;
}

/** Where a CUDA variant may be: the optional package, then this repo's build output. */
const CUDA_ADDONS = ['layerfold-linux-x64-gnu-cuda', path.join(__dirname, '..', 'npm', 'linux-x64-gnu-cuda')];

function load(): { binding: typeof Generated; info: AddonInfo } {
  const want = process.env.LAYERFOLD_ADDON ?? 'auto';
  if (!['auto', 'cpu', 'cuda'].includes(want)) {
    throw new LayerfoldError('E_CONFIG', `LAYERFOLD_ADDON is \`${want}\`; expected auto, cpu or cuda`);
  }
  let fallback: string | undefined;
  if (want !== 'cpu') {
    for (const id of CUDA_ADDONS) {
      let file: string;
      try {
        file = require.resolve(id);
      } catch {
        continue; // not installed
      }
      try {
        const binding = require(file);
        return { binding, info: { variant: 'cuda', file, blas: binding.cpuBlas() } };
      } catch (e) {
        fallback = `${id} is installed but did not load: ${(e as Error).message.split('\n')[0]}`;
        if (want === 'cuda') throw new LayerfoldError('E_DEVICE', `${fallback} (it needs the NVIDIA driver, version 580 or newer)`, { cause: e });
        break;
      }
    }
    if (want === 'cuda' && fallback === undefined) {
      throw new LayerfoldError('E_DEVICE', 'LAYERFOLD_ADDON=cuda, but no CUDA addon is installed: npm install layerfold-linux-x64-gnu-cuda');
    }
  }
  // napi-rs's loader looks beside itself, then for the layerfold-linux-x64-gnu package.
  const before = new Set(Object.keys(require.cache));
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const binding = require('../index');
  const file = Object.keys(require.cache).find((k) => !before.has(k) && k.endsWith('.node')) ?? 'unknown';
  return { binding, info: { variant: 'cpu', file, blas: binding.cpuBlas(), ...(fallback ? { fallback } : {}) } };
}

let loaded: ReturnType<typeof load> | undefined;
const chosen = (): ReturnType<typeof load> => (loaded ??= load());

/** Which addon this process runs, and why not the CUDA one if it is installed but unusable. */
export function addonInfo(): AddonInfo {
  return chosen().info;
}

/** The binding, loaded when one of its functions or classes is first looked up. */
const native = new Proxy({} as typeof Generated, {
  get: (_target, key) => Reflect.get(chosen().binding, key),
});
export default native;
