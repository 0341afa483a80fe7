import { type ChatHistoryItem, JinjaTemplateChatWrapper, type LlamaModel } from "node-llama-cpp";
import type { Engine } from "../engine/Engine.ts";
import { LlamaEngine } from "../engine/LlamaEngine.ts";
import type { ChatMessage } from "./schemas.ts";

/** A chat rendered for the runtime: token ids, plus what ends the assistant's turn. */
export interface ChatPrompt {
  tokens: number[];
  stopTokenIds: number[];
  stop: string[];
}

export interface ChatFormatter {
  /** `template`: the model's Jinja chat template; `chatml` and `plain`: the fallbacks (see README.md). */
  readonly kind: "template" | "chatml" | "plain";
  format(messages: readonly ChatMessage[]): ChatPrompt;
}

/**
 * Picks how chats are rendered: the GGUF's `tokenizer.chat_template` when there is one (or `template` when
 * given), else ChatML when the vocabulary has its control tokens, else a plain `role: content` transcript.
 */
export function createChatFormatter(engine: Engine, template?: string): ChatFormatter {
  const model = engine instanceof LlamaEngine ? engine.llamaModel : undefined;
  const bos = engine.info.vocabulary.bos;
  const addBos =
    ((engine as { addBos?: boolean }).addBos ?? engine.info.vocabulary.addBos) && bos !== undefined;
  const withBos = (tokens: number[]) => (addBos && tokens[0] !== bos ? [bos!, ...tokens] : tokens);
  const source = template ?? (model ? modelTemplate(model) : undefined);
  if (model && source) {
    const wrapper = tryJinja(model, source);
    if (wrapper) {
      const formatter = templateFormatter(model, wrapper, withBos);
      // Some templates only fail when rendered: try one chat now rather than fail every request later.
      try {
        formatter.format([{ role: "user", content: "Hello" }]);
        return formatter;
      } catch {}
    }
  }
  const start = controlToken(engine, "<|im_start|>");
  const end = controlToken(engine, "<|im_end|>");
  if (start !== undefined && end !== undefined) return chatMlFormatter(engine, start, end, withBos);
  return plainFormatter(engine, withBos);
}

function modelTemplate(model: LlamaModel): string | undefined {
  const template = (model.fileInfo.metadata as { tokenizer?: { chat_template?: unknown } }).tokenizer
    ?.chat_template;
  return typeof template === "string" && template.length > 0 ? template : undefined;
}

function tryJinja(model: LlamaModel, template: string): JinjaTemplateChatWrapper | undefined {
  try {
    return new JinjaTemplateChatWrapper({ template, tokenizer: model.tokenizer });
  } catch {
    // A template node-llama-cpp cannot run falls back to the built-in formats rather than failing every chat.
    return undefined;
  }
}

function text(message: ChatMessage): string {
  const { content } = message;
  return typeof content === "string" ? content : content.map((part) => part.text as string).join("");
}

function templateFormatter(
  model: LlamaModel,
  wrapper: JinjaTemplateChatWrapper,
  withBos: (tokens: number[]) => number[],
): ChatFormatter {
  return {
    kind: "template",
    format(messages) {
      const chatHistory: ChatHistoryItem[] = messages.map((m): ChatHistoryItem => {
        if (m.role === "assistant") return { type: "model", response: [text(m)] };
        return { type: m.role === "user" ? "user" : "system", text: text(m) };
      });
      chatHistory.push({ type: "model", response: [] });
      const state = wrapper.generateContextState({ chatHistory });
      // LlamaText keeps message text apart from template markup: only the markup may become control tokens.
      const tokens = withBos(state.contextText.tokenize(model.tokenizer) as number[]);
      const stopTokenIds: number[] = [];
      const stop: string[] = [];
      for (const trigger of state.stopGenerationTriggers) {
        const ids = trigger.tokenize(model.tokenizer) as number[];
        const first = ids[0];
        if (first === undefined) continue;
        if (ids.length === 1 || model.isSpecialToken(first as never)) stopTokenIds.push(first);
        else stop.push(trigger.toString());
      }
      return { tokens, stopTokenIds, stop };
    },
  };
}

/** Id of a control token, when the vocabulary has it as one token. */
function controlToken(engine: Engine, marker: string): number | undefined {
  try {
    const ids = engine.tokenize(marker, { special: true });
    return ids.length === 1 && engine.info.vocabulary.isSpecial(ids[0]!) ? ids[0] : undefined;
  } catch {
    return undefined;
  }
}

/** Role names as the fallbacks write them (`developer` is OpenAI's newer name for `system`). */
function roleName(message: ChatMessage): string {
  return message.role === "developer" ? "system" : message.role;
}

function chatMlFormatter(
  engine: Engine,
  start: number,
  end: number,
  withBos: (tokens: number[]) => number[],
): ChatFormatter {
  const plain = (s: string) => engine.tokenize(s, { special: false });
  const newline = plain("\n");
  return {
    kind: "chatml",
    format(messages) {
      const tokens: number[] = [];
      for (const message of messages) {
        // Markers are the only control tokens: message text is tokenized as text, so a user cannot forge a turn.
        tokens.push(start, ...plain(`${roleName(message)}\n`));
        const body = text(message);
        if (body.length > 0) tokens.push(...plain(body));
        tokens.push(end, ...newline);
      }
      tokens.push(start, ...plain("assistant\n"));
      return { tokens: withBos(tokens), stopTokenIds: [end], stop: [] };
    },
  };
}

function plainFormatter(engine: Engine, withBos: (tokens: number[]) => number[]): ChatFormatter {
  return {
    kind: "plain",
    format(messages) {
      const transcript = messages.map((m) => `${roleName(m)}: ${text(m)}\n`).join("");
      const tokens = engine.tokenize(`${transcript}assistant:`, { special: false });
      return { tokens: withBos(tokens), stopTokenIds: [], stop: ["\nuser:", "\nsystem:"] };
    },
  };
}
