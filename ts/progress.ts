/** Progress reports from long operations. */

/** What a long operation is doing. */
export type Stage = 'load' | 'tokenize' | 'calibrate' | 'score' | 'merge' | 'distill' | 'eval' | 'save';

/** `done` of `total` units of `stage` are finished. Units: layers (load), windows (eval), files (save). */
export interface Progress {
  stage: Stage;
  done: number;
  total: number;
  /** Distillation steps only: the step's loss, its KL and hidden-state terms, and the training tokens seen so far. */
  training?: { loss: number; kl: number; mse: number; tokens: number };
}

/** Options every long operation accepts. */
export interface RunOptions {
  /** Called at most once per layer or batch. A callback that throws is logged and ignored. */
  onProgress?: (progress: Progress) => void;
  /** Aborts the operation; the promise then rejects with `signal.reason`. */
  signal?: AbortSignal;
}
