/**
 * The models the engine benchmarks run on, and how node-llama-cpp is set up for the "alone" side.
 *
 * - bundled: models/kjv-tiny.gguf. Steps take a few ms, so Sluice's own per-step cost shows most here.
 * - edge: a random-weight llama written by scripts/make-synthetic-model.ts (same vocabulary), whose steps
 *   cost tens of ms like a real ~0.5B quantized model on two cores: where a monolithic prefill blocks a
 *   cancel for seconds. Generated into bench/models/ (gitignored) the first time it is needed.
 * - deep: "kjv-deep", the bundled model plus 12 cost-only blocks (scripts/gguf/makeDeepModel.ts, perturb 0.06):
 *   ~10-16x the bundled model's decode cost, and the bundled model's greedy choice matches its own on ~81% of
 *   tokens. A target for draft-model speculation with the bundled model as the draft; synthetic, not a trained
 *   pair. Generated into bench/models/ like the edge model.
 *
 * Run directly to pick the thread count for a model on this machine (threads 1 and 2, alternated):
 *   node --import tsx bench/models.ts [bundled|edge|deep] [--quick]
 */
import { existsSync } from "node:fs";
import { fileURLToPath, pathToFileURL } from "node:url";
import { getLlama, type Llama, LlamaLogLevel, type LlamaModel, type Token } from "node-llama-cpp";
import { DEEP_PRESET, makeDeepModel } from "../scripts/gguf/makeDeepModel.ts";
import { makeSyntheticModel, PRESETS, type PresetName } from "../scripts/make-synthetic-model.ts";
import { BUNDLED_MODEL_PATH } from "../src/engine/modelPath.ts";
import { KJV } from "./corpus.ts";
import { benchArgs, compare, describeMachine, machine, printTable } from "./harness.ts";

/** The models every engine benchmark plans for. */
export type BenchModelName = "bundled" | "edge";
/** With the draft-model target, which bench/speculative.ts runs. */
export type AnyBenchModelName = BenchModelName | "deep";
const NAMES: readonly AnyBenchModelName[] = ["bundled", "edge", "deep"];

export interface BenchModel<Name extends AnyBenchModelName = BenchModelName> {
  name: Name;
  path: string;
  /** llama.cpp threads, the same for Sluice and node-llama-cpp. */
  threads: number;
  /** Prompt length (tokens) of the "long prompt" workloads: a prefill of a few hundred ms to a few s. */
  longPrompt: number;
  /** Tokens per sequence for both sides. */
  contextSize: number;
}

/*
 * Threads measured with `node --import tsx bench/models.ts <name>` on the 2-core benchmark machine, which
 * other jobs share: 1 thread wins for both. The bundled model's steps are too small to split; the edge model
 * decoded at 34 ms/token on 1 thread and 303 ms/token on 2 (llama.cpp's spinning threads collapse when a
 * core is taken by someone else). On a quiet machine, try `--threads 2` for the edge model.
 */
const SPECS: { [N in AnyBenchModelName]: Omit<BenchModel<N>, "path"> } = {
  bundled: { name: "bundled", threads: 1, longPrompt: 1536, contextSize: 2048 },
  edge: { name: "edge", threads: 1, longPrompt: 256, contextSize: 1024 },
  // The bundled model's training context, which the deep model keeps.
  deep: { name: "deep", threads: 1, longPrompt: 256, contextSize: 512 },
};

export function syntheticModelPath(preset: PresetName): string {
  return fileURLToPath(new URL(`./models/synthetic-${preset}.gguf`, import.meta.url));
}

/** The synthetic model's path, writing it first with the project's generator when it is missing. */
export function ensureSyntheticModel(preset: PresetName = "edge"): string {
  const path = syntheticModelPath(preset);
  if (existsSync(path)) return path;
  process.stdout.write(`writing ${path} (first run only) ... `);
  const started = performance.now();
  makeSyntheticModel({ ...PRESETS[preset], out: path, seed: 1, name: `synthetic-${preset}` });
  process.stdout.write(`${((performance.now() - started) / 1000).toFixed(1)} s\n`);
  return path;
}

/** bench/models/kjv-deep.gguf, written first from the bundled model with the default shape when it is missing. */
export function ensureDeepModel(): string {
  const path = fileURLToPath(new URL("./models/kjv-deep.gguf", import.meta.url));
  if (existsSync(path)) return path;
  process.stdout.write(`writing ${path} (first run only) ... `);
  const started = performance.now();
  makeDeepModel({ ...DEEP_PRESET, out: path, from: BUNDLED_MODEL_PATH, seed: 1, name: "kjv-deep" });
  process.stdout.write(`${((performance.now() - started) / 1000).toFixed(1)} s\n`);
  return path;
}

