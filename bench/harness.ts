/**
 * A tiny benchmark harness: warm-up, N timed runs, median/min/max, and a plain-text table. Comparisons are
 * only meaningful between measurements taken in the same process run, so scripts measure every contender
 * side by side and print ratios.
 */

import { mkdir, readFile, writeFile } from "node:fs/promises";
import { availableParallelism, loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

export interface MeasureOptions {
  /** Untimed runs first, so the JIT has settled. Defaults to 2. */
  warmup?: number;
  /** Timed runs; the median is reported. Defaults to 7. */
  runs?: number;
  /**
   * Wall-clock allowance per case, in milliseconds, so one pathological contender cannot stall a whole
   * script: once spent, the case stops after its current run. If it runs out during warm-up, that last
   * warm-up run is kept as the only sample. Defaults to unlimited.
   */
  budgetMs?: number;
  /** Collect garbage before each timed run when `global.gc` is exposed. Defaults to true. */
  gcBetweenRuns?: boolean;
}

export interface Measurement {
  name: string;
  /** Duration of each timed run, in milliseconds. */
  samples: number[];
  medianMs: number;
  minMs: number;
  maxMs: number;
}

export interface Case {
  name: string;
  /** One run; awaited when it returns a promise. */
  fn: () => unknown;
}

/** Times `fn` and summarises the runs. */
export async function measure(
  name: string,
  fn: () => unknown,
  options: MeasureOptions = {},
): Promise<Measurement> {
  const [measurement] = await compare([{ name, fn }], options);
  return measurement!;
}

/**
 * Times several cases in interleaved rounds (A B C, A B C, ...) rather than one after the other, so a
 * change in machine load during the script skews every case alike and the ratios stay honest.
 */
export async function compare(cases: readonly Case[], options: MeasureOptions = {}): Promise<Measurement[]> {
  const warmup = Math.max(0, options.warmup ?? 2);
  const runs = Math.max(1, options.runs ?? 7);
  const budget = options.budgetMs ?? Number.POSITIVE_INFINITY;
  const collect = options.gcBetweenRuns !== false ? globalThis.gc : undefined;
  const states = cases.map(() => ({ samples: [] as number[], spentMs: 0, done: false }));
  for (let round = 0; round < warmup + runs; round++) {
    for (let i = 0; i < cases.length; i++) {
      const state = states[i]!;
      if (state.done) continue;
      const timed = round >= warmup;
      if (timed) collect?.();
      const start = performance.now();
      await cases[i]!.fn();
      const elapsed = performance.now() - start;
      state.spentMs += elapsed;
      if (timed) state.samples.push(elapsed);
      if (state.spentMs < budget) continue;
      if (state.samples.length === 0) state.samples.push(elapsed);
      state.done = true;
    }
  }
  return cases.map((entry, i) => summarise(entry.name, states[i]!.samples));
}

function summarise(name: string, samples: number[]): Measurement {
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    name,
    samples,
    medianMs: median(sorted),
    minMs: sorted[0]!,
    maxMs: sorted[sorted.length - 1]!,
  };
}

