import { parse, Template, tokenize } from "@huggingface/jinja";
import { LRUCache } from "lru-cache";
import type { LlamaModel } from "node-llama-cpp";
import { SluiceError } from "../errors.ts";
import { Markers, type Piece } from "./chatMarkers.ts";
import {
  argumentKeys,
  type ChatTurn,
  type TemplateMessage,
  type ToolDefinition,
  templateMessages,
  templateTool,
} from "./chatTurns.ts";

export type { ChatToolCall, ChatTurn, ToolDefinition } from "./chatTurns.ts";

/** How `ChatTemplate.render` renders the turns. */
export interface RenderOptions {
  /** Tools offered to the model, passed to the template as `tools` (OpenAI's shape). Defaults to none. */
  tools?: readonly ToolDefinition[];
  /**
   * When the last turn is the assistant's, continue it (llama-server's assistant prefill, vLLM's
   * `continue_final_message`): the rendering ends right after its text, without the template's end of turn,
   * so generation continues the message. Ignored when the last turn is not the assistant's. Defaults to false:
   * a new assistant turn is opened after the last one, whatever its role.
   */
  continueFinal?: boolean;
}

/** A chat rendered for generation: prompt token ids (BOS included when the model wants it) and turn ends. */
export interface RenderedChat {
  tokens: number[];
  /** Single control tokens that end the assistant's turn. */
  stopTokenIds: number[];
  /** Text that ends the assistant's turn when it is not one token. */
  stop: string[];
}

/** A model's chat template. */
export interface ChatTemplate {
  /** The Jinja source, when the template is one. */
  readonly source?: string;
  /**
   * Renders the turns followed by an open assistant turn (or, with `continueFinal`, the last assistant turn left
   * open). Throws `SluiceError` `invalid_request` when the template refuses the turns (its `raise_exception`,
   * or any error it meets), when a tool call id or name carries control-token text, or when the final
   * assistant turn to continue carries tool calls.
   */
  render(turns: readonly ChatTurn[], options?: RenderOptions): RenderedChat;
}

/** What a template needs of the model: its tokenizer and its special tokens. */
export interface ChatTokenizer {
  /** Text to token ids. `special`: parse special-token text (`<|im_start|>`) into control tokens. No BOS added. */
  tokenize(text: string, options: { special: boolean }): number[];
  /** The BOS token id, put in front of the rendering when `addBos` and the template did not write it. */
  bos: number | undefined;
  addBos: boolean;
  /** The text of BOS and EOS, passed to the template as `bos_token` and `eos_token`. */
  bosToken: string;
  eosToken: string;
  /** End-of-generation token ids (EOS, EOT and the like): they end the assistant's turn too. */
  eogIds: readonly number[];
}

/**
 * A Jinja chat template (HF's `tokenizer.chat_template`) rendered with `@huggingface/jinja`, with the variables
 * llama.cpp and HF pass: `messages` (OpenAI's shape: `role`, `content`, `tool_calls`, `tool_call_id`, `name`),
 * `tools` (OpenAI's `[{type: "function", function}]`, or none), `add_generation_prompt`, `bos_token`,
 * `eos_token` and `raise_exception`.
 *
 * Message text stays text: the template is rendered with unique markers in place of message contents (and of
 * the string values inside tool-call arguments), its markup tokenized with special tokens parsed and the text in
 * place of each marker tokenized as plain text, so `<|im_start|>` written in a message cannot forge a turn.
 * The markers are checked against a rendering with the real text, which also picks what the template made of
 * each text (as it is, trimmed, or JSON-quoted by `tojson`); a template that changes message text in any other
 * way fails the request with `invalid_request`. Tool definitions, call ids, names and argument keys are the
 * caller's, not the user's: they are markup, refused when they contain control-token text.
 *
 * Whitespace control is HF's and llama.cpp's (`trim_blocks`, `lstrip_blocks`), unless the template was written
 * for Jinja's defaults: when HF's way a generation prompt is not the start of the finished assistant turn and
 * Jinja's defaults make it so, the defaults are used.
 *
 * The turn ends on the control token (or text) the template writes after an assistant message, and on the
 * model's end-of-generation tokens. Throws `SluiceError` `invalid_request` when the source does not parse.
 */
