/**
 * layerfold: make large language models shallower.
 *
 * @example
 * ```ts
 * import { loadModel } from 'layerfold';
 * await using model = await loadModel('SmolLM2-135M-Instruct.Q4_1.gguf');
 * const { ppl } = await model.perplexity({ file: 'wiki.test.raw' }, { seqLen: 512, maxWindows: 8 });
 * ```
 */
import native from './native';
import {
  LoadOptionsSchema,
  PerplexityOptionsSchema,
  SaveOptionsSchema,
  validate,
  type LoadOptions,
  type PerplexityOptions,
  type SaveOptions,
} from './config';
import { LayerfoldError, toLayerfoldError } from './errors';
import type { Progress, RunOptions, Stage } from './progress';

export { LayerfoldError, ERROR_CODES, type ErrorCode } from './errors';
export { jsonSchemas, schemas, DTYPES, type DType, type LoadOptions, type PerplexityOptions, type SaveOptions } from './config';
export type { Progress, RunOptions, Stage } from './progress';

/** What `Model.info()` returns. Layer indices elsewhere are 0-based. */
export interface ModelInfo {
  architecture: 'llama' | 'mistral' | 'qwen2' | 'qwen3';
  /** `safetensors` (a Hugging Face folder) or `gguf`. */
  format: 'safetensors' | 'gguf';
  path: string;
  dtype: 'f32' | 'f16' | 'bf16';
  device: string;
  numLayers: number;
  hiddenSize: number;
  intermediateSize: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  vocabSize: number;
  maxPositionEmbeddings: number;
  ropeTheta: number;
  tieWordEmbeddings: boolean;
  /** Parameters, tied embeddings counted once. */
  parameters: number;
  bosTokenId?: number;
  eosTokenId?: number;
  /** GGUF tensor types, most frequent first; empty for safetensors. */
  quantization: { type: string; count: number }[];
}

/** The result of `Model.perplexity()` (METHODS.md §4.1). */
export interface PerplexityResult {
  /** `exp(nll)`. */
  ppl: number;
  /** Mean negative log-likelihood per predicted token, in nats. */
  nll: number;
  /** Predicted tokens: `windows × (seqLen − 1)`. */
  tokens: number;
  windows: number;
  seqLen: number;
  /** Tokens of the whole tokenized corpus, BOS included. */
  corpusTokens: number;
  /** Wall time of the call, in seconds. */
  seconds: number;
  /** Conditions that are not failures (a corpus shorter than one window). */
  warnings: string[];
}

/** What `Model.save()` wrote. */
export interface SaveResult {
  path: string;
  /** File names inside `path`. */
  files: string[];
  /** Bytes of tensor data. */
  bytes: number;
}

/** Text to evaluate: inline text, or a `.txt` (one document per non-empty line) or `.jsonl` (`{"text": …}` rows) file. */
export type TextInput = string | { file: string };

function guardProgress(onProgress?: (p: Progress) => void): ((p: { stage: string; done: number; total: number }) => void) | undefined {
  if (!onProgress) return undefined;
  return (p) => {
    try {
      onProgress({ stage: p.stage as Stage, done: p.done, total: p.total });
    } catch (e) {
      // Throwing into native code helps no one: log and keep running (node-llama-cpp).
      console.error('layerfold: onProgress threw, ignored:', e);
    }
  };
}

/**
 * Runs one native call with progress and cancellation: rejects with `signal.reason` when the
 * signal aborts (at once if it already has), and with a `LayerfoldError` otherwise.
 */
