/**
 * Dependency-free SVG charts for benchmark results: grouped bars and lines, with axes, tick labels, a
 * legend and a title. A chart is a panel; `renderSvg` stacks panels into one self-contained document that
 * reads the same in a browser and on GitHub (white background, system fonts, no scripts).
 */

/** Okabe-Ito: distinguishable with the common colour-vision deficiencies. Sluice is always first (blue). */
export const PALETTE = [
  "#0072B2",
  "#E69F00",
  "#009E73",
  "#D55E00",
  "#CC79A7",
  "#56B4E9",
  "#F0E442",
  "#000000",
];

const FONT = "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif";

export interface Panel {
  width: number;
  height: number;
  /** The chart's title, also used as the document's accessible name. */
  title: string;
  /** SVG elements drawn in the panel's own coordinates. */
  body: string;
}

export interface BarSeries {
  name: string;
  /** Defaults to the palette colour of the series' position. */
  color?: string;
  /** One value per category; null draws nothing (and "n/a"). */
  values: readonly (number | null)[];
}

export interface BarChartOptions {
  title: string;
  subtitle?: string;
  /** Category labels along x; "\n" breaks a label into lines. */
  categories: readonly string[];
  series: readonly BarSeries[];
  yLabel: string;
  /** Logarithmic y axis (values <= 0 are drawn at the axis floor). Defaults to false. */
  log?: boolean;
  /** Print each bar's value above it. Defaults to true. */
  valueLabels?: boolean;
  /** A dashed horizontal reference line, e.g. a ratio of 1. */
  reference?: { value: number; label: string };
  format?: (value: number) => string;
  width?: number;
  height?: number;
}

export interface LineSeries {
  name: string;
  color?: string;
  points: readonly (readonly [number, number])[];
  dashed?: boolean;
}

export interface LineChartOptions {
  title: string;
  subtitle?: string;
  series: readonly LineSeries[];
  xLabel: string;
  yLabel: string;
  /** Base-2 logarithmic x axis (concurrency levels 1, 2, 4, ...). Defaults to false. */
  xLog2?: boolean;
  /** Logarithmic y axis. Defaults to false. */
  yLog?: boolean;
  /** Where to put x ticks; defaults to every x that appears in the data. */
  xTicks?: readonly number[];
  reference?: { value: number; label: string };
  format?: (value: number) => string;
  width?: number;
  height?: number;
}

const MARGIN = { left: 70, right: 20, top: 78, bottom: 62 };

export function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Short number for labels: 0.42, 3.1, 27, 1.5k, 2.3M. */
export function compactNumber(value: number): string {
  const abs = Math.abs(value);
  if (abs >= 1e6) return `${trim(value / 1e6)}M`;
  if (abs >= 1e4) return `${trim(value / 1e3)}k`;
  if (abs >= 100) return value.toFixed(0);
  if (abs >= 10) return trim(value, 1);
  if (abs >= 1 || value === 0) return trim(value, 2);
  return Number(value.toPrecision(2)).toString();
}

function trim(value: number, digits = 1): string {
  return Number(value.toFixed(digits)).toString();
}

interface Scale {
  map(value: number): number;
  ticks: number[];
}

function linearScale(lo: number, hi: number, from: number, to: number): Scale {
  const ticks = niceTicks(lo, hi);
  const min = Math.min(lo, ticks[0]!);
  const max = Math.max(hi, ticks[ticks.length - 1]!);
  const span = max - min || 1;
  return { map: (v) => from + ((v - min) / span) * (to - from), ticks };
}

