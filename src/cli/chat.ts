import { basename } from "node:path";
import { text } from "node:stream/consumers";
import { BUNDLED_CHAT_MODEL_PATH } from "../engine/modelPath.ts";
import { SluiceError } from "../errors.ts";
import { Runtime } from "../runtime/Runtime.ts";
import { createChatFormatter } from "../server/chat.ts";
import { CHAT_COMMANDS, type ChatSampling, ChatSession, replyStatus, streamReply } from "./ChatSession.ts";
import { parseArgs } from "./env.ts";
import { GPU_FLAGS, gpuHelp, gpuOptions } from "./gpuFlags.ts";
import { StatusLine } from "./StatusLine.ts";

export const CHAT_HELP = `Usage: sluice chat [options]

Chats with a model in the terminal, through its chat template (the bundled kjv-chat model by default). A reply
streams as it is generated; Ctrl-C stops it within one engine step and returns to the prompt. Ctrl-C or Ctrl-D
at an empty prompt exits; /reset starts a new conversation; /exit exits. Each turn reads only the new messages:
the earlier ones are in the prompt cache (the status line after a reply says how many tokens were cached).

When stdin is not a terminal, the whole of it is one user message: the reply is printed on stdout, the status
line on stderr, and the command exits (echo "Hello" | sluice chat).

Options:
  --model <path>        GGUF model file, ideally with a chat template (default: the bundled kjv-chat model)
  --system <text>       system message (default: none, so the template's own applies; kjv-chat's is "You
                        are a helpful assistant who knows the King James Bible.")
  --temperature <t>     sampling temperature, 0 = greedy (default 0.7)
  --top-k <k>           top-k, 0 = whole vocabulary (default 40)
  --top-p <p>           nucleus sampling (default 0.95)
  --seed <n>            sampler seed (default: random)
  --max-tokens <n>      most tokens per reply (default: the room left in the context, at most 256)
  --threads <n>         CPU threads (default: half the cores)
  --context-size <n>    tokens the whole conversation may take (default: the model's, at most 2048)
${gpuHelp(24)}  -h, --help            this help
`;

/** A number flag: undefined when absent; otherwise within [min, max], an integer when asked. */
function numberFlag(
  value: string | undefined,
  flag: string,
  rule: { min: number; max?: number; integer?: boolean; minExclusive?: boolean },
): number | undefined {
  if (value === undefined) return undefined;
  const parsed = Number(value);
  const ok =
    value.trim() !== "" &&
    Number.isFinite(parsed) &&
    (rule.integer !== true || Number.isInteger(parsed)) &&
    (rule.minExclusive === true ? parsed > rule.min : parsed >= rule.min) &&
    (rule.max === undefined || parsed <= rule.max);
  if (!ok) {
    const kind = rule.integer === true ? "an integer" : "a number";
    const range =
      `${rule.minExclusive === true ? ">" : ">="} ${rule.min}` +
      (rule.max === undefined ? "" : ` and <= ${rule.max}`);
    throw new SluiceError("invalid_option", `${flag} expects ${kind} ${range}; got "${value}".`, {
      param: flag,
    });
  }
  return parsed;
}

