/**
 * Head-of-line blocking: the longest gap between tokens of a decoding stream A while another request B
 * prefills a long prompt. Sluice (2 slots, prefill chunked into the step loop, decodes first) against
 * node-llama-cpp with its default batching (2 sequences, `sequence.evaluate()` for both, the library's
 * `maximumParallelism` strategy and batch size). Same model, threads, prompts and greedy sampling; trials
 * alternate which side runs first. B is submitted once A has streamed 8 tokens; the window is B's submit to
 * B's first token. The price of Sluice's chunking is shown too: B's time to first token.
 *
 *   node --expose-gc --import tsx bench/stall.ts [--quick] [--model bundled,edge] [--threads N]
 */
import type { LlamaContextSequence, Token } from "node-llama-cpp";
import { Runtime } from "../src/runtime/Runtime.ts";
import { barChart, renderSvg } from "./chart.ts";
import { longPromptTokens, SHORT_PROMPTS } from "./corpus.ts";
import { gaps, nlcContext, readStream } from "./drivers.ts";
import {
  benchArgs,
  type Distribution,
  describeMachine,
  distribution,
  formatMs,
  formatSpread,
  machine,
  printTable,
  type Row,
  ratio,
  writeResults,
} from "./harness.ts";
import { type BenchModel, type BenchModelName, benchModel, loadModel, withBos } from "./models.ts";

/** A streams this many tokens before B arrives, and this many after B's first token before it stops. */
const LEAD_TOKENS = 8;
const TAIL_TOKENS = 4;

interface Trial {
  /** Longest gap between two of A's tokens that overlaps B's prefill. */
  maxGapMs: number;
  /** Every gap of A overlapping the window. */
  windowGaps: number[];
  /** A's gaps before B arrived: its undisturbed step time. */
  baselineGaps: number[];
  bFirstTokenMs: number;
}

/** Gaps of A that overlap [from, to]. */
function windowOf(times: readonly number[], from: number, to: number): number[] {
  const out: number[] = [];
  for (let i = 1; i < times.length; i++)
    if (times[i]! > from && times[i - 1]! < to) out.push(times[i]! - times[i - 1]!);
  return out;
}

function trialOf(times: readonly number[], bSubmit: number, bFirst: number): Trial {
  const windowGaps = windowOf(times, bSubmit, bFirst);
  return {
    maxGapMs: Math.max(0, ...windowGaps),
    windowGaps,
    baselineGaps: gaps(times.filter((t) => t <= bSubmit)),
    bFirstTokenMs: bFirst - bSubmit,
  };
}

async function sluiceTrial(runtime: Runtime, a: Token[], b: Token[], aMax: number): Promise<Trial> {
  const channel = runtime.generate({ prompt: a, maxTokens: aMax, temperature: 0, ignoreEos: true });
  let bSubmit = 0;
  let bFirst = 0;
  let bRun: Promise<unknown> | undefined;
  const times: number[] = [];
  let tail = 0;
  for await (const chunk of channel) {
    const now = performance.now();
    for (let i = 0; i < chunk.tokenIds.length; i++) times.push(now);
    if (bFirst > 0) tail += chunk.tokenIds.length;
    if (bRun === undefined && times.length >= LEAD_TOKENS) {
      bSubmit = performance.now();
      bRun = readStream(runtime.generate({ prompt: b, maxTokens: 1, temperature: 0 }), () => {
        bFirst = performance.now();
      });
    }
    if (tail >= TAIL_TOKENS) channel.cancel();
  }
  await bRun;
  if (bFirst === 0) throw new Error("A ended before B's first token: raise A's maxTokens");
  return trialOf(times, bSubmit, bFirst);
}

async function nlcTrial(
  sequences: LlamaContextSequence[],
  a: Token[],
  b: Token[],
  aMax: number,
): Promise<Trial> {
  const [seqA, seqB] = sequences as [LlamaContextSequence, LlamaContextSequence];
  let bSubmit = 0;
  let bFirst = 0;
  let bRun: Promise<void> | undefined;
  const runB = async () => {
    const iterator = seqB.evaluate(b, { temperature: 0 });
    await iterator.next();
    bFirst = performance.now();
    await iterator.return();
  };
  const times: number[] = [];
  let tail = 0;
  for await (const _ of seqA.evaluate(a, { temperature: 0, yieldEogToken: true })) {
    times.push(performance.now());
    if (bFirst > 0) tail++;
    if (bRun === undefined && times.length >= LEAD_TOKENS) {
      bSubmit = performance.now();
      bRun = runB();
    }
    if (times.length >= aMax) break;
    if (tail >= TAIL_TOKENS) break;
  }
  await bRun;
  await Promise.all(sequences.map((sequence) => sequence.clearHistory()));
  if (bFirst === 0) throw new Error("A ended before B's first token: raise A's token cap");
  return trialOf(times, bSubmit, bFirst);
}

interface Side {
  trials: number;
  maxGap: Distribution;
  windowGap: Distribution;
  baselineGapP50: number;
  tokensInWindowP50: number;
  bFirstToken: Distribution;
}