export function jinjaChatTemplate(source: string, model: ChatTokenizer): ChatTemplate {
  const tokenizer = memoized(model);
  let jinja = new JinjaChat(compile(source, true), tokenizer);
  if (!jinja.extendsGenerationPrompt()) {
    // Written for Jinja's own defaults (as the bundled chat model's template is): rendered HF's way it would
    // close generation prompts differently from finished turns, unlike the transcripts the model learned from.
    const plain = new JinjaChat(compile(source, false), tokenizer);
    if (plain.extendsGenerationPrompt()) jinja = plain;
  }
  const ends = turnEnds(jinja, tokenizer);
  return {
    source,
    render(turns, options) {
      return { tokens: jinja.render(turns, options), stopTokenIds: [...ends.ids], stop: [...ends.text] };
    },
  };
}

/**
 * Characters of rendered text whose token ids a template keeps (`memoized`): 2 MiB of text, a few hundred
 * conversations' worth of messages.
 */
const TOKENIZED_CHARS = 1 << 21;

/**
 * The tokenizer with the token ids of the texts it tokenized last (LRU, `TOKENIZED_CHARS` in all). A chat sends
 * its whole history with every turn, and a template is tokenized piece by piece (each message's text, the markup
 * between them), so from the second turn on all but the newest messages are lookups: tokenizing a 750-token
 * history took 1.1 ms of the 2 ms a cached turn spent before reaching the runtime (kjv-chat, 1 thread). The ids
 * are those of `tokenize` itself (a pure function of the text and `special`); callers get their own copies.
 */
function memoized(tokenizer: ChatTokenizer): ChatTokenizer {
  const cache = new LRUCache<string, readonly number[]>({
    maxSize: TOKENIZED_CHARS,
    sizeCalculation: (_ids, key) => key.length,
  });
  return {
    ...tokenizer,
    tokenize(text, options) {
      // The first character says how `special` was set: the same text tokenizes differently either way.
      const key = (options.special ? "s" : "p") + text;
      let ids = cache.get(key);
      if (ids === undefined) {
        ids = tokenizer.tokenize(text, options);
        if (key.length <= TOKENIZED_CHARS) cache.set(key, ids);
      }
      return [...ids];
    },
  };
}

/** The template compiled with HF's whitespace control (`trim_blocks`, `lstrip_blocks`) or Jinja's defaults. */
function compile(source: string, hf: boolean): Template {
  const template = new Template("");
  try {
    template.parsed = parse(tokenize(source, { trim_blocks: hf, lstrip_blocks: hf }));
  } catch (cause) {
    const reason = (cause as Error).message;
    throw new SluiceError("invalid_request", `The chat template does not parse: ${reason}`, { cause });
  }
  return template;
}

/**
 * The GGUF's `tokenizer.chat_template` (or `override`) through `jinjaChatTemplate`; undefined when there is
 * none or it cannot render a one-message chat.
 */
export function llamaChatTemplate(
  model: LlamaModel,
  addBos: boolean,
  override?: string,
): ChatTemplate | undefined {
  const source = override ?? modelTemplate(model);
  if (source === undefined) return undefined;
  try {
    const template = jinjaChatTemplate(source, llamaTokenizer(model, addBos));
    // Some templates only fail when rendered: try one chat now rather than fail every request later.
    template.render([{ role: "user", content: "Hello" }]);
    return template;
  } catch {
    return undefined;
  }
}

class JinjaChat {
  readonly #template: Template;
  readonly #tokenizer: ChatTokenizer;

  constructor(template: Template, tokenizer: ChatTokenizer) {
    this.#template = template;
    this.#tokenizer = tokenizer;
  }

