/**
 * The engine build: node-llama-cpp's generic prebuilt CPU binary against a build of the same llama.cpp source
 * for this machine (`npm run build:engine`), on the same model, one thread, in the same run. Each round runs
 * both in their own child process (the addon is loaded once per process), alternating; each child reads a
 * 102-token prompt and decodes greedily, three times, and reports its medians.
 *
 * The prebuilt binary is measured by hiding llama/localBuilds for its child (renamed, then restored in a
 * `finally`): node-llama-cpp prefers a local build whenever one is present.
 *
 *   node --import tsx bench/engineBuild.ts [--quick] [--model bundled,edge]
 */
import { execFileSync } from "node:child_process";
import { existsSync, renameSync } from "node:fs";
import { fileURLToPath } from "node:url";
import {
  benchArgs,
  describeMachine,
  machine,
  median,
  pairedRatio,
  printTable,
  writeResults,
} from "./harness.ts";
import { benchModel } from "./models.ts";

const CHILD = process.env.SLUICE_ENGINE_BUILD_CHILD;
if (CHILD !== undefined) await child(CHILD);
else await main();

async function child(model: string): Promise<void> {
  const { getLlama } = await import("node-llama-cpp");
  const llama = await getLlama({
    gpu: false,
    build: "never",
    skipDownload: true,
    maxThreads: 1,
    progressLogs: false,
  });
  const loaded = await llama.loadModel({ modelPath: model });
  const context = await loaded.createContext({ sequences: 1, contextSize: 512, threads: 1, batchSize: 512 });
  const sequence = context.getSequence();
  const text = "Genesis 1\n1 In the beginning God created the heaven and the earth. ".repeat(6);
  const bos = loaded.tokens.bos;
  const prompt = [...(bos === null ? [] : [bos]), ...loaded.tokenize(text)].slice(0, 102);
  const decodes = Number(process.env.SLUICE_ENGINE_BUILD_DECODES ?? 100);
  const prefill: number[] = [];
  const decode: number[] = [];
  for (let round = 0; round < 4; round++) {
    const started = performance.now();
    await sequence.evaluateWithoutGeneratingNewTokens(prompt);
    const read = performance.now() - started;
    const generator = sequence.evaluate([prompt[1]!], { temperature: 0 });
    await generator.next();
    const decodeStart = performance.now();
    for (let i = 0; i < decodes; i++) await generator.next();
    const perToken = (performance.now() - decodeStart) / decodes;
    await generator.return();
    await sequence.clearHistory();
    // The first round warms caches and the allocator: not counted.
    if (round > 0) {
      prefill.push(read);
      decode.push(perToken);
    }
  }
  const buildType = (llama as unknown as { buildType: string }).buildType;
  await llama.dispose();
  process.stdout.write(
    `${JSON.stringify({ buildType, prefillMs: median(prefill.sort((a, b) => a - b)), decodeMs: median(decode.sort((a, b) => a - b)) })}\n`,
  );
}

interface ChildResult {
  buildType: string;
  prefillMs: number;
  decodeMs: number;
}

function runChild(model: string, decodes: number): ChildResult {
  const out = execFileSync(process.execPath, ["--import", "tsx", fileURLToPath(import.meta.url)], {
    env: { ...process.env, SLUICE_ENGINE_BUILD_CHILD: model, SLUICE_ENGINE_BUILD_DECODES: String(decodes) },
    encoding: "utf8",
  });
  return JSON.parse(out.trim().split("\n").at(-1)!) as ChildResult;
}

async function main(): Promise<void> {
  const args = benchArgs();
  const localBuilds = fileURLToPath(
    new URL("../node_modules/node-llama-cpp/llama/localBuilds", import.meta.url),
  );
  if (!existsSync(localBuilds)) {
    console.error(
      "No local engine build: run `npm run build:engine` first (about 7 minutes on 2 cores, offline).",
    );
    process.exit(1);
  }
  const m = await machine();
  console.log(`engineBuild: ${describeMachine(m)}; llama.cpp threads 1`);
  const rounds = args.quick ? 2 : 4;
  const rows = [];
  const results: Record<string, unknown> = {};
  for (const name of args.models ?? (args.quick ? ["bundled"] : ["bundled", "edge"])) {
    const model = benchModel(name).path;
    const decodes = name === "bundled" ? 200 : 30;
    const prebuilt: ChildResult[] = [];
    const native: ChildResult[] = [];
    for (let round = 0; round < rounds; round++) {
      renameSync(localBuilds, `${localBuilds}.off`);
      try {
        prebuilt.push(runChild(model, decodes));
      } finally {
        renameSync(`${localBuilds}.off`, localBuilds);
      }
      native.push(runChild(model, decodes));
    }
    if (
      prebuilt.some((r) => r.buildType !== "prebuilt") ||
      native.some((r) => r.buildType !== "localBuild")
    ) {
      throw new Error(`unexpected build types: ${JSON.stringify({ prebuilt, native })}`);
    }
    const decode = pairedRatio(
      native.map((r) => r.decodeMs),
      prebuilt.map((r) => r.decodeMs),
    );
    const prefill = pairedRatio(
      native.map((r) => r.prefillMs),
      prebuilt.map((r) => r.prefillMs),
    );
    const med = (rs: ChildResult[], key: "decodeMs" | "prefillMs") =>
      median(rs.map((r) => r[key]).sort((a, b) => a - b));
    rows.push({
      model: name,
      "decode ms/token prebuilt": med(prebuilt, "decodeMs").toFixed(2),
      native: med(native, "decodeMs").toFixed(2),
      "native ÷ prebuilt": `${decode.median.toFixed(2)}x`,
      "102-token prompt ms prebuilt": med(prebuilt, "prefillMs").toFixed(1),
      "native ": med(native, "prefillMs").toFixed(1),
      "native ÷ prebuilt ": `${prefill.median.toFixed(2)}x`,
    });
    results[name] = { prebuilt, native, decodeRatio: decode, prefillRatio: prefill };
  }
  printTable(rows);
  await writeResults("engineBuild", { machine: m, rounds, results }, undefined, { quick: args.quick });
}
