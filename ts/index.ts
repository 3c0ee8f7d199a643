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
import native, { addonInfo as loadedAddon, type AddonInfo } from './native';
import type * as Generated from '../index';
import {
  AnalyzeOptionsSchema,
  CompareOptionsSchema,
  DistillOptionsSchema,
  EvaluateOptionsSchema,
  GenerateOptionsSchema,
  LoadOptionsSchema,
  PerplexityOptionsSchema,
  PruneOptionsSchema,
  SaveOptionsSchema,
  validate,
  type AnalyzeOptions,
  type CompareOptions,
  type DistillOptions,
  type EvaluateOptions,
  type GenerateOptions,
  type LoadOptions,
  type MethodName,
  type PerplexityOptions,
  type PruneOptions,
  type SaveOptions,
} from './config';
import { bindingifyAnalyze, bindingifyCompare, bindingifyDistill, bindingifyPrune } from './bindingify';
import { LayerfoldError, toLayerfoldError } from './errors';
import type { Progress, RunOptions, Stage } from './progress';
import type { Origin } from './generated/Origin';
import type { CalibrationSummary } from './generated/CalibrationSummary';
import type { PruneSummary as GeneratedPruneSummary } from './generated/PruneSummary';
import type { DistillReport } from './generated/DistillReport';

export { LayerfoldError, ERROR_CODES, type ErrorCode } from './errors';
export {
  jsonSchemas,
  schemas,
  DTYPES,
  SAVE_DTYPES,
  SAVE_FORMATS,
  METHOD_NAMES,
  type AnalyzeOptions,
  type CalibrationOptions,
  type CompareOptions,
  type DistillOptions,
  type DType,
  type EvaluateOptions,
  type GenerateOptions,
  type LoadOptions,
  type MethodName,
  type PerplexityOptions,
  type PruneOptions,
  type SaveOptions,
  type Target,
} from './config';
export type { Progress, RunOptions, Stage } from './progress';

