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
    .regex(/^(cpu|cuda(:\d+)?|auto)$/, 'expected cpu, cuda, cuda:N or auto')
    .optional()
    .describe('Device: cpu, cuda, cuda:N, or auto (CUDA device 0 when the addon and the machine can use it, else the CPU). Default cpu.'),
  stream: z
    .boolean()
    .optional()
    .describe(
      'Keep the layers memory-mapped in the checkpoint and build each one only while a pass runs it (layer by layer over all calibration batches), for models larger than memory; same results as in memory. Chosen anyway when the weights do not fit the available memory. Default false.',
    ),
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

/** What `save` writes: a Hugging Face folder of safetensors, or one llama.cpp GGUF file. */
export const SAVE_FORMATS = ['safetensors', 'gguf'] as const;
/** The dtypes of saved weights: `q8_0` is a GGUF type, `bf16` a safetensors one. */
export const SAVE_DTYPES = ['f32', 'f16', 'bf16', 'q8_0'] as const;

export const SaveOptionsSchema = z.strictObject({
  format: z
    .enum(SAVE_FORMATS)
    .optional()
    .describe('Output format: safetensors (a folder) or gguf (one file). Default: gguf for a path ending in .gguf.'),
  dtype: z
    .enum(SAVE_DTYPES)
    .optional()
    .describe("Dtype of the saved weights: f32, f16, bf16 (safetensors) or q8_0 (gguf). Default: the model's."),
  maxShardBytes: z
    .number()
    .positive()
    .optional()
    .describe('Tensor bytes per safetensors shard; larger models are sharded with an index. Default 5e9.'),
  force: z.boolean().optional().describe('Replace a non-empty output folder. Default false.'),
});
export type SaveOptions = z.infer<typeof SaveOptionsSchema>;

export const CALIBRATION_KINDS = ['chunked', 'sampled', 'sentences'] as const;

export const CalibrationSchema = z
  .strictObject({
    file: z
      .string()
      .min(1)
      .optional()
      .describe(
        'Calibration text: a .txt file (one document per non-empty line) or .jsonl ({"text": …} rows). ' +
          'Default: WikiText-2 validation, shipped in the package (data/calibration).',
      ),
    text: z.string().optional().describe('Inline calibration text instead of a file.'),
    kind: z
      .enum(CALIBRATION_KINDS)
      .optional()
      .describe("How samples are cut (METHODS.md §1): chunked, sampled or sentences. Default: the method's."),
    seqLen: positiveInt().optional().describe("Tokens per sample. Default: the method's (min(2048, context) for most)."),
    nSamples: positiveInt().optional().describe("Number of samples. Default: the method's (128 for most)."),
    seed: z.int().min(0).optional().describe('Seed of the sampled and sentences kinds. Default 0.'),
  })
  .refine((c) => !(c.file !== undefined && c.text !== undefined), { message: 'give either file or text, not both' });
export type CalibrationOptions = z.infer<typeof CalibrationSchema>;

export const TargetSchema = z
  .strictObject({
    removeLayers: positiveInt().optional().describe('Layers to remove.'),
    ratio: z
      .number()
      .gt(0)
      .lt(1)
      .optional()
      .describe('Fraction of the parameters to remove, in (0, 1); converted to a layer count by the parameters of one layer.'),
    threshold: z
      .number()
      .min(-1)
      .max(1)
      .optional()
      .describe('LaCo/SLM only: the output-similarity threshold T.'),
  })
  .refine((t) => [t.removeLayers, t.ratio, t.threshold].filter((v) => v !== undefined).length === 1, {
    message: 'give exactly one of removeLayers, ratio or threshold',
  });
export type Target = z.infer<typeof TargetSchema>;

const merge = z
  .enum(['rdsc', 'top', 'mean'])
  .optional()
  .describe("How a window's weights combine: rdsc (paper), top (released code), mean (ours). Default top.");
const prefixCache = z
  .boolean()
  .optional()
  .describe('Score candidates from the first changed layer on cached inputs (false: a full forward each, for benchmarks). Default true.');

const noRepeat = z.boolean().optional().describe('Never merge a layer that is already a merge, as published. Default true.');
const gqaLayout = z
  .enum(['grouped', 'tiled'])
  .optional()
  .describe("Query heads follow their KV groups (grouped, GQA-correct) or the released code's tiled layout. Default grouped.");
const comePrefixCache = z
  .boolean()
  .optional()
  .describe('Re-score only from the merged layer on cached inputs (false: the whole model each step). Default true.');

