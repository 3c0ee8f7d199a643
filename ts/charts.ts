/**
 * Heatmaps of layer-similarity matrices, grouped bar charts of comparisons and line charts of loss curves, drawn by vega-lite (rendered to SVG by vega, headless)
 * and rasterised to PNG by resvg — no hand-drawn graphics.
 */
import { Resvg } from '@resvg/resvg-js';

import type { DistillReport } from './generated/DistillReport';

/** A square matrix with row/column labels as a vega-lite heatmap, as SVG. */
export async function heatmapSvg(matrix: number[][], labels: string[], title: string): Promise<string> {
  // vega and vega-lite are ES modules with top-level await: load them with import().
  const vega = await import('vega');
  const vl = await import('vega-lite');
  const values = matrix.flatMap((row, i) => row.map((v, j) => ({ a: labels[i], b: labels[j], i, j, v })));
  const spec = vl.compile({
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    data: { values },
    mark: 'rect',
    width: Math.max(200, 18 * labels.length),
    height: Math.max(200, 18 * labels.length),
    encoding: {
      x: { field: 'b', type: 'ordinal', sort: labels, title: null },
      y: { field: 'a', type: 'ordinal', sort: labels, title: null },
      color: { field: 'v', type: 'quantitative', scale: { scheme: 'viridis' }, title: null },
      tooltip: [{ field: 'a' }, { field: 'b' }, { field: 'v', format: '.4f' }],
    },
    config: { background: 'white' },
  } as Parameters<typeof vl.compile>[0]).spec;
  const view = new vega.View(vega.parse(spec), { renderer: 'none' });
  return view.toSVG();
}

/**
 * Grouped bars: one group per category (a task, the average), one bar per series (a model), as
 * SVG. `values` holds `{category, series, value}`; the orders given are kept.
 */
export async function groupedBarSvg(
  values: { category: string; series: string; value: number }[],
  categories: string[],
  series: string[],
  title: string,
  yTitle: string,
): Promise<string> {
  const vega = await import('vega');
  const vl = await import('vega-lite');
  const spec = vl.compile({
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    data: { values },
    mark: 'bar',
    width: { step: 12 },
    height: 260,
    encoding: {
      column: { field: 'category', type: 'ordinal', sort: categories, title: null, header: { labelAngle: -30, labelAlign: 'right', labelOrient: 'bottom' } },
      x: { field: 'series', type: 'nominal', sort: series, axis: null },
      y: { field: 'value', type: 'quantitative', title: yTitle },
      color: { field: 'series', type: 'nominal', sort: series, title: null, scale: { scheme: 'tableau10' } },
      tooltip: [{ field: 'category' }, { field: 'series' }, { field: 'value', format: '.2f' }],
    },
    config: { background: 'white', view: { stroke: null } },
  } as Parameters<typeof vl.compile>[0]).spec;
  const view = new vega.View(vega.parse(spec), { renderer: 'none' });
  return view.toSVG();
}

/**
 * Lines over steps: one line per series (a loss term), as SVG; `values` holds `{step, series, value}`.
 * The y axis is logarithmic when the values span more than a decade.
 */
export async function lineChartSvg(values: { step: number; series: string; value: number }[], title: string, yTitle: string): Promise<string> {
  const vega = await import('vega');
  const vl = await import('vega-lite');
  const positive = values.map((v) => v.value).filter((v) => v > 0);
  const [lo, hi] = positive.reduce(([a, b], v) => [Math.min(a, v), Math.max(b, v)], [Infinity, 0]);
  const log = positive.length > 0 && hi / lo > 10;
  const spec = vl.compile({
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    data: { values: log ? values.filter((v) => v.value > 0) : values },
    mark: { type: 'line', point: new Set(values.map((v) => v.step)).size <= 60 },
    width: 480,
    height: 260,
    encoding: {
      x: { field: 'step', type: 'quantitative', title: 'step' },
      y: { field: 'value', type: 'quantitative', title: yTitle, scale: log ? { type: 'log' } : {} },
      color: { field: 'series', type: 'nominal', title: null, scale: { scheme: 'tableau10' } },
      tooltip: [{ field: 'step' }, { field: 'series' }, { field: 'value', format: '.4f' }],
    },
    config: { background: 'white' },
  } as Parameters<typeof vl.compile>[0]).spec;
  const view = new vega.View(vega.parse(spec), { renderer: 'none' });
  return view.toSVG();
}

/** A distillation's loss curve (loss, τ²·KL and the hidden-state term per step), as SVG. */
export async function lossCurveSvg(report: DistillReport, title: string): Promise<string> {
  const values = report.curve.flatMap((s) => [
    { step: s.step, series: 'loss', value: s.loss },
    { step: s.step, series: 'τ²·KL', value: s.kl },
    { step: s.step, series: 'hidden-state MSE', value: s.mse },
  ]);
  return lineChartSvg(values, `${title}: distillation (${report.schedule}, ${report.trainable})`, 'per position');
}

/** PNG bytes of an SVG. */
export function svgToPng(svg: string, scale = 2): Buffer {
  return new Resvg(svg, { fitTo: { mode: 'zoom', value: scale }, font: { loadSystemFonts: true } }).render().asPng();
}
