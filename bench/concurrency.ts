/**
 * Throughput and latency as concurrent streams grow: Sluice (one runtime with N slots, N channels read with
 * for-await) against node-llama-cpp's own multi-sequence API (one context with N sequences, one
 * `sequence.evaluate()` loop per sequence, run concurrently, default batching). Same model, threads, context
 * size, prompts, greedy sampling and token counts; runs alternate Sluice / node-llama-cpp at every level.
 * Reported: aggregate tokens/s, time to first token (submit → first token in the consumer's hands) and
 * inter-token latency (gaps between a stream's tokens), and where the tokens/s ratio crosses 1.
 *
 *   node --expose-gc --import tsx bench/concurrency.ts [--quick] [--model bundled,edge] [--threads N]
 * Both models by default; --quick runs the bundled one only.
 */
import type { Token } from "node-llama-cpp";
import { lineChart, renderSvg } from "./chart.ts";
import { countDecodes, enginePair, gaps, readStream, shortPrompts } from "./drivers.ts";
import {
  benchArgs,
  describeMachine,
  distribution,
  formatMs,
  machine,
  median,
  pairedRatio,
  printTable,
  type Row,
  ratio,
  writeResults,
} from "./harness.ts";
import { type BenchModel, type BenchModelName, benchModel, loadModel } from "./models.ts";

const LEVELS = [1, 2, 4, 8, 16];

interface RunStats {
  wallMs: number;
  ttft: number[];
  itl: number[];
  /** Engine batches (llama_decode calls) in the run; undefined when they cannot be counted. */
  batches: number | undefined;
}

interface SideSummary {
  tokensPerSecond: number;
  wallMs: number[];
  ttftP50: number;
  itlP50: number;
  itlP99: number;
  /** Engine batches per generated token: 1/streams when every batch holds every stream. */
  batchesPerToken: number | undefined;
}

interface Level {
  model: BenchModelName;
  streams: number;
  tokensPerStream: number;
  rounds: number;
  sluice: SideSummary;
  nlc: SideSummary;
  /** Sluice tokens/s over node-llama-cpp tokens/s: median of the per-round ratios. */
  ratio: number;
}

function summarise(runs: RunStats[], tokens: number): SideSummary {
  const wall = runs.map((r) => r.wallMs);
  const ttft = distribution(runs.flatMap((r) => r.ttft));
  const itl = distribution(runs.flatMap((r) => r.itl));
  const batches = runs.map((r) => r.batches);
  return {
    tokensPerSecond: (tokens * 1000) / median([...wall].sort((a, b) => a - b)),
    wallMs: wall,
    ttftP50: ttft.p50,
    itlP50: itl.p50,
    itlP99: itl.p99,
    batchesPerToken: batches.some((b) => b === undefined)
      ? undefined
      : batches.reduce((a: number, b) => a + b!, 0) / batches.length / tokens,
  };
}

async function runModel(spec: BenchModel, quick: boolean): Promise<Level[]> {
  const loaded = await loadModel(spec);
  const levels: Level[] = [];
  const edge = spec.name === "edge";
  const tokensPerStream = quick ? 24 : edge ? 32 : 128;
  const rounds = quick ? 1 : edge ? 2 : 5;
  try {
    for (const streams of quick ? [1, 4, 16] : LEVELS) {
      const pair = await enginePair(loaded, spec, streams);
      const { runtime, nlc } = pair;
      const decodes = countDecodes(nlc.context);
      const prompts = shortPrompts(loaded, streams);
      const sluiceRun = async (): Promise<RunStats> => {
        const steps = runtime.steps;
        const started = performance.now();
        const traces = await Promise.all(
          prompts.map((prompt) =>
            readStream(
              runtime.generate({ prompt, maxTokens: tokensPerStream, temperature: 0, ignoreEos: true }),
            ),
          ),
        );
        const wallMs = performance.now() - started;
        return {
          wallMs,
          ttft: traces.map((t) => t.tokenTimes[0]! - started),
          itl: traces.flatMap((t) => gaps(t.tokenTimes)),
          batches: runtime.steps - steps,
        };
      };
      const nlcRun = async (): Promise<RunStats> => {
        const before = decodes?.count;
        const started = performance.now();
        const times = await Promise.all(
          nlc.sequences.map(async (sequence, i) => {
            const own: number[] = [];
            for await (const _ of sequence.evaluate(prompts[i]! as Token[], {
              temperature: 0,
              yieldEogToken: true,
            })) {
              own.push(performance.now());
              if (own.length === tokensPerStream) break;
            }
            return own;
          }),
        );
        const wallMs = performance.now() - started;
        const batches = decodes === undefined || before === undefined ? undefined : decodes.count - before;
        await nlc.clearHistory();
        return { wallMs, ttft: times.map((t) => t[0]! - started), itl: times.flatMap(gaps), batches };
      };
      try {
        await sluiceRun();
        await nlcRun();
        const sluice: RunStats[] = [];
        const alone: RunStats[] = [];
        for (let round = 0; round < rounds; round++) {
          if (round % 2 === 0) {
            sluice.push(await sluiceRun());
            alone.push(await nlcRun());
          } else {
            alone.push(await nlcRun());
            sluice.push(await sluiceRun());
          }
        }
        const tokens = streams * tokensPerStream;
        const s = summarise(sluice, tokens);
        const n = summarise(alone, tokens);
        levels.push({
          model: spec.name,
          streams,
          tokensPerStream,
          rounds,
          sluice: s,
          nlc: n,
          // Per-round pairs cancel drift: the alternative's wall time over Sluice's, median over rounds.
          ratio: pairedRatio(n.wallMs, s.wallMs).median,
        });
        process.stdout.write(".");
      } finally {
        await pair.close();
      }
    }
  } finally {
    await loaded.dispose();
  }
  return levels;
}

