/**
 * Writes a random-weight llama GGUF that shares the bundled model's tokenizer, for benchmarks whose cost should
 * look like a bigger model's while the text pipeline (tokenize/detokenize, special tokens) stays the real one.
 *
 *   npx tsx scripts/make-synthetic-model.ts --preset edge --measure
 *   npx tsx scripts/make-synthetic-model.ts --out bench/models/synthetic-x.gguf --embd 512 --layers 8 \
 *     --heads 8 --kv-heads 4 --ff 1536 --ctx 2048 [--type f16|f32|q8_0] [--seed 1]
 *
 * `--preset deep` writes a different kind of model: the bundled model plus cost-only blocks (see
 * gguf/makeDeepModel.ts), a target that the bundled model as a draft agrees with on most tokens.
 *   npx tsx scripts/make-synthetic-model.ts --preset deep [--perturb 0.06] [--layers 12] [--ff 8192] --measure
 */
import { mkdirSync, readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import type { Llama, LlamaContextSequence, LlamaModel, Token } from "node-llama-cpp";
import { GgmlType, GgufWriter, readGgufMetadata } from "./gguf/GgufWriter.ts";
import { gaussianTensor } from "./gguf/gaussianTensor.ts";
import { DEEP_PRESET, type DeepModelOptions, makeDeepModel } from "./gguf/makeDeepModel.ts";

export { gaussianTensor };

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const DEFAULT_TOKENIZER_SOURCE = resolve(REPO_ROOT, "models/kjv-tiny.gguf");

export type WeightType = "f32" | "f16" | "q8_0";

export interface SyntheticModelShape {
  embd: number;
  layers: number;
  heads: number;
  kvHeads: number;
  ff: number;
  ctx: number;
  type: WeightType;
}

export interface SyntheticModelOptions extends SyntheticModelShape {
  out: string;
  seed?: number;
  /** Standard deviation of the random matrices. */
  std?: number;
  name?: string;
  /** GGUF whose `tokenizer.ggml.*` keys are copied verbatim. */
  tokenizerFrom?: string;
}

/*
 * 1-token decode after a 256-token prompt on the 2-core dev box with no other load, threads 2 (threads 1 in
 * brackets), mean / median ms per token:
 *   small   10.6 MB   ~8-15 / 2-9   (1.0-1.5)  threads 2 stalls on spin-waiting for tiny graphs
 *   medium  58.9 MB   ~11-14 / 4-8  (5.2)
 *   edge    377.8 MB  32-35 / 24-29 (39.5)     prefill ~155-175 tokens/s
 * `edge` costs per token about what a real ~0.5B quantized model does on two cores (20-50 ms). The same
 * shape as q8_0 (200.8 MB) measured 22-24 / 17 ms.
 */
export const PRESETS = {
  small: { embd: 256, layers: 4, heads: 8, kvHeads: 4, ff: 768, ctx: 2048, type: "f16" },
  medium: { embd: 512, layers: 8, heads: 8, kvHeads: 4, ff: 1536, ctx: 2048, type: "f16" },
  edge: { embd: 1024, layers: 16, heads: 16, kvHeads: 4, ff: 2816, ctx: 2048, type: "f16" },
} as const satisfies Record<string, SyntheticModelShape>;
export type PresetName = keyof typeof PRESETS;

const GGML_TYPE: Record<WeightType, GgmlType> = { f32: GgmlType.F32, f16: GgmlType.F16, q8_0: GgmlType.Q8_0 };
/** llama_ftype values for general.file_type (ALL_F32, MOSTLY_F16, MOSTLY_Q8_0). */
const FILE_TYPE: Record<WeightType, number> = { f32: 0, f16: 1, q8_0: 7 };

export function validateShape(s: SyntheticModelShape): void {
  const ints: (keyof SyntheticModelShape)[] = ["embd", "layers", "heads", "kvHeads", "ff", "ctx"];
  for (const k of ints) {
    const v = s[k];
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 1)
      throw new Error(`--${k}: expected a positive integer`);
  }
  if (s.embd % s.heads !== 0) throw new Error(`embd ${s.embd} is not divisible by heads ${s.heads}`);
  if (s.heads % s.kvHeads !== 0)
    throw new Error(`heads ${s.heads} is not divisible by kv-heads ${s.kvHeads}`);
  if ((s.embd / s.heads) % 2 !== 0) throw new Error(`head dim ${s.embd / s.heads} must be even for RoPE`);
  if (!(s.type in GGML_TYPE)) throw new Error(`type must be one of ${Object.keys(GGML_TYPE).join(", ")}`);
  if (s.type === "q8_0" && (s.embd % 32 !== 0 || s.ff % 32 !== 0)) {
    throw new Error("q8_0 needs embd and ff to be multiples of 32");
  }
}