  render(turns: readonly ChatTurn[], options: RenderOptions = {}): number[] {
    const tools = options.tools ?? [];
    this.#checkMarkup(turns, tools);
    const last = turns.at(-1);
    if (options.continueFinal !== true || last?.role !== "assistant") {
      return this.#tokens(this.pieces(turns, tools, true).pieces);
    }
    if ((last.toolCalls?.length ?? 0) > 0) {
      throw new SluiceError(
        "invalid_request",
        "The final assistant message calls tools, so it cannot be continued: drop its tool_calls, or add the tool results after it.",
        { param: "messages" },
      );
    }
    // Nothing to continue: the assistant's turn opens as a new one would (llama-server's prefill).
    if (last.content === "") return this.#tokens(this.pieces(turns.slice(0, -1), tools, true).pieces);
    const { pieces, markers } = this.pieces(turns, tools, false);
    const final = markers.indexOf(last.content);
    const at = pieces.findLastIndex((piece) => piece.marker === final);
    if (final === undefined || at === -1) {
      throw new SluiceError(
        "invalid_request",
        "The chat template does not render the final assistant message's text, so it cannot be continued: end the messages with a user message.",
        { param: "messages" },
      );
    }
    // The prefill continues as the client wrote it, whatever the template does to a finished message's text.
    return this.#tokens([...pieces.slice(0, at), { text: last.content, literal: true, marker: final }]);
  }

  /**
   * Whether a generation prompt is the start of the finished turn ([user] with the generation prompt is a
   * prefix of [user, assistant]): what the prompt cache and the model's training transcripts rely on.
   */
  extendsGenerationPrompt(): boolean {
    try {
      const open = this.#run(templateMessages([{ role: "user", content: "Hi" }], String), [], true);
      const turns: ChatTurn[] = [
        { role: "user", content: "Hi" },
        { role: "assistant", content: "Hello" },
      ];
      return this.#run(templateMessages(turns, String), [], false).startsWith(open);
    } catch {
      return false;
    }
  }

  /** The rendering as markup and message text, checked against the rendering with the real text. */
  pieces(
    turns: readonly ChatTurn[],
    tools: readonly ToolDefinition[],
    addGenerationPrompt: boolean,
  ): { pieces: Piece[]; markers: Markers } {
    const markers = new Markers();
    const marked = this.#run(
      templateMessages(turns, (text) => markers.mark(text)),
      tools,
      addGenerationPrompt,
    );
    const real = this.#run(
      templateMessages(turns, (text) => text),
      tools,
      addGenerationPrompt,
    );
    const pieces = markers.align(marked, real);
    if (pieces === undefined) {
      throw new SluiceError(
        "invalid_request",
        "The chat template changes message text in a way that cannot be kept apart from its markup (it does more than trim or JSON-quote it), so it cannot render these messages safely; serve the model with a chat template that writes message text as it is.",
        { param: "messages" },
      );
    }
    return { pieces, markers };
  }

  #run(messages: TemplateMessage[], tools: readonly ToolDefinition[], addGenerationPrompt: boolean): string {
    try {
      return this.#template.render({
        messages,
        tools: tools.length > 0 ? tools.map(templateTool) : null,
        add_generation_prompt: addGenerationPrompt,
        bos_token: this.#tokenizer.bosToken,
        eos_token: this.#tokenizer.eosToken,
      });
    } catch (cause) {
      // `raise_exception(message)` (a global of @huggingface/jinja) lands here with the template's own message.
      throw new SluiceError(
        "invalid_request",
        `The model's chat template refused these messages: ${(cause as Error).message}`,
        { param: "messages", cause },
      );
    }
  }

  #tokens(pieces: readonly Piece[]): number[] {
    const tokenizer = this.#tokenizer;
    const tokens: number[] = [];
    for (const piece of pieces) {
      if (piece.text === "") continue;
      // Markup may hold control tokens; message text never does.
      for (const id of tokenizer.tokenize(piece.text, { special: !piece.literal })) tokens.push(id);
    }
    if (tokenizer.addBos && tokenizer.bos !== undefined && tokens[0] !== tokenizer.bos) {
      tokens.unshift(tokenizer.bos);
    }
    return tokens;
  }

  /** Ids, names and tool definitions are rendered as markup: refuse any that would parse into control tokens. */
  #checkMarkup(turns: readonly ChatTurn[], tools: readonly ToolDefinition[]): void {
    turns.forEach((turn, i) => {
      this.#plain(turn.name, `messages[${i}].name`);
      this.#plain(turn.toolCallId, `messages[${i}].tool_call_id`);
      turn.toolCalls?.forEach((call, j) => {
        this.#plain(call.id, `messages[${i}].tool_calls[${j}].id`);
        this.#plain(call.name, `messages[${i}].tool_calls[${j}].function.name`);
        for (const key of argumentKeys(call.arguments)) {
          this.#plain(key, `messages[${i}].tool_calls[${j}].function.arguments`);
        }
      });
    });
    tools.forEach((tool, i) => {
      this.#plain(JSON.stringify(templateTool(tool)), `tools[${i}]`);
    });
  }

  #plain(text: string | undefined, param: string): void {
    if (text === undefined || text === "") return;
    const special = this.#tokenizer.tokenize(text, { special: true });
    const plain = this.#tokenizer.tokenize(text, { special: false });
    if (special.length === plain.length && special.every((id, i) => id === plain[i])) return;
    throw new SluiceError(
      "invalid_request",
      `${param} contains the text of a control token of the model (such as <|im_start|>); remove it.`,
      { param },
    );
  }
}