function summarise(trials: Trial[]): Side {
  const windowGaps = trials.flatMap((t) => t.windowGaps);
  return {
    trials: trials.length,
    maxGap: distribution(trials.map((t) => t.maxGapMs)),
    windowGap: distribution(windowGaps),
    baselineGapP50: distribution(trials.flatMap((t) => t.baselineGaps)).p50,
    tokensInWindowP50: distribution(trials.map((t) => t.windowGaps.length)).p50,
    bFirstToken: distribution(trials.map((t) => t.bFirstTokenMs)),
  };
}

interface Result {
  model: BenchModelName;
  threads: number;
  longPrompt: number;
  sluice: Side;
  nlc: Side;
}

async function runModel(spec: BenchModel, quick: boolean): Promise<Result> {
  const loaded = await loadModel(spec);
  const edge = spec.name === "edge";
  const trials = quick ? (edge ? 1 : 2) : edge ? 4 : 10;
  const longPrompt = quick && edge ? spec.longPrompt / 2 : spec.longPrompt;
  const runtime = await Runtime.create({
    model: spec.path,
    slots: 2,
    contextSize: spec.contextSize,
    threads: spec.threads,
  });
  const nlc = await nlcContext(loaded, spec, 2);
  try {
    const sluice: Trial[] = [];
    const alone: Trial[] = [];
    for (let trial = -1; trial < trials; trial++) {
      const a = withBos(loaded, loaded.tokenize(SHORT_PROMPTS[(trial + 1) % SHORT_PROMPTS.length]!));
      const b = withBos(loaded, longPromptTokens(loaded.tokenize, longPrompt - 1, (trial + 1) * 131));
      const aMax = spec.contextSize - a.length - 1;
      const runSluice = async () => {
        const t = await sluiceTrial(runtime, a, b, aMax);
        if (trial >= 0) sluice.push(t);
      };
      const runNlc = async () => {
        const t = await nlcTrial(nlc.sequences, a, b, aMax);
        if (trial >= 0) alone.push(t);
      };
      // Trial -1 warms both sides up and is not counted.
      if (trial % 2 === 0) {
        await runSluice();
        await runNlc();
      } else {
        await runNlc();
        await runSluice();
      }
      process.stdout.write(".");
    }
    return {
      model: spec.name,
      threads: spec.threads,
      longPrompt,
      sluice: summarise(sluice),
      nlc: summarise(alone),
    };
  } finally {
    await runtime.close();
    await nlc.dispose();
    await loaded.dispose();
  }
}

const args = benchArgs();
const host = await machine();
const names = (args.models ?? ["bundled", "edge"]) as BenchModelName[];
const started = performance.now();
console.log(`stall: ${describeMachine(host)}${args.quick ? " (quick)" : ""}`);
const results: Result[] = [];
for (const name of names) results.push(await runModel(benchModel(name, args.threads), args.quick));
const seconds = (performance.now() - started) / 1000;
console.log("\n");
const sides = (r: Result) =>
  [
    ["Sluice", r.sluice],
    ["node-llama-cpp", r.nlc],
  ] as const;
printTable(
  results.flatMap((r) =>
    sides(r).map(
      ([name, side]): Row => ({
        model: `${r.model} (${r.threads}t, B ${r.longPrompt} tok)`,
        side: name,
        trials: side.trials,
        "A max gap ms p50/p99/max": formatSpread(side.maxGap),
        "A gaps in window p50": formatMs(side.windowGap.p50),
        "A tokens in window": side.tokensInWindowP50,
        "A gap before B": formatMs(side.baselineGapP50),
        "B first token ms p50": formatMs(side.bFirstToken.p50),
      }),
    ),
  ),
);
console.log("");
printTable(
  results.map(
    (r): Row => ({
      model: r.model,
      "A max gap p50 S/N": ratio(r.sluice.maxGap.p50, r.nlc.maxGap.p50),
      "A max gap worst S/N": ratio(r.sluice.maxGap.max, r.nlc.maxGap.max),
      "B first token p50 S/N": ratio(r.sluice.bFirstToken.p50, r.nlc.bFirstToken.p50),
    }),
  ),
);
console.log(
  `\nS/N = Sluice / node-llama-cpp: below 1.00x Sluice stalls A less; B's ratio above 1.00x is what chunking costs B. ` +
    `${seconds.toFixed(0)} s in all.`,
);

const panels = results.map((r) =>
  barChart({
    title: `Decoding stream stalled by another request's prefill, ${r.model} model`,
    subtitle: `ms, log scale; lower is better. B: ${r.longPrompt}-token prompt; ${r.sluice.trials} alternated trials per side.`,
    categories: [
      "A's longest gap\n(p50 of trials)",
      "A's longest gap\n(worst trial)",
      "A's gaps in window\n(p50)",
      "A's gap before B\n(p50)",
      "B's first token\n(p50)",
    ],
    series: sides(r).map(([name, side], i) => ({
      name,
      color: i === 0 ? "#0072B2" : "#E69F00",
      values: [
        side.maxGap.p50,
        side.maxGap.max,
        side.windowGap.p50,
        side.baselineGapP50,
        side.bFirstToken.p50,
      ],
    })),
    yLabel: "ms",
    log: true,
  }),
);
await writeResults(
  "stall",
  { benchmark: "stall", quick: args.quick, machine: host, seconds, results },
  renderSvg(panels),
  { quick: args.quick },
);