export interface SyntheticModelResult {
  path: string;
  bytes: number;
  parameters: number;
  vocabSize: number;
}

export function makeSyntheticModel(options: SyntheticModelOptions): SyntheticModelResult {
  validateShape(options);
  const { embd, layers, heads, kvHeads, ff, ctx, type } = options;
  const seed = options.seed ?? 1;
  const std = options.std ?? 0.02;
  const headDim = embd / heads;
  const source = readGgufMetadata(options.tokenizerFrom ?? DEFAULT_TOKENIZER_SOURCE);
  const tokens = source.get("tokenizer.ggml.tokens");
  if (tokens?.type !== "array") throw new Error("tokenizer source has no tokenizer.ggml.tokens");
  const vocab = tokens.value.length;

  const w = new GgufWriter();
  w.setString("general.architecture", "llama");
  w.setString("general.name", options.name ?? "synthetic");
  w.setString("general.description", `random weights N(0, ${std}), seed ${seed}; not a trained model`);
  w.setUint32("general.file_type", FILE_TYPE[type]);
  w.setUint32("llama.context_length", ctx);
  w.setUint32("llama.embedding_length", embd);
  w.setUint32("llama.block_count", layers);
  // Must be present: without it llama.cpp hits a GGML_ASSERT and aborts the whole process instead of throwing.
  w.setUint32("llama.feed_forward_length", ff);
  w.setUint32("llama.attention.head_count", heads);
  w.setUint32("llama.attention.head_count_kv", kvHeads);
  w.setFloat32("llama.rope.freq_base", 10000);
  w.setFloat32("llama.attention.layer_norm_rms_epsilon", 1e-5);
  w.setUint32("llama.rope.dimension_count", headDim);
  w.setUint32("llama.vocab_size", vocab);
  for (const [key, value] of source) if (key.startsWith("tokenizer.ggml.")) w.set(key, value);

  const mat = GGML_TYPE[type];
  const random = (name: string, ne: [number, number]) =>
    w.addTensor(name, ne, mat, () => gaussianTensor(ne[0] * ne[1], std, seed, name));
  const ones = (name: string) =>
    w.addTensor(name, [embd], GgmlType.F32, () => new Float32Array(embd).fill(1));

  // ne order: [row length, rows] — the reverse of the numpy shapes in gguf-py.
  random("token_embd.weight", [embd, vocab]);
  for (let i = 0; i < layers; i++) {
    const p = `blk.${i}.`;
    ones(`${p}attn_norm.weight`);
    random(`${p}attn_q.weight`, [embd, embd]);
    random(`${p}attn_k.weight`, [embd, headDim * kvHeads]);
    random(`${p}attn_v.weight`, [embd, headDim * kvHeads]);
    random(`${p}attn_output.weight`, [embd, embd]);
    ones(`${p}ffn_norm.weight`);
    random(`${p}ffn_gate.weight`, [embd, ff]);
    random(`${p}ffn_up.weight`, [embd, ff]);
    random(`${p}ffn_down.weight`, [ff, embd]);
  }
  ones("output_norm.weight");
  // Untied like the bundled model, so the output projection is read from its own memory as in most real files.
  random("output.weight", [embd, vocab]);

  mkdirSync(dirname(options.out), { recursive: true });
  const r = w.write(options.out);
  return { path: options.out, bytes: r.bytes, parameters: r.parameters, vocabSize: vocab };
}

