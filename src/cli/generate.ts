import { SluiceError } from "../errors.ts";
import { Runtime } from "../runtime/Runtime.ts";
import type { GenerationRequest, GenerationResult } from "../types.ts";
import { DRAFT_FLAGS, draftHelp, draftOptions } from "./draftFlags.ts";
import { parseArgs } from "./env.ts";
import { GPU_FLAGS, gpuHelp, gpuOptions } from "./gpuFlags.ts";
import { StatusLine } from "./StatusLine.ts";

export const DEFAULT_PROMPT = "Genesis 1\n1 In the beginning";

export const GENERATE_HELP = `Usage: sluice generate [prompt] [options]

Streams a generation to the terminal. Ctrl-C stops it within one engine step and prints how it ended.

Options:
  --model <path>        GGUF model file (default: the bundled kjv-tiny model)
  --max-tokens <n>      most tokens to generate (default 200)
  --temperature <t>     sampling temperature, 0 = greedy (default 0.8)
  --top-k <k>           top-k, 0 = whole vocabulary (default 40)
  --top-p <p>           nucleus sampling (default 0.95)
  --min-p <p>           min-p (default 0)
  --seed <n>            sampler seed (default: random)
  --stop <text>         stop string (repeatable)
  --interval <n>        emit every n tokens (default 1)
  --special             keep special tokens in the text
  --threads <n>         CPU threads (default: half the cores)
  --context-size <n>    tokens per slot
${gpuHelp(24)}${draftHelp(24, false)}  --json                print every chunk and the result as JSON lines
  -h, --help            this help
`;

function number(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const parsed = Number(value);
  if (!Number.isFinite(parsed))
    throw new SluiceError("invalid_request", `${flag} expects a number; got "${value}".`);
  return parsed;
}

export async function generateCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      model: { type: "string" },
      "max-tokens": { type: "string" },
      temperature: { type: "string" },
      "top-k": { type: "string" },
      "top-p": { type: "string" },
      "min-p": { type: "string" },
      seed: { type: "string" },
      stop: { type: "string", multiple: true },
      interval: { type: "string" },
      special: { type: "boolean" },
      threads: { type: "string" },
      "context-size": { type: "string" },
      ...GPU_FLAGS,
      ...DRAFT_FLAGS,
      json: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    process.stdout.write(GENERATE_HELP);
    return 0;
  }
  const json = values.json === true;
  const status = new StatusLine();
  const threads = number(values.threads, "--threads");
  const contextSize = number(values["context-size"], "--context-size");
  const loadStarted = performance.now();
  const runtime = await Runtime.create({
    slots: 1,
    ...(values.model ? { model: values.model } : {}),
    ...(threads !== undefined ? { threads } : {}),
    ...(contextSize !== undefined ? { contextSize } : {}),
    ...gpuOptions(values),
    ...draftOptions(values),
    onLoadProgress: (p) => status.set(` loading model ${Math.round(p * 100)}% `),
  });
  const loadMs = performance.now() - loadStarted;
  const { backend } = runtime.engine.info;
  const prompt = positionals.join(" ") || DEFAULT_PROMPT;
  const request: GenerationRequest = {
    prompt,
    maxTokens: number(values["max-tokens"], "--max-tokens") ?? 200,
    temperature: number(values.temperature, "--temperature") ?? 0.8,
    topK: number(values["top-k"], "--top-k") ?? 40,
    topP: number(values["top-p"], "--top-p") ?? 0.95,
    minP: number(values["min-p"], "--min-p") ?? 0,
    streamInterval: number(values.interval, "--interval") ?? 1,
    skipSpecialTokens: values.special !== true,
    ...(values.seed !== undefined ? { seed: number(values.seed, "--seed")! } : {}),
    ...(values.stop ? { stop: values.stop } : {}),
  };

  let result: GenerationResult;
  let cancelledAt = 0;
  const channel = runtime.generate(request);
  // SIGINT (Ctrl-C) and SIGTERM (a supervisor) stop the same way: cancel, print the finish; a second one exits.
  const onSigint = (signal: NodeJS.Signals) => {
    if (cancelledAt > 0) process.exit(signal === "SIGTERM" ? 143 : 130);
    cancelledAt = performance.now();
    channel.cancel("interrupted");
  };
  process.on("SIGINT", onSigint);
  process.on("SIGTERM", onSigint);
  try {
    if (!json) process.stdout.write(prompt);
    const started = performance.now();
    let tokens = 0;
    for await (const chunk of channel) {
      tokens += chunk.tokenIds.length;
      if (json) process.stdout.write(`${JSON.stringify({ type: "chunk", ...chunk })}\n`);
      else process.stdout.write(chunk.text);
      const seconds = (performance.now() - started) / 1000;
      status.set(
        ` ${tokens} tokens  ${(tokens / Math.max(seconds, 1e-3)).toFixed(1)} tok/s  (Ctrl-C stops) `,
      );
    }
    result = await channel.result;
  } finally {
    process.off("SIGINT", onSigint);
    process.off("SIGTERM", onSigint);
    status.clear();
  }
  const cancelMs = cancelledAt > 0 ? performance.now() - cancelledAt : undefined;
  await runtime.close();
  if (json) {
    process.stdout.write(
      `${JSON.stringify({ type: "result", ...result, tokenIds: undefined, loadMs, cancelMs, backend })}\n`,
    );
  } else {
    const t = result.timings;
    const why = result.reason === "stop" ? `stop (${JSON.stringify(result.stop)})` : result.reason;
    const lines = [
      "",
      `-- finished: ${why}${result.error ? ` ${result.error.code}: ${result.error.message}` : ""}`,
      `-- ${result.usage.promptTokens} prompt + ${result.usage.completionTokens} generated tokens; ` +
        `${t.tokensPerSecond.toFixed(1)} tok/s; first token ${t.firstTokenMs.toFixed(1)} ms; ` +
        `prefill ${t.prefillMs.toFixed(1)} ms; decode ${t.decodeMs.toFixed(1)} ms; model load ${loadMs.toFixed(0)} ms` +
        (backend ? ` (${backend})` : ""),
      ...(cancelMs !== undefined ? [`-- Ctrl-C to terminal chunk: ${cancelMs.toFixed(1)} ms`] : []),
    ];
    process.stderr.write(`${lines.join("\n")}\n`);
  }
  return result.reason === "error" ? 1 : 0;
}
