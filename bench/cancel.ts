/**
 * Cancellation latency on the real engine: Sluice against node-llama-cpp alone, same model, prompts, threads,
 * sequences and greedy sampling, trials alternated (Sluice first on even trials, node-llama-cpp first on odd).
 *
 * Each trial starts N streams together and cancels each at its own seeded random point:
 * - prefill: long prompts, cancel at U(5%, 90%) of node-llama-cpp's measured prefill time;
 * - decode: short prompts, cancel at U(0, 24 steps) after the stream's first token.
 * Statistics are over the cancels that really landed in the scenario's phase (a prefill cancel point can
 * fall after one side's first token); the rest, and streams that ended before their cancel point, are
 * counted and shown.
 * Sluice: `runtime.generate()` read with for-await, `channel.cancel()`; the slot is free when the runtime
 * reports the request's end record (CancelRecord: ms and steps). node-llama-cpp: `LlamaCompletion` per
 * sequence, `generateCompletion(ids, { signal, stopOnAbortSignal: true })`, `abort()`; its terminal and its
 * slot are both the moment the call returns. "Tokens after cancel" = tokens put into a batch after cancel()
 * (runtime steps for Sluice, `sequence.tokenMeter` for node-llama-cpp).
 *
 *   node --expose-gc --import tsx bench/cancel.ts [--quick] [--model bundled,edge] [--threads N] [--seed N]
 */
import { LlamaCompletion, type Token } from "node-llama-cpp";
import {
  nlcTrial,
  type Scenario,
  type Sides,
  sluiceTrial,
  type TrialOutcome,
  timeRuns,
} from "./cancelTrials.ts";
import { barChart, renderSvg } from "./chart.ts";
import { longPromptTokens, SHORT_PROMPTS } from "./corpus.ts";
import { enginePair, RuntimeWatch } from "./drivers.ts";
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
  seededRandom,
  writeResults,
} from "./harness.ts";
import {
  type BenchModel,
  type BenchModelName,
  benchModel,
  type LoadedModel,
  loadModel,
  withBos,
} from "./models.ts";

interface Plan {
  concurrency: number[];
  trials: Record<Scenario, number>;
}

const PLANS: Record<BenchModelName, { full: Plan; quick: Plan }> = {
  bundled: {
    full: { concurrency: [1, 2, 4], trials: { prefill: 10, decode: 10 } },
    quick: { concurrency: [1, 2], trials: { prefill: 2, decode: 2 } },
  },
  edge: {
    full: { concurrency: [1, 2], trials: { prefill: 4, decode: 5 } },
    quick: { concurrency: [1], trials: { prefill: 1, decode: 1 } },
  },
};
const DECODE_WINDOW_STEPS = 24;

interface Config {
  model: BenchModelName;
  scenario: Scenario;
  streams: number;
  trials: number;
  /** node-llama-cpp's prefill time of the trial's prompts (the random range of the prefill cancel points). */
  prefillMs: { sluice: number; nlc: number };
  msPerToken: number;
  sluice: Outcome;
  nlc: Outcome;
}

interface Outcome {
  /** Cancels that landed in the scenario's phase: the distributions are over these. */
  samples: number;
  finishedFirst: number;
  /** Cancels that landed in the other phase (left out of the distributions). */
  otherPhase: number;
  msToTerminal: Distribution;
  msToFree: Distribution;
  steps?: Distribution;
  tokensAfter: Distribution;
}

/** Statistics over the cancels that landed in the scenario's phase; the others are only counted. */
function summarise(outcomes: TrialOutcome[], scenario: Scenario): Outcome {
  const all = outcomes.flatMap((o) => o.samples);
  const samples = all.filter((s) => s.phase === scenario);
  const steps = samples.flatMap((s) => (s.steps === undefined ? [] : [s.steps]));
  return {
    samples: samples.length,
    finishedFirst: outcomes.reduce((n, o) => n + o.finishedFirst, 0),
    otherPhase: all.length - samples.length,
    msToTerminal: distribution(samples.map((s) => s.msToTerminal)),
    msToFree: distribution(samples.map((s) => s.msToFree)),
    ...(steps.length > 0 ? { steps: distribution(steps) } : {}),
    tokensAfter: distribution(samples.map((s) => s.tokensAfter)),
  };
}