export interface ModelCheck {
  loadMs: number;
  /** Greedy continuation of the check prompt. */
  sample: string;
  logitRange: { min: number; max: number };
  prefillTokensPerSecond?: number;
  decodeMsPerToken?: { mean: number; median: number };
  /**
   * Share of all CPUs (0..1) used by other processes while measuring; Linux only. On a shared machine the
   * timings are only meaningful next to this.
   */
  otherCpuShare?: number;
}

const SAMPLE_TEXT =
  "In the beginning God created the heaven and the earth. And the earth was without form, and void. ";

function promptTokens(model: LlamaModel, n: number): Token[] {
  const out: Token[] = [];
  if (model.tokens.bos !== null) out.push(model.tokens.bos);
  while (out.length < n) out.push(...model.tokenize(SAMPLE_TEXT));
  return out.slice(0, n);
}

/**
 * Loads the file, checks that the logits are finite and not flat, generates a few greedy tokens, and optionally
 * times prefill and 1-token decode steps.
 */
export async function checkModel(
  path: string,
  opts: { threads: number; measure?: boolean; promptLength?: number; decodeTokens?: number; llama?: Llama },
): Promise<ModelCheck> {
  const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
  const llama =
    opts.llama ??
    (await getLlama({
      gpu: false,
      build: "never",
      skipDownload: true,
      maxThreads: opts.threads,
      logLevel: LlamaLogLevel.warn,
    }));
  const t0 = performance.now();
  const model = await llama.loadModel({ modelPath: path });
  const loadMs = performance.now() - t0;
  try {
    const decodeTokens = opts.decodeTokens ?? 64;
    const promptLength = Math.max(
      16,
      Math.min(opts.promptLength ?? 256, model.trainContextSize - decodeTokens - 16),
    );
    const context = await model.createContext({
      contextSize: Math.min(model.trainContextSize, promptLength + decodeTokens + 16),
      sequences: 1,
      threads: opts.threads,
      batchSize: Math.max(promptLength, 16),
    });
    try {
      const seq = context.getSequence();
      const short = promptTokens(model, 12);
      const [first] = await seq
        .controlledEvaluate([
          ...short.slice(0, -1),
          [short.at(-1)!, { generateNext: { logits: true, token: true } }],
        ])
        .then((r) => r.slice(-1));
      const logits = [...(first?.next.logits?.values() ?? [])];
      if (logits.length === 0) throw new Error("no logits returned");
      let min = Number.POSITIVE_INFINITY;
      let max = Number.NEGATIVE_INFINITY;
      for (const l of logits) {
        if (!Number.isFinite(l)) throw new Error(`non-finite logit ${l}`);
        min = Math.min(min, l);
        max = Math.max(max, l);
      }
      if (!(max - min > 1e-6)) throw new Error("logits are flat; the weights are degenerate");
      const firstToken = first?.next.token;
      if (firstToken == null) throw new Error("no token sampled");
      const generated: Token[] = [firstToken];
      const it = seq.evaluate([firstToken], { temperature: 0, yieldEogToken: true });
      for (let i = 1; i < 8; i++) {
        const r = await it.next();
        if (r.done) break;
        generated.push(r.value);
      }
      await it.return();
      const result: ModelCheck = { loadMs, sample: model.detokenize(generated), logitRange: { min, max } };
      if (opts.measure) Object.assign(result, await measure(seq, model, promptLength, decodeTokens));
      return result;
    } finally {
      await context.dispose();
    }
  } finally {
    await model.dispose();
    if (!opts.llama) await llama.dispose();
  }
}

/** Openings for the agreement check: KJV-like text the bundled model continues in its own style. */
const AGREEMENT_PROMPTS = [
  "In the beginning",
  "And God said, Let there be",
  "The LORD is my shepherd",
  "Genesis 2\n1 Thus the heavens",
  "And it came to pass, when",
  "Blessed are the",
  "And he said unto them,",
  "For God so loved",
];

export interface Agreement {
  /**
   * Share of the target's greedy tokens that the draft model's greedy choice matches, given the same (target's)
   * history: the chance that a greedy draft token is accepted.
   */
  perToken: number;
  tokens: number;
  /** Per prompt, how many of the first greedy tokens both models generate identically. */
  identicalPrefix: number[];
}

/**
 * Greedy agreement of a draft model with a target of the same vocabulary: the target generates `tokens` tokens
 * after each prompt, the draft model reads them and predicts each one.
 */
