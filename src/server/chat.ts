import type { ChatTurn } from "../engine/ChatTemplate.ts";
import type { Engine } from "../engine/Engine.ts";
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
 * Picks how chats are rendered: the engine's chat template (the GGUF's `tokenizer.chat_template`, or `template`
 * when given) when it has one that runs, else ChatML when the vocabulary has its control tokens, else a plain
 * `role: content` transcript.
 */
export function createChatFormatter(engine: Engine, template?: string): ChatFormatter {
  const bos = engine.info.vocabulary.bos;
  const addBos = engine.info.addBos && bos !== undefined;
  const withBos = (tokens: number[]) => (addBos && tokens[0] !== bos ? [bos!, ...tokens] : tokens);
  const chatTemplate = engine.chatTemplate(template);
  if (chatTemplate) {
    return {
      kind: "template",
      format: (messages) => chatTemplate.render(messages.map(toTurn)),
    };
  }
  const start = controlToken(engine, "<|im_start|>");
  const end = controlToken(engine, "<|im_end|>");
  if (start !== undefined && end !== undefined) return chatMlFormatter(engine, start, end, withBos);
  return plainFormatter(engine, withBos);
}

function text(message: ChatMessage): string {
  const { content } = message;
  if (content == null) return "";
  return typeof content === "string" ? content : content.map((part) => part.text as string).join("");
}

function toTurn(message: ChatMessage): ChatTurn {
  const role = message.role === "developer" ? "system" : message.role;
  return { role: role as ChatTurn["role"], content: text(message) };
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
