import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

interface Benchmark {
  name: string;
  summary: string;
  /** Arguments for a smoke run; undefined: the script has no quick mode and runs as is. */
  quick: string[] | undefined;
  /** Whether the script takes the engine benchmarks' flags (--model, --threads, --seed). */
  engineFlags: boolean;
}

const BENCHMARKS: readonly Benchmark[] = [
  {
    name: "cancel",
    summary:
      "cancel() → terminal chunk and free slot, in ms and steps, vs node-llama-cpp LlamaCompletion + AbortSignal",
    quick: ["--quick"],
    engineFlags: true,
  },
  {
    name: "overhead",
    summary:
      "tokens/s of the full Sluice path over a bare node-llama-cpp evaluate() loop (same slots, tokens)",
    quick: ["--quick"],
    engineFlags: true,
  },
  {
    name: "concurrency",
    summary:
      "tokens/s, time to first token and inter-token latency at 1-16 streams vs node-llama-cpp sequences",
    quick: ["--quick"],
    engineFlags: true,
  },
  {
    name: "stall",
    summary:
      "longest gap of a decoding stream while another request prefills, vs node-llama-cpp default batching",
    quick: ["--quick"],
    engineFlags: true,
  },
  {
    name: "memory",
    summary: "heap held for a consumer that never reads 100k tokens, vs the text size and per-chunk queues",
    quick: ["--quick"],
    engineFlags: false,
  },
  {
    name: "prefix",
    summary:
      "time to first token with and without the prompt cache (8-turn chat, shared system prompt) vs llama-server",
    quick: ["--quick"],
    engineFlags: true,
  },
  {
    name: "channel",
    summary: "StreamChannel push-to-consume cost vs repeater, it-pushable, node:stream and WHATWG streams",
    quick: undefined,
    engineFlags: false,
  },
  {
    name: "logprobs",
    summary: "tokens/s with logprobs off, 0, 5 and 20 alternatives vs a bare node-llama-cpp loop",
    quick: ["--quick"],
    engineFlags: true,
  },
  {
    name: "speculative",
    summary:
      "decode tokens/s with prompt-lookup speculation vs plain decoding and llama-server's n-gram mode, 1-8 streams",
    quick: ["--quick"],
    engineFlags: true,
  },
  {
    name: "engineBuild",
    summary: "node-llama-cpp's prebuilt CPU binary vs a build for this machine (npm run build:engine)",
    quick: ["--quick"],
    engineFlags: true,
  },
  {
    name: "soak",
    summary:
      "10,000 requests over loopback with disconnects at every phase: slots leaked, end records, RSS and handles",
    quick: ["--quick"],
    engineFlags: false,
  },
  {
    name: "gateway",
    summary:
      "Sluice as a gateway vs the client talking to the upstream (Sluice, llama-server): cost per request, per token, cancel to upstream free",
    quick: ["--quick"],
    engineFlags: false,
  },
  {
    name: "gatewaySim",
    summary:
      "routing policies over 100 simulated upstreams (round robin, least outstanding, prefix affinity): TTFT, cache hits, sizing",
    quick: ["--quick"],
    engineFlags: false,
  },
  {
    name: "detok",
    summary: "detokenizer cost per token vs re-decoding the history and a streaming TextDecoder",
    quick: ["200000"],
    engineFlags: false,
  },
];

export const BENCH_HELP = `Usage: sluice bench <name|all> [--quick] [--model bundled,edge] [--threads N] [--seed N]

Runs a benchmark from bench/ in its own process (node --expose-gc --import tsx) and prints its tables;
results go to bench/results/<name>.json and .svg. Every figure is measured side by side with the
alternative in the same run and printed as a ratio.

Benchmarks:
${BENCHMARKS.map((b) => `  ${b.name.padEnd(13)}${b.summary}`).join("\n")}
  ${"all".padEnd(13)}every benchmark above, one after the other

Options:
  --quick               a smoke run (well under a minute each)
  --model <names>       engine benchmarks: bundled, edge (a synthetic model written on first use)
  --threads <n>         engine benchmarks: llama.cpp threads for both sides (default: per model)
  --seed <n>            cancel: seed of the random cancel points (default 1)
  -h, --help            this help
`;

function runOne(benchmark: Benchmark, quick: boolean, passThrough: readonly string[]): Promise<number> {
  const script = fileURLToPath(new URL(`../../bench/${benchmark.name}.ts`, import.meta.url));
  if (!existsSync(script)) {
    process.stderr.write(`sluice: bench/${benchmark.name}.ts is missing.\n`);
    return Promise.resolve(1);
  }
  const extra = [...(quick ? (benchmark.quick ?? []) : []), ...(benchmark.engineFlags ? passThrough : [])];
  const args = ["--expose-gc", "--import", "tsx", script, ...extra];
  process.stdout.write(`$ node ${args.join(" ").replace(ROOT, "")}\n`);
  return new Promise((resolve) => {
    // One benchmark per process: no JIT state, heap or loaded model leaks from one into the next.
    const child = spawn(process.execPath, args, { cwd: ROOT, stdio: "inherit" });
    child.on("error", (error) => {
      process.stderr.write(`sluice: could not start ${benchmark.name}: ${error.message}\n`);
      resolve(1);
    });
    child.on("exit", (code, signal) => resolve(code ?? (signal ? 128 + signalNumber(signal) : 1)));
  });
}

function signalNumber(signal: NodeJS.Signals): number {
  return signal === "SIGINT" ? 2 : signal === "SIGTERM" ? 15 : signal === "SIGKILL" ? 9 : 1;
}

export async function benchCommand(argv: string[]): Promise<number> {
  const names: string[] = [];
  const passThrough: string[] = [];
  let quick = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "-h" || arg === "--help") {
      process.stdout.write(BENCH_HELP);
      return 0;
    }
    if (arg === "--quick") quick = true;
    else if (arg === "--model" || arg === "--threads" || arg === "--seed") {
      const value = argv[++i];
      if (value === undefined) {
        process.stderr.write(`sluice: ${arg} needs a value.\n\n${BENCH_HELP}`);
        return 2;
      }
      passThrough.push(arg, value);
    } else if (arg.startsWith("-")) {
      process.stderr.write(`sluice: unknown option ${arg}.\n\n${BENCH_HELP}`);
      return 2;
    } else names.push(arg);
  }
  if (names.length === 0) {
    process.stderr.write(`sluice: which benchmark?\n\n${BENCH_HELP}`);
    return 2;
  }
  const selected: Benchmark[] = [];
  for (const name of names) {
    if (name === "all") {
      selected.push(...BENCHMARKS);
      continue;
    }
    const benchmark = BENCHMARKS.find((b) => b.name === name);
    if (!benchmark) {
      process.stderr.write(`sluice: unknown benchmark "${name}".\n\n${BENCH_HELP}`);
      return 2;
    }
    selected.push(benchmark);
  }
  const failed: string[] = [];
  for (const benchmark of selected) {
    const started = performance.now();
    const code = await runOne(benchmark, quick, passThrough);
    const seconds = ((performance.now() - started) / 1000).toFixed(0);
    process.stdout.write(
      `\n${benchmark.name}: ${code === 0 ? "done" : `exit code ${code}`} in ${seconds} s\n\n`,
    );
    if (code !== 0) failed.push(benchmark.name);
    // Ctrl-C stops the whole series, not just the benchmark running.
    if (code === 130) break;
  }
  if (failed.length > 0) process.stderr.write(`sluice: failed: ${failed.join(", ")}\n`);
  return failed.length === 0 ? 0 : 1;
}
