/**
 * What the full Sluice path costs per token: aggregate tokens/s of `runtime.generate()` read by a for-await
 * consumer (step loop, channels, detokenizer, stop matcher, stream interval, consumer) over bare
 * node-llama-cpp loops with the same model, threads, slots, prompts and token counts:
 * - lockstep: one `sequence.evaluate(ids, { temperature: 0 })` generator per sequence, every sequence's
 *   next() issued together and awaited together: the same engine calls as Sluice makes, minus Sluice;
 * - per sequence: each generator pulled by its own loop, run concurrently (how the API is usually used);
 *   with several slots its sequences drift out of step and some batches hold fewer of them.
 * Runs alternate (Sluice, lockstep, per sequence, Sluice, ...); every side generates exactly the same greedy
 * tokens (checked). Engine batches per token are counted on both sides to explain the differences.
 * Because a shared machine's noise is larger than the effect, Sluice's own per-step cost is also measured on
 * the ScriptedEngine (no model, step time 0) and shown as a share of a real step.
 *
 *   node --expose-gc --import tsx bench/overhead.ts [--quick] [--model bundled,edge] [--threads N]
 */
import type { Token } from "node-llama-cpp";
import { Vocabulary } from "../src/detok/Vocabulary.ts";
import { BUNDLED_MODEL_PATH } from "../src/engine/modelPath.ts";
import { ScriptedEngine } from "../src/engine/ScriptedEngine.ts";
import { Runtime } from "../src/runtime/Runtime.ts";
import { barChart, renderSvg } from "./chart.ts";
import { greedyTokenize, KJV } from "./corpus.ts";
import { countDecodes, enginePair, lockstepLoop, shortPrompts } from "./drivers.ts";
import {
  benchArgs,
  compare,
  describeMachine,
  machine,
  pairedRatio,
  printTable,
  type Row,
  writeResults,
} from "./harness.ts";
import { type BenchModel, type BenchModelName, benchModel, loadModel } from "./models.ts";

const SLOTS = [1, 4];
/** A stop string that never matches KJV text: the matcher runs on every token without ending anything. */
const STOP = ["\n\nTHE END\n\n"];

interface Side {
  medianMs: number;
  minMs: number;
  maxMs: number;
  tokensPerSecond: number;
  /** llama_decode calls per generated token (1 / slots when every batch holds every slot). */
  batchesPerToken: number | undefined;
}

interface Config {
  model: BenchModelName;
  slots: number;
  tokensPerStream: number;
  runs: number;
  sluice: Side;
  lockstep: Side;
  /** Absent with one slot, where it is the lockstep loop. */
  perSequence: Side | undefined;
  /** Sluice tokens/s over the lockstep loop's, median of per-round ratios: Sluice's own cost. */
  ratio: number;
  ratioSpread: { min: number; max: number };
  /** Sluice tokens/s over the per-sequence loops', median of per-round ratios. */
  perSequenceRatio: number | undefined;
  identical: boolean;
}

