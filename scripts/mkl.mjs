#!/usr/bin/env node
// Intel MKL for the CPU addon's matrix products (crates/kernels/src/blas.rs), from the `mkl-static`
// wheel on PyPI: its three static archives (LP64, sequential, core) and its licence, unpacked into
// the cache (LAYERFOLD_CACHE, default ~/.cache/layerfold). The Rust build links them when
// LAYERFOLD_MKL_DIR names that folder, and builds without MKL (candle's gemm) otherwise, so a
// machine without pip or PyPI still builds, only slower.
//
//   node scripts/mkl.mjs                 # fetch if needed; print the folder
//   node scripts/mkl.mjs -- <command…>   # run the command with LAYERFOLD_MKL_DIR set (cargo, napi)
//
// LAYERFOLD_MKL=0 builds without MKL; a LAYERFOLD_MKL_DIR already set is used as it is.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { findPython, pipDownload, sha256, unzipMembers } from './pypi.mjs';

const VERSION = '2026.2.0';
const WHEEL_SHA256 = '090e439bf202b45579c75d2ba50ff7ead05752d553a06aba79c3ed2b5247921b';
const MEMBERS = ['lib/libmkl_intel_lp64.a', 'lib/libmkl_sequential.a', 'lib/libmkl_core.a', 'dist-info/LICENSE.txt'];

const log = (msg) => process.stderr.write(`mkl: ${msg}\n`);
const cache = process.env.LAYERFOLD_CACHE ?? path.join(os.homedir(), '.cache', 'layerfold');

/** The folder holding MKL's archives and licence, fetching them on first use; null (with the reason logged) when it cannot. */
export async function ensureMkl() {
  if (process.env.LAYERFOLD_MKL === '0') return null;
  if (process.env.LAYERFOLD_MKL_DIR) return process.env.LAYERFOLD_MKL_DIR;
  if (process.platform !== 'linux' || process.arch !== 'x64') return null; // the wheel's platform
  const dir = path.join(cache, `mkl-static-${VERSION}`);
  const stamp = path.join(dir, '.complete');
  if (fs.existsSync(stamp) && fs.readFileSync(stamp, 'utf8') === WHEEL_SHA256) return dir;
  const python = findPython();
  if (!python) {
    log('no Python with pip: building without MKL (candle\'s gemm; slower matrix products)');
    return null;
  }
  fs.mkdirSync(cache, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(cache, '.mkl-'));
  try {
    log(`downloading mkl-static==${VERSION} from PyPI (~250 MB, once)`);
    const wheel = pipDownload(python, `mkl-static==${VERSION}`, tmp);
    const digest = await sha256(wheel);
    if (digest !== WHEEL_SHA256) throw new Error(`${wheel} has SHA-256 ${digest}, expected ${WHEEL_SHA256}`);
    const part = path.join(tmp, 'lib');
    fs.mkdirSync(part);
    unzipMembers(python, wheel, MEMBERS, part);
    fs.writeFileSync(path.join(part, '.complete'), WHEEL_SHA256);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(part, dir);
    log(`${dir} (fetched and verified)`);
    return dir;
  } catch (e) {
    log(`${e.message}: building without MKL (candle's gemm; slower matrix products)`);
    return null;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** Whether a built addon has MKL linked in (its version string is in every MKL build). */
export function linksMkl(file) {
  return fs.readFileSync(file).includes('Intel(R) oneAPI Math Kernel Library');
}

async function main() {
  const dir = await ensureMkl();
  const dash = process.argv.indexOf('--');
  if (dash < 0) {
    if (dir) process.stdout.write(`${dir}\n`);
    return;
  }
  const [cmd, ...args] = process.argv.slice(dash + 1);
  const env = { ...process.env };
  if (dir) env.LAYERFOLD_MKL_DIR = dir;
  else delete env.LAYERFOLD_MKL_DIR;
  const r = spawnSync(cmd, args, { stdio: 'inherit', env, shell: process.platform === 'win32' });
  if (r.error) {
    log(`${cmd}: ${r.error.message}`);
    process.exit(1);
  }
  process.exit(r.status ?? 1);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await main();
