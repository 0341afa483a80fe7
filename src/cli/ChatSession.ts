import { createInterface, type Interface } from "node:readline";
import type { StreamChannel } from "../channel/StreamChannel.ts";
import { SluiceError } from "../errors.ts";
import type { Runtime } from "../runtime/Runtime.ts";
import { type ChatFormatter, createChatFormatter } from "../server/chat.ts";
import type { ChatMessage } from "../server/schemas.ts";
import type { GenerationResult } from "../types.ts";

/** The sampling of every reply. */
export interface ChatSampling {
  /** Defaults to 0.7: the bundled chat model loops when greedy (see models/MODEL_CARD.md). */
  temperature?: number;
  /** Defaults to 40. */
  topK?: number;
  /** Defaults to 0.95. */
  topP?: number;
  /** Defaults to a random seed per reply. */
  seed?: number;
  /** Most tokens per reply. Defaults to the runtime's: the room left in the context, at most 256. */
  maxTokens?: number;
}

export interface ChatSessionOptions {
  /** Where replies come from; one free slot is all a session uses. */
  runtime: Runtime;
  /** Lines typed by the user. */
  input: NodeJS.ReadableStream;
  /** The conversation as the user sees it: echo, replies, status lines, prompts. */
  output: NodeJS.WritableStream;
  /**
   * readline's terminal mode: line editing, and Ctrl-C and Ctrl-D read as keys (Ctrl-C then never reaches the
   * process as SIGINT). Defaults to whether both streams are TTYs.
   */
  terminal?: boolean;
  /** Dim status lines (ANSI). Defaults to `terminal`. */
  color?: boolean;
  /** A system message opening every conversation. Defaults to none: the chat template's own default applies. */
  system?: string;
  sampling?: ChatSampling;
  /** Defaults to "> ". */
  prompt?: string;
}

export const CHAT_COMMANDS = "/reset starts a new conversation, /exit or Ctrl-D exits, Ctrl-C stops a reply";

/**
 * An interactive chat over one runtime: each line the user enters is a user message, the reply streams token by
 * token, and the history is rendered by the server's chat formatter. A turn's prompt is a prefix of the next
 * turn's, so the runtime's prompt cache reads only the new messages.
 *
 * Its states only move forward per turn: prompting → replying → prompting …, and once closed it stays closed.
 * `interrupt()` (Ctrl-C) cancels a reply in flight, clears a line being typed, and at an empty prompt closes the
 * session.
 */
export class ChatSession {
  readonly #runtime: Runtime;
  readonly #output: NodeJS.WritableStream;
  readonly #formatter: ChatFormatter;
  readonly #sampling: ChatSampling;
  readonly #system: ChatMessage[];
  readonly #color: boolean;
  readonly #rl: Interface;
  #history: ChatMessage[];
  /** The reply being generated, if any. */
  #channel: StreamChannel | undefined;
  #closed = false;

