/** `layerfold info <model>`: architecture, sizes and format of a model. */
import { Command } from 'commander';

import { addon, loadModel } from '../index';
import { LoadOptionsSchema, validate } from '../config';
import { addSchemaOptions, pickSchemaOptions } from '../cli-options';
import { runCommand } from './run';

export function register(program: Command): void {
  const cmd = program
    .command('info')
    .description('Show the architecture, sizes and format of a model (a Hugging Face folder or a .gguf file).')
    .argument('<model>', 'model folder or .gguf file')
    .option('--json', 'print one JSON object');
  addSchemaOptions(cmd, LoadOptionsSchema);
  cmd.action(async (modelPath: string, opts: Record<string, unknown>) => {
    const json = Boolean(opts.json);
    await runCommand(json, async ({ signal, onProgress }) => {
      const load = validate(LoadOptionsSchema, pickSchemaOptions(LoadOptionsSchema, opts));
      await using model = await loadModel(modelPath, { ...load, signal, onProgress });
      const info = model.info();
      const rows: [string, string | number][] = [
        ['architecture', info.architecture],
        ['format', info.format + (info.quantization.length ? ` (${info.quantization.map((q) => `${q.type}×${q.count}`).join(', ')})` : '')],
        ['layers', info.numLayers],
        ['hidden size', info.hiddenSize],
        ['FFN size', info.intermediateSize],
        ['heads (q / kv)', `${info.numAttentionHeads} / ${info.numKeyValueHeads} (head dim ${info.headDim})`],
        ['vocabulary', info.vocabSize],
        ['context', info.maxPositionEmbeddings],
        ['rope theta', info.ropeTheta],
        ['tied embeddings', String(info.tieWordEmbeddings)],
        ['parameters', info.parameters.toLocaleString('en-US')],
        ['dtype / device', `${info.dtype} / ${info.device}`],
        ['addon', `${addon().variant}, CPU products by ${addon().blas} (${addon().file})`],
      ];
      // Why the run is on the CPU: the CUDA addon did not load, or it found no usable device.
      const fallback = [addon().fallback, info.deviceFallback].filter(Boolean).join('; ');
      if (fallback) rows.push(['fallback', fallback]);
      if (info.streamed) rows.push(['streamed', info.streamed]);
      return { json: { ...info, addon: addon() }, text: rows.map(([k, v]) => `${k.padEnd(16)} ${v}\n`).join('') };
    });
  });
}