/**
 * What ends the assistant's turn: what the template writes right after an assistant message (its first token
 * when that is a control token, else the text up to the next message), and the end-of-generation tokens.
 */
function turnEnds(jinja: JinjaChat, tokenizer: ChatTokenizer): { ids: number[]; text: string[] } {
  const ids = new Set<number>();
  const text: string[] = [];
  const reply = "Hello";
  const probes: ChatTurn[][] = [
    [
      { role: "user", content: "Hi" },
      { role: "assistant", content: reply },
      { role: "user", content: "Bye" },
    ],
    [
      { role: "user", content: "Hi" },
      { role: "assistant", content: reply },
    ],
  ];
  for (const turns of probes) {
    let suffix: string;
    try {
      const { pieces, markers } = jinja.pieces(turns, [], false);
      const marker = markers.indexOf(reply);
      const at = pieces.findLastIndex((piece) => piece.marker === marker);
      if (at === -1) continue;
      const after = pieces.slice(at + 1);
      const next = after.findIndex((piece) => piece.literal);
      suffix = (next === -1 ? after : after.slice(0, next)).map((piece) => piece.text).join("");
    } catch {
      continue;
    }
    const end = suffix.trim();
    if (end !== "") {
      const special = tokenizer.tokenize(end, { special: true });
      const plain = tokenizer.tokenize(end, { special: false });
      if (special[0] !== undefined && special[0] !== plain[0]) ids.add(special[0]);
      else text.push(end);
    }
    break;
  }
  for (const id of tokenizer.eogIds) ids.add(id);
  return { ids: [...ids], text };
}

/** A loaded model's tokenizer; its end-of-generation tokens are EOS, EOT and control tokens llama.cpp ends on. */
function llamaTokenizer(model: LlamaModel, addBos: boolean): ChatTokenizer {
  const eog = new Set<number>();
  for (const id of [model.tokens.eos, model.tokens.eot]) if (id !== null) eog.add(id);
  const types = (model.fileInfo.metadata as { tokenizer?: { ggml?: { token_type?: unknown } } }).tokenizer
    ?.ggml?.token_type;
  if (Array.isArray(types)) {
    // Control tokens only (type 3): asking llama.cpp about every id of a large vocabulary would take a while.
    types.forEach((type, id) => {
      if (type === 3 && model.isEogToken(id as never)) eog.add(id);
    });
  }
  return {
    tokenize: (text, { special }) => model.tokenize(text, special) as number[],
    bos: (model.tokens.bos as number | null) ?? undefined,
    addBos,
    bosToken: model.tokens.bosString ?? "",
    eosToken: model.tokens.eosString ?? "",
    eogIds: [...eog],
  };
}

function modelTemplate(model: LlamaModel): string | undefined {
  const template = (model.fileInfo.metadata as { tokenizer?: { chat_template?: unknown } }).tokenizer
    ?.chat_template;
  return typeof template === "string" && template.length > 0 ? template : undefined;
}