/** Each method's own options (METHODS.md §3); the ids are the core registry's. */
export const METHOD_OPTIONS = {
  'drop-bi': {
    lastState: z
      .enum(['post-norm', 'pre-norm'])
      .optional()
      .describe("State after the last layer: post-norm (HF's, as the references) or pre-norm (h_L). Default post-norm."),
  },
  'drop-angular': {},
  'drop-last': {},
  sleb: { prefixCache },
  laco: {
    merge,
    layersPerMerge: z.int().min(2).optional().describe('C: layers per merge. Default 4.'),
    lowestLayer: z.int().min(0).optional().describe('L: the lowest slot a merge may start at (0-based). Default 1.'),
    highestLayer: positiveInt().optional().describe("H: exclusive upper bound of the merge range. Default: the model's layer count."),
    interval: positiveInt().optional().describe('I: slots skipped after an accepted merge. Default 2.'),
    prefixCache,
  },
  slm: { merge, prefixCache },
  come: { noRepeat, gqaLayout, prefixCache: comePrefixCache },
  'come-p': {
    grid: positiveInt().optional().describe('g: merge ratios k/g, k = 0..g, are tried by calibration loss. Default 20.'),
    noRepeat,
    gqaLayout,
    prefixCache: comePrefixCache,
  },
} as const;

export type MethodName = keyof typeof METHOD_OPTIONS;
export const METHOD_NAMES = Object.keys(METHOD_OPTIONS) as MethodName[];
const THRESHOLD_METHODS: readonly MethodName[] = ['laco', 'slm'];

export const TRAINABLE = ['all', 'merged', 'lora'] as const;
export const SCHEDULES = ['sp', 'mp'] as const;

/** Distillation (METHODS.md §3.5): core's `DistillRequest`. */
export const DistillOptionsSchema = z.strictObject({
  steps: positiveInt().optional().describe('Optimizer steps. Default 100.'),
  lr: z.number().positive().optional().describe('Peak learning rate (AdamW, cosine decay). Default 1e-4.'),
  warmupSteps: z.int().min(0).optional().describe('Linear warm-up steps. Default: 10% of the steps.'),
  weightDecay: z.number().min(0).optional().describe('Decoupled weight decay. Default 0.01.'),
  maxGradNorm: z.number().positive().optional().describe('Global gradient-norm clipping. Default 1.'),
  alpha: z.number().min(0).optional().describe('Weight of the logit KL term. Default 1.'),
  beta: z.number().min(0).optional().describe('Weight of the hidden-state term (each layer against its group in the teacher). Default 1.'),
  temperature: z.number().positive().optional().describe('KL temperature τ. Default 1.'),
  batchSize: positiveInt().optional().describe('Training windows per micro-batch. Default 4.'),
  accumulation: positiveInt().optional().describe('Micro-batches per step (gradient accumulation). Default 1.'),
  trainable: z
    .enum(TRAINABLE)
    .optional()
    .describe('What trains: all (every layer and the final norm), merged (the merged layers), or lora (rank-r adapters on the seven linears of every layer, merged into the weights at the end). Default all.'),
  schedule: z
    .enum(SCHEDULES)
    .optional()
    .describe('sp: train once on the whole loss; mp: first each layer that stands for several original layers alone (teacher state in, teacher state out), then globally. Default sp.'),
  localSteps: z.int().min(0).optional().describe("mp: how many of the steps are local. Default 3/4 of the steps."),
  loraRank: positiveInt().optional().describe('LoRA rank r. Default 8.'),
  loraAlpha: z.number().positive().optional().describe('LoRA alpha: the update is scaled by alpha / r. Default 16.'),
  seed: z.int().min(0).optional().describe("Seeds the order of the training windows and LoRA's initial adapters. Default 0."),
  checkpointDir: z.string().min(1).optional().describe('Folder for resumable checkpoints (trained tensors, optimizer state, position), written atomically.'),
  checkpointEvery: positiveInt().optional().describe('Steps between checkpoints. Default 25.'),
  resume: z.boolean().optional().describe("Continue from checkpointDir's checkpoint: the result equals an uninterrupted run's, bit for bit on the CPU."),
  data: z
    .union([z.string().min(1), CalibrationSchema])
    .optional()
    .describe(
      'Training text: a .txt or .jsonl file, or calibration options ({file, seqLen, nSamples, …}). It must not overlap the perplexity text. Default: the shipped WikiText-2 validation text.',
    ),
  heldOut: z
    .string()
    .min(1)
    .optional()
    .describe('The text the model will be measured on (the perplexity text): training windows sharing 32 tokens in a row with it are refused (E_CONFIG). compare --distill holds out its pplData.'),
  seqLen: positiveInt().optional().describe('Tokens per training window. Default 256.'),
  windows: positiveInt().optional().describe('Training windows cut from the text (chunked). Default 64.'),
});
export type DistillOptions = z.infer<typeof DistillOptionsSchema>;

function methodSchema<M extends MethodName>(method: M) {
  return z.strictObject({
    method: z.literal(method),
    target: TargetSchema.describe('How much to remove: exactly one of removeLayers, ratio, threshold.'),
    calibration: CalibrationSchema.optional().describe('Calibration data; unset fields take the method\'s defaults.'),
    distill: DistillOptionsSchema.optional().describe('Heal the pruned model toward the input model afterwards (distill() options).'),
    ...METHOD_OPTIONS[method],
  });
}

