import { type ChatHistoryItem, JinjaTemplateChatWrapper, type LlamaModel } from "node-llama-cpp";

/** One chat turn as a template renders it. */
export interface ChatTurn {
  role: "system" | "user" | "assistant";
  content: string;
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
  /** Renders the turns followed by an open assistant turn. Throws when the template cannot render them. */
  render(turns: readonly ChatTurn[]): RenderedChat;
}

/**
 * The GGUF's `tokenizer.chat_template` (or `override`), through node-llama-cpp's Jinja runner; undefined when
 * there is none or it cannot run. Message text stays text: only the template's own markup may become control
 * tokens, so a user cannot forge a turn.
 */
export function llamaChatTemplate(
  model: LlamaModel,
  addBos: boolean,
  override?: string,
): ChatTemplate | undefined {
  const source = override ?? modelTemplate(model);
  if (source === undefined) return undefined;
  let wrapper: JinjaTemplateChatWrapper;
  try {
    wrapper = new JinjaTemplateChatWrapper({ template: source, tokenizer: model.tokenizer });
  } catch {
    return undefined;
  }
  const bos = model.tokens.bos as number | null;
  const template: ChatTemplate = {
    render(turns) {
      const chatHistory: ChatHistoryItem[] = turns.map((turn): ChatHistoryItem => {
        if (turn.role === "assistant") return { type: "model", response: [turn.content] };
        return { type: turn.role, text: turn.content };
      });
      chatHistory.push({ type: "model", response: [] });
      const state = wrapper.generateContextState({ chatHistory });
      const tokens = state.contextText.tokenize(model.tokenizer) as number[];
      if (addBos && bos !== null && tokens[0] !== bos) tokens.unshift(bos);
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
  // Some templates only fail when rendered: try one chat now rather than fail every request later.
  try {
    template.render([{ role: "user", content: "Hello" }]);
  } catch {
    return undefined;
  }
  return template;
}

function modelTemplate(model: LlamaModel): string | undefined {
  const template = (model.fileInfo.metadata as { tokenizer?: { chat_template?: unknown } }).tokenizer
    ?.chat_template;
  return typeof template === "string" && template.length > 0 ? template : undefined;
}
