/**
 * `layerfold distill <pruned> --teacher <original> [--data <file>] [--steps N] … --out <dir>`:
 * train a pruned model toward the model it was pruned from (METHODS.md §3.5) and save it; its
 * `layerfold.json` keeps the merge record and adds the run, loss curve included.
 */
import path from 'node:path';
import { Command, Option } from 'commander';

import { loadModel } from '../index';
import { DistillOptionsSchema, LoadOptionsSchema, SAVE_DTYPES, SAVE_FORMATS, validate } from '../config';
import type { SaveOptions } from '../config';
import { addSchemaOptions, distillInputFiles, pickSchemaOptions } from '../cli-options';
import { readConfigFile } from '../config-file';
import { checkOutputFile, checkSaveTarget, writeOutputFile } from '../output';
import { LayerfoldError } from '../errors';
import { distillTable } from '../report';
import { runCommand } from './run';
import { lossCurveSvg, svgToPng } from '../charts';
import type { DistillReport } from '../index';

/** The loss curve as SVG text, or PNG bytes for any other extension. */
async function lossChart(file: string, report: DistillReport, model: string): Promise<string | Buffer> {
  const svg = await lossCurveSvg(report, model);
  return file.toLowerCase().endsWith('.svg') ? svg : svgToPng(svg);
}

export function register(program: Command): void {
  const cmd = program
    .command('distill')
    .description('Heal a pruned model: train it toward the model it was pruned from (logit KL and hidden states by the merge record).')
    .argument('<pruned>', 'pruned model folder (saved by layerfold prune: its layerfold.json holds the merge record)')
    .requiredOption('--teacher <model>', 'the original model folder or .gguf file')
    .option('--data <file>', 'training text (.txt or .jsonl); default WikiText-2 validation, shipped in the package')
    .requiredOption('--out <path>', 'output folder, or .gguf file (written atomically)')
    .addOption(new Option('--format <format>', 'safetensors (a folder) or gguf').choices(SAVE_FORMATS))
    .addOption(new Option('--dtype <dtype>', "dtype of the saved weights; default: the model's").choices(SAVE_DTYPES))
    .option('--force', 'replace a non-empty output folder')
    .option('--chart <file>', 'also draw the loss curve (loss, KL, hidden-state term per step) to this .png or .svg file')
    .option('--config <file>', 'options from a JSON or YAML file; flags override it')
    .option('--json', 'print one JSON object');
  addSchemaOptions(cmd, DistillOptionsSchema, ['data']);
  addSchemaOptions(cmd, LoadOptionsSchema, ['dtype']);
  cmd.action(async (prunedPath: string, opts: Record<string, unknown>) => {
    const json = Boolean(opts.json);
    await runCommand(json, async ({ signal, onProgress }) => {
      const base = opts.config ? readConfigFile(opts.config as string) : {};
      const merged = { ...base, ...pickSchemaOptions(DistillOptionsSchema, opts), ...(opts.data ? { data: opts.data } : {}) };
      const options = validate(DistillOptionsSchema, merged);
      const load = validate(LoadOptionsSchema, { device: opts.device });
      const out = opts.out as string;
      const teacherPath = opts.teacher as string;
      const save = { format: opts.format as SaveOptions['format'], dtype: opts.dtype as SaveOptions['dtype'], force: Boolean(opts.force) };
      const inputs = [prunedPath, teacherPath, ...distillInputFiles(options)];
      checkSaveTarget(out, inputs, save);
      if (opts.chart) checkOutputFile(opts.chart as string, [...inputs, out], save.force);
      if (options.checkpointDir) {
        const [ckpt, target] = [path.resolve(options.checkpointDir), path.resolve(out)];
        if (ckpt === target || ckpt.startsWith(target + path.sep) || target.startsWith(ckpt + path.sep)) {
          throw new LayerfoldError('E_CONFIG', 'invalid option `checkpointDir`: it may not be the output folder, lie inside it or hold it');
        }
      }
      await using student = await loadModel(prunedPath, { ...load, signal, onProgress });
      await using teacher = await loadModel(teacherPath, { ...load, signal, onProgress });
      const result = await student.distill({ ...options, teacher, signal, onProgress });
      await using trained = result.model;
      await trained.save(out, { ...save, signal, onProgress });
      const { model: _handle, ...record } = result;
      if (opts.chart) writeOutputFile(opts.chart as string, inputs, await lossChart(opts.chart as string, record.report, path.basename(prunedPath)), true);
      return { json: { ...record, out: path.resolve(out) }, text: distillTable(record, path.resolve(out)), warnings: record.warnings };
    });
  });
}
