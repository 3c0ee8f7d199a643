/**
 * `layerfold analyze <model> --out <dir>`: layer-by-layer similarity (all-pairs cosine and linear
 * CKA of HF states, METHODS.md §2.4) as `analysis.json` and heatmaps (`cosine.svg/png`,
 * `cka.svg/png`).
 */
import path from 'node:path';
import { Command } from 'commander';

import { loadModel } from '../index';
import { AnalyzeOptionsSchema, LoadOptionsSchema, validate } from '../config';
import { addCalibrationOptions, addSchemaOptions, calibrationFromCli, pickSchemaOptions } from '../cli-options';
import { heatmapSvg, svgToPng } from '../charts';
import { readConfigFile } from '../config-file';
import { checkOutputFolder, fillFolderAtomically } from '../output';
import { analysisTable } from '../report';
import { bindingifyCalibration } from '../bindingify';
import { runCommand } from './run';

export function register(program: Command): void {
  const cmd = program
    .command('analyze')
    .description('Layer-by-layer similarity (cosine, linear CKA) as JSON and heatmaps (SVG, PNG).')
    .argument('<model>', 'model folder or .gguf file');
  addCalibrationOptions(cmd, { kind: 'chunked', seqLen: '256', samples: '16' })
    .requiredOption('--out <dir>', 'output folder (written atomically)')
    .option('--force', 'replace a non-empty output folder')
    .option('--config <file>', 'options from a JSON or YAML file; flags override it')
    .option('--json', 'print one JSON object');
  addSchemaOptions(cmd, LoadOptionsSchema);
  cmd.action(async (modelPath: string, opts: Record<string, unknown>) => {
    const json = Boolean(opts.json);
    await runCommand(json, async ({ signal, onProgress }) => {
      const base = opts.config ? readConfigFile(opts.config as string) : {};
      const calibration = calibrationFromCli(opts, base);
      const options = validate(AnalyzeOptionsSchema, { ...base, calibration });
      const load = validate(LoadOptionsSchema, pickSchemaOptions(LoadOptionsSchema, opts));
      const out = opts.out as string;
      const calibrationFile = bindingifyCalibration(options.calibration).file;
      const inputs = [modelPath, ...(calibrationFile ? [calibrationFile] : [])];
      checkOutputFolder(out, inputs, Boolean(opts.force));
      const started = performance.now();
      await using model = await loadModel(modelPath, { ...load, signal, onProgress });
      const analysis = await model.analyze({ ...options, signal, onProgress });
      const name = path.basename(modelPath);
      const cosineSvg = await heatmapSvg(analysis.cosine, analysis.states, `${name}: mean cosine of hidden states`);
      const ckaSvg = await heatmapSvg(analysis.cka, analysis.states, `${name}: linear CKA of hidden states`);
      const files = await fillFolderAtomically(out, inputs, Boolean(opts.force), async () => ({
        'analysis.json': JSON.stringify({ model: modelPath, ...analysis }, null, 2) + '\n',
        'cosine.svg': cosineSvg,
        'cosine.png': svgToPng(cosineSvg),
        'cka.svg': ckaSvg,
        'cka.png': svgToPng(ckaSvg),
      }));
      const seconds = (performance.now() - started) / 1000;
      return {
        json: { out: path.resolve(out), files, states: analysis.states, tokens: analysis.tokens, seconds },
        text: analysisTable(analysis) + `wrote ${files.join(', ')} to ${path.resolve(out)}\n`,
      };
    });
  });
}