async function runModel(spec: BenchModel, quick: boolean): Promise<Config[]> {
  const loaded = await loadModel(spec);
  const configs: Config[] = [];
  const tokensPerStream = quick ? 64 : spec.name === "edge" ? 48 : 128;
  const runs = quick ? 2 : spec.name === "edge" ? 3 : 15;
  try {
    for (const slots of SLOTS) {
      const pair = await enginePair(loaded, spec, slots);
      const { runtime, nlc } = pair;
      const prompts = shortPrompts(loaded, slots);
      const outputs: number[][][] = [];
      const batches = countDecodes(nlc.context);
      const perRun = new Map<string, number[]>();
      const note = (name: string, value: number) => perRun.set(name, [...(perRun.get(name) ?? []), value]);
      try {
        const sluice = async () => {
          const ids: number[][] = [];
          const stepsBefore = runtime.steps;
          await Promise.all(
            prompts.map(async (prompt, i) => {
              const channel = runtime.generate({
                prompt,
                maxTokens: tokensPerStream,
                temperature: 0,
                ignoreEos: true,
                stop: STOP,
                streamInterval: 1,
              });
              const own: number[] = [];
              let text = "";
              for await (const chunk of channel) {
                // What an application does with a delta: keep its text and ids.
                text += chunk.text;
                for (const id of chunk.tokenIds) own.push(id);
              }
              if (text.length === 0) throw new Error("Sluice streamed no text");
              ids[i] = own;
            }),
          );
          note("Sluice", runtime.steps - stepsBefore);
          outputs[0] = ids;
        };
        const lockstep = async () => {
          const before = batches?.count ?? 0;
          const ids = await lockstepLoop(nlc.sequences, prompts, tokensPerStream);
          note("lockstep", (batches?.count ?? 0) - before);
          await nlc.clearHistory();
          outputs[1] = ids;
        };
        const perSequence = async () => {
          const before = batches?.count ?? 0;
          const ids: number[][] = [];
          await Promise.all(
            nlc.sequences.map(async (sequence, i) => {
              const own: number[] = [];
              for await (const token of sequence.evaluate(prompts[i]! as Token[], {
                temperature: 0,
                yieldEogToken: true,
              })) {
                own.push(token);
                if (own.length === tokensPerStream) break;
              }
              ids[i] = own;
            }),
          );
          note("per sequence", (batches?.count ?? 0) - before);
          await nlc.clearHistory();
          outputs[2] = ids;
        };
        const cases = [
          { name: "Sluice", fn: sluice },
          { name: "lockstep", fn: lockstep },
          ...(slots > 1 ? [{ name: "per sequence", fn: perSequence }] : []),
        ];
        const measured = await compare(cases, { warmup: 1, runs });
        const tokens = slots * tokensPerStream;
        const reference = JSON.stringify(outputs[1]);
        const identical = outputs.every((ids) => JSON.stringify(ids) === reference);
        // Time of the alternative over Sluice's, round by round = Sluice's tokens/s over the alternative's.
        const paired = pairedRatio(measured[1]!.samples, measured[0]!.samples);
        const side = (i: number): Side => {
          const m = measured[i]!;
          const counts = perRun.get(cases[i]!.name) ?? [];
          return {
            medianMs: m.medianMs,
            minMs: m.minMs,
            maxMs: m.maxMs,
            tokensPerSecond: (tokens * 1000) / m.medianMs,
            batchesPerToken:
              batches === undefined && i > 0
                ? undefined
                : counts.reduce((a, b) => a + b, 0) / counts.length / tokens,
          };
        };
        configs.push({
          model: spec.name,
          slots,
          tokensPerStream,
          runs,
          sluice: side(0),
          lockstep: side(1),
          perSequence: slots > 1 ? side(2) : undefined,
          ratio: paired.median,
          ratioSpread: { min: paired.min, max: paired.max },
          perSequenceRatio:
            slots > 1 ? pairedRatio(measured[2]!.samples, measured[0]!.samples).median : undefined,
          identical,
        });
        process.stdout.write(".");
      } finally {
        await pair.close();
      }
    }
  } finally {
    await loaded.dispose();
  }
  return configs;
}

interface ZeroCost {
  slots: number;
  tokens: number;
  /** Wall time per step of the whole Sluice path on an engine that does no work (median of runs). */
  usPerStep: number;
  /** The scripted engine's own cost per step (one setImmediate hop), measured in the same rounds. */
  engineUsPerStep: number;
}

/**
 * Sluice's own cost per step without an engine's noise: the same path (step loop, detokenizer, stop matcher,
 * channel, for-await consumer) over the ScriptedEngine with step time 0, minus the scripted engine's hop.
 */
async function zeroCostEngine(slots: number, quick: boolean): Promise<ZeroCost> {
  const vocabulary = await Vocabulary.fromGgufFile(BUNDLED_MODEL_PATH);
  const passage = greedyTokenize(vocabulary, KJV);
  const tokens = quick ? 5_000 : 20_000;
  const script = Array.from({ length: tokens }, (_, i) => passage[i % passage.length]!);
  const engine = new ScriptedEngine(vocabulary, {
    slots,
    contextSize: tokens + 16,
    stepMs: 0,
    script: () => script,
  });
  const runtime = await Runtime.create({ engine });
  const sluice = async () => {
    engine.steps.length = 0;
    await Promise.all(
      Array.from({ length: slots }, async () => {
        const channel = runtime.generate({
          prompt: [script[0]!],
          maxTokens: tokens,
          ignoreEos: true,
          stop: STOP,
        });
        for await (const _ of channel);
      }),
    );
  };
  const hops = async () => {
    for (let i = 0; i < tokens; i++) await new Promise<void>((resolve) => setImmediate(resolve));
  };
  const [s, h] = await compare(
    [
      { name: "Sluice on a zero-cost engine", fn: sluice },
      { name: "setImmediate hops", fn: hops },
    ],
    { warmup: 1, runs: quick ? 3 : 7 },
  );
  await runtime.close();
  return {
    slots,
    tokens,
    usPerStep: (s!.medianMs * 1000) / tokens,
    engineUsPerStep: (h!.medianMs * 1000) / tokens,
  };
}