/** Median of already sorted numbers. */
export function median(sorted: readonly number[]): number {
  if (sorted.length === 0) return Number.NaN;
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Operations per second for `count` operations done in `ms`. */
export function perSecond(count: number, ms: number): number {
  return (count * 1000) / ms;
}

/** `ours / theirs` as "1.23x", or "-" when undefined. */
export function ratio(ours: number, theirs: number): string {
  if (!Number.isFinite(ours) || !Number.isFinite(theirs) || theirs === 0) return "-";
  const value = ours / theirs;
  // Two decimals, but never round a real difference down to "0.00x".
  return `${value !== 0 && Math.abs(value) < 0.01 ? value.toPrecision(2) : value.toFixed(2)}x`;
}

/** Compact human number: 1234567 -> "1.23M". */
export function formatCount(value: number): string {
  const abs = Math.abs(value);
  if (abs >= 1e9) return `${(value / 1e9).toFixed(2)}G`;
  if (abs >= 1e6) return `${(value / 1e6).toFixed(2)}M`;
  if (abs >= 1e3) return `${(value / 1e3).toFixed(1)}k`;
  return value.toFixed(abs >= 100 || Number.isInteger(value) ? 0 : 2);
}

/** Milliseconds as the most readable unit: "850 ns", "12.3 µs", "4.56 ms", "1.20 s". */
export function formatDuration(ms: number): string {
  if (ms < 0.001) return `${(ms * 1e6).toFixed(0)} ns`;
  if (ms < 1) return `${(ms * 1e3).toFixed(1)} µs`;
  if (ms < 1000) return `${ms.toFixed(2)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

export type Row = Record<string, string | number>;

/** Prints rows as an aligned table; columns come from the first row's keys, numbers align right. */
export function printTable(rows: readonly Row[], write: (line: string) => void = console.log): void {
  const first = rows[0];
  if (first === undefined) return;
  const columns = Object.keys(first);
  const cells = rows.map((row) => columns.map((column) => String(row[column] ?? "")));
  const widths = columns.map((column, i) => Math.max(column.length, ...cells.map((line) => line[i]!.length)));
  const numeric = columns.map((column) => rows.every((row) => typeof row[column] !== "string"));
  const format = (values: readonly string[]): string =>
    values
      .map((value, i) => (numeric[i] ? value.padStart(widths[i]!) : value.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  write(format(columns));
  write(widths.map((width) => "-".repeat(width)).join("  "));
  for (const line of cells) write(format(line));
}

// ---------------------------------------------------------------------------------------------------------
// Distributions, seeded randomness, run metadata and result files, shared by the engine benchmarks.

/** Nearest-rank percentile (p in 0..100) of already sorted numbers. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export interface Distribution {
  n: number;
  p50: number;
  p99: number;
  max: number;
  mean: number;
}

/** p50/p99/max/mean of a sample; NaN fields for an empty one. */
export function distribution(values: readonly number[]): Distribution {
  const sorted = [...values].sort((a, b) => a - b);
  const sum = sorted.reduce((total, value) => total + value, 0);
  return {
    n: sorted.length,
    p50: median(sorted),
    p99: percentile(sorted, 99),
    max: sorted.length === 0 ? Number.NaN : sorted[sorted.length - 1]!,
    mean: sorted.length === 0 ? Number.NaN : sum / sorted.length,
  };
}

/** mulberry32: a tiny seeded PRNG in [0, 1), so random cancel points are the same on every run. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Milliseconds with a precision that suits the magnitude: "0.04", "3.2", "27", "1,530". */
export function formatMs(ms: number): string {
  if (!Number.isFinite(ms)) return "-";
  const abs = Math.abs(ms);
  if (abs >= 1000) return Math.round(ms).toLocaleString("en-US");
  if (abs >= 100) return ms.toFixed(0);
  if (abs >= 10) return ms.toFixed(1);
  if (abs >= 0.1) return ms.toFixed(2);
  return ms === 0 ? "0" : ms.toFixed(3);
}

/** Distribution as "p50 / p99 / max" in ms. */
export function formatSpread(d: Distribution): string {
  return `${formatMs(d.p50)} / ${formatMs(d.p99)} / ${formatMs(d.max)}`;
}

export interface Machine {
  nproc: number;
  cpu: string;
  node: string;
  /** 1-minute load average when the benchmark started: figures from a busy machine are noisier. */
  loadAverage: number;
}

export async function machine(): Promise<Machine> {
  const cpuinfo = await readFile("/proc/cpuinfo", "utf8").catch(() => "");
  const cpu = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? "unknown";
  return { nproc: availableParallelism(), cpu, node: process.version, loadAverage: loadavg()[0]! };
}

export function describeMachine(m: Machine): string {
  return `${m.nproc} cores (${m.cpu}), Node ${m.node}, load average ${m.loadAverage.toFixed(2)} at start`;
}

/** `--quick` and the other flags every engine benchmark accepts. */
export interface BenchArgs {
  quick: boolean;
  /** `--model bundled,edge`: which models to run (each benchmark has its own default). */
  models: string[] | undefined;
  /** `--threads N`: override the per-model thread count. */
  threads: number | undefined;
  /** `--seed N` for the random points. Defaults to 1. */
  seed: number;
}

export function benchArgs(argv: readonly string[] = process.argv.slice(2)): BenchArgs {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      quick: { type: "boolean", default: false },
      model: { type: "string" },
      threads: { type: "string" },
      seed: { type: "string" },
    },
    allowPositionals: true,
  });
  return {
    quick: values.quick === true,
    models: values.model?.split(",").map((name) => name.trim()),
    threads: values.threads === undefined ? undefined : Number(values.threads),
    seed: values.seed === undefined ? 1 : Number(values.seed),
  };
}

export const RESULTS_DIR = new URL("./results/", import.meta.url);

/**
 * Writes bench/results/<name>.json (and <name>.svg when a chart is given) and prints where. Smoke runs go to
 * bench/results/tmp/ (gitignored), so they never replace the full run that BENCHMARKS.md quotes.
 */
export async function writeResults(
  name: string,
  data: unknown,
  svg: string | undefined,
  options: { quick: boolean },
): Promise<string[]> {
  const dir = options.quick ? new URL("./tmp/", RESULTS_DIR) : RESULTS_DIR;
  await mkdir(dir, { recursive: true });
  const written: string[] = [];
  const json = new URL(`${name}.json`, dir);
  await writeFile(json, `${JSON.stringify(data, roundForJson, 2)}\n`);
  written.push(fileURLToPath(json));
  if (svg !== undefined) {
    const chart = new URL(`${name}.svg`, dir);
    await writeFile(chart, svg);
    written.push(fileURLToPath(chart));
  }
  console.log(`\nwrote ${written.map((path) => path.slice(path.indexOf("bench/"))).join(", ")}`);
  return written;
}

/** Keeps result files small and diffable: 4 significant decimals are plenty for timings. */
function roundForJson(_key: string, value: unknown): unknown {
  if (typeof value !== "number" || Number.isInteger(value)) return value;
  if (!Number.isFinite(value)) return null;
  return Number(value.toFixed(Math.abs(value) >= 100 ? 1 : 4));
}

/**
 * Median over rounds of `ours[i] / theirs[i]`, with the spread. Pairing each run with the alternative's run
 * of the same round cancels machine drift better than a ratio of two medians.
 */
export function pairedRatio(
  ours: readonly number[],
  theirs: readonly number[],
): { median: number; min: number; max: number } {
  const ratios = ours
    .slice(0, theirs.length)
    .map((value, i) => value / theirs[i]!)
    .sort((a, b) => a - b);
  return {
    median: median(ratios),
    min: ratios[0] ?? Number.NaN,
    max: ratios[ratios.length - 1] ?? Number.NaN,
  };
}
