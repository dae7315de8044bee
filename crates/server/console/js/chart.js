// Time-series charts on the vendored uPlot: one shared time axis, one column per series. Times
// read as everywhere else in the console (`fmtTime`: 24-hour clock, no am/pm), on the axis and
// in the legend. Series whose ranges differ by orders of magnitude (a temperature of 20–30 next
// to a pressure of 100000) get a second y axis on the right, so neither is drawn flat.
/* global uPlot */

import { fmtTime } from './dom.js';

const COLORS = ['#1976d2', '#e65100', '#2e7d32', '#8e24aa', '#c62828', '#00838f'];

/** Two magnitudes this many powers of ten apart get their own axes. */
const SPLIT_DECADES = 2;

/** An axis tick label: the part of `fmtTime` the tick spacing needs. */
export function tickLabel(seconds, spacingSeconds, spanSeconds) {
  const t = fmtTime(seconds * 1000);
  if (spanSeconds >= 2 * 86400) return spacingSeconds >= 86400 ? t.slice(5, 10) : `${t.slice(5, 10)} ${t.slice(11, 16)}`;
  return spacingSeconds < 60 ? t.slice(11, 19) : t.slice(11, 16);
}

/** The size of a series' values: the larger absolute end of its range (0 when empty). */
function magnitude(column) {
  let max = 0;
  for (const v of column) if (v !== null && Math.abs(v) > max) max = Math.abs(v);
  return max;
}

/**
 * Which scale each series uses: 'y' for all, unless their magnitudes span SPLIT_DECADES or
 * more, when the large ones go to 'y2' (split halfway between the extremes, in decades).
 */
export function scalesFor(columns) {
  const decades = columns.map((c) => { const m = magnitude(c); return m > 0 ? Math.log10(m) : null; });
  const known = decades.filter((d) => d !== null);
  if (known.length < 2) return columns.map(() => 'y');
  const lo = Math.min(...known);
  const hi = Math.max(...known);
  if (hi - lo < SPLIT_DECADES) return columns.map(() => 'y');
  const middle = (lo + hi) / 2;
  return decades.map((d) => (d !== null && d >= middle ? 'y2' : 'y'));
}

/**
 * Draws the chart in `box` and returns the uPlot (destroy it before drawing again).
 * keys: series names; times: ms, ascending; columns: one array per key (null where missing).
 */
export function drawTimeSeries(box, { keys, times, columns, startTs, endTs, height = 300 }) {
  const scales = scalesFor(columns);
  const twoAxes = scales.includes('y2');
  const span = (endTs - startTs) / 1000;
  const names = (scale) => keys.filter((_, n) => scales[n] === scale).join(', ');
  // A y axis as wide as its longest tick label (uPlot's fixed 50 px cuts "101,400").
  const ySize = (u, values) => Math.max(40, 20 + 8 * Math.max(0, ...(values || []).map((v) => String(v).length)));
  const axes = [
    { values: (u, splits, axis, space, incr) => splits.map((s) => tickLabel(s, incr, span)) },
    { scale: 'y', size: ySize, label: twoAxes ? names('y') : undefined },
  ];
  if (twoAxes) axes.push({ scale: 'y2', side: 1, size: ySize, grid: { show: false }, label: names('y2') });
  box.replaceChildren();
  const plot = new uPlot({
    width: Math.max(320, box.clientWidth || 800),
    height,
    scales: { x: { time: true, min: startTs / 1000, max: endTs / 1000 }, y: {}, ...(twoAxes ? { y2: {} } : {}) },
    series: [
      { value: (u, v) => (v === null || v === undefined ? '' : fmtTime(v * 1000)) },
      ...keys.map((key, n) => ({
        label: key, scale: scales[n], stroke: COLORS[n % COLORS.length], width: 2, points: { show: true, size: 5 }, spanGaps: true,
      })),
    ],
    axes,
  }, [times.map((t) => t / 1000), ...columns], box);
  box.dataset.axes = twoAxes ? '2' : '1';
  return plot;
}
