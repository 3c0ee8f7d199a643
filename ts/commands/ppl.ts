/** `layerfold ppl <model>`: perplexity on a text file (METHODS.md §4.1). */
import fs from 'node:fs';
import { Command } from 'commander';

import { loadModel } from '../index';
import { LoadOptionsSchema, PerplexityOptionsSchema, validate } from '../config';
import { addSchemaOptions, pickSchemaOptions } from '../cli-options';
import { LayerfoldError } from '../errors';
import { runCommand } from './run';

export function register(program: Command): void {
  const cmd = program
    .command('ppl')
    .description('Perplexity on non-overlapping windows of a text file (documents joined by a blank line, one BOS).')
    .argument('<model>', 'model folder or .gguf file')
    .option('--data <file>', 'text (.txt, one document per line) or .jsonl file, e.g. the WikiText-2 raw test split (required)')
    .option('--json', 'print one JSON object');
  addSchemaOptions(cmd, PerplexityOptionsSchema);
  addSchemaOptions(cmd, LoadOptionsSchema);
  cmd.action(async (modelPath: string, opts: Record<string, unknown>) => {
    const json = Boolean(opts.json);
    await runCommand(json, async ({ signal, onProgress }) => {
      // Validate everything before loading anything.
      const ppl = validate(PerplexityOptionsSchema, pickSchemaOptions(PerplexityOptionsSchema, opts));
      const load = validate(LoadOptionsSchema, pickSchemaOptions(LoadOptionsSchema, opts));
      // No corpus ships with the package: the text a perplexity is measured on is always named.
      const data = opts.data as string | undefined;
      if (data === undefined) {
        throw new LayerfoldError('E_CONFIG', 'invalid option `data`: perplexity needs a text; pass --data <file> (the papers use the WikiText-2 raw test split)');
      }
      if (!fs.existsSync(data)) {
        throw new LayerfoldError('E_NOT_FOUND', `text file \`${data}\` does not exist: pass --data <file>`);
      }
      await using model = await loadModel(modelPath, { ...load, signal, onProgress });
      const r = await model.perplexity({ file: data }, { ...ppl, signal, onProgress });
      return {
        json: { ...r, model: modelPath, data },
        text: `perplexity ${r.ppl.toFixed(4)}  (seqLen ${r.seqLen}, ${r.windows} windows, ${r.tokens} predicted tokens, ${r.seconds.toFixed(1)} s)\n`,
        warnings: r.warnings,
      };
    });
  });
}