export async function measureAgreement(
  target: string,
  draft: string,
  opts: { threads: number; tokens?: number; llama?: Llama },
): Promise<Agreement> {
  const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
  const llama =
    opts.llama ??
    (await getLlama({ gpu: false, build: "never", skipDownload: true, logLevel: LlamaLogLevel.warn }));
  const tokens = opts.tokens ?? 64;
  const [targetModel, draftModel] = await Promise.all([
    llama.loadModel({ modelPath: target }),
    llama.loadModel({ modelPath: draft }),
  ]);
  try {
    const contextOptions = { contextSize: 256, sequences: 1, threads: opts.threads };
    const [targetContext, draftContext] = await Promise.all([
      targetModel.createContext(contextOptions),
      draftModel.createContext(contextOptions),
    ]);
    let agreed = 0;
    let total = 0;
    const identicalPrefix: number[] = [];
    for (const text of AGREEMENT_PROMPTS) {
      const prompt: Token[] = [targetModel.tokens.bos!, ...targetModel.tokenize(text)];
      const targetSeq = targetContext.getSequence();
      const generated: Token[] = [];
      for await (const token of targetSeq.evaluate(prompt, { temperature: 0, yieldEogToken: true })) {
        generated.push(token);
        if (generated.length === tokens) break;
      }
      await targetSeq.dispose();
      // The draft reads prompt + generated[..-1] and predicts every generated token from the same history.
      const draftSeq = draftContext.getSequence();
      const input = [...prompt, ...generated.slice(0, -1)];
      const predicted = await draftSeq.controlledEvaluate(
        input.map((token, i) =>
          i >= prompt.length - 1 ? [token, { generateNext: { token: true } }] : token,
        ),
      );
      await draftSeq.dispose();
      let prefix = -1;
      for (let i = 0; i < generated.length; i++) {
        const same = predicted[prompt.length - 1 + i]?.next.token === generated[i];
        if (same) agreed++;
        else if (prefix < 0) prefix = i;
      }
      total += generated.length;
      identicalPrefix.push(prefix < 0 ? generated.length : prefix);
    }
    await Promise.all([targetContext.dispose(), draftContext.dispose()]);
    return { perToken: agreed / Math.max(1, total), tokens: total, identicalPrefix };
  } finally {
    await Promise.all([targetModel.dispose(), draftModel.dispose()]);
    if (!opts.llama) await llama.dispose();
  }
}

async function measure(
  seq: LlamaContextSequence,
  model: LlamaModel,
  promptLength: number,
  decodeTokens: number,
): Promise<Pick<ModelCheck, "prefillTokensPerSecond" | "decodeMsPerToken" | "otherCpuShare">> {
  const prompt = promptTokens(model, promptLength);
  // One untimed pass so buffer allocation and page faults of the mmapped weights are not counted.
  await seq.clearHistory();
  await seq.evaluateWithoutGeneratingNewTokens(prompt);
  await seq.clearHistory();
  const cpu0 = cpuSnapshot();
  const t0 = performance.now();
  await seq.evaluateWithoutGeneratingNewTokens(prompt.slice(0, -1));
  const prefillMs = performance.now() - t0;
  const steps: number[] = [];
  const it = seq.evaluate([prompt.at(-1)!], { temperature: 0, yieldEogToken: true });
  let last = performance.now();
  for (let i = 0; i < decodeTokens; i++) {
    const r = await it.next();
    if (r.done) break;
    const now = performance.now();
    steps.push(now - last);
    last = now;
  }
  await it.return();
  const cpu1 = cpuSnapshot();
  const sorted = [...steps].sort((a, b) => a - b);
  return {
    otherCpuShare:
      cpu0 && cpu1 && cpu1.totalMs > cpu0.totalMs
        ? Math.max(0, cpu1.busyMs - cpu0.busyMs - (cpu1.selfMs - cpu0.selfMs)) / (cpu1.totalMs - cpu0.totalMs)
        : undefined,
    prefillTokensPerSecond: ((prompt.length - 1) / prefillMs) * 1000,
    decodeMsPerToken: {
      mean: steps.reduce((a, b) => a + b, 0) / steps.length,
      median: sorted[Math.floor(sorted.length / 2)] ?? Number.NaN,
    },
  };
}

