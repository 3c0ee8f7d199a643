/**
 * How every CLI command runs: one AbortController that SIGINT aborts, progress on stderr, and one
 * place that turns failures into `{"error": {code, message}}` (with `--json`) or a message on
 * stderr, and into the exit code (README, "Exit codes").
 */
import { LayerfoldError, toLayerfoldError } from '../errors';
import { printJson, progressBar } from '../terminal';
import type { Progress } from '../progress';

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
export const EXIT_INTERRUPTED = 130;

export interface CommandRun {
  signal: AbortSignal;
  onProgress?: (p: Progress) => void;
}

/** What a command prints: the `--json` document, or the text and warnings for a terminal. */
export interface CommandOutput {
  json: unknown;
  text: string;
  warnings?: string[];
}

export function exitCodeFor(code: string): number {
  if (code === 'E_CONFIG') return EXIT_USAGE;
  if (code === 'E_ABORTED') return EXIT_INTERRUPTED;
  return EXIT_FAILURE;
}

/** Prints `error` as the command's failure and returns its exit code. */
export function reportFailure(error: LayerfoldError, json: boolean): number {
  if (json) printJson({ error: { code: error.code, message: error.message } });
  else process.stderr.write(`layerfold: ${error.message} [${error.code}]\n`);
  return exitCodeFor(error.code);
}

/**
 * Runs a command body and sets `process.exitCode`. The body returns what to print; the progress
 * bar is stopped and erased before anything is printed, so a result never lands inside a bar.
 */
export async function runCommand(json: boolean, body: (run: CommandRun) => Promise<CommandOutput>): Promise<void> {
  const controller = new AbortController();
  const onSigint = () => controller.abort(new LayerfoldError('E_ABORTED', 'interrupted (SIGINT)'));
  process.once('SIGINT', onSigint);
  const bar = progressBar(json);
  try {
    const out = await body({ signal: controller.signal, onProgress: bar.onProgress });
    bar.stop();
    if (json) printJson(out.json);
    else {
      for (const w of out.warnings ?? []) process.stderr.write(`warning: ${w}\n`);
      process.stdout.write(out.text);
    }
    process.exitCode = EXIT_OK;
  } catch (e) {
    bar.stop();
    process.exitCode = reportFailure(toLayerfoldError(e), json);
  } finally {
    process.removeListener('SIGINT', onSigint);
  }
}
