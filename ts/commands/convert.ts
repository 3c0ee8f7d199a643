/** `layerfold convert <model> --out <dir|file.gguf>`: write any supported model as a Hugging Face folder or a GGUF file. */
import { Command } from 'commander';

import { loadModel } from '../index';
import { DTYPES, LoadOptionsSchema, SaveOptionsSchema, validate } from '../config';
import { addSchemaOptions, pickSchemaOptions } from '../cli-options';
import { checkSaveTarget } from '../output';
import { runCommand } from './run';

export function register(program: Command): void {
  const cmd = program
    .command('convert')
    .description(
      'Write a model (Hugging Face folder or .gguf) as a Hugging Face folder (config.json, safetensors, tokenizer files) ' +
        'or, with --format gguf or an .gguf path, as one GGUF file that llama.cpp runs. GGUF input weights are dequantized.',
    )
    .argument('<model>', 'model folder or .gguf file')
    .requiredOption('--out <path>', 'output folder (or .gguf file); written atomically, never over the input')
    .option('--json', 'print one JSON object');
  addSchemaOptions(cmd, SaveOptionsSchema);
  addSchemaOptions(cmd, LoadOptionsSchema, ['dtype']);
  cmd.action(async (modelPath: string, opts: Record<string, unknown>) => {
    const json = Boolean(opts.json);
    await runCommand(json, async ({ signal, onProgress }) => {
      const save = validate(SaveOptionsSchema, pickSchemaOptions(SaveOptionsSchema, opts));
      // Weights load in the saved dtype where it is one; GGUF types are quantized from f32.
      const loadDtype = (DTYPES as readonly string[]).includes(save.dtype ?? '') ? save.dtype : undefined;
      const load = validate(LoadOptionsSchema, { device: opts.device, dtype: loadDtype });
      checkSaveTarget(opts.out as string, [modelPath], save);
      const started = performance.now();
      await using model = await loadModel(modelPath, { ...load, signal, onProgress });
      const r = await model.save(opts.out as string, { ...save, signal, onProgress });
      const seconds = (performance.now() - started) / 1000;
      return {
        json: { ...r, model: modelPath, layers: model.info().numLayers, seconds },
        text: `wrote ${r.path} (${r.files.join(', ')}; ${(r.bytes / 1e6).toFixed(1)} MB of weights)\n`,
      };
    });
  });
}