async function runModel(spec: BenchModel, plan: Plan, seed: number, quick: boolean): Promise<Config[]> {
  const loaded: LoadedModel = await loadModel(spec);
  const configs: Config[] = [];
  // In quick mode the edge model's long prompt is shortened so a smoke run stays short.
  const longLength = quick && spec.name === "edge" ? spec.longPrompt / 4 : spec.longPrompt;
  try {
    for (const streams of plan.concurrency) {
      const pair = await enginePair(loaded, spec, streams);
      const { runtime, nlc } = pair;
      const sides: Sides = {
        runtime,
        watch: new RuntimeWatch(runtime),
        completions: nlc.sequences.map((contextSequence) => new LlamaCompletion({ contextSequence })),
        sequences: nlc.sequences,
      };
      try {
        const ids: Record<Scenario, Token[][]> = {
          prefill: Array.from({ length: streams }, (_, i) =>
            longPromptTokens(loaded.tokenize, longLength, i * 97),
          ),
          decode: Array.from({ length: streams }, (_, i) =>
            loaded.tokenize(SHORT_PROMPTS[i % SHORT_PROMPTS.length]!),
          ),
        };
        const sluicePrompts = (scenario: Scenario) => ids[scenario].map((p) => withBos(loaded, p));
        const prefill = await timeRuns(sides, sluicePrompts("prefill"), ids.prefill, 1);
        const decode = await timeRuns(sides, sluicePrompts("decode"), ids.decode, DECODE_WINDOW_STEPS + 1);
        const msPerToken = (decode.nlc.ms - decode.nlc.firstMs) / DECODE_WINDOW_STEPS;
        for (const scenario of ["prefill", "decode"] as const) {
          const random = seededRandom(seed * 7919 + streams * 31 + (scenario === "prefill" ? 1 : 2));
          const sluice: TrialOutcome[] = [];
          const alone: TrialOutcome[] = [];
          for (let trial = 0; trial < plan.trials[scenario]; trial++) {
            const delays = ids[scenario].map(() =>
              scenario === "prefill"
                ? prefill.nlc.ms * (0.05 + 0.85 * random())
                : DECODE_WINDOW_STEPS * msPerToken * random(),
            );
            const runSluice = async () =>
              sluice.push(
                await sluiceTrial(sides, sluicePrompts(scenario), scenario, delays, `${scenario}${trial}`),
              );
            const runNlc = async () => alone.push(await nlcTrial(sides, ids[scenario], scenario, delays));
            if (trial % 2 === 0) {
              await runSluice();
              await runNlc();
            } else {
              await runNlc();
              await runSluice();
            }
          }
          configs.push({
            model: spec.name,
            scenario,
            streams,
            trials: plan.trials[scenario],
            prefillMs: { sluice: prefill.sluice.ms, nlc: prefill.nlc.ms },
            msPerToken,
            sluice: summarise(sluice, scenario),
            nlc: summarise(alone, scenario),
          });
          process.stdout.write(".");
        }
      } finally {
        sides.watch.close();
        await pair.close();
      }
    }
  } finally {
    await loaded.dispose();
  }
  return configs;
}

const args = benchArgs();
const host = await machine();
const names = (args.models ?? ["bundled", "edge"]) as BenchModelName[];
const started = performance.now();
console.log(`cancel: ${describeMachine(host)}${args.quick ? " (quick)" : ""}`);
const configs: Config[] = [];
const specs: BenchModel[] = [];
for (const name of names) {
  const spec = benchModel(name, args.threads);
  specs.push(spec);
  configs.push(...(await runModel(spec, PLANS[name][args.quick ? "quick" : "full"], args.seed, args.quick)));
}
const seconds = (performance.now() - started) / 1000;
console.log("\n");

