/**
 * Speculative decoding with prompt lookup and with a draft model: decode tokens/s with and without it, and
 * against llama-server's n-gram and draft-model speculation on the same prompts. Six sides, alternated round
 * by round (the order rotates):
 * - Sluice plain and Sluice speculative: one in-process Runtime (`drafter: "prompt-lookup"`, draftMax 8),
 *   requests with `speculative: false` and with the default;
 * - Sluice draft model: a second Runtime drafting with a `ModelDrafter` (draftMax 8) over the draft model;
 * - llama-server plain and llama-server n-gram (`--spec-type ngram-simple`, lookup n-gram 3 and draft 8 to
 *   match prompt lookup's sizes; its defaults are 12 and 48), native `POST /completion`, non-streaming;
 * - llama-server draft model (`--model-draft`, `--spec-type draft-simple`, `--spec-draft-n-max 8`, its other
 *   defaults: no minimum probability).
 * Same model, threads, slots and token-id prompts; greedy but for the `sampled` set; every side reads every
 * prompt (no prompt cache).
 *
 * Draft models: for the bundled model its chat fine-tune (models/kjv-chat.gguf, the same size: no speed-up
 * is possible, what is measured is tokens per target step, acceptance and what drafting costs); for the edge
 * model (random weights) the bundled model, which agrees with it about never: the adaptive draft length
 * should fall to zero, and what is left is the cost of the one-token guess a request still drafts each step
 * to notice when drafting would pay again.
 *
 * The `deep` target is where a draft model can pay, and it is synthetic: "kjv-deep" is the bundled model
 * (its own tensors, FFNs zero-padded to width 8192) plus 12 cost-only llama blocks of FFN width 8192 with random
 * weights, whose output projections are N(0, 0.06) (scripts/gguf/makeDeepModel.ts, written into bench/models/
 * on first use). A decode step costs ~10-16x the bundled model's on one thread, and the bundled model, its
 * draft, picks the same greedy token on ~81% of tokens (8 prompts x 64 tokens). It measures the drafting
 * machinery at that cost ratio and agreement, not a real model pair: real draft/target pairs agree for reasons
 * (shared training) that make agreement vary with the text, where this one is noise of fixed size.
 *
 * Three prompt sets: `repeat` (a KJV passage, then its heading again: what a model that can copy would
 * quote), `fresh` (short openings: nothing in the prompt to look up) and `sampled` (the fresh openings at
 * temperature 0.8, seeded per stream: greedy output of small models falls into loops, which prompt lookup
 * then catches; sampling breaks them up). 1, 4 and 8 concurrent streams.
 *
 * Figures are decode throughput: the sum over streams of (tokens - 1) / decode time (first token to last;
 * llama-server's own `predicted_per_second`), so prompt reading is left out on both sides, and tokens per
 * target step = tokens / (tokens - accepted draft tokens). Ratios are medians of per-round ratios from this
 * one run; absolute tok/s are for orientation only (the machine is shared: its load average is printed).
 *
 *   node --import tsx bench/speculative.ts [--quick] [--model bundled,edge,deep] [--threads N]
 */
import { request } from "node:http";
import { loadavg } from "node:os";
import { createEngine } from "../src/engine/createEngine.ts";
import { BUNDLED_CHAT_MODEL_PATH, BUNDLED_MODEL_PATH } from "../src/engine/modelPath.ts";
import { ModelDrafter } from "../src/runtime/ModelDrafter.ts";
import { Runtime } from "../src/runtime/Runtime.ts";
import { KJV, SHORT_PROMPTS } from "./corpus.ts";
import {
  benchArgs,
  describeMachine,
  machine,
  median,
  pairedRatio,
  printTable,
  type Row,
  writeResults,
} from "./harness.ts";
import { findLlamaBinaries, type LlamaServer, startLlamaServer } from "./llamaServer.ts";
import { type AnyBenchModelName, anyBenchModel, type BenchModel, loadModel } from "./models.ts";

