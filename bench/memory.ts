/**
 * Memory behind a consumer that never reads: one generation of 100k tokens (KJV text, real vocabulary ids)
 * on the ScriptedEngine (step time 0), its channel untouched until the end. Measured against the text's own
 * size (UTF-16, 2 bytes a character) and against unbounded per-chunk queues holding the same deltas
 * (it-pushable, as in many streaming wrappers, and a plain array of chunk objects), in the same run,
 * contenders alternated round by round.
 *
 * - peak: the highest live heap while the tokens are produced, sampled with a full GC every 5% of them
 *   (after the step, or the push, that produced them), minus the live heap before;
 * - retained: the live heap once everything is produced and finished, before the consumer reads.
 * Every delta's text is a fresh string (decoded from the token's bytes), as a detokenizer produces them.
 * The scripted engine's own step log (a test aid) is emptied as it grows, so it is not counted.
 *
 *   node --expose-gc --import tsx bench/memory.ts [--quick]
 */
import { pushable } from "it-pushable";
import { createStreamChannel, type TerminalInfo } from "../src/channel/index.ts";
import { Vocabulary } from "../src/detok/Vocabulary.ts";
import { BUNDLED_MODEL_PATH } from "../src/engine/modelPath.ts";
import { ScriptedEngine } from "../src/engine/ScriptedEngine.ts";
import { Runtime } from "../src/runtime/Runtime.ts";
import { barChart, renderSvg } from "./chart.ts";
import { greedyTokenize, KJV } from "./corpus.ts";
import { RuntimeWatch } from "./drivers.ts";
import {
  benchArgs,
  describeMachine,
  machine,
  median,
  printTable,
  type Row,
  writeResults,
} from "./harness.ts";

const gc = globalThis.gc;
if (gc === undefined) throw new Error("run with node --expose-gc (see the header of bench/memory.ts)");
const collect = gc;

const args = benchArgs();
const TOKENS = args.quick ? 20_000 : 100_000;
const ROUNDS = args.quick ? 1 : 3;
const SAMPLE_EVERY = TOKENS / 20;

const vocabulary = await Vocabulary.fromGgufFile(BUNDLED_MODEL_PATH);
const passage = greedyTokenize(vocabulary, KJV);
const ids = Int32Array.from({ length: TOKENS }, (_, i) => passage[i % passage.length]!);
const script = Array.from(ids);
const textChars = script.reduce((n, id) => n + (vocabulary.textOf(id) ?? "").length, 0);
const textBytes = textChars * 2;
const decoder = new TextDecoder();
/** A fresh string per delta, as the detokenizer hands out. */
const fresh = (id: number): string => decoder.decode(vocabulary.bytesOf(id));

const TERMINAL: TerminalInfo = {
  reason: "length",
  usage: { promptTokens: 0, completionTokens: 0, cachedTokens: 0 },
  timings: { queuedMs: 0, prefillMs: 0, decodeMs: 0, firstTokenMs: 0, tokensPerSecond: 0 },
};

function settledHeap(): number {
  collect();
  collect();
  return process.memoryUsage().heapUsed;
}

/** Live-heap sampler: a full GC and a reading every SAMPLE_EVERY produced tokens. */
function sampler(): { tick(tokens: number): void; readonly before: number; readonly peak: number } {
  const before = settledHeap();
  let peak = before;
  let next = SAMPLE_EVERY;
  return {
    before,
    get peak() {
      return peak;
    },
    tick(tokens) {
      if (tokens < next) return;
      next += SAMPLE_EVERY;
      collect();
      peak = Math.max(peak, process.memoryUsage().heapUsed);
    },
  };
}

interface Sample {
  retained: number;
  peak: number;
  /** Chunks the consumer got when it finally read everything. */
  chunks: number;
  chars: number;
}

interface Contender {
  name: string;
  run(): Promise<Sample>;
}

/** The full runtime path: ScriptedEngine → step loop → detokenizer → channel nobody reads. */
async function runtimePath(): Promise<Sample> {
  const engine = new ScriptedEngine(vocabulary, {
    slots: 1,
    contextSize: TOKENS + 16,
    stepMs: 0,
    script: () => script,
  });
  const runtime = await Runtime.create({ engine });
  const watch = new RuntimeWatch(runtime);
  const live = sampler();
  let produced = 0;
  const stop = runtime.observe((event) => {
    if (event.type !== "step") return;
    engine.steps.length = 0;
    for (const item of event.items) if (item.sample !== undefined) produced++;
    live.tick(produced);
  });
  const channel = runtime.generate({
    prompt: [script[0]!],
    maxTokens: TOKENS,
    ignoreEos: true,
    id: "unread",
  });
  await watch.ended("unread");
  stop();
  engine.steps.length = 0;
  const retained = settledHeap() - live.before;
  const sample = await readAll(channel);
  watch.close();
  await runtime.close();
  return { ...sample, retained, peak: live.peak - live.before };
}

async function readAll(source: AsyncIterable<{ text: string }>): Promise<{ chunks: number; chars: number }> {
  let chunks = 0;
  let chars = 0;
  for await (const chunk of source) {
    chunks++;
    chars += chunk.text.length;
  }
  return { chunks, chars };
}

