#!/usr/bin/env node
// Packs layerfold as napi-rs packages ship: the root package (TypeScript, loader, default calibration
// text; no addon) and one package per prebuilt addon under npm/: the CPU addon
// (layerfold-linux-x64-gnu, from `npm run build`) and, when `npm run build:cuda` has made it, the
// CUDA addon (layerfold-linux-x64-gnu-cuda); one that links Intel MKL ships MKL's licence. As
// `napi prepublish` does, the packed root package lists each addon package it was packed with as
// an optional dependency; the repo's package.json does not, so `npm install` here never looks for
// them on the registry.
//
//   node scripts/pack.mjs [--out <dir>]      (default out/pack; prints the tarball paths as JSON)
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ensureMkl, linksMkl } from './mkl.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({ options: { out: { type: 'string', default: path.join(root, 'out', 'pack') } } });
const out = path.resolve(values.out);
const rootPackage = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));

// Each addon package: its folder under npm/, and where the build leaves its addon.
const addons = [
  { dir: 'linux-x64-gnu', built: path.join(root, 'layerfold.linux-x64-gnu.node'), required: true },
  { dir: 'linux-x64-gnu-cuda', built: path.join(root, 'npm', 'linux-x64-gnu-cuda', 'layerfold.linux-x64-gnu-cuda.node'), required: false },
];

/** Intel's licence, in an addon package that links MKL (scripts/mkl.mjs). */
const MKL_LICENSE = 'intel-mkl-LICENSE.txt';

function npmPack(dir) {
  const result = JSON.parse(execFileSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', out], { cwd: dir, encoding: 'utf8' }));
  return path.join(out, result[0].filename);
}

fs.rmSync(out, { recursive: true, force: true });
const stage = path.join(out, 'stage');
fs.mkdirSync(stage, { recursive: true });
const tarballs = [];
const optionalDependencies = {};
for (const addon of addons) {
  if (!fs.existsSync(addon.built)) {
    if (addon.required) throw new Error(`pack: ${addon.built} is missing: run \`npm run build\` first`);
    continue;
  }
  const manifest = JSON.parse(fs.readFileSync(path.join(root, 'npm', addon.dir, 'package.json'), 'utf8'));
  if (manifest.version !== rootPackage.version) throw new Error(`pack: npm/${addon.dir} is version ${manifest.version}, the root ${rootPackage.version}`);
  const dir = path.join(stage, addon.dir);
  fs.mkdirSync(dir);
  fs.copyFileSync(path.join(root, 'npm', addon.dir, 'README.md'), path.join(dir, 'README.md'));
  fs.copyFileSync(addon.built, path.join(dir, manifest.main));
  if (linksMkl(addon.built)) {
    // Intel's licence asks that redistributions reproduce its terms.
    const mkl = await ensureMkl();
    if (!mkl) throw new Error(`pack: ${addon.built} links MKL, and its licence could not be fetched`);
    fs.copyFileSync(path.join(mkl, 'LICENSE.txt'), path.join(dir, MKL_LICENSE));
    manifest.files = [...manifest.files, MKL_LICENSE];
    manifest.license = `${manifest.license} AND LicenseRef-Intel-Simplified-Software-License`;
  }
  fs.writeFileSync(path.join(dir, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  tarballs.push(npmPack(dir));
  optionalDependencies[manifest.name] = manifest.version;
}

// The root package: the files `npm pack` would take from the checkout, with the addon packages added.
const listed = JSON.parse(execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8' }))[0].files;
const rootStage = path.join(stage, 'layerfold');
for (const { path: file } of listed) {
  fs.mkdirSync(path.dirname(path.join(rootStage, file)), { recursive: true });
  fs.copyFileSync(path.join(root, file), path.join(rootStage, file));
}
const { devDependencies: _dev, scripts, ...published } = rootPackage;
// Only what an installed package runs: no build (there is no Rust in a user's install), no tests.
published.scripts = { 'fetch-model': scripts['fetch-model'] };
published.optionalDependencies = optionalDependencies;
fs.writeFileSync(path.join(rootStage, 'package.json'), `${JSON.stringify(published, null, 2)}\n`);
tarballs.unshift(npmPack(rootStage));
fs.rmSync(stage, { recursive: true });
console.log(JSON.stringify(tarballs));