  /** Throws `SluiceError` when the model cannot render chats (see `createChatFormatter`). */
  constructor(options: ChatSessionOptions) {
    this.#runtime = options.runtime;
    this.#output = options.output;
    this.#formatter = createChatFormatter(options.runtime.engine);
    this.#sampling = options.sampling ?? {};
    this.#system = options.system === undefined ? [] : [{ role: "system", content: options.system }];
    this.#history = [...this.#system];
    const terminal =
      options.terminal ??
      ((options.input as { isTTY?: boolean }).isTTY === true &&
        (options.output as { isTTY?: boolean }).isTTY === true);
    this.#color = options.color ?? terminal;
    this.#rl = createInterface({
      input: options.input,
      output: options.output,
      terminal,
      prompt: options.prompt ?? "> ",
    });
    this.#rl.on("SIGINT", () => this.interrupt());
    // Ctrl-D at an empty prompt, or the input ending: a reply in flight stops with it.
    this.#rl.on("close", () => {
      this.#closed = true;
      this.#channel?.cancel("interrupted");
    });
  }

  /** How this model's chats are rendered: its own template, or a fallback (see server/chat.ts). */
  get formatKind(): ChatFormatter["kind"] {
    return this.#formatter.kind;
  }

  /** The conversation so far: the system message, then user and assistant turns. */
  get history(): readonly ChatMessage[] {
    return this.#history;
  }

  /** Runs the conversation; resolves once the user exits (`/exit`, Ctrl-D, Ctrl-C at an empty prompt). */
  async run(): Promise<void> {
    if (this.#closed) return;
    this.#rl.prompt();
    // Lines typed while a reply streams wait here for their turn.
    for await (const line of this.#rl) {
      const text = line.trim();
      if (text === "/exit") break;
      if (text === "/reset") {
        this.#history = [...this.#system];
        this.#status("new conversation");
      } else if (text.startsWith("/")) {
        this.#print(`Unknown command ${text.split(/\s/)[0]}: ${CHAT_COMMANDS}.\n`);
      } else if (text !== "") {
        await this.#turn(line);
      }
      if (this.#closed) break;
      this.#rl.prompt();
    }
    this.close();
  }

  /**
   * Ctrl-C: stops the reply in flight (its slot is free within one engine step) and returns to the prompt; at
   * the prompt, clears what is typed, or closes the session when nothing is.
   */
  interrupt(): void {
    if (this.#closed) return;
    if (this.#channel !== undefined) {
      this.#channel.cancel("interrupted");
      return;
    }
    if (this.#rl.line !== "" && this.#rl.terminal) {
      // Ctrl-E then Ctrl-U: readline empties the line and shows the prompt again.
      this.#rl.write(null, { ctrl: true, name: "e" });
      this.#rl.write(null, { ctrl: true, name: "u" });
      return;
    }
    this.#print("\n");
    this.close();
  }

  /** Ends the session: a reply in flight is cancelled, and `run()` resolves. Idempotent. */
  close(): void {
    this.#closed = true;
    this.#channel?.cancel("interrupted");
    this.#rl.close();
  }

  async #turn(text: string): Promise<void> {
    const messages: ChatMessage[] = [...this.#history, { role: "user", content: text }];
    let result: GenerationResult;
    try {
      result = await streamReply(this.#runtime, this.#formatter, messages, this.#sampling, {
        write: (delta) => this.#print(delta),
        started: (channel) => {
          this.#channel = channel;
        },
      });
    } catch (error) {
      // A refused request (the conversation outgrew the context): the turn is not taken.
      if (!(error instanceof SluiceError)) throw error;
      const hint = error.code === "prompt_too_long" ? " /reset starts a new conversation." : "";
      this.#print(`sluice: ${error.message} [${error.code}]${hint}\n`);
      return;
    } finally {
      this.#channel = undefined;
    }
    if (result.text !== "" && !result.text.endsWith("\n")) this.#print("\n");
    this.#status(replyStatus(result));
    // A reply stopped midway stays as far as it got, so the history matches what was shown; a failed one, or
    // one stopped before its first word, leaves no turn behind (the message can be sent again).
    const unanswered = result.reason === "error" || (result.reason === "cancelled" && result.text === "");
    if (!unanswered) this.#history = [...messages, { role: "assistant", content: result.text }];
  }

  #print(text: string): void {
    this.#output.write(text);
  }

  #status(text: string): void {
    this.#print(this.#color ? `\x1b[2m[${text}]\x1b[22m\n` : `[${text}]\n`);
  }
}

/**
 * Streams one reply to `messages`: rendered by `formatter`, generated by `runtime`, each delta handed to
 * `write` as it comes. `started` receives the channel before the first token (to cancel it). Resolves with
 * the result, whatever the finish; throws `SluiceError` when the runtime refuses the request (`prompt_too_long`
 * when the conversation outgrew the context) or the template refuses the messages.
 */
export async function streamReply(
  runtime: Runtime,
  formatter: ChatFormatter,
  messages: readonly ChatMessage[],
  sampling: ChatSampling,
  on: { write: (text: string) => void; started?: (channel: StreamChannel) => void },
): Promise<GenerationResult> {
  const prompt = formatter.format(messages);
  const channel = runtime.generate({
    temperature: 0.7,
    topK: 40,
    topP: 0.95,
    ...sampling,
    prompt: prompt.tokens,
    stop: prompt.stop,
    stopTokenIds: prompt.stopTokenIds,
  });
  on.started?.(channel);
  for await (const chunk of channel) if (chunk.text !== "") on.write(chunk.text);
  return channel.result;
}

/**
 * The status after a reply: "20 tokens · 85.1 tok/s · prompt 75 tokens, 60 cached", then how it ended unless it
 * ended by itself ("stopped", "cut at the token limit …", "failed: …").
 */
export function replyStatus(result: GenerationResult): string {
  const { usage, timings } = result;
  const parts = [`${usage.completionTokens} token${usage.completionTokens === 1 ? "" : "s"}`];
  // One token has no rate.
  if (usage.completionTokens > 1) parts.push(`${timings.tokensPerSecond.toFixed(1)} tok/s`);
  parts.push(`prompt ${usage.promptTokens} tokens, ${usage.cachedTokens} cached`);
  if (result.reason === "cancelled") parts.push("stopped");
  else if (result.reason === "length") parts.push("cut at the token limit (--max-tokens or the context)");
  else if (result.reason === "error") {
    parts.push(`failed: ${result.error?.message ?? "unknown error"} [${result.error?.code ?? "error"}]`);
  }
  return parts.join(" · ");
}