/** The channel alone, fed the same deltas by hand: what the channel itself holds. */
async function channelOnly(): Promise<Sample> {
  const live = sampler();
  const { channel, producer } = createStreamChannel({ id: "unread" });
  for (let i = 0; i < TOKENS; i++) {
    producer.push([ids[i]!], fresh(ids[i]!));
    live.tick(i + 1);
  }
  producer.finish([], "", TERMINAL);
  const retained = settledHeap() - live.before;
  return { ...(await readAll(channel)), retained, peak: live.peak - live.before };
}

async function itPushable(): Promise<Sample> {
  const live = sampler();
  const source = pushable<{ tokenIds: number[]; text: string; finished: boolean }>({ objectMode: true });
  for (let i = 0; i < TOKENS; i++) {
    source.push({ tokenIds: [ids[i]!], text: fresh(ids[i]!), finished: false });
    live.tick(i + 1);
  }
  source.end();
  const retained = settledHeap() - live.before;
  return { ...(await readAll(source)), retained, peak: live.peak - live.before };
}

async function chunkArray(): Promise<Sample> {
  const live = sampler();
  const queue: { tokenIds: number[]; text: string; finished: boolean }[] = [];
  for (let i = 0; i < TOKENS; i++) {
    queue.push({ tokenIds: [ids[i]!], text: fresh(ids[i]!), finished: false });
    live.tick(i + 1);
  }
  const retained = settledHeap() - live.before;
  let chars = 0;
  for (const chunk of queue) chars += chunk.text.length;
  return { chunks: queue.length, chars, retained, peak: live.peak - live.before };
}

const contenders: Contender[] = [
  { name: "Sluice runtime + channel (scripted engine)", run: runtimePath },
  { name: "Sluice StreamChannel alone", run: channelOnly },
  { name: "it-pushable (objectMode)", run: itPushable },
  { name: "array of chunk objects", run: chunkArray },
];

const host = await machine();
const started = performance.now();
console.log(`memory: ${describeMachine(host)}${args.quick ? " (quick)" : ""}`);
const samples: Sample[][] = contenders.map(() => []);
// One untimed pass so code is compiled and lazily created structures exist before anything is measured.
for (const contender of contenders) await contender.run();
for (let round = 0; round < ROUNDS; round++) {
  const order = round % 2 === 0 ? contenders : [...contenders].reverse();
  for (const contender of order) {
    const sample = await contender.run();
    if (sample.chars !== textChars) {
      throw new Error(`${contender.name} delivered ${sample.chars} characters, expected ${textChars}`);
    }
    samples[contenders.indexOf(contender)]!.push(sample);
  }
}
const seconds = (performance.now() - started) / 1000;

const MB = 1024 * 1024;
const results = contenders.map((contender, i) => {
  const own = samples[i]!;
  const sorted = (pick: (s: Sample) => number) => own.map(pick).sort((a, b) => a - b);
  return {
    name: contender.name,
    rounds: own.length,
    chunks: own[0]!.chunks,
    retainedBytes: median(sorted((s) => s.retained)),
    peakBytes: median(sorted((s) => s.peak)),
  };
});
const ours = results[0]!;
console.log(
  `\n${TOKENS.toLocaleString("en-US")} tokens, ${textChars.toLocaleString("en-US")} characters of text = ` +
    `${(textBytes / MB).toFixed(2)} MB as UTF-16; ${ROUNDS} round(s) per contender, median reported.`,
);
printTable(
  results.map(
    (r): Row => ({
      holder: r.name,
      "chunks read at the end": r.chunks.toLocaleString("en-US"),
      "peak live MB": (r.peakBytes / MB).toFixed(2),
      "peak / text": `${(r.peakBytes / textBytes).toFixed(2)}x`,
      "peak bytes/token": (r.peakBytes / TOKENS).toFixed(0),
      "retained at end MB": (r.retainedBytes / MB).toFixed(2),
      "retained / text": `${(r.retainedBytes / textBytes).toFixed(2)}x`,
      "peak vs Sluice runtime": `${(r.peakBytes / ours.peakBytes).toFixed(2)}x`,
    }),
  ),
);
console.log(`\nText size = characters × 2 bytes. ${seconds.toFixed(0)} s in all.`);

const svg = renderSvg([
  barChart({
    title: `Memory held for a consumer that never reads, ${TOKENS.toLocaleString("en-US")} tokens`,
    subtitle:
      "Live heap (after a full GC): highest while producing, and at the end before reading. Dashed: the text as UTF-16.",
    categories: results.map((r) => r.name.replace(" (", "\n(").replace(" + ", " +\n")),
    series: [
      { name: "peak live while producing", color: "#0072B2", values: results.map((r) => r.peakBytes / MB) },
      { name: "retained at end, unread", color: "#56B4E9", values: results.map((r) => r.retainedBytes / MB) },
    ],
    yLabel: "MB",
    reference: { value: textBytes / MB, label: `text ${(textBytes / MB).toFixed(2)} MB` },
    format: (v) => v.toFixed(1),
  }),
]);
await writeResults(
  "memory",
  {
    benchmark: "memory",
    quick: args.quick,
    machine: host,
    seconds,
    tokens: TOKENS,
    textChars,
    textBytes,
    results,
  },
  svg,
  { quick: args.quick },
);