const args = benchArgs();
const host = await machine();
const names = (args.models ?? ["bundled"]) as BenchModelName[];
const started = performance.now();
console.log(`overhead: ${describeMachine(host)}${args.quick ? " (quick)" : ""}`);
const configs: Config[] = [];
const specs: BenchModel[] = [];
for (const name of names) {
  const spec = benchModel(name, args.threads);
  specs.push(spec);
  configs.push(...(await runModel(spec, args.quick)));
}
const zeroCost: ZeroCost[] = [];
for (const slots of SLOTS) zeroCost.push(await zeroCostEngine(slots, args.quick));
const seconds = (performance.now() - started) / 1000;
console.log("\n");
const perStep = (side: Side | undefined) =>
  side?.batchesPerToken === undefined ? "-" : side.batchesPerToken.toFixed(3);
printTable(
  configs.map(
    (c): Row => ({
      model: `${c.model} (${specs.find((s) => s.name === c.model)!.threads}t)`,
      slots: c.slots,
      "tokens/run": c.slots * c.tokensPerStream,
      runs: c.runs,
      "Sluice tok/s": c.sluice.tokensPerSecond.toFixed(0),
      "lockstep tok/s": c.lockstep.tokensPerSecond.toFixed(0),
      "per-seq tok/s": c.perSequence ? c.perSequence.tokensPerSecond.toFixed(0) : "-",
      "Sluice/lockstep (min..max)": `${c.ratio.toFixed(2)}x (${c.ratioSpread.min.toFixed(2)}..${c.ratioSpread.max.toFixed(2)})`,
      "Sluice/per-seq": c.perSequenceRatio === undefined ? "-" : `${c.perSequenceRatio.toFixed(2)}x`,
      "batches/token S, L, P": `${perStep(c.sluice)}, ${perStep(c.lockstep)}, ${perStep(c.perSequence)}`,
      "same tokens": c.identical ? "yes" : "NO",
    }),
  ),
);
console.log(
  `\ntok/s from the median of ${configs[0]?.runs} alternated runs; ratios are the median of the per-round ratios ` +
    `(tokens/s, Sluice over the alternative run in the same round). Sluice/lockstep is Sluice's own cost ` +
    `(1.00x = none; below 1: slower); Sluice/per-seq compares with per-sequence loops, whose batches hold fewer sequences. ` +
    `${seconds.toFixed(0)} s in all.`,
);

console.log("\nSluice's own cost per step, on the ScriptedEngine (no model, step time 0):");
printTable(
  zeroCost.map((z): Row => {
    const own = z.usPerStep - z.engineUsPerStep;
    const real = configs.find((c) => c.model === "bundled" && c.slots === z.slots);
    const stepUs = real ? (real.lockstep.medianMs * 1000) / real.tokensPerStream : Number.NaN;
    return {
      slots: z.slots,
      steps: z.tokens,
      "µs/step, whole path": z.usPerStep.toFixed(1),
      "µs/step, scripted engine hop": z.engineUsPerStep.toFixed(1),
      "µs/step, Sluice": own.toFixed(1),
      "share of a bundled-model step": Number.isFinite(stepUs)
        ? `${((own / stepUs) * 100).toFixed(2)}%`
        : "-",
    };
  }),
);

const labels = configs.map((c) => `${c.model}\n${c.slots} slot${c.slots > 1 ? "s" : ""}`);
const svg = renderSvg(
  [
    barChart({
      title: "Aggregate tokens/s: full Sluice path vs bare node-llama-cpp loops",
      subtitle:
        "Same model, threads, slots, prompts and greedy tokens; median of alternated runs. Higher is better.",
      categories: labels,
      series: [
        {
          name: "Sluice (step loop, detokenizer, stop matcher, channel, consumer)",
          color: "#0072B2",
          values: configs.map((c) => c.sluice.tokensPerSecond),
        },
        { name: "bare, lockstep", color: "#E69F00", values: configs.map((c) => c.lockstep.tokensPerSecond) },
        {
          name: "bare, loop per sequence",
          color: "#D55E00",
          values: configs.map((c) => c.perSequence?.tokensPerSecond ?? null),
        },
      ],
      yLabel: "tokens/s",
    }),
    barChart({
      title: "Sluice / bare lockstep loop (tokens/s): Sluice's own cost",
      subtitle: "1.00 = no overhead; below 1: Sluice slower",
      categories: labels,
      series: [{ name: "Sluice / lockstep", values: configs.map((c) => c.ratio) }],
      yLabel: "ratio",
      reference: { value: 1, label: "1.00" },
      format: (v) => v.toFixed(2),
      height: 300,
    }),
  ],
  { columns: 1 },
);
await writeResults(
  "overhead",
  { benchmark: "overhead", quick: args.quick, machine: host, seconds, models: specs, configs, zeroCost },
  svg,
  { quick: args.quick },
);