/** System-wide CPU time from /proc/stat (all CPUs summed) and this process's CPU time, in ms. */
function cpuSnapshot(): { busyMs: number; totalMs: number; selfMs: number } | undefined {
  let line: string | undefined;
  try {
    line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0];
  } catch {
    return undefined;
  }
  const f = line?.trim().split(/\s+/).slice(1, 9).map(Number) ?? [];
  if (f.length < 8 || f.some((x) => !Number.isFinite(x))) return undefined;
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = f;
  const jiffyMs = 10; // USER_HZ is 100 on every mainstream Linux build
  const busy = user + nice + system + irq + softirq + steal;
  const usage = process.cpuUsage(); // all threads of this process, including llama.cpp's
  return {
    busyMs: busy * jiffyMs,
    totalMs: (busy + idle + iowait) * jiffyMs,
    selfMs: (usage.user + usage.system) / 1000,
  };
}

function usage(): string {
  return [
    "usage: npx tsx scripts/make-synthetic-model.ts [--preset small|medium|edge] [--out FILE]",
    "         [--embd N] [--layers N] [--heads N] [--kv-heads N] [--ff N] [--ctx N]",
    "         [--type f16|f32|q8_0] [--seed N] [--std X] [--tokenizer-from FILE] [--measure] [--threads N]",
    "       npx tsx scripts/make-synthetic-model.ts --preset deep [--from FILE] [--layers N] [--ff N] [--perturb X]",
    "         [--out FILE] [--seed N] [--std X] [--measure] [--threads N]",
    "",
    `deep: FILE's blocks (default models/kjv-tiny.gguf) plus --layers extra blocks (default ` +
      `${DEEP_PRESET.extraLayers}) of FFN width --ff (default ${DEEP_PRESET.ff}) whose output projections are ` +
      `N(0, --perturb) (default ${DEEP_PRESET.perturb}; 0 keeps FILE's function exactly); prints FILE's greedy ` +
      "agreement with it. Default output: bench/models/kjv-deep.gguf",
    "Shape flags override the preset's values. Default output: bench/models/synthetic-<preset|custom>.gguf",
    `presets: ${Object.entries(PRESETS)
      .map(
        ([k, v]) =>
          `${k} (embd ${v.embd}, layers ${v.layers}, heads ${v.heads}/${v.kvHeads}, ff ${v.ff}, ${v.type})`,
      )
      .join("; ")}`,
  ].join("\n");
}