const LEVELS = [1, 4, 8];
const SLOTS = 8;
const DRAFT_MAX = 8;
const NGRAM = 3;
type Workload = "repeat" | "fresh" | "sampled";
/** Temperature of the `sampled` set (seeded per stream), where greedy decoding's loops break up. */
const TEMPERATURE = 0.8;
type Side = "sluice" | "sluice-spec" | "sluice-draft" | "llama" | "llama-ngram" | "llama-draft";
const SIDES: readonly Side[] = [
  "sluice",
  "sluice-spec",
  "sluice-draft",
  "llama",
  "llama-ngram",
  "llama-draft",
];
/** Each target's draft model (the same vocabulary). */
const DRAFT_MODELS: Record<AnyBenchModelName, string> = {
  bundled: BUNDLED_CHAT_MODEL_PATH,
  edge: BUNDLED_MODEL_PATH,
  deep: BUNDLED_MODEL_PATH,
};

interface Run {
  /** Decode tokens/s, summed over the streams. */
  tokensPerSecond: number;
  /** Generated tokens per target decode step, mean over streams. */
  tokensPerStep: number;
  tokens: number;
  /** Draft tokens sent for verification, and those accepted. */
  drafted: number;
  accepted: number;
  /** Sluice with a draft model: draft-engine steps and target steps of the run (the streams ran alone). */
  draftSteps?: number;
  targetSteps?: number;
}

interface Config {
  model: AnyBenchModelName;
  workload: Workload;
  streams: number;
  runs: Record<Side, Run[]>;
}

function plan(name: AnyBenchModelName, quick: boolean) {
  if (name === "edge") return { tokens: quick ? 24 : 48, rounds: quick ? 1 : 3, contextPerSlot: 1024 };
  // The deep model keeps the bundled model's training context, 512.
  if (name === "deep") return { tokens: quick ? 48 : 96, rounds: quick ? 1 : 3, contextPerSlot: 512 };
  // llama-server caps a slot at the bundled model's training context, 512: Sluice gets the same.
  return { tokens: quick ? 64 : 128, rounds: quick ? 2 : 5, contextPerSlot: 512 };
}

/** Token-id prompts (BOS included) for stream `i`. */
function promptsFor(tokenize: (text: string) => number[], bos: number | undefined) {
  const head = (ids: number[]) => (bos === undefined ? ids : [bos, ...ids]);
  // The first verses of Genesis 1, then the chapter heading again: the model goes on to quote them.
  const passage = KJV.split("\n").slice(0, 9).join("\n");
  return {
    repeat: (i: number) =>
      head(tokenize(`${passage}\n\n${i % 2 === 0 ? "Genesis 1\n1 In" : "Genesis 1\n1 In the"}`)),
    fresh: (i: number) => head(tokenize(SHORT_PROMPTS[i % SHORT_PROMPTS.length]!)),
  };
}

