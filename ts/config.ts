/**
 * The typed config layer: one strict schema per options object. Each schema gives the TypeScript
 * types, validates API calls and JSON/YAML config files, and defines the CLI flags and their help
 * (`cli-options.ts`), so the API and the CLI cannot drift. Defaults live in the Rust core; the
 * descriptions state them.
 */
import { z } from 'zod';

import { LayerfoldError } from './errors';

export const DTYPES = ['f32', 'f16', 'bf16'] as const;
export type DType = (typeof DTYPES)[number];

const dtype = z.enum(DTYPES);
const positiveInt = () => z.int().min(1);

export const LoadOptionsSchema = z.strictObject({
  dtype: dtype.optional().describe('Weights and activations dtype. Default f32.'),
  device: z
    .string()
    .regex(/^(cpu|cuda(:\d+)?)$/, 'expected cpu, cuda or cuda:N')
    .optional()
    .describe('Device: cpu, cuda or cuda:N. Default cpu.'),
});
export type LoadOptions = z.infer<typeof LoadOptionsSchema>;

export const PerplexityOptionsSchema = z.strictObject({
  seqLen: positiveInt()
    .optional()
    .describe("Tokens per window, at most the model's context. Default min(2048, max_position_embeddings)."),
  maxWindows: positiveInt().optional().describe('Evaluate at most this many windows (the first ones). Default: all.'),
  batchSize: positiveInt().optional().describe('Windows per forward pass. Default 1.'),
});
export type PerplexityOptions = z.infer<typeof PerplexityOptionsSchema>;

export const SaveOptionsSchema = z.strictObject({
  dtype: dtype.optional().describe("Dtype of the saved weights. Default: the model's."),
  maxShardBytes: z
    .number()
    .positive()
    .optional()
    .describe('Tensor bytes per safetensors shard; larger models are sharded with an index. Default 5e9.'),
  force: z.boolean().optional().describe('Replace a non-empty output folder. Default false.'),
});
export type SaveOptions = z.infer<typeof SaveOptionsSchema>;

/** Every schema by name, for tools and editors. */
export const schemas = {
  load: LoadOptionsSchema,
  perplexity: PerplexityOptionsSchema,
  save: SaveOptionsSchema,
} as const;

/** The JSON Schema of each options object. */
export function jsonSchemas(): Record<keyof typeof schemas, object> {
  return Object.fromEntries(Object.entries(schemas).map(([k, s]) => [k, z.toJSONSchema(s)])) as Record<
    keyof typeof schemas,
    object
  >;
}

/**
 * Validates `value` against `schema`; throws `E_CONFIG` naming the first offending key path.
 */
export function validate<S extends z.ZodType>(schema: S, value: unknown, what = 'options'): z.infer<S> {
  const result = schema.safeParse(value ?? {});
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const key = issue.path.length > 0 ? issue.path.join('.') : what;
  const extra = issue.code === 'unrecognized_keys' ? `: ${issue.keys.join(', ')}` : '';
  throw new LayerfoldError('E_CONFIG', `invalid option \`${key}\`: ${issue.message}${extra}`, {
    details: { path: issue.path, issues: result.error.issues },
  });
}