/** bundled or edge, the models every engine benchmark plans for. */
export function benchModel(name: string, threads?: number): BenchModel {
  if (name !== "bundled" && name !== "edge") {
    throw new Error(
      `unknown model "${name}" (bundled, edge${name === "deep" ? "; deep is bench/speculative.ts's only" : ""})`,
    );
  }
  return anyBenchModel(name, threads) as BenchModel;
}

/** Any of the models, the deep draft-model target included. */
export function anyBenchModel(name: string, threads?: number): BenchModel<AnyBenchModelName> {
  if (!NAMES.includes(name as AnyBenchModelName))
    throw new Error(`unknown model "${name}" (${NAMES.join(", ")})`);
  const spec = SPECS[name as AnyBenchModelName];
  const path =
    name === "bundled"
      ? BUNDLED_MODEL_PATH
      : name === "edge"
        ? ensureSyntheticModel("edge")
        : ensureDeepModel();
  return { ...spec, path, threads: threads ?? spec.threads };
}

export interface LoadedModel {
  llama: Llama;
  model: LlamaModel;
  /** Text to ids with node-llama-cpp's tokenizer (no BOS), as both sides' prompts are built. */
  tokenize(text: string): Token[];
  bos: Token | undefined;
  dispose(): Promise<void>;
}

/** node-llama-cpp the way its users set it up on a CPU box: no GPU, no build, explicit thread cap. */
export async function loadModel(spec: Pick<BenchModel, "path" | "threads">): Promise<LoadedModel> {
  const llama = await getLlama({
    gpu: false,
    build: "never",
    skipDownload: true,
    maxThreads: spec.threads,
    logLevel: LlamaLogLevel.error,
    progressLogs: false,
  });
  const model = await llama.loadModel({ modelPath: spec.path });
  return {
    llama,
    model,
    tokenize: (text) => model.tokenize(text, false),
    bos: model.tokens.shouldPrependBosToken ? (model.tokens.bos ?? undefined) : undefined,
    async dispose() {
      await model.dispose();
      await llama.dispose();
    },
  };
}

/** Prompt ids with the BOS the model asks for: what both sides feed the engine. */
export function withBos(loaded: LoadedModel, ids: readonly number[]): Token[] {
  return (loaded.bos === undefined ? [...ids] : [loaded.bos, ...ids]) as Token[];
}

async function measureThreads(spec: BenchModel<AnyBenchModelName>, quick: boolean): Promise<void> {
  const loaded = await loadModel({ ...spec, threads: 2 });
  const prompt = withBos(loaded, loaded.tokenize(KJV).slice(0, quick ? 128 : 256));
  const decodeTokens = quick ? 16 : 48;
  const contexts = await Promise.all(
    [1, 2].map((threads) => loaded.model.createContext({ contextSize: 1024, threads, sequences: 1 })),
  );
  const decodeMs: number[][] = [[], []];
  const cases = contexts.map((context, i) => ({
    name: `threads ${i + 1}`,
    fn: async () => {
      const sequence = context.getSequence();
      try {
        await sequence.evaluateWithoutGeneratingNewTokens(prompt.slice(0, -1));
        const started = performance.now();
        let n = 0;
        for await (const _ of sequence.evaluate(prompt.slice(-1), { temperature: 0, yieldEogToken: true })) {
          if (++n === decodeTokens) break;
        }
        decodeMs[i]!.push((performance.now() - started) / decodeTokens);
      } finally {
        await sequence.dispose();
      }
    },
  }));
  const runs = await compare(cases, { warmup: 1, runs: quick ? 2 : 5 });
  printTable(
    runs.map((run, i) => {
      const perToken = [...decodeMs[i]!].sort((a, b) => a - b);
      return {
        threads: i + 1,
        "run (prefill + decode) median": `${run.medianMs.toFixed(0)} ms`,
        "decode ms/token median": perToken[perToken.length >> 1]!.toFixed(1),
        "time vs threads 1": `${(run.medianMs / runs[0]!.medianMs).toFixed(2)}x`,
      };
    }),
  );
  await Promise.all(contexts.map((context) => context.dispose()));
  await loaded.dispose();
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = benchArgs();
  const name = process.argv.slice(2).find((a) => !a.startsWith("--")) ?? "edge";
  const spec = anyBenchModel(name);
  console.log(`${describeMachine(await machine())}\nmodel ${spec.name}: ${spec.path}`);
  await measureThreads(spec, args.quick);
}
