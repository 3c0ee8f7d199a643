/**
 * Reshapes validated public options into what the binding takes (rolldown's
 * `bindingify-input-options`): prune requests cross as the JSON of core's `PruneRequest`
 * (`{method, options, target, calibration, distill}`), which keeps one flat options object in the API and
 * one typed struct per method in Rust.
 */
import type { AnalyzeOptions, CalibrationOptions, CompareOptions, DistillOptions, PruneOptions } from './config';
import { DEFAULT_CALIBRATION, packageFile } from './paths';

export function bindingifyCalibration(c: CalibrationOptions | undefined): CalibrationOptions {
  const calibration = { ...(c ?? {}) };
  if (calibration.file === undefined && calibration.text === undefined) calibration.file = packageFile(DEFAULT_CALIBRATION);
  return calibration;
}

export function bindingifyPrune(o: PruneOptions): string {
  const { method, target, calibration, distill, ...options } = o;
  return JSON.stringify({ method, options, target, calibration: bindingifyCalibration(calibration), distill: distill && distillRequest(distill) });
}

export function bindingifyAnalyze(o: AnalyzeOptions): string {
  return JSON.stringify(bindingifyCalibration(o.calibration));
}

/** Core's `CompareRequest` JSON: evaluation options grouped, method options by id. */
export function bindingifyCompare(o: CompareOptions, dataDir: string | undefined): string {
  const { methods, target, calibration, methodOptions, tasks, limit, batchSize, pplData, pplWindows, pplSeqLen, saveDir, distill } = o;
  return JSON.stringify({
    methods,
    target,
    calibration: bindingifyCalibration(calibration),
    options: methodOptions ?? {},
    eval: { tasks, limit, batchSize, dataDir },
    pplData,
    pplWindows,
    pplSeqLen,
    saveDir,
    distill: distill && distillRequest(distill),
  });
}

/** Core's `DistillRequest` JSON: the training text defaults to the shipped calibration text. */
export function bindingifyDistill(o: DistillOptions): string {
  return JSON.stringify(distillRequest(o));
}

function distillRequest(o: DistillOptions): object {
  const { data, seqLen, windows, ...rest } = o;
  const text = typeof data === 'string' ? { file: data } : { ...(data ?? {}) };
  if (seqLen !== undefined) text.seqLen = seqLen;
  if (windows !== undefined) text.nSamples = windows;
  return { ...rest, data: bindingifyCalibration(text) };
}
