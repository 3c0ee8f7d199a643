/** Readable renderings of reports for the terminal. */
import type { Analysis, CompareResult, DistillRecord, EvalResult, Origin, PruneSummary } from './index';

const fmt = (x: number | null) =>
  x === null ? 'n/a' : (Math.abs(x) >= 1e4 || (Math.abs(x) < 1e-3 && x !== 0) ? x.toExponential(3) : x.toFixed(4));
const origin = (o: Origin): string => (Array.isArray(o) ? `[${o.map(origin).join(',')}]` : String(o));

/** The merge record and the per-step report of a prune, as text. */
export function pruneTable(s: PruneSummary, out?: string): string {
  const lines: string[] = [];
  lines.push(`${s.method}: ${s.layersBefore} → ${s.layersAfter} layers, ${s.parametersBefore.toLocaleString('en-US')} → ${s.parametersAfter.toLocaleString('en-US')} parameters, ${s.seconds.toFixed(1)} s`);
  if (s.calibration) {
    const c = s.calibration;
    lines.push(`calibration: ${c.kind}, ${c.nSamples} × ${c.seqLen} tokens (${c.tokens} in all) from ${c.source}, seed ${c.seed}`);
  }
  if (s.report.threshold) {
    const t = s.report.threshold;
    lines.push(`threshold: T = ${fmt(t.threshold)} gives ${t.layers} layers (target ${t.targetLayers}, ${t.exact ? 'exact' : 'not exact'}; ${t.tried.length} tried)`);
  }
  lines.push(`score: ${s.report.score}`);
  s.report.steps.forEach((step, k) => {
    lines.push(`step ${k + 1}: ${step.decision}`);
    if (step.candidates.length > 1) {
      for (const c of step.candidates) {
        lines.push(`  ${c.chosen ? '*' : ' '} layers ${c.layers.join(',').padEnd(12)} original ${c.original.join(',').padEnd(14)} ${fmt(c.score)}`);
      }
    }
  });
  lines.push(`record (new layer ← original layers, 0-based): ${s.record.map((o, i) => `${i}←${origin(o)}`).join(' ')}`);
  for (const w of s.report.warnings) lines.push(`warning: ${w}`);
  if (out) lines.push(`saved to ${out}`);
  return lines.join('\n') + '\n';
}

/** Adjacent-layer similarity and BI of an analysis, as text. */
export function analysisTable(a: Analysis): string {
  const lines = [`${a.states.length - 1} layers, ${a.tokens} calibration tokens (${a.calibration.kind}, ${a.calibration.nSamples} × ${a.calibration.seqLen})`];
  lines.push('layer  cos(h_i, h_i+1)  CKA(h_i, h_i+1)  BI');
  a.adjacentCosine.forEach((c, i) => {
    lines.push(`${String(i).padStart(5)}  ${fmt(c).padStart(15)}  ${fmt(a.cka[i][i + 1]).padStart(15)}  ${fmt(a.blockInfluence[i])}`);
  });
  return lines.join('\n') + '\n';
}

/** The per-task results of an evaluation and their average, as text. */
export function evalTable(r: EvalResult): string {
  const pct = (x: number | null) => (x === null ? '   n/a' : (100 * x).toFixed(2).padStart(6));
  const lines = ['task            metric     value  ± stderr      n     acc  acc_norm'];
  for (const [name, t] of Object.entries(r.tasks)) {
    lines.push(
      `${name.padEnd(15)} ${t.metric.padEnd(8)} ${pct(t.value)}  ± ${pct(t.stderr ?? null)}  ${String(t.n).padStart(5)}  ${pct(t.acc)}    ${pct(t.accNorm)}`,
    );
  }
  lines.push(`average (METHODS.md 4.2 metrics × 100): ${r.average.toFixed(2)}   (${r.seconds.toFixed(1)} s)`);
  return lines.join('\n') + '\n';
}

/** The comparison as one table: a row per model, a column per task (× 100). */
export function compareTable(r: CompareResult): string {
  const tasks = r.rows[0]?.tasks.map((t) => t.task) ?? [];
  const short = (t: string) => t.replace('arc_challenge', 'arc_c').replace('arc_easy', 'arc_e').replace('openbookqa', 'obqa').replace('winogrande', 'wino').replace('hellaswag', 'hella');
  const distilled = r.rows.some((row) => row.distillSeconds != null);
  const head = ['method', 'layers', 'params', 'ppl', ...tasks.map(short), 'avg', 'retained', 'prune s', ...(distilled ? ['distill s'] : [])];
  const rows = r.rows.map((row) => [
    row.method,
    String(row.layers),
    `${(row.parameters / 1e6).toFixed(1)}M`,
    row.ppl === null || row.ppl === undefined ? 'n/a' : row.ppl >= 1e4 ? row.ppl.toExponential(2) : row.ppl.toFixed(2),
    ...row.tasks.map((t) => t.value.toFixed(2)),
    row.average.toFixed(2),
    row.retained === null || row.retained === undefined ? 'n/a' : `${row.retained.toFixed(1)}%`,
    row.method === 'dense' ? '' : row.pruneSeconds.toFixed(1),
    ...(distilled ? [row.distillSeconds != null ? row.distillSeconds.toFixed(1) : ''] : []),
  ]);
  const widths = head.map((h, j) => Math.max(h.length, ...rows.map((row) => row[j].length)));
  const line = (cells: string[]) => cells.map((c, j) => (j === 0 ? c.padEnd(widths[j]) : c.padStart(widths[j]))).join('  ');
  const metrics = r.rows[0]?.tasks.map((t) => `${short(t.task)} ${t.metric}`).join(', ') ?? '';
  return [line(head), ...rows.map(line), `metrics: ${metrics}; ${r.seconds.toFixed(0)} s in all`].join('\n') + '\n';
}

/** A distillation run: its budget, speed and loss curve (every tenth step), as text. */
export function distillTable(d: DistillRecord, out?: string): string {
  const r = d.report;
  const resumed = r.resumedFrom != null ? `, resumed from step ${r.resumedFrom}` : '';
  const lines = [
    `distill: ${r.schedule}, ${r.steps} steps, ${r.tokens.toLocaleString('en-US')} tokens, ${r.parameters.toLocaleString('en-US')} trained parameters (${r.trainable}), ${r.seconds.toFixed(1)} s, ${r.tokensPerSecond.toFixed(0)} tokens/s${resumed}`,
    `teacher: ${d.teacher}`,
    `data: ${d.data.kind}, ${d.data.nSamples} × ${d.data.seqLen} tokens from ${d.data.source}`,
  ];
  for (const s of r.spans) lines.push(`local: layer ${s.layer} maps the teacher's h_${s.start} to h_${s.end}`);
  lines.push('step  lr         loss      kl        mse       grad norm');
  const every = Math.max(1, Math.round(r.curve.length / 10));
  r.curve.forEach((s, k) => {
    if (k % every !== 0 && k !== r.curve.length - 1) return;
    const local = s.local ? '  (local)' : '';
    lines.push(`${String(s.step).padStart(4)}  ${s.lr.toExponential(2).padEnd(9)}  ${fmt(s.loss).padEnd(8)}  ${fmt(s.kl).padEnd(8)}  ${fmt(s.mse).padEnd(8)}  ${fmt(s.gradNorm)}${local}`);
  });
  if (out) lines.push(`saved to ${out}`);
  return lines.join('\n') + '\n';
}