/** What `Model.info()` returns. Layer indices elsewhere are 0-based. */
export interface ModelInfo {
  architecture: 'llama' | 'mistral' | 'qwen2' | 'qwen3';
  /** `safetensors` (a Hugging Face folder) or `gguf`. */
  format: 'safetensors' | 'gguf';
  path: string;
  dtype: 'f32' | 'f16' | 'bf16';
  device: string;
  /** Why the model is on the CPU although `device: 'auto'` was asked for. */
  deviceFallback?: string;
  /** Why the layers are read from the checkpoint one at a time (`stream`), when they are. */
  streamed?: string;
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

// The result types of `prune` are core's own structs, declared by ts-rs from the Rust
// (ts/generated, rewritten by `cargo test -p layerfold-core`), so the two cannot drift.
export type { Origin } from './generated/Origin';
export type { Candidate } from './generated/Candidate';
export type { Step } from './generated/Step';
export type { Report } from './generated/Report';
export type { ThresholdSearch } from './generated/ThresholdSearch';
export type { CalibrationSummary } from './generated/CalibrationSummary';
export type { DistillReport } from './generated/DistillReport';
export type { StepLog } from './generated/StepLog';
export type { Trainable } from './generated/Trainable';

/** What a distillation run records (under `distill` in `layerfold.json` when the model is saved). */
export interface DistillRecord {
  /** The teacher's path. */
  teacher: string;
  /** How the training text was cut. */
  data: CalibrationSummary;
  warnings: string[];
  /** The options with defaults filled in. */
  options: Record<string, unknown>;
  /** Steps, tokens, trained parameters, seconds and the loss curve. */
  report: DistillReport;
}

/** The result of {@link Model.distill}: the trained model (a new handle) and its record. */
export interface DistillResult extends DistillRecord {
  model: Model;
}

/** Everything `prune` records (also written as `layerfold.json` when the pruned model is saved). */
export type PruneSummary = Omit<GeneratedPruneSummary, 'method' | 'options' | 'distill'> & {
  method: MethodName;
  /** The method's options with defaults filled in. */
  options: Record<string, unknown>;
  /** The distillation that healed the model (`prune({distill})`, or `distill()` on a pruned model). */
  distill?: DistillRecord;
};

/** The result of {@link prune}: the pruned model (a new handle; the input is unchanged) and its summary. */
export interface PruneResult extends PruneSummary {
  model: Model;
}

/** Layer similarity of a model (METHODS.md §2.4) over HF states `h_0…h_{L−1}, ĥ`. */
export interface Analysis {
  calibration: CalibrationSummary;
  /** State names, in matrix order. */
  states: string[];
  /** Mean per-token cosine of every pair of states. */
  cosine: number[][];
  /** Linear CKA of every pair of states. */
  cka: number[][];
  tokens: number;
  /** `cos(h_i, h_{i+1})`, one per layer. */
  adjacentCosine: number[];
  blockInfluence: number[];
  warnings: string[];
}

/** One task's result (METHODS.md §4.2): the reported `metric` and its `value`, and both accuracies. Standard errors are lm-eval's, `null` below 2 examples. */
export type TaskResult = Omit<Generated.BindingTaskResult, 'name' | 'metric'> & { metric: 'acc' | 'acc_norm' };

/** One scored example: per choice, `loglik(continuation | context)` in nats and whether it was the greedy continuation. */
export type EvalSample = Generated.BindingEvalSample;

/** One model of `Model.compare()` (core's `CompareRow`), its record parsed. */
export type CompareRow = Omit<Generated.BindingCompareRow, 'record'> & { record: Origin[] };

/** The result of `Model.compare()`: the dense model first, then each method. */
export interface CompareResult {
  rows: CompareRow[];
  seconds: number;
}

/** The result of `Model.generate()` (core's `Generation`). */
export type Generation = Generated.BindingGeneration;

/** The result of `Model.evaluate()`. */
export interface EvalResult {
  /** By task name, in the order asked for. */
  tasks: Record<string, TaskResult>;
  /** Mean of the reported metrics × 100 (METHODS.md §4.2). */
  average: number;
  samples: EvalSample[];
  /** Wall time of the call, in seconds. */
  seconds: number;
}

/** Text to evaluate: inline text, or a `.txt` (one document per non-empty line) or `.jsonl` (`{"text": …}` rows) file. */
export type TextInput = string | { file: string };

function guardProgress(onProgress?: (p: Progress) => void): NativeProgress {
  if (!onProgress) return undefined;
  return (p) => {
    try {
      const { stage, done, total, training } = p;
      onProgress({ stage: stage as Stage, done, total, ...(training ? { training } : {}) });
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
type Binding = InstanceType<typeof native.BindingModel>;
type CancelToken = InstanceType<typeof native.BindingCancelToken>;
type NativeProgress = ((p: { stage: string; done: number; total: number; training?: Progress['training'] }) => void) | undefined;

async function runNative<T>(run: RunOptions, call: (onProgress: NativeProgress, cancel: CancelToken) => Promise<T>): Promise<T> {
  const { signal } = run;
  if (signal?.aborted) throw signal.reason;
  const token = new native.BindingCancelToken();
  const onAbort = () => token.cancel();
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const result = await call(guardProgress(run.onProgress), token);
    // The last progress reports are queued on a threadsafe function that libuv may run after the
    // task's completion in the same loop turn: one turn more delivers them before we resolve.
    if (run.onProgress) await new Promise((resolve) => setImmediate(resolve));
    return result;
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
  #binding: Binding | null;
  /** Native calls in flight; `dispose()` frees the weights once they have ended. */
  #pending = 0;
  #disposing = false;

  private constructor(binding: Binding) {
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

  #get(): Binding {
    if (!this.#binding || this.#disposing) throw new LayerfoldError('E_DISPOSED', 'the model was disposed');
    return this.#binding;
  }

  /**
   * Runs a long native call on this model. A `dispose()` meanwhile (as `await using` does when a
   * scope returns the call's promise unawaited) waits for the call to end instead of failing it.
   */
  async #run<T>(run: RunOptions, call: (binding: Binding, onProgress: NativeProgress, cancel: CancelToken) => Promise<T>): Promise<T> {
    const binding = this.#get();
    this.#pending++;
    try {
      return await runNative(run, (p, c) => call(binding, p, c));
    } finally {
      if (--this.#pending === 0 && this.#disposing) this.#release();
    }
  }

  #release(): void {
    this.#binding?.dispose();
    this.#binding = null;
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
    return this.#run(run, (b, p, c) => b.perplexity(source, valid, p, c));
  }

  /**
   * Writes the model as a Hugging Face folder (config.json, safetensors, tokenizer files) or, with
   * `format: 'gguf'` or a path ending in `.gguf`, as one GGUF file that llama.cpp runs (`dtype`
   * f32, f16 or q8_0), atomically: `path` appears complete or not at all.
   * @throws LayerfoldError `E_OUTPUT_EXISTS`, `E_DISK_FULL`, `E_IO`, `E_CONFIG`, `E_UNSUPPORTED`, `E_ABORTED`
   */
  async save(path: string, options?: SaveOptions & RunOptions): Promise<SaveResult> {
    const [opts, run] = splitRun(options);
    const valid = validate(SaveOptionsSchema, opts);
    return this.#run(run, (b, p, c) => b.save(path, valid, p, c));
  }

  /**
   * Compresses the model's depth with a method (METHODS.md §3). The model itself is unchanged.
   * @throws LayerfoldError `E_CONFIG` (options, a target larger than the model), `E_DATA` (empty calibration text), `E_NOT_FOUND`, `E_ABORTED`
   */
  async prune(options: PruneOptions & RunOptions): Promise<PruneResult> {
    const { onProgress, signal, ...opts } = options;
    const run: RunOptions = { onProgress, signal };
    const valid = validate(PruneOptionsSchema, opts);
    const pruned = await this.#run(run, (b, p, c) => b.prune(bindingifyPrune(valid), p, c));
    const summary = JSON.parse(pruned.provenance() as string) as PruneSummary;
    return { ...summary, model: new Model(pruned) };
  }

  /**
   * Trains this pruned model toward `teacher`, the model it was pruned from (METHODS.md §3.5):
   * temperature-scaled KL of the logits plus each layer's hidden state against the teacher's at the
   * end of that layer's group in the merge record. Neither model changes.
   * @throws LayerfoldError `E_CONFIG` (options; a teacher of another architecture, width, vocabulary or depth; training text overlapping `heldOut`; a checkpoint of another run), `E_DATA` (empty training text), `E_OUTPUT_EXISTS` (a checkpoint folder holding a checkpoint, without `resume`), `E_DISK_FULL`, `E_MODEL_FORMAT` (a corrupt checkpoint), `E_NOT_FOUND`, `E_ABORTED`
   */
  async distill(options: DistillOptions & { teacher: Model } & RunOptions): Promise<DistillResult> {
    const { teacher, ...rest } = options;
    if (!(teacher instanceof Model)) throw new LayerfoldError('E_CONFIG', 'invalid option `teacher`: give the loaded model this one was pruned from');
    const [opts, run] = splitRun(rest);
    const valid = validate(DistillOptionsSchema, opts);
    const teacherBinding = teacher.#get();
    const trained = await this.#run(run, (b, p, c) => b.distill(teacherBinding, bindingifyDistill(valid), p, c));
    const { distill } = JSON.parse(trained.provenance() as string) as { distill: DistillRecord };
    return { ...distill, model: new Model(trained) };
  }

  /** What pruning did to this model, or null for a model as loaded. */
  provenance(): PruneSummary | null {
    const p = this.#get().provenance();
    return p ? (JSON.parse(p) as PruneSummary) : null;
  }

  /**
   * Layer-by-layer similarity on calibration text: all-pairs cosine, linear CKA, block influence.
   * @throws LayerfoldError `E_CONFIG`, `E_DATA`, `E_NOT_FOUND`, `E_ABORTED`
   */
  async analyze(options?: AnalyzeOptions & RunOptions): Promise<Analysis> {
    const [opts, run] = splitRun(options);
    const valid = validate(AnalyzeOptionsSchema, opts);
    return JSON.parse(await this.#run(run, (b, p, c) => b.analyze(bindingifyAnalyze(valid), p, c))) as Analysis;
  }

  /**
   * Zero-shot multiple-choice evaluation scored exactly as lm-evaluation-harness 0.4 scores it
   * (METHODS.md §4.2). The standard tasks read their files from `dataDir`, else `$LAYERFOLD_DATA`.
   * @throws LayerfoldError `E_CONFIG` (an unknown task, limit 0, no data folder), `E_NOT_FOUND` (a task file), `E_DATA` (a bad row, named by file and line), `E_ABORTED`
   * @example
   * ```ts
   * const r = await model.evaluate({ tasks: ['piqa', 'arc_easy'], limit: 100, dataDir: '/data/eval' });
   * console.log(r.tasks.piqa.acc, r.average);
   * ```
   */
  async evaluate(options?: EvaluateOptions & RunOptions): Promise<EvalResult> {
    const [opts, run] = splitRun(options);
    const valid = validate(EvaluateOptionsSchema, opts);
    const dataDir = valid.dataDir ?? process.env.LAYERFOLD_DATA;
    const r = await this.#run(run, (b, p, c) => b.evaluate({ ...valid, dataDir }, p, c));
    const tasks = Object.fromEntries(r.tasks.map(({ name, ...t }) => [name, t as TaskResult]));
    return { tasks, average: r.average, samples: r.samples, seconds: r.seconds };
  }

  /**
   * The dense model and each method at one target, each measured the same way: perplexity on
   * `pplData` (when given) and the zero-shot tasks, with prune and evaluation seconds
   * (`layerfold compare`). The model itself is unchanged.
   *
   * @example
   * ```ts
   * const r = await model.compare({ methods: ['come', 'drop-bi'], target: { removeLayers: 9 }, limit: 100 });
   * for (const row of r.rows) console.log(row.method, row.average, row.retained);
   * ```
   */
  async compare(options: CompareOptions & RunOptions): Promise<CompareResult> {
    const [opts, run] = splitRun(options);
    const valid = validate(CompareOptionsSchema, opts);
    const dataDir = valid.dataDir ?? process.env.LAYERFOLD_DATA;
    const r = await this.#run(run, (b, p, c) => b.compare(bindingifyCompare(valid, dataDir), p, c));
    return { rows: r.rows.map((row) => ({ ...row, record: JSON.parse(row.record) as Origin[] })), seconds: r.seconds };
  }

  /**
   * Greedy continuation of `prompt`: text (encoded with the special tokens its tokenizer adds) or
   * token ids as they are. Each step reports its token's probability and the `topK` most
   * probable tokens.
   *
   * @example
   * ```ts
   * const g = await pruned.generate('Once upon a time', { maxTokens: 16 });
   * console.log(g.text, g.steps[0].top);
   * ```
   */
  async generate(prompt: string | number[], options?: GenerateOptions & RunOptions): Promise<Generation> {
    const [opts, run] = splitRun(options);
    const valid = validate(GenerateOptionsSchema, opts);
    return this.#run(run, (b, p, c) => b.generate(prompt, valid, p, c));
  }

  /**
   * Frees the weights, at once or, while calls are running, when the last one ends. Calls after it
   * throw `E_DISPOSED`. Safe to call more than once.
   */
  async dispose(): Promise<void> {
    this.#disposing = true;
    if (this.#pending === 0) this.#release();
  }

  get disposed(): boolean {
    return this.#disposing || this.#binding === null;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

/** Loads a model; see {@link Model.load}. */
export function loadModel(path: string, options?: LoadOptions & RunOptions): Promise<Model> {
  return Model.load(path, options);
}

/**
 * Prunes `model` (unchanged) with a method; see {@link Model.prune}.
 * @example
 * ```ts
 * const { model: pruned, layersAfter, report } = await prune(model, { method: 'slm', target: { removeLayers: 9 } });
 * await pruned.save('out/slm-21');
 * ```
 */
export function prune(model: Model, options: PruneOptions & RunOptions): Promise<PruneResult> {
  return model.prune(options);
}

/** Each method's options and calibration defaults, from the core registry. */
export function methodDefaults(): {
  methods: Record<MethodName, { options: Record<string, unknown>; calibration: { kind: string; seqLen: number | null; nSamples: number } | null; acceptsThreshold: boolean }>;
  analyze: { kind: string; seqLen: number | null; nSamples: number };
} {
  return JSON.parse(native.methodDefaults());
}

/** Whether this build of the addon can use a CUDA device. */
export function cudaAvailable(): boolean {
  return native.cudaAvailable();
}

export type { AddonInfo };

/** Which native addon this process runs (`cpu` or `cuda`), and why not the CUDA one if it is installed but did not load. */
export function addon(): AddonInfo {
  return { ...loadedAddon() };
}