/** Levels grouped by whether Sluice is behind, even (within ±5%) or ahead on tokens/s, as one line. */
function crossover(levels: readonly Level[]): string {
  const band = (r: number) => (r < 0.95 ? "behind" : r > 1.05 ? "ahead" : "even (±5%)");
  const groups: { band: string; streams: number[] }[] = [];
  for (const level of levels) {
    const current = band(level.ratio);
    const last = groups[groups.length - 1];
    if (last?.band === current) last.streams.push(level.streams);
    else groups.push({ band: current, streams: [level.streams] });
  }
  const text = groups.map((g) => `${g.band} at ${g.streams.join(", ")} stream(s)`).join("; ");
  const firstAhead = levels.find((l) => l.ratio > 1.05);
  return firstAhead
    ? `Sluice ${text}; ahead from ${firstAhead.streams} streams on (${firstAhead.ratio.toFixed(2)}x there)`
    : `Sluice ${text}`;
}

const args = benchArgs();
const host = await machine();
// The edge model makes a smoke run too long; ask for it with --model edge.
const names = (args.models ?? (args.quick ? ["bundled"] : ["bundled", "edge"])) as BenchModelName[];
const started = performance.now();
console.log(`concurrency: ${describeMachine(host)}${args.quick ? " (quick)" : ""}`);
const levels: Level[] = [];
const specs: BenchModel[] = [];
for (const name of names) {
  const spec = benchModel(name, args.threads);
  specs.push(spec);
  levels.push(...(await runModel(spec, args.quick)));
}
const seconds = (performance.now() - started) / 1000;
console.log("\n");
for (const spec of specs) {
  const rows = levels.filter((l) => l.model === spec.name);
  console.log(
    `${spec.name} model, ${spec.threads} thread(s), ${rows[0]?.tokensPerStream} tokens per stream, ` +
      `${rows[0]?.rounds} alternated round(s) per level after one warm-up each; TTFT and ITL in ms`,
  );
  printTable(
    rows.map(
      (l): Row => ({
        streams: l.streams,
        "Sluice tok/s": l.sluice.tokensPerSecond.toFixed(0),
        "nlc tok/s": l.nlc.tokensPerSecond.toFixed(0),
        "tok/s S/N": `${l.ratio.toFixed(2)}x`,
        "TTFT p50 S / N": `${formatMs(l.sluice.ttftP50)} / ${formatMs(l.nlc.ttftP50)}`,
        "ITL p50 S / N": `${formatMs(l.sluice.itlP50)} / ${formatMs(l.nlc.itlP50)}`,
        "ITL p99 S / N": `${formatMs(l.sluice.itlP99)} / ${formatMs(l.nlc.itlP99)}`,
        "ITL p99 S/N": ratio(l.sluice.itlP99, l.nlc.itlP99),
        "batches/token S / N": `${l.sluice.batchesPerToken?.toFixed(3) ?? "-"} / ${l.nlc.batchesPerToken?.toFixed(3) ?? "-"}`,
      }),
    ),
  );
  console.log(`${spec.name}: ${crossover(rows)}\n`);
}
console.log(
  `S = Sluice, N = node-llama-cpp (nlc). tok/s from the median run; tok/s S/N is the median of per-round ` +
    `ratios. ${seconds.toFixed(0)} s in all.`,
);

const panels = specs.flatMap((spec) => {
  const rows = levels.filter((l) => l.model === spec.name);
  const xTicks = rows.map((l) => l.streams);
  return [
    lineChart({
      title: `Aggregate tokens/s by concurrent streams, ${spec.name} model`,
      subtitle: "Higher is better. Same model, threads, prompts, greedy tokens; alternated runs.",
      series: [
        { name: "Sluice", points: rows.map((l) => [l.streams, l.sluice.tokensPerSecond] as const) },
        {
          name: "node-llama-cpp multi-sequence",
          points: rows.map((l) => [l.streams, l.nlc.tokensPerSecond] as const),
        },
      ],
      xLabel: "concurrent streams",
      yLabel: "tokens/s",
      xLog2: true,
      xTicks,
    }),
    lineChart({
      title: `Inter-token latency by concurrent streams, ${spec.name} model`,
      subtitle: "ms, log scale; lower is better. Solid: p50, dashed: p99.",
      series: [
        {
          name: "Sluice p50",
          color: "#0072B2",
          points: rows.map((l) => [l.streams, l.sluice.itlP50] as const),
        },
        {
          name: "Sluice p99",
          color: "#56B4E9",
          dashed: true,
          points: rows.map((l) => [l.streams, l.sluice.itlP99] as const),
        },
        {
          name: "node-llama-cpp p50",
          color: "#E69F00",
          points: rows.map((l) => [l.streams, l.nlc.itlP50] as const),
        },
        {
          name: "node-llama-cpp p99",
          color: "#D55E00",
          dashed: true,
          points: rows.map((l) => [l.streams, l.nlc.itlP99] as const),
        },
      ],
      xLabel: "concurrent streams",
      yLabel: "ms between tokens",
      xLog2: true,
      yLog: true,
      xTicks,
    }),
  ];
});
await writeResults(
  "concurrency",
  { benchmark: "concurrency", quick: args.quick, machine: host, seconds, models: specs, levels },
  renderSvg(panels),
  { quick: args.quick },
);