async function mainDeep(o: DeepModelOptions & { from: string; measure: boolean; threads: number }) {
  const t0 = performance.now();
  const made = makeDeepModel({ ...o, name: "kjv-deep" });
  console.log(
    `wrote ${made.path}: ${(made.bytes / 1e6).toFixed(1)} MB, ${(made.parameters / 1e6).toFixed(1)}M parameters ` +
      `in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
  console.log(
    `${made.sourceLayers} blocks of ${o.from} + ${made.layers - made.sourceLayers} extra, ff ${made.ff}, ` +
      `output projections of the extra blocks N(0, ${o.perturb})`,
  );
  const agreement = await measureAgreement(made.path, o.from, { threads: o.threads });
  console.log(
    `greedy agreement of ${o.from} with it: ${(agreement.perToken * 100).toFixed(1)}% of ${agreement.tokens} ` +
      `tokens; identical greedy prefixes ${agreement.identicalPrefix.join(", ")}`,
  );
  if (!o.measure) return;
  const [deep, source] = [
    await checkModel(made.path, { threads: o.threads, measure: true }),
    await checkModel(o.from, { threads: o.threads, measure: true }),
  ];
  const ms = (c: ModelCheck) => c.decodeMsPerToken?.median ?? Number.NaN;
  console.log(
    `threads ${o.threads}: decode median ${ms(deep).toFixed(2)} ms/token vs ${ms(source).toFixed(2)} for the ` +
      `source: ${(ms(deep) / ms(source)).toFixed(1)}x`,
  );
}

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      preset: { type: "string" },
      out: { type: "string" },
      embd: { type: "string" },
      layers: { type: "string" },
      heads: { type: "string" },
      "kv-heads": { type: "string" },
      ff: { type: "string" },
      ctx: { type: "string" },
      type: { type: "string" },
      seed: { type: "string" },
      std: { type: "string" },
      "tokenizer-from": { type: "string" },
      from: { type: "string" },
      perturb: { type: "string" },
      measure: { type: "boolean", default: false },
      threads: { type: "string", default: "2" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(usage());
    return;
  }
  const num = (flag: string, v: string | undefined, fallback: number | undefined) => {
    if (v === undefined) {
      if (fallback === undefined) throw new Error(`--${flag} is required without --preset\n${usage()}`);
      return fallback;
    }
    const n = Number(v);
    if (!Number.isFinite(n)) throw new Error(`--${flag}: not a number: ${v}`);
    return n;
  };
  const presetName = values.preset ?? "custom";
  if (values.preset === "deep") {
    await mainDeep({
      out: resolve(values.out ?? resolve(REPO_ROOT, "bench/models/kjv-deep.gguf")),
      from: resolve(values.from ?? DEFAULT_TOKENIZER_SOURCE),
      extraLayers: num("layers", values.layers, DEEP_PRESET.extraLayers),
      ff: num("ff", values.ff, DEEP_PRESET.ff),
      perturb: num("perturb", values.perturb, DEEP_PRESET.perturb),
      seed: num("seed", values.seed, 1),
      std: num("std", values.std, 0.02),
      measure: values.measure === true,
      threads: num("threads", values.threads, 2),
    });
    return;
  }
  if (values.preset !== undefined && !(values.preset in PRESETS)) {
    throw new Error(`unknown preset ${values.preset}\n${usage()}`);
  }
  const base: Partial<SyntheticModelShape> = values.preset ? PRESETS[values.preset as PresetName] : {};
  const shape: SyntheticModelShape = {
    embd: num("embd", values.embd, base.embd),
    layers: num("layers", values.layers, base.layers),
    heads: num("heads", values.heads, base.heads),
    kvHeads: num("kv-heads", values["kv-heads"], base.kvHeads),
    ff: num("ff", values.ff, base.ff),
    ctx: num("ctx", values.ctx, base.ctx ?? 2048),
    type: (values.type ?? base.type ?? "f16") as WeightType,
  };
  const out = resolve(values.out ?? resolve(REPO_ROOT, `bench/models/synthetic-${presetName}.gguf`));
  const threads = num("threads", values.threads, 2);

  const t0 = performance.now();
  const made = makeSyntheticModel({
    ...shape,
    out,
    seed: num("seed", values.seed, 1),
    std: num("std", values.std, 0.02),
    name: `synthetic-${presetName}`,
    tokenizerFrom: values["tokenizer-from"],
  });
  const mb = (made.bytes / 1e6).toFixed(1);
  console.log(
    `wrote ${made.path}: ${mb} MB, ${(made.parameters / 1e6).toFixed(1)}M parameters, ` +
      `${shape.type}, in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
  console.log(
    `shape: embd ${shape.embd}, layers ${shape.layers}, heads ${shape.heads}, kv-heads ${shape.kvHeads}, ` +
      `ff ${shape.ff}, ctx ${shape.ctx}, vocab ${made.vocabSize}`,
  );

  const check = await checkModel(out, { threads, measure: values.measure });
  console.log(
    `loads in ${check.loadMs.toFixed(0)} ms; logits in [${check.logitRange.min.toFixed(2)}, ` +
      `${check.logitRange.max.toFixed(2)}]; greedy sample: ${JSON.stringify(check.sample)}`,
  );
  if (check.decodeMsPerToken && check.prefillTokensPerSecond !== undefined) {
    console.log(
      `threads ${threads}: decode ${check.decodeMsPerToken.mean.toFixed(1)} ms/token ` +
        `(median ${check.decodeMsPerToken.median.toFixed(1)}), prefill ${check.prefillTokensPerSecond.toFixed(0)} tokens/s` +
        (check.otherCpuShare !== undefined
          ? `; other processes used ${(check.otherCpuShare * 100).toFixed(0)}% of the CPUs meanwhile`
          : ""),
    );
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exitCode = 1;
  });
}
