// A small time-series line chart on <canvas>: a rolling window of points, several series, a nice y scale,
// grid lines with labels, gaps where a value is unknown. No dependency; see docs/decisions/0003-admin-charts.md.

const NICE_STEPS = [1, 2, 2.5, 5, 10];
const FONT = '11px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';

/** A "nice" upper bound for the y axis (1, 2, 2.5 or 5 times a power of ten) and its tick step. */
export function niceScale(max, ticks = 4) {
  if (!(max > 0)) return { top: 1, step: 0.25 };
  const rough = max / ticks;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = NICE_STEPS.find((s) => s * power >= rough) * power;
  return { top: Math.ceil(max / step - 1e-9) * step, step };
}

/** A number for an axis or a legend: 1234 -> "1.23k", 0.0042 s -> "4.2 ms". */
export function formatValue(value, unit = '') {
  if (value === null || value === undefined || Number.isNaN(value)) return '–';
  if (unit === 's') {
    if (value === 0) return '0 s';
    if (value < 1e-3) return `${(value * 1e6).toPrecision(3)} µs`;
    if (value < 1) return `${(value * 1e3).toPrecision(3)} ms`;
    return `${value.toPrecision(3)} s`;
  }
  const abs = Math.abs(value);
  const suffix = unit ? ` ${unit}` : '';
  if (abs >= 1e9) return `${(value / 1e9).toPrecision(3)}G${suffix}`;
  if (abs >= 1e6) return `${(value / 1e6).toPrecision(3)}M${suffix}`;
  if (abs >= 1e4) return `${(value / 1e3).toPrecision(3)}k${suffix}`;
  if (Number.isInteger(value)) return `${value}${suffix}`;
  return `${value.toPrecision(abs >= 1 ? 3 : 2)}${suffix}`;
}

export class LineChart {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{series: {key: string, label: string, color: string}[], unit?: string, capacity?: number,
   *          interval?: number}} options capacity: points kept; interval: seconds between points
   */
  constructor(canvas, { series, unit = '', capacity = 120, interval = 1 }) {
    this.canvas = canvas;
    this.series = series;
    this.unit = unit;
    this.capacity = capacity;
    this.interval = interval;
    this.points = []; // [{t, values: {key: number | null}}], oldest first
  }

  /** Adds a point (values by series key; null or missing: unknown) and redraws. */
  push(t, values) {
    this.points.push({ t, values });
    if (this.points.length > this.capacity) this.points.splice(0, this.points.length - this.capacity);
    this.draw();
  }

  /** The newest value of one series (for legends and tests). */
  latest(key) {
    const last = this.points[this.points.length - 1];
    return last ? last.values[key] ?? null : null;
  }

  draw() {
    const { ctx, width, height } = this._prepare();
    const box = { left: 56, right: width - 10, top: 10, bottom: height - 22 };
    const { top, step } = niceScale(this._max());
    const y = (v) => box.bottom - (v / top) * (box.bottom - box.top);
    const x = (i) => box.left + (i / Math.max(1, this.capacity - 1)) * (box.right - box.left);
    this._grid(ctx, box, top, step, y);
    this._timeAxis(ctx, box, x);
    const offset = this.capacity - this.points.length; // new points enter on the right
    for (const s of this.series) this._line(ctx, s, (i) => x(i + offset), y);
  }

  _prepare() {
    const ratio = window.devicePixelRatio || 1;
    const width = this.canvas.clientWidth || 300;
    const height = this.canvas.clientHeight || 150;
    if (this.canvas.width !== Math.round(width * ratio)) this.canvas.width = Math.round(width * ratio);
    if (this.canvas.height !== Math.round(height * ratio)) this.canvas.height = Math.round(height * ratio);
    const ctx = this.canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = FONT;
    return { ctx, width, height };
  }

  _max() {
    let max = 0;
    for (const p of this.points) {
      for (const s of this.series) {
        const v = p.values[s.key];
        if (typeof v === 'number' && Number.isFinite(v) && v > max) max = v;
      }
    }
    return max;
  }

  _grid(ctx, box, top, step, y) {
    ctx.strokeStyle = '#e5e7eb';
    ctx.fillStyle = '#6b7280';
    ctx.lineWidth = 1;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (let v = 0; v <= top + step / 2; v += step) {
      const py = Math.round(y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(box.left, py);
      ctx.lineTo(box.right, py);
      ctx.stroke();
      ctx.fillText(formatValue(v, this.unit), box.left - 6, py);
    }
  }

  _timeAxis(ctx, box, x) {
    ctx.fillStyle = '#6b7280';
    ctx.textBaseline = 'top';
    const span = (this.capacity - 1) * this.interval;
    for (const ago of [span, span / 2, 0]) {
      const i = (this.capacity - 1) * (1 - ago / span);
      ctx.textAlign = ago === 0 ? 'right' : ago === span ? 'left' : 'center';
      ctx.fillText(ago === 0 ? 'now' : `-${Math.round(ago)}s`, x(i), box.bottom + 6);
    }
  }

  _line(ctx, series, x, y) {
    ctx.strokeStyle = series.color;
    ctx.lineWidth = 2;
    ctx.lineJoin = 'round';
    ctx.beginPath();
    let drawing = false;
    this.points.forEach((p, i) => {
      const v = p.values[series.key];
      if (typeof v !== 'number' || !Number.isFinite(v)) {
        drawing = false; // a gap: the value was unknown at that time
        return;
      }
      if (drawing) ctx.lineTo(x(i), y(v));
      else ctx.moveTo(x(i), y(v));
      drawing = true;
    });
    ctx.stroke();
  }
}
