/**
 * What log-probabilities cost: aggregate tokens/s of greedy generations with `logprobs` off, 0 (the chosen
 * token's only), 5 and 20 alternatives, against a bare node-llama-cpp lockstep loop (one `evaluate()`
 * generator per sequence, all advanced together: the engine work alone). Off must cost what Sluice always
 * costs (the off path yields bare tokens: no probabilities are computed or copied); on, the sampler computes
 * the whole distribution's probabilities for each token (node-llama-cpp's `probabilities`, or `confidence`
 * for 0 alternatives) and the runtime carries one entry per token through the channel.
 * Runs alternate (off, 0, 5, 20, bare, off, ...); ratios are the median of per-round ratios, all sides
 * generate the same greedy tokens (checked).
 *
 *   node --expose-gc --import tsx bench/logprobs.ts [--quick] [--model bundled,edge] [--threads N]
 */
import type { GenerationRequest } from "../src/types.ts";
import { enginePair, lockstepLoop, shortPrompts } from "./drivers.ts";
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
import { type BenchModel, benchModel, loadModel } from "./models.ts";

const SLOTS = [1, 4];
const SETTINGS: { name: string; logprobs: number | undefined }[] = [
  { name: "off", logprobs: undefined },
  { name: "logprobs 0", logprobs: 0 },
  { name: "logprobs 5", logprobs: 5 },
  { name: "logprobs 20", logprobs: 20 },
];

interface Result {
  model: string;
  slots: number;
  tokensPerStream: number;
  runs: number;
  tokensPerSecond: Record<string, number>;
  /** Each setting's tokens/s over the bare loop's, median of per-round ratios. */
  overBare: Record<string, number>;
  /** Each setting's tokens/s over Sluice with logprobs off. */
  overOff: Record<string, number>;
  identical: boolean;
}

async function runModel(spec: BenchModel, quick: boolean): Promise<Result[]> {
  const loaded = await loadModel(spec);
  const results: Result[] = [];
  const tokensPerStream = quick ? 32 : spec.name === "edge" ? 32 : 128;
  const runs = quick ? 2 : spec.name === "edge" ? 3 : 11;
  try {
    for (const slots of SLOTS) {
      const pair = await enginePair(loaded, spec, slots);
      const { runtime, nlc } = pair;
      const prompts = shortPrompts(loaded, slots);
      const outputs = new Map<string, string>();
      try {
        const sluice = (name: string, logprobs: number | undefined) => async () => {
          const ids = await Promise.all(
            prompts.map(async (prompt) => {
              const request: GenerationRequest = {
                prompt,
                maxTokens: tokensPerStream,
                temperature: 0,
                ignoreEos: true,
              };
              if (logprobs !== undefined) request.logprobs = logprobs;
              const channel = runtime.generate(request);
              const own: number[] = [];
              let scored = 0;
              for await (const chunk of channel) {
                for (const id of chunk.tokenIds) own.push(id);
                scored += chunk.logprobs?.length ?? 0;
              }
              if (logprobs !== undefined && scored !== own.length)
                throw new Error(`${name}: ${scored} scores for ${own.length} tokens`);
              return own;
            }),
          );
          outputs.set(name, JSON.stringify(ids));
        };
        const bare = async () => {
          const ids = await lockstepLoop(nlc.sequences, prompts, tokensPerStream);
          await nlc.clearHistory();
          outputs.set("bare", JSON.stringify(ids));
        };
        const cases = [
          ...SETTINGS.map((s) => ({ name: s.name, fn: sluice(s.name, s.logprobs) })),
          { name: "bare", fn: bare },
        ];
        const measured = await compare(cases, { warmup: 1, runs });
        const tokens = slots * tokensPerStream;
        const bareSamples = measured.at(-1)!.samples;
        const offSamples = measured[0]!.samples;
        const result: Result = {
          model: spec.name,
          slots,
          tokensPerStream,
          runs,
          tokensPerSecond: {},
          overBare: {},
          overOff: {},
          identical: new Set(outputs.values()).size === 1,
        };
        for (const m of measured) {
          result.tokensPerSecond[m.name] = (tokens * 1000) / m.medianMs;
          // Time of the reference over this case's, round by round = this case's tokens/s over the reference's.
          result.overBare[m.name] = pairedRatio(bareSamples, m.samples).median;
          result.overOff[m.name] = pairedRatio(offSamples, m.samples).median;
        }
        results.push(result);
        process.stdout.write(".");
      } finally {
        await pair.close();
      }
    }
  } finally {
    await loaded.dispose();
  }
  return results;
}

const args = benchArgs();
const host = await machine();
console.log(`logprobs: ${describeMachine(host)}`);
const results: Result[] = [];
for (const name of args.models ?? ["bundled"])
  results.push(...(await runModel(benchModel(name, args.threads), args.quick)));
console.log("\n");
const rows: Row[] = [];
for (const r of results) {
  for (const name of [...SETTINGS.map((s) => s.name), "bare"]) {
    rows.push({
      model: `${r.model}`,
      slots: r.slots,
      setting: name,
      "tok/s": r.tokensPerSecond[name]!.toFixed(0),
      "vs bare loop": `${r.overBare[name]!.toFixed(2)}x`,
      "vs logprobs off": `${r.overOff[name]!.toFixed(2)}x`,
      "same tokens": r.identical ? "yes" : "NO",
    });
  }
}
printTable(rows);
console.log(
  `\n${results[0]?.tokensPerStream ?? 0} tokens per stream, greedy, median of ${results[0]?.runs ?? 0} alternated runs; ` +
    "ratios are medians of per-round ratios of tokens/s. The bare loop is node-llama-cpp's evaluate() without Sluice.",
);
await writeResults("logprobs", { machine: host, results }, undefined, { quick: args.quick });