for (const spec of specs) {
  const rows = configs.filter((c) => c.model === spec.name);
  console.log(
    `${spec.name} model, ${spec.threads} thread(s), Sluice prefill chunks sized by step time (runtime default); ` +
      `long prompt prefill of the trial (Sluice / node-llama-cpp): ` +
      rows
        .filter((c) => c.scenario === "prefill")
        .map(
          (c) => `${c.streams} stream(s) ${formatMs(c.prefillMs.sluice)} / ${formatMs(c.prefillMs.nlc)} ms`,
        )
        .join(", "),
  );
  printTable(
    rows.map(
      (c): Row => ({
        scenario: c.scenario,
        streams: c.streams,
        "samples S/N": `${c.sluice.samples}/${c.nlc.samples}`,
        "Sluice to terminal ms p50/p99/max": formatSpread(c.sluice.msToTerminal),
        "Sluice to free ms p50/p99/max": formatSpread(c.sluice.msToFree),
        "node-llama-cpp to free ms p50/p99/max": formatSpread(c.nlc.msToFree),
        "free p50 S/N": ratio(c.sluice.msToFree.p50, c.nlc.msToFree.p50),
        "free p99 S/N": ratio(c.sluice.msToFree.p99, c.nlc.msToFree.p99),
      }),
    ),
  );
  console.log("");
  printTable(
    rows.map(
      (c): Row => ({
        scenario: c.scenario,
        streams: c.streams,
        "Sluice steps to free p50/p99/max": c.sluice.steps
          ? `${c.sluice.steps.p50} / ${c.sluice.steps.p99} / ${c.sluice.steps.max}`
          : "-",
        "tokens after cancel Sluice p50/max": `${c.sluice.tokensAfter.p50} / ${c.sluice.tokensAfter.max}`,
        "node-llama-cpp p50/max": `${c.nlc.tokensAfter.p50} / ${c.nlc.tokensAfter.max}`,
        "landed in other phase S/N": `${c.sluice.otherPhase}/${c.nlc.otherPhase}`,
        "ended before cancel S/N": `${c.sluice.finishedFirst}/${c.nlc.finishedFirst}`,
      }),
    ),
  );
  console.log("");
}
console.log(
  `S/N = Sluice / node-llama-cpp (below 1.00x: Sluice frees the slot sooner). ${seconds.toFixed(0)} s in all.`,
);

const panels = specs.map((spec) => {
  const rows = configs.filter((c) => c.model === spec.name);
  return barChart({
    title: `cancel() → slot free, ${spec.name} model (${spec.threads} thread${spec.threads > 1 ? "s" : ""})`,
    subtitle: "ms, log scale; lower is better. Same prompts, random cancel points, same run.",
    categories: rows.map((c) => `${c.scenario}\n${c.streams} stream${c.streams > 1 ? "s" : ""}`),
    series: [
      { name: "Sluice p50", color: "#0072B2", values: rows.map((c) => c.sluice.msToFree.p50) },
      { name: "Sluice p99", color: "#56B4E9", values: rows.map((c) => c.sluice.msToFree.p99) },
      { name: "node-llama-cpp p50", color: "#E69F00", values: rows.map((c) => c.nlc.msToFree.p50) },
      { name: "node-llama-cpp p99", color: "#D55E00", values: rows.map((c) => c.nlc.msToFree.p99) },
    ],
    yLabel: "ms from cancel() to slot free",
    log: true,
  });
});
await writeResults(
  "cancel",
  { benchmark: "cancel", quick: args.quick, seed: args.seed, machine: host, seconds, models: specs, configs },
  renderSvg(panels),
  { quick: args.quick },
);
