/**
 * What the CLI prints: results on stdout, progress on stderr (a bar only on a terminal), and
 * `--json` documents with no decoration (node-llama-cpp's plain JSON mode).
 */
import cliProgress from 'cli-progress';

import type { Progress } from './progress';

/** A progress callback drawing one bar per stage on stderr; a no-op when stderr is not a TTY or `quiet`. */
export function progressBar(quiet: boolean): { onProgress?: (p: Progress) => void; stop: () => void } {
  if (quiet || !process.stderr.isTTY) return { stop: () => {} };
  let bar: cliProgress.SingleBar | undefined;
  let stage = '';
  // Reports still queued from native threads may arrive after the command ended: ignore them.
  let closed = false;
  const clear = () => {
    bar?.stop();
    bar = undefined;
  };
  const stop = () => {
    closed = true;
    clear();
  };
  // Tokens per second since the stage's first report (a distillation's live rate).
  let since = { time: 0, tokens: 0 };
  const payload = (p: Progress) => {
    const t = p.training;
    if (!t) return {};
    // The rate counts from the first step this process ran (a resumed run's first report has none).
    if (since.tokens < 0) since = { time: Date.now(), tokens: t.tokens };
    const seconds = (Date.now() - since.time) / 1000;
    const rate = seconds > 0 ? (t.tokens - since.tokens) / seconds : 0;
    return { loss: t.loss.toFixed(4), kl: t.kl.toFixed(4), mse: t.mse.toFixed(4), rate: rate.toFixed(0) };
  };
  return {
    onProgress: (p) => {
      if (closed) return;
      if (p.stage !== stage || !bar) {
        clear();
        stage = p.stage;
        since = { time: Date.now(), tokens: p.training?.tokens ?? -1 };
        const format =
          p.stage === 'distill'
            ? 'distill  [{bar}] step {value}/{total} loss {loss} (kl {kl}, hidden {mse}) {rate} tok/s, {eta_formatted} left'
            : `${p.stage.padEnd(8)} [{bar}] {value}/{total} {duration_formatted}`;
        bar = new cliProgress.SingleBar(
          {
            stream: process.stderr,
            format,
            hideCursor: true,
            // Erase the bar when it stops: the next stage's bar, or the result, takes its line.
            clearOnComplete: true,
          },
          cliProgress.Presets.shades_classic,
        );
        bar.start(p.total, p.done, { loss: '…', kl: '…', mse: '…', rate: '…' });
      } else {
        bar.setTotal(p.total);
        bar.update(p.done, payload(p));
      }
    },
    stop,
  };
}

/** Prints one JSON document on stdout. */
export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}
