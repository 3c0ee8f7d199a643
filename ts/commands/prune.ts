/**
 * `layerfold prune <model> --method … (--remove-layers N | --ratio R | --threshold T) --out <dir>`:
 * compress the model's depth and save it with its record (`layerfold.json`). Every option is
 * validated before the model is loaded.
 */
import path from 'node:path';
import { Command, Option } from 'commander';
import { z } from 'zod';

import { loadModel } from '../index';
import { LoadOptionsSchema, METHOD_NAMES, METHOD_OPTIONS, PruneOptionsSchema, SAVE_DTYPES, SAVE_FORMATS, validate } from '../config';
import type { SaveOptions } from '../config';
import { addCalibrationOptions, addDistillOptions, addSchemaOptions, calibrationFromCli, distillFromCli, distillInputFiles, pickSchemaOptions } from '../cli-options';
import { readConfigFile } from '../config-file';
import { checkSaveTarget } from '../output';
import { distillTable, pruneTable } from '../report';
import { bindingifyCalibration } from '../bindingify';
import { runCommand } from './run';

const int = (v: string) => (/^-?\d+$/.test(v.trim()) ? Number(v) : v);
const num = (v: string) => (v.trim() !== '' && Number.isFinite(Number(v)) ? Number(v) : v);

/** The flags of every method's own options, each named once. */
const methodOptionSchemas = Object.values(METHOD_OPTIONS).map((shape) => z.strictObject(shape));

/** Options from `--config`, overridden by flags, in the API's shape. */
export function pruneOptionsFromCli(opts: Record<string, unknown>): Record<string, unknown> {
  const base = opts.config ? readConfigFile(opts.config as string) : {};
  const merged: Record<string, unknown> = { ...base };
  if (opts.method !== undefined) merged.method = opts.method;
  const target = { removeLayers: opts.removeLayers, ratio: opts.ratio, threshold: opts.threshold };
  if (Object.values(target).some((v) => v !== undefined)) {
    merged.target = Object.fromEntries(Object.entries(target).filter(([, v]) => v !== undefined));
  }
  const calibration = calibrationFromCli(opts, base);
  if (Object.keys(calibration).length > 0) merged.calibration = calibration;
  for (const schema of methodOptionSchemas) Object.assign(merged, pickSchemaOptions(schema, opts));
  const distill = distillFromCli(opts, base);
  if (distill) merged.distill = distill;
  return merged;
}

export function register(program: Command): void {
  const cmd = program
    .command('prune')
    .description('Compress the depth of a model and save it with its merge record and report (layerfold.json).')
    .argument('<model>', 'model folder or .gguf file')
    .addOption(new Option('--method <method>', 'the method (METHODS.md §3)').choices(METHOD_NAMES))
    .option('--remove-layers <n>', 'target: layers to remove', int)
    .option('--ratio <r>', 'target: fraction of the parameters to remove, in (0, 1)', num)
    .option('--threshold <t>', 'target (laco, slm): the output-similarity threshold T', num);
  addCalibrationOptions(cmd, { kind: "the method's", seqLen: "the method's", samples: "the method's" })
    .requiredOption('--out <path>', 'output folder, or .gguf file (written atomically)')
    .addOption(new Option('--format <format>', 'safetensors (a folder) or gguf (one llama.cpp file); default: gguf for an .gguf path').choices(SAVE_FORMATS))
    .addOption(new Option('--dtype <dtype>', "dtype of the saved weights (q8_0: gguf only); default: the model's").choices(SAVE_DTYPES))
    .option('--force', 'replace a non-empty output folder')
    .option('--config <file>', 'options from a JSON or YAML file; flags override it')
    .option('--json', 'print one JSON object');
  for (const schema of methodOptionSchemas) addSchemaOptions(cmd, schema);
  addDistillOptions(cmd, 'the pruned model');
  addSchemaOptions(cmd, LoadOptionsSchema, ['dtype']);
  cmd.action(async (modelPath: string, opts: Record<string, unknown>) => {
    const json = Boolean(opts.json);
    await runCommand(json, async ({ signal, onProgress }) => {
      const options = validate(PruneOptionsSchema, pruneOptionsFromCli(opts));
      const load = validate(LoadOptionsSchema, { device: opts.device });
      const out = opts.out as string;
      const calibrationFile = bindingifyCalibration(options.calibration).file;
      const distillData = distillInputFiles(options.distill);
      const save = { format: opts.format as SaveOptions['format'], dtype: opts.dtype as SaveOptions['dtype'], force: Boolean(opts.force) };
      checkSaveTarget(out, [modelPath, ...(calibrationFile ? [calibrationFile] : []), ...distillData], save);
      await using model = await loadModel(modelPath, { ...load, signal, onProgress });
      const result = await model.prune({ ...options, signal, onProgress });
      await using pruned = result.model;
      await pruned.save(out, { ...save, signal, onProgress });
      const { model: _handle, ...summary } = result;
      const text = pruneTable(summary, path.resolve(out)) + (summary.distill ? distillTable(summary.distill) : '');
      return { json: { ...summary, out: path.resolve(out) }, text };
    });
  });
}
