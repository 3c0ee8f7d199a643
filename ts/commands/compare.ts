/**
 * `layerfold compare <model> --methods a,b,… (--remove-layers N | --ratio R) --out <dir>`: the
 * dense model and each method at one target, measured the same way (WikiText-2 perplexity, the
 * zero-shot tasks), as a table, `compare.json` and a grouped bar chart (`compare.svg/png`).
 */
import fs from 'node:fs';
import path from 'node:path';
import { Command, Option } from 'commander';

import { loadModel, type CompareResult } from '../index';
import { CompareOptionsSchema, LoadOptionsSchema, METHOD_NAMES, validate } from '../config';
import { addCalibrationOptions, addDistillOptions, addSchemaOptions, calibrationFromCli, distillFromCli, distillInputFiles, pickSchemaOptions } from '../cli-options';
import { groupedBarSvg, svgToPng } from '../charts';
import { readConfigFile } from '../config-file';
import { LayerfoldError } from '../errors';
import { checkOutputFolder, fillFolderAtomically } from '../output';
import { compareTable } from '../report';
import { bindingifyCalibration } from '../bindingify';
import { runCommand } from './run';

const list = (v: string) => v.split(',').map((s) => s.trim()).filter(Boolean);
const num = (v: string) => (v.trim() !== '' && Number.isFinite(Number(v)) ? Number(v) : v);

/** The grouped bar chart of a comparison: a group per task and the average, a bar per model. */
async function chart(r: CompareResult, name: string): Promise<string> {
  const categories = [...(r.rows[0]?.tasks.map((t) => t.task) ?? []), 'average'];
  const series = r.rows.map((row) => `${row.method} (${row.layers})`);
  const values = r.rows.flatMap((row, i) => [
    ...row.tasks.map((t) => ({ category: t.task, series: series[i], value: t.value })),
    { category: 'average', series: series[i], value: row.average },
  ]);
  return groupedBarSvg(values, categories, series, `${name}: zero-shot accuracy by method (layers)`, 'accuracy × 100');
}

export function register(program: Command): void {
  const cmd = program
    .command('compare')
    .description('The dense model and each method at one target: perplexity, the zero-shot tasks, a table, compare.json and a bar chart.')
    .argument('<model>', 'model folder or .gguf file')
    .requiredOption('--methods <list>', `comma-separated methods (${METHOD_NAMES.join(', ')})`, list)
    .option('--remove-layers <n>', 'target: layers every method removes', num)
    .option('--ratio <r>', 'target: fraction of the parameters to remove, in (0, 1)', num)
    .option('--tasks <list>', 'comma-separated tasks or .jsonl files; default the seven', list)
    .option('--ppl-data <file>', 'perplexity text, e.g. the WikiText-2 raw test split (required unless --no-ppl)')
    .addOption(new Option('--no-ppl', 'leave the perplexity column out'));
  addCalibrationOptions(cmd, { kind: "each method's", seqLen: "each method's", samples: "each method's" })
    .requiredOption('--out <dir>', 'output folder: compare.json, compare.svg, compare.png (written atomically)')
    .option('--save', 'also save each pruned model as <out>/<method>')
    .option('--force', 'replace a non-empty output folder')
    .option('--config <file>', 'options from a JSON or YAML file; flags override it')
    .option('--json', 'print one JSON object');
  addSchemaOptions(cmd, CompareOptionsSchema, ['methods', 'target', 'calibration', 'methodOptions', 'tasks', 'pplData', 'saveDir', 'distill']);
  addDistillOptions(cmd, 'every pruned model with one budget (a <method>+distill row each)');
  addSchemaOptions(cmd, LoadOptionsSchema);
  cmd.action(async (modelPath: string, opts: Record<string, unknown>) => {
    const json = Boolean(opts.json);
    await runCommand(json, async ({ signal, onProgress }) => {
      const base = opts.config ? readConfigFile(opts.config as string) : {};
      const target: Record<string, unknown> = { ...((base.target as Record<string, unknown>) ?? {}) };
      if (opts.removeLayers !== undefined) target.removeLayers = opts.removeLayers;
      if (opts.ratio !== undefined) target.ratio = opts.ratio;
      const pplData = opts.ppl === false ? undefined : ((opts.pplData as string | undefined) ?? (base.pplData as string | undefined));
      const options = validate(CompareOptionsSchema, {
        ...base,
        ...pickSchemaOptions(CompareOptionsSchema, opts),
        methods: opts.methods,
        target,
        calibration: calibrationFromCli(opts, base),
        ...(opts.tasks ? { tasks: opts.tasks } : {}),
        ...(pplData ? { pplData } : {}),
        ...(distillFromCli(opts, base) ? { distill: distillFromCli(opts, base) } : {}),
      });
      const load = validate(LoadOptionsSchema, pickSchemaOptions(LoadOptionsSchema, opts));
      // No corpus ships with the package: the perplexity text is always named, or skipped.
      if (opts.ppl !== false && pplData === undefined) {
        throw new LayerfoldError('E_CONFIG', 'invalid option `pplData`: the perplexity column needs a text; pass --ppl-data <file> (the papers use the WikiText-2 raw test split) or --no-ppl');
      }
      if (pplData !== undefined && !fs.existsSync(pplData)) {
        throw new LayerfoldError('E_NOT_FOUND', `text file \`${pplData}\` does not exist: pass --ppl-data <file> or --no-ppl`);
      }
      const out = opts.out as string;
      const calibrationFile = bindingifyCalibration(options.calibration).file;
      const distillData = distillInputFiles(options.distill);
      const inputs = [modelPath, ...(calibrationFile ? [calibrationFile] : []), ...(pplData ? [pplData] : []), ...distillData];
      checkOutputFolder(out, inputs, Boolean(opts.force));
      await using model = await loadModel(modelPath, { ...load, signal, onProgress });
      let result: CompareResult | undefined;
      const files = await fillFolderAtomically(out, inputs, Boolean(opts.force), async (staged) => {
        result = await model.compare({ ...options, ...(opts.save ? { saveDir: staged } : {}), signal, onProgress });
        const svg = await chart(result, path.basename(modelPath));
        const document = { model: modelPath, target: options.target, limit: options.limit ?? null, pplData: pplData ?? null, ...result };
        return { 'compare.json': JSON.stringify(document, null, 2) + '\n', 'compare.svg': svg, 'compare.png': svgToPng(svg) };
      });
      const r = result as CompareResult;
      const where = path.resolve(out);
      return {
        json: { out: where, files, ...r },
        text: compareTable(r) + `wrote ${files.join(', ')} to ${where}; the chart is ${path.join(where, 'compare.png')}\n`,
        warnings: r.rows.flatMap((row) => row.warnings.map((w) => `${row.method}: ${w}`)),
      };
    });
  });
}