function logScale(lo: number, hi: number, from: number, to: number, base = 10): Scale {
  const min = base ** Math.floor(Math.log(Math.max(lo, Number.MIN_VALUE)) / Math.log(base) + 1e-9);
  const max = base ** Math.ceil(Math.log(Math.max(hi, min * base)) / Math.log(base) - 1e-9);
  const decades = Math.round(Math.log(max / min) / Math.log(base));
  const ticks: number[] = [];
  for (let exponent = 0; exponent <= decades; exponent++) {
    const power = min * base ** exponent;
    ticks.push(power);
    // Intermediate ticks keep a short range readable.
    if (base === 10 && decades <= 2 && exponent < decades) ticks.push(power * 2, power * 5);
  }
  const span = Math.log(max / min) || 1;
  const map = (v: number) => from + (Math.log(Math.max(v, min) / min) / span) * (to - from);
  return { map, ticks: ticks.sort((a, b) => a - b) };
}

/** 4-7 round ticks covering [lo, hi] (always including 0 when lo >= 0). */
export function niceTicks(lo: number, hi: number): number[] {
  const low = Math.min(0, lo);
  const high = hi > low ? hi : low + 1;
  const raw = (high - low) / 5;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = ([1, 2, 2.5, 5, 10].find((m) => m * power >= raw) ?? 10) * power;
  const ticks: number[] = [];
  for (let t = Math.floor(low / step) * step; t < high + step - 1e-9; t += step)
    ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

function text(
  x: number,
  y: number,
  content: string,
  attrs: {
    size?: number;
    anchor?: "start" | "middle" | "end";
    weight?: string;
    fill?: string;
    rotate?: boolean;
  } = {},
): string {
  const lines = content.split("\n");
  const size = attrs.size ?? 12;
  const transform = attrs.rotate ? ` transform="rotate(-90 ${x} ${y})"` : "";
  const spans = lines
    .map((line, i) => `<tspan x="${x}" dy="${i === 0 ? 0 : size * 1.15}">${escapeXml(line)}</tspan>`)
    .join("");
  return (
    `<text x="${x}" y="${y}" font-size="${size}" text-anchor="${attrs.anchor ?? "start"}"` +
    `${attrs.weight ? ` font-weight="${attrs.weight}"` : ""} fill="${attrs.fill ?? "#222"}"${transform}>${spans}</text>`
  );
}

/**
 * Title, subtitle and legend (one row, wrapping when long). Returns the markup and where the plot area may
 * start, below the legend.
 */
function frame(
  title: string,
  subtitle: string | undefined,
  legend: readonly { name: string; color?: string }[],
  width: number,
): { markup: string; top: number } {
  const parts = [text(MARGIN.left, 22, title, { size: 15, weight: "600" })];
  if (subtitle) parts.push(text(MARGIN.left, 40, subtitle, { size: 11.5, fill: "#555" }));
  let x = MARGIN.left;
  let y = 60;
  legend.forEach(({ name, color }, i) => {
    const w = 18 + name.length * 6.6 + 16;
    if (x + w > width - MARGIN.right && x > MARGIN.left) {
      x = MARGIN.left;
      y += 16;
    }
    parts.push(
      `<rect x="${x}" y="${y - 9}" width="12" height="12" rx="2" fill="${color ?? PALETTE[i % PALETTE.length]}"/>`,
    );
    parts.push(text(x + 17, y + 1, name, { size: 11.5 }));
    x += w;
  });
  return { markup: parts.join(""), top: Math.max(MARGIN.top, y + 18) };
}

function yAxis(
  scale: Scale,
  label: string,
  width: number,
  height: number,
  top: number,
  format: (v: number) => string,
): string {
  const parts: string[] = [];
  for (const tick of scale.ticks) {
    const y = scale.map(tick);
    parts.push(
      `<line x1="${MARGIN.left}" x2="${width - MARGIN.right}" y1="${y}" y2="${y}" stroke="#e4e4e4" stroke-width="1"/>`,
    );
    parts.push(text(MARGIN.left - 6, y + 4, format(tick), { size: 11, anchor: "end", fill: "#444" }));
  }
  const mid = (top + height - MARGIN.bottom) / 2;
  parts.push(text(16, mid, label, { size: 12, anchor: "middle", rotate: true, fill: "#333" }));
  parts.push(
    `<line x1="${MARGIN.left}" x2="${MARGIN.left}" y1="${top}" y2="${height - MARGIN.bottom}" stroke="#888"/>`,
  );
  parts.push(
    `<line x1="${MARGIN.left}" x2="${width - MARGIN.right}" y1="${height - MARGIN.bottom}" y2="${height - MARGIN.bottom}" stroke="#888"/>`,
  );
  return parts.join("");
}

function referenceLine(scale: Scale, reference: { value: number; label: string }, width: number): string {
  const y = scale.map(reference.value);
  return (
    `<line x1="${MARGIN.left}" x2="${width - MARGIN.right}" y1="${y}" y2="${y}" stroke="#333" stroke-dasharray="5 4"/>` +
    text(width - MARGIN.right - 4, y - 5, reference.label, { size: 11, anchor: "end", fill: "#333" })
  );
}

export function barChart(options: BarChartOptions): Panel {
  const width = options.width ?? 760;
  const height = options.height ?? 380;
  const format = options.format ?? compactNumber;
  const values = options.series.flatMap((s) => s.values).filter((v): v is number => v !== null);
  if (options.reference) values.push(options.reference.value);
  const bottom = height - MARGIN.bottom;
  const head = frame(options.title, options.subtitle, options.series, width);
  const positive = values.filter((v) => v > 0);
  const scale = options.log
    ? logScale(Math.min(...positive, 1), Math.max(...positive, 1), bottom, head.top)
    : linearScale(Math.min(0, ...values), Math.max(...values, 0), bottom, head.top);
  const parts = [head.markup];
  parts.push(yAxis(scale, options.yLabel, width, height, head.top, format));
  const groupWidth = (width - MARGIN.left - MARGIN.right) / Math.max(1, options.categories.length);
  const barWidth = (groupWidth * 0.78) / Math.max(1, options.series.length);
  const base = options.log ? bottom : scale.map(0);
  options.categories.forEach((category, c) => {
    const groupX = MARGIN.left + c * groupWidth + groupWidth * 0.11;
    options.series.forEach((series, s) => {
      const value = series.values[c];
      const x = groupX + s * barWidth;
      const color = series.color ?? PALETTE[s % PALETTE.length];
      if (value === null || value === undefined) {
        parts.push(text(x + barWidth / 2, bottom - 4, "n/a", { size: 9, anchor: "middle", fill: "#999" }));
        return;
      }
      const y = scale.map(value);
      const top = Math.min(y, base);
      const h = Math.max(1, Math.abs(base - y));
      parts.push(
        `<rect x="${x.toFixed(1)}" y="${top.toFixed(1)}" width="${Math.max(1, barWidth - 2).toFixed(1)}" height="${h.toFixed(1)}" fill="${color}"><title>${escapeXml(`${series.name} · ${category.replace(/\n/g, " ")}: ${format(value)}`)}</title></rect>`,
      );
      if (options.valueLabels !== false && barWidth >= 16) {
        parts.push(
          text(x + barWidth / 2 - 1, top - 3, format(value), { size: 9.5, anchor: "middle", fill: "#333" }),
        );
      }
    });
    parts.push(
      text(MARGIN.left + (c + 0.5) * groupWidth, bottom + 16, category, { size: 11, anchor: "middle" }),
    );
  });
  if (options.reference) parts.push(referenceLine(scale, options.reference, width));
  return { width, height, title: options.title, body: parts.join("") };
}

export function lineChart(options: LineChartOptions): Panel {
  const width = options.width ?? 760;
  const height = options.height ?? 380;
  const format = options.format ?? compactNumber;
  const xs = options.series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = options.series.flatMap((s) => s.points.map((p) => p[1]));
  if (options.reference) ys.push(options.reference.value);
  const bottom = height - MARGIN.bottom;
  const left = MARGIN.left + 16;
  const right = width - MARGIN.right - 16;
  const xTicks = [...(options.xTicks ?? [...new Set(xs)])].sort((a, b) => a - b);
  const xMin = Math.min(...xs, ...xTicks);
  const xMax = Math.max(...xs, ...xTicks);
  const xMap = options.xLog2
    ? (v: number) => left + (Math.log2(v / xMin) / (Math.log2(xMax / xMin) || 1)) * (right - left)
    : (v: number) => left + ((v - xMin) / (xMax - xMin || 1)) * (right - left);
  const head = frame(options.title, options.subtitle, options.series, width);
  const positive = ys.filter((v) => v > 0);
  const scale = options.yLog
    ? logScale(Math.min(...positive), Math.max(...positive), bottom, head.top)
    : linearScale(Math.min(0, ...ys), Math.max(...ys), bottom, head.top);
  const parts = [head.markup];
  parts.push(yAxis(scale, options.yLabel, width, height, head.top, format));
  for (const tick of xTicks) {
    const x = xMap(tick);
    parts.push(`<line x1="${x}" x2="${x}" y1="${bottom}" y2="${bottom + 4}" stroke="#888"/>`);
    parts.push(text(x, bottom + 16, format(tick), { size: 11, anchor: "middle" }));
  }
  parts.push(
    text((left + right) / 2, height - 14, options.xLabel, { size: 12, anchor: "middle", fill: "#333" }),
  );
  if (options.reference) parts.push(referenceLine(scale, options.reference, width));
  options.series.forEach((series, s) => {
    const color = series.color ?? PALETTE[s % PALETTE.length];
    const points = [...series.points].sort((a, b) => a[0] - b[0]);
    const path = points.map(
      (p, i) => `${i === 0 ? "M" : "L"}${xMap(p[0]).toFixed(1)},${scale.map(p[1]).toFixed(1)}`,
    );
    parts.push(
      `<path d="${path.join(" ")}" fill="none" stroke="${color}" stroke-width="2.2"${series.dashed ? ' stroke-dasharray="6 4"' : ""}/>`,
    );
    for (const [x, y] of points) {
      parts.push(
        `<circle cx="${xMap(x).toFixed(1)}" cy="${scale.map(y).toFixed(1)}" r="3.5" fill="${color}"><title>${escapeXml(`${series.name}: ${format(x)} → ${format(y)}`)}</title></circle>`,
      );
    }
  });
  return { width, height, title: options.title, body: parts.join("") };
}

/** One SVG document with the panels laid out in a grid (`columns`, default 1), under an optional heading. */
export function renderSvg(
  panels: readonly Panel[],
  options: { columns?: number; heading?: string } = {},
): string {
  const columns = Math.max(1, options.columns ?? 1);
  const top = options.heading ? 34 : 0;
  const cellWidth = Math.max(...panels.map((p) => p.width));
  const rows: Panel[][] = [];
  for (let i = 0; i < panels.length; i += columns) rows.push(panels.slice(i, i + columns));
  const rowHeights = rows.map((row) => Math.max(...row.map((p) => p.height)));
  const width = cellWidth * Math.min(columns, panels.length);
  const height = top + rowHeights.reduce((a, b) => a + b, 0);
  const name = escapeXml(options.heading ?? panels.map((p) => p.title).join("; "));
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="${name}" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="${FONT}">`,
    `<title>${name}</title>`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
  ];
  if (options.heading) parts.push(text(16, 24, options.heading, { size: 17, weight: "700" }));
  let y = top;
  rows.forEach((row, r) => {
    row.forEach((panel, c) => {
      parts.push(`<g transform="translate(${c * cellWidth},${y})">${panel.body}</g>`);
    });
    y += rowHeights[r]!;
  });
  parts.push("</svg>");
  return `${parts.join("\n")}\n`;
}