export async function chatCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: "string" },
      system: { type: "string" },
      temperature: { type: "string" },
      "top-k": { type: "string" },
      "top-p": { type: "string" },
      seed: { type: "string" },
      "max-tokens": { type: "string" },
      threads: { type: "string" },
      "context-size": { type: "string" },
      ...GPU_FLAGS,
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    process.stdout.write(CHAT_HELP);
    return 0;
  }
  // Every flag is checked before the model loads.
  const sampling: ChatSampling = {
    temperature: numberFlag(values.temperature, "--temperature", { min: 0, max: 2 }) ?? 0.7,
    topK: numberFlag(values["top-k"], "--top-k", { min: 0, integer: true }) ?? 40,
    topP: numberFlag(values["top-p"], "--top-p", { min: 0, max: 1, minExclusive: true }) ?? 0.95,
  };
  const seed = numberFlag(values.seed, "--seed", { min: 0, integer: true });
  if (seed !== undefined) sampling.seed = seed;
  const maxTokens = numberFlag(values["max-tokens"], "--max-tokens", { min: 1, integer: true });
  if (maxTokens !== undefined) sampling.maxTokens = maxTokens;
  const threads = numberFlag(values.threads, "--threads", { min: 1, integer: true });
  const contextSize = numberFlag(values["context-size"], "--context-size", { min: 16, integer: true });
  const model = values.model ?? BUNDLED_CHAT_MODEL_PATH;
  const interactive = process.stdin.isTTY === true;
  // Read before loading: a pipe with nothing in it is an error to report at once.
  const message = interactive ? undefined : await text(process.stdin);
  if (message !== undefined && message.trim() === "") {
    throw new SluiceError(
      "invalid_request",
      'stdin held no message: pipe one in (echo "Hello" | sluice chat), or run sluice chat in a terminal to chat.',
    );
  }

  const status = new StatusLine();
  let runtime: Runtime;
  try {
    runtime = await Runtime.create({
      slots: 1,
      model,
      ...(threads !== undefined ? { threads } : {}),
      ...(contextSize !== undefined ? { contextSize } : {}),
      ...gpuOptions(values),
      onLoadProgress: (p) => status.set(` loading ${basename(model)} ${Math.round(p * 100)}% `),
    });
  } finally {
    status.clear();
  }
  try {
    return message === undefined
      ? await interactiveChat(runtime, model, sampling, values.system)
      : await answer(runtime, message, sampling, values.system);
  } finally {
    await runtime.close();
  }
}

async function interactiveChat(
  runtime: Runtime,
  model: string,
  sampling: ChatSampling,
  system: string | undefined,
): Promise<number> {
  const session = new ChatSession({
    runtime,
    input: process.stdin,
    output: process.stdout,
    sampling,
    ...(system !== undefined ? { system } : {}),
  });
  const fallback =
    session.formatKind === "template"
      ? ""
      : ` (it has no chat template: ${session.formatKind === "chatml" ? "ChatML" : "a plain transcript"} instead)`;
  const banner = `Chatting with ${basename(model)}${fallback}. ${CHAT_COMMANDS}.`;
  process.stdout.write(process.stdout.isTTY ? `\x1b[2m${banner}\x1b[22m\n` : `${banner}\n`);
  // Without terminal mode (stdout redirected) Ctrl-C arrives as a signal: it does what the key does.
  const onSignal = () => session.interrupt();
  process.on("SIGINT", onSignal);
  try {
    await session.run();
  } finally {
    process.off("SIGINT", onSignal);
  }
  return 0;
}

/** One message from a pipe: the reply on stdout, the status on stderr. Ctrl-C stops it; a second one exits. */
async function answer(
  runtime: Runtime,
  message: string,
  sampling: ChatSampling,
  system: string | undefined,
): Promise<number> {
  const messages = [
    ...(system !== undefined ? [{ role: "system" as const, content: system }] : []),
    { role: "user" as const, content: message.replace(/\r?\n$/, "") },
  ];
  let stopping: (() => void) | undefined;
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) process.exit(signal === "SIGTERM" ? 143 : 130);
    interrupted = true;
    stopping?.();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  let result: Awaited<ReturnType<typeof streamReply>>;
  try {
    result = await streamReply(runtime, createChatFormatter(runtime.engine), messages, sampling, {
      write: (delta) => process.stdout.write(delta),
      started: (channel) => {
        stopping = () => channel.cancel("interrupted");
        if (interrupted) stopping();
      },
    });
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
  if (!result.text.endsWith("\n")) process.stdout.write("\n");
  const line = `[${replyStatus(result)}]`;
  process.stderr.write(process.stderr.isTTY ? `\x1b[2m${line}\x1b[22m\n` : `${line}\n`);
  return result.reason === "error" ? 1 : 0;
}
