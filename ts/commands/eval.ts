/**
 * `layerfold eval <model> [--tasks boolq,piqa,…] [--limit N] [--json]`: zero-shot multiple-choice
 * accuracy scored as lm-evaluation-harness scores it (METHODS.md §4.2).
 */
import path from 'node:path';
import { Command } from 'commander';

import { loadModel } from '../index';
import { EvaluateOptionsSchema, LoadOptionsSchema, validate } from '../config';
import { addSchemaOptions, pickSchemaOptions } from '../cli-options';
import { readConfigFile } from '../config-file';
import { checkOutputFile, writeOutputFile } from '../output';
import { evalTable } from '../report';
import { runCommand } from './run';

export function register(program: Command): void {
  const cmd = program
    .command('eval')
    .description('Zero-shot accuracy on BoolQ, PIQA, HellaSwag, WinoGrande, ARC-e, ARC-c, OpenBookQA (lm-evaluation-harness scoring).')
    .argument('<model>', 'model folder or .gguf file')
    .option('--tasks <names>', 'comma-separated task names or .jsonl files; default: the seven standard tasks', (v: string) =>
      v.split(',').map((s) => s.trim()),
    )
    .option('--log-samples <file>', 'write every example (log-likelihood and greedy flag per choice) as jsonl')
    .option('--force', 'replace an existing --log-samples file')
    .option('--config <file>', 'options from a JSON or YAML file; flags override it')
    .option('--json', 'print one JSON object');
  addSchemaOptions(cmd, EvaluateOptionsSchema, ['tasks']);
  addSchemaOptions(cmd, LoadOptionsSchema);
  cmd.action(async (modelPath: string, opts: Record<string, unknown>) => {
    const json = Boolean(opts.json);
    await runCommand(json, async ({ signal, onProgress }) => {
      const base = opts.config ? readConfigFile(opts.config as string) : {};
      const flags = pickSchemaOptions(EvaluateOptionsSchema, opts);
      if (opts.tasks !== undefined) flags.tasks = opts.tasks;
      const options = validate(EvaluateOptionsSchema, { ...base, ...flags });
      const load = validate(LoadOptionsSchema, pickSchemaOptions(LoadOptionsSchema, opts));
      const logSamples = opts.logSamples as string | undefined;
      const dataDir = options.dataDir ?? process.env.LAYERFOLD_DATA;
      const inputs = [modelPath, ...(dataDir ? [dataDir] : []), ...(options.tasks ?? []).filter((t) => t.endsWith('.jsonl'))];
      if (logSamples) checkOutputFile(logSamples, inputs, Boolean(opts.force));
      await using model = await loadModel(modelPath, { ...load, signal, onProgress });
      const r = await model.evaluate({ ...options, signal, onProgress });
      if (logSamples) {
        const lines = r.samples.map((s) => JSON.stringify(s) + '\n').join('');
        writeOutputFile(logSamples, inputs, lines, Boolean(opts.force));
      }
      const tasks = Object.fromEntries(
        Object.entries(r.tasks).map(([name, t]) => [name, { metric: t.metric, value: t.value, stderr: t.stderr ?? null, n: t.n, acc: t.acc, acc_norm: t.accNorm }]),
      );
      const logged = logSamples ? `wrote ${r.samples.length} examples to ${path.resolve(logSamples)}\n` : '';
      return { json: { tasks, average: r.average, seconds: r.seconds }, text: evalTable(r) + logged };
    });
  });
}