export const PruneOptionsSchema = z
  .discriminatedUnion('method', [
    methodSchema('drop-bi'),
    methodSchema('drop-angular'),
    methodSchema('drop-last'),
    methodSchema('sleb'),
    methodSchema('laco'),
    methodSchema('slm'),
    methodSchema('come'),
    methodSchema('come-p'),
  ])
  .superRefine((o, ctx) => {
    if (o.target.threshold !== undefined && !THRESHOLD_METHODS.includes(o.method)) {
      ctx.addIssue({ code: 'custom', path: ['target', 'threshold'], message: `${o.method} takes removeLayers or ratio` });
    }
  });
export type PruneOptions = z.infer<typeof PruneOptionsSchema>;

export const AnalyzeOptionsSchema = z.strictObject({
  calibration: CalibrationSchema.optional().describe('Calibration data. Default: 16 chunked windows of 256 tokens.'),
});
export type AnalyzeOptions = z.infer<typeof AnalyzeOptionsSchema>;

export const EvaluateOptionsSchema = z.strictObject({
  tasks: z
    .array(z.string().min(1))
    .min(1)
    .optional()
    .describe(
      'Tasks: boolq, piqa, hellaswag, winogrande, arc_easy, arc_challenge, openbookqa, or .jsonl files of your own. Default: the seven.',
    ),
  limit: positiveInt().optional().describe('The first N examples of each task, in file order (lm-eval --limit). Default: all.'),
  batchSize: positiveInt().optional().describe('Requests per forward pass. Default 32.'),
  dataDir: z
    .string()
    .min(1)
    .optional()
    .describe('Folder of the standard task files. Default: $LAYERFOLD_DATA.'),
});
export type EvaluateOptions = z.infer<typeof EvaluateOptionsSchema>;

export const CompareOptionsSchema = z
  .strictObject({
    methods: z.array(z.enum(METHOD_NAMES as [MethodName, ...MethodName[]])).min(1).describe('Methods to compare, in row order.'),
    target: TargetSchema.describe('How much every method removes: exactly one of removeLayers, ratio, threshold.'),
    calibration: CalibrationSchema.optional().describe("Every method's calibration data; unset fields take each method's defaults."),
    methodOptions: z
      .record(z.string(), z.record(z.string(), z.unknown()))
      .optional()
      .describe('Options of a method, by method id (e.g. {"laco": {"merge": "top"}}).'),
    tasks: EvaluateOptionsSchema.shape.tasks,
    limit: EvaluateOptionsSchema.shape.limit,
    batchSize: EvaluateOptionsSchema.shape.batchSize,
    dataDir: EvaluateOptionsSchema.shape.dataDir,
    pplData: z.string().min(1).optional().describe('Perplexity text (.txt or .jsonl). Default: no perplexity column.'),
    pplWindows: positiveInt().optional().describe('Perplexity windows (the first ones). Default 40.'),
    pplSeqLen: positiveInt().optional().describe('Tokens per perplexity window. Default min(512, context).'),
    saveDir: z.string().min(1).optional().describe('Save each pruned model as a Hugging Face folder <saveDir>/<method> (healed ones as <method>+distill).'),
    distill: DistillOptionsSchema.optional().describe('Heal every pruned model with the same distillation run (one budget for all): each method gets a second row, <method>+distill.'),
  })
  .superRefine((o, ctx) => {
    for (const m of Object.keys(o.methodOptions ?? {})) {
      if (!o.methods.includes(m as MethodName)) ctx.addIssue({ code: 'custom', path: ['methodOptions', m], message: `${m} is not one of the methods compared` });
    }
  });
export type CompareOptions = z.infer<typeof CompareOptionsSchema>;


export const GenerateOptionsSchema = z.strictObject({
  maxTokens: positiveInt().optional().describe('New tokens at most; generation also stops after EOS. Default 32.'),
  topK: z.int().min(0).optional().describe("How many of each step's most probable tokens to report. Default 5."),
});
export type GenerateOptions = z.infer<typeof GenerateOptionsSchema>;

/** Every schema by name, for tools and editors. */
export const schemas = {
  load: LoadOptionsSchema,
  perplexity: PerplexityOptionsSchema,
  save: SaveOptionsSchema,
  prune: PruneOptionsSchema,
  analyze: AnalyzeOptionsSchema,
  evaluate: EvaluateOptionsSchema,
  generate: GenerateOptionsSchema,
  compare: CompareOptionsSchema,
  distill: DistillOptionsSchema,
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
  const path = issue.code === 'unrecognized_keys' ? [...issue.path, issue.keys[0]] : issue.path;
  const key = path.length > 0 ? path.map(String).join('.') : what;
  const message = issue.code === 'unrecognized_keys' ? 'unknown option' : issue.message;
  throw new LayerfoldError('E_CONFIG', `invalid option \`${key}\`: ${message}`, {
    details: { path: issue.path, issues: result.error.issues },
  });
}