async function runNative<T>(
  run: RunOptions,
  call: (
    onProgress: ((p: { stage: string; done: number; total: number }) => void) | undefined,
    cancel: InstanceType<typeof native.BindingCancelToken>,
  ) => Promise<T>,
): Promise<T> {
  const { signal } = run;
  if (signal?.aborted) throw signal.reason;
  const token = new native.BindingCancelToken();
  const onAbort = () => token.cancel();
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    return await call(guardProgress(run.onProgress), token);
  } catch (e) {
    if (signal?.aborted && (e as { code?: string })?.code === 'E_ABORTED') throw signal.reason;
    throw toLayerfoldError(e);
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

function splitRun<T extends object>(options: (T & RunOptions) | undefined): [Omit<T, keyof RunOptions>, RunOptions] {
  const { onProgress, signal, ...rest } = (options ?? {}) as T & RunOptions;
  return [rest as Omit<T, keyof RunOptions>, { onProgress, signal }];
}

/**
 * A model loaded in native memory. Get one with {@link loadModel} (or `Model.load`); free it with
 * `dispose()` or `await using`.
 */
export class Model {
  #binding: InstanceType<typeof native.BindingModel> | null;

  private constructor(binding: InstanceType<typeof native.BindingModel>) {
    this.#binding = binding;
  }

  /**
   * Loads a Hugging Face folder (config.json, safetensors weights, tokenizer.json) or a GGUF file.
   * The input is only read.
   * @throws LayerfoldError `E_NOT_FOUND`, `E_MODEL_FORMAT`, `E_UNSUPPORTED`, `E_CONFIG`, `E_DEVICE`, `E_ABORTED`
   */
  static async load(path: string, options?: LoadOptions & RunOptions): Promise<Model> {
    const [opts, run] = splitRun(options);
    const valid = validate(LoadOptionsSchema, opts);
    const binding = await runNative(run, (p, c) => native.loadModel(path, valid, p, c));
    return new Model(binding);
  }

  #get(): InstanceType<typeof native.BindingModel> {
    if (!this.#binding) throw new LayerfoldError('E_DISPOSED', 'the model was disposed');
    return this.#binding;
  }

  /** Architecture, sizes, dtype and device. */
  info(): ModelInfo {
    try {
      return this.#get().info() as ModelInfo;
    } catch (e) {
      throw toLayerfoldError(e);
    }
  }

  /**
   * Perplexity on non-overlapping windows of the text (METHODS.md §4.1): documents joined by a
   * blank line, tokenized once with one BOS.
   * @throws LayerfoldError `E_CONFIG` (seqLen 0 or above the context), `E_DATA` (empty text), `E_NOT_FOUND`, `E_ABORTED`
   */
  async perplexity(input: TextInput, options?: PerplexityOptions & RunOptions): Promise<PerplexityResult> {
    const [opts, run] = splitRun(options);
    const valid = validate(PerplexityOptionsSchema, opts);
    const source = typeof input === 'string' ? { text: input } : { file: input.file };
    const binding = this.#get();
    return runNative(run, (p, c) => binding.perplexity(source, valid, p, c));
  }

  /**
   * Writes the model as a Hugging Face folder (config.json, safetensors, tokenizer files),
   * atomically: `dir` appears complete or not at all.
   * @throws LayerfoldError `E_OUTPUT_EXISTS`, `E_DISK_FULL`, `E_IO`, `E_CONFIG`, `E_ABORTED`
   */
  async save(dir: string, options?: SaveOptions & RunOptions): Promise<SaveResult> {
    const [opts, run] = splitRun(options);
    const valid = validate(SaveOptionsSchema, opts);
    const binding = this.#get();
    return runNative(run, (p, c) => binding.save(dir, valid, p, c));
  }

  /** Frees the weights. Safe to call more than once. */
  async dispose(): Promise<void> {
    this.#binding?.dispose();
    this.#binding = null;
  }

  get disposed(): boolean {
    return this.#binding === null;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

/** Loads a model; see {@link Model.load}. */
export function loadModel(path: string, options?: LoadOptions & RunOptions): Promise<Model> {
  return Model.load(path, options);
}

/** Whether this build of the addon can use a CUDA device. */
export function cudaAvailable(): boolean {
  return native.cudaAvailable();
}