function post(url: string, path: string, body: unknown): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${url}${path}`,
      { method: "POST", headers: { "content-type": "application/json" } },
      (res) => {
        const parts: Buffer[] = [];
        res.on("data", (part: Buffer) => parts.push(part));
        res.on("end", () => {
          try {
            resolve(JSON.parse(Buffer.concat(parts).toString("utf8")) as Record<string, unknown>);
          } catch (error) {
            reject(error);
          }
        });
      },
    );
    req.on("error", reject);
    req.end(JSON.stringify(body));
  });
}

async function runLlama(
  server: LlamaServer,
  prompts: number[][],
  tokens: number,
  temperature: number,
): Promise<Run> {
  const results = await Promise.all(
    prompts.map((prompt, i) =>
      post(server.url, "/completion", {
        prompt,
        n_predict: tokens,
        temperature,
        seed: i + 1,
        ignore_eos: true,
        cache_prompt: false,
      }),
    ),
  );
  let tokensPerSecond = 0;
  let total = 0;
  let drafted = 0;
  let acceptedAll = 0;
  const perStep: number[] = [];
  for (const result of results) {
    const t = result.timings as Record<string, number> | undefined;
    if (t === undefined) throw new Error(`llama-server answered ${JSON.stringify(result).slice(0, 300)}`);
    const n = t.predicted_n ?? 0;
    const accepted = t.draft_n_accepted ?? 0;
    // llama-server's predicted_ms spans the first to the last generated token, as Sluice's decodeMs does.
    tokensPerSecond += n > 1 ? ((n - 1) * 1000) / t.predicted_ms! : 0;
    total += n;
    drafted += t.draft_n ?? 0;
    acceptedAll += accepted;
    perStep.push(n / Math.max(1, n - accepted));
  }
  return { tokensPerSecond, tokensPerStep: mean(perStep), tokens: total, drafted, accepted: acceptedAll };
}

async function runSluice(
  runtime: Runtime,
  prompts: number[][],
  tokens: number,
  speculative: boolean,
  temperature: number,
  drafter?: ModelDrafter,
): Promise<Run> {
  const accepted = runtime.stats.draftTokensAccepted;
  const drafted = runtime.stats.draftTokens;
  const steps = runtime.steps;
  const draftSteps = drafter?.stats.steps ?? 0;
  const results = await Promise.all(
    prompts.map(
      (prompt, i) =>
        runtime.generate({
          prompt,
          maxTokens: tokens,
          ignoreEos: true,
          cachePrompt: false,
          speculative,
          temperature,
          seed: i + 1,
        }).result,
    ),
  );
  let tokensPerSecond = 0;
  let total = 0;
  for (const result of results) {
    tokensPerSecond += result.timings.tokensPerSecond;
    total += result.usage.completionTokens;
  }
  // Accepted draft tokens of these streams (they ran alone), spread over them.
  const acceptedHere = runtime.stats.draftTokensAccepted - accepted;
  return {
    tokensPerSecond,
    tokensPerStep: total / Math.max(1, total - acceptedHere),
    tokens: total,
    drafted: runtime.stats.draftTokens - drafted,
    accepted: acceptedHere,
    ...(drafter !== undefined
      ? { draftSteps: drafter.stats.steps - draftSteps, targetSteps: runtime.steps - steps }
      : {}),
  };
}

function mean(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0) / Math.max(1, values.length);
}

async function runModel(
  spec: BenchModel<AnyBenchModelName>,
  quick: boolean,
): Promise<{ configs: Config[]; llamaArgs: string[]; draftArgs: string[] }> {
  const p = plan(spec.name, quick);
  const loaded = await loadModel(spec);
  const tokenize = (text: string) => loaded.tokenize(text) as number[];
  const make = promptsFor(tokenize, loaded.bos);
  const count = Math.max(...LEVELS);
  const prompts = {
    repeat: Array.from({ length: count }, (_, i) => make.repeat(i)),
    fresh: Array.from({ length: count }, (_, i) => make.fresh(i)),
  };
  await loaded.dispose();
  const binaries = findLlamaBinaries();
  const common = {
    model: spec.path,
    slots: SLOTS,
    threads: spec.threads,
    contextPerSlot: p.contextPerSlot,
    binaries,
  };
  const llama = await startLlamaServer(common);
  const ngramArgs = [
    "--spec-type",
    "ngram-simple",
    "--spec-ngram-simple-size-n",
    String(NGRAM),
    "--spec-ngram-simple-size-m",
    String(DRAFT_MAX),
  ];
  const ngram = await startLlamaServer({ ...common, extraArgs: ngramArgs });
  const draftPath = DRAFT_MODELS[spec.name];
  const draftArgs = [
    "--model-draft",
    draftPath,
    "--spec-type",
    "draft-simple",
    "--spec-draft-n-max",
    String(DRAFT_MAX),
  ];
  const llamaDraft = await startLlamaServer({ ...common, extraArgs: draftArgs });
  const draftEngine = await createEngine({
    model: draftPath,
    slots: SLOTS,
    threads: spec.threads,
    contextSize: p.contextPerSlot,
  });
  const drafter = new ModelDrafter(draftEngine);
  const draftRuntime = await Runtime.create({
    model: spec.path,
    slots: SLOTS,
    threads: spec.threads,
    contextSize: p.contextPerSlot,
    drafter,
    draftMax: DRAFT_MAX,
  });
  const runtime = await Runtime.create({
    model: spec.path,
    slots: SLOTS,
    threads: spec.threads,
    contextSize: p.contextPerSlot,
    drafter: "prompt-lookup",
    draftMax: DRAFT_MAX,
  });
  const configs: Config[] = [];
  try {
    for (const workload of ["repeat", "fresh", "sampled"] as const) {
      const temperature = workload === "sampled" ? TEMPERATURE : 0;
      for (const streams of LEVELS) {
        const batch = prompts[workload === "sampled" ? "fresh" : workload].slice(0, streams);
        const config: Config = {
          model: spec.name,
          workload,
          streams,
          runs: {
            sluice: [],
            "sluice-spec": [],
            "sluice-draft": [],
            llama: [],
            "llama-ngram": [],
            "llama-draft": [],
          },
        };
        // One warm-up of each side, then alternated rounds (the order rotates every round).
        for (let round = -1; round < p.rounds; round++) {
          for (let k = 0; k < SIDES.length; k++) {
            const side = SIDES[(k + Math.max(0, round)) % SIDES.length]!;
            const run =
              side === "sluice" || side === "sluice-spec"
                ? await runSluice(runtime, batch, p.tokens, side === "sluice-spec", temperature)
                : side === "sluice-draft"
                  ? await runSluice(draftRuntime, batch, p.tokens, true, temperature, drafter)
                  : await runLlama(
                      side === "llama" ? llama : side === "llama-ngram" ? ngram : llamaDraft,
                      batch,
                      p.tokens,
                      temperature,
                    );
            if (round >= 0) config.runs[side].push(run);
          }
        }
        configs.push(config);
        process.stdout.write(`${spec.name} ${workload} x${streams} (load ${loadavg()[0]!.toFixed(1)}) `);
      }
    }
  } finally {
    await runtime.close();
    await draftRuntime.close();
    await draftEngine.close();
    await llama.stop();
    await ngram.stop();
    await llamaDraft.stop();
  }
  return { configs, llamaArgs: ngram.args, draftArgs: llamaDraft.args };
}

const args = benchArgs();
const host = await machine();
const names = args.models ?? ["bundled", "edge", "deep"];
const started = performance.now();
console.log(`speculative: ${describeMachine(host)}${args.quick ? " (quick)" : ""}`);
const configs: Config[] = [];
const specs: BenchModel<AnyBenchModelName>[] = [];
let llamaArgs: string[] = [];
let draftArgs: string[] = [];
for (const name of names) {
  const spec = anyBenchModel(name, args.threads);
  specs.push(spec);
  const done = await runModel(spec, args.quick);
  configs.push(...done.configs);
  llamaArgs = done.llamaArgs;
  draftArgs = done.draftArgs;
}
console.log("\n");
const tps = (runs: Run[]) => median(runs.map((r) => r.tokensPerSecond).sort((a, b) => a - b));
const perStep = (runs: Run[]) => median(runs.map((r) => r.tokensPerStep).sort((a, b) => a - b));
const paired = (a: Run[], b: Run[]) => {
  const r = pairedRatio(
    a.map((x) => x.tokensPerSecond),
    b.map((x) => x.tokensPerSecond),
  );
  return `${r.median.toFixed(2)}x (${r.min.toFixed(2)}..${r.max.toFixed(2)})`;
};
printTable(
  configs.map(
    (c): Row => ({
      model: `${c.model} (${specs.find((s) => s.name === c.model)!.threads}t)`,
      prompts: c.workload,
      streams: c.streams,
      "tok/step S, L": `${perStep(c.runs["sluice-spec"]).toFixed(2)}, ${perStep(c.runs["llama-ngram"]).toFixed(2)}`,
      "tok/s S plain, spec": `${tps(c.runs.sluice).toFixed(0)}, ${tps(c.runs["sluice-spec"]).toFixed(0)}`,
      "tok/s L plain, ngram": `${tps(c.runs.llama).toFixed(0)}, ${tps(c.runs["llama-ngram"]).toFixed(0)}`,
      "S spec/plain": paired(c.runs["sluice-spec"], c.runs.sluice),
      "L ngram/plain": paired(c.runs["llama-ngram"], c.runs.llama),
      "S spec/L ngram": paired(c.runs["sluice-spec"], c.runs["llama-ngram"]),
    }),
  ),
);
const sum = (runs: Run[], key: "drafted" | "accepted" | "tokens" | "draftSteps" | "targetSteps") =>
  runs.reduce((n, r) => n + (r[key] ?? 0), 0);
const acceptance = (runs: Run[]) =>
  sum(runs, "drafted") > 0 ? sum(runs, "accepted") / sum(runs, "drafted") : 0;
console.log("\nDraft model (D = the draft side):\n");
printTable(
  configs.map(
    (c): Row => ({
      model: `${c.model} (${specs.find((s) => s.name === c.model)!.threads}t)`,
      draft: DRAFT_MODELS[c.model].split("/").at(-1)!.replace(".gguf", ""),
      prompts: c.workload,
      streams: c.streams,
      "tok/step S, L": `${perStep(c.runs["sluice-draft"]).toFixed(2)}, ${perStep(c.runs["llama-draft"]).toFixed(2)}`,
      "accept S, L": `${acceptance(c.runs["sluice-draft"]).toFixed(2)}, ${acceptance(c.runs["llama-draft"]).toFixed(2)}`,
      "drafted/tok S, L":
        `${(sum(c.runs["sluice-draft"], "drafted") / sum(c.runs["sluice-draft"], "tokens")).toFixed(2)}, ` +
        `${(sum(c.runs["llama-draft"], "drafted") / sum(c.runs["llama-draft"], "tokens")).toFixed(2)}`,
      "draft steps/step S": (
        sum(c.runs["sluice-draft"], "draftSteps") / Math.max(1, sum(c.runs["sluice-draft"], "targetSteps"))
      ).toFixed(2),
      "tok/s S plain, D": `${tps(c.runs.sluice).toFixed(0)}, ${tps(c.runs["sluice-draft"]).toFixed(0)}`,
      "tok/s L plain, D": `${tps(c.runs.llama).toFixed(0)}, ${tps(c.runs["llama-draft"]).toFixed(0)}`,
      "S D/plain": paired(c.runs["sluice-draft"], c.runs.sluice),
      "L D/plain": paired(c.runs["llama-draft"], c.runs.llama),
      "S D/L D": paired(c.runs["sluice-draft"], c.runs["llama-draft"]),
    }),
  ),
);
console.log(
  `\nD: Sluice with a ModelDrafter (greedy drafts batched across streams, draftMax ${DRAFT_MAX}, length adapted ` +
    `per request; "draft steps/step": draft-engine steps per target step); llama-server ` +
    `${draftArgs.slice(draftArgs.indexOf("--spec-type")).join(" ")} --model-draft. "drafted/tok": draft tokens ` +
    "sent per generated token (0 when the adaptive length has fallen to zero).",
);
const seconds = (performance.now() - started) / 1000;
console.log(
  `\nS = Sluice (in process, prompt lookup n 3..1, draftMax ${DRAFT_MAX}, draft length adapted per request); ` +
    `L = llama-server (${llamaArgs.slice(llamaArgs.indexOf("--spec-type")).join(" ")}). tok/s: decode throughput ` +
    `summed over streams, median of ${configs[0]?.runs.sluice.length} alternated rounds; ratios: median ` +
    `(min..max) of per-round ratios. Load average at the end ${loadavg()[0]!.toFixed(1)} on ${host.nproc} cores. ` +
    `${seconds.toFixed(0)} s in all.`,
);
await writeResults("speculative", { machine: host, configs }, undefined, { quick: args.quick });
