import { postChat } from "./api.js";
import { Generation, oncePerFrame, PHASE_TEXT, setText } from "./generation.js";

/**
 * @typedef {{ body: Record<string, unknown> }} Settings
 * @typedef {{ index: number, name: string, arguments: string }} ToolCall
 *
 * One message of the conversation. `sent`: whether it goes back to the server with the next message (a reply
 * that failed, or was stopped before its first word, takes its question out with it).
 * @typedef {{
 *   role: "user" | "assistant",
 *   content: string,
 *   toolCalls: ToolCall[],
 *   sent: boolean,
 *   element: HTMLElement,
 *   text: Text,
 *   meta?: HTMLElement,
 *   calls?: HTMLElement,
 * }} Turn
 *
 * One reply being generated (see Generation): the assistant's turn it fills and the question it answers.
 * @typedef {Generation & {
 *   turn: Turn,
 *   question: Turn,
 *   usage?: { prompt_tokens: number, completion_tokens: number,
 *     prompt_tokens_details?: { cached_tokens?: number } },
 * }} Reply
 */

/**
 * The playground's chat mode: a conversation (system prompt, user and assistant bubbles) whose replies stream
 * from POST /v1/chat/completions. Each reply shows its tokens/s and how many prompt tokens the server's prompt
 * cache held (the earlier turns); Stop cancels it mid-stream.
 */
export class Chat {
  /** @type {Turn[]} */ #turns = [];
  /** @type {Reply | undefined} */ #reply;
  /** @type {() => Settings} */ #settings;
  #scheduleRender = oncePerFrame(() => this.#render());

  /**
   * @param {{ log: HTMLElement, input: HTMLTextAreaElement, system: HTMLTextAreaElement,
   *   send: HTMLButtonElement, stop: HTMLButtonElement, clear: HTMLButtonElement, status: HTMLElement,
   *   error: HTMLElement }} elements
   * @param {() => Settings} settings the shared controls, read when a message is sent
   */
  constructor(elements, settings) {
    this.elements = elements;
    this.#settings = settings;
    elements.send.addEventListener("click", () => void this.send());
    elements.stop.addEventListener("click", () => void this.stop());
    elements.clear.addEventListener("click", () => this.clear());
    elements.input.addEventListener("keydown", (event) => {
      // Enter sends, Shift+Enter starts a new line.
      if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
      event.preventDefault();
      void this.send();
    });
    this.#render();
  }

  /** Whether a reply is under way (until its stream has ended). */
  get busy() {
    return this.#reply !== undefined && this.#reply.phase !== "done";
  }

  /** The server's id for the reply being generated, for the slot view. */
  get requestId() {
    return this.busy ? this.#reply?.id : undefined;
  }

  /** Sends the typed message and streams the reply. Does nothing while a reply runs or with nothing typed. */
  async send() {
    const { input } = this.elements;
    if (this.busy || input.value.trim() === "") return;
    const question = this.#add("user", input.value);
    input.value = "";
    const messages = this.#messages();
    const turn = this.#add("assistant", "");
    /** @type {Reply} */
    const reply = Object.assign(new Generation(() => this.#render()), { turn, question });
    this.#reply = reply;
    this.elements.error.hidden = true;
    this.#render();
    await reply.stream(
      (signal) => postChat({ ...this.#settings().body, messages }, signal),
      (event) => this.#onEvent(reply, event),
    );
    this.#finish(reply);
  }

  /** Stops the reply (see Generation.stop: through the server, so the numbers still come). */
  async stop() {
    await this.#reply?.stop();
  }

  /** A new conversation: stops a reply under way and empties the log. */
  clear() {
    void this.stop();
    this.#reply = undefined;
    this.#turns = [];
    this.elements.log.replaceChildren();
    this.elements.error.hidden = true;
    this.#render();
  }

  /** What goes to the server: the system prompt, then every message still part of the conversation. */
  #messages() {
    const system = this.elements.system.value;
    /** @type {Record<string, unknown>[]} */
    const messages = system.trim() === "" ? [] : [{ role: "system", content: system }];
    for (const turn of this.#turns) {
      if (!turn.sent) continue;
      if (turn.toolCalls.length === 0) {
        messages.push({ role: turn.role, content: turn.content });
        continue;
      }
      messages.push({
        role: turn.role,
        content: turn.content === "" ? null : turn.content,
        tool_calls: turn.toolCalls.map((call) => ({
          id: `call_${call.index}`,
          type: "function",
          function: { name: call.name, arguments: call.arguments },
        })),
      });
    }
    return messages;
  }

  /**
   * @param {"user" | "assistant"} role
   * @param {string} content
   * @returns {Turn}
   */
  #add(role, content) {
    const element = document.createElement("li");
    element.className = "turn";
    element.dataset.role = role;
    const who = Object.assign(document.createElement("p"), {
      className: "who",
      textContent: role === "user" ? "You" : "Assistant",
    });
    const bubble = Object.assign(document.createElement("div"), { className: "bubble" });
    const text = bubble.appendChild(document.createTextNode(content));
    element.append(who, bubble);
    /** @type {Turn} */
    const turn = { role, content, toolCalls: [], sent: role === "user", element, text };
    if (role === "assistant") {
      turn.meta = element.appendChild(Object.assign(document.createElement("p"), { className: "meta" }));
      element.dataset.phase = "sending";
    }
    this.#turns.push(turn);
    this.elements.log.append(element);
    this.#scroll();
    return turn;
  }

  /**
   * @param {Reply} reply
   * @param {any} event one parsed `data:` event
   */
  #onEvent(reply, event) {
    if (this.#reply !== reply) return;
    reply.id ??= event.id;
    if (event.error !== undefined) {
      reply.error = event.error?.message ?? "The reply failed.";
      return;
    }
    const choice = event.choices?.[0];
    const completionTokens = event.usage?.completion_tokens;
    const delta = choice?.delta ?? {};
    if (typeof delta.content === "string" && delta.content !== "") reply.chunk(completionTokens);
    else reply.count(completionTokens);
    // The final usage chunk (no choices) has the prompt's figures; the others count completion tokens only.
    if (choice === undefined) {
      if (event.usage) reply.usage = event.usage;
      return;
    }
    const { turn } = reply;
    if (typeof delta.content === "string" && delta.content !== "") {
      turn.content += delta.content;
      turn.text.appendData(delta.content);
      reply.advance("streaming");
      this.#scheduleRender();
    }
    if (Array.isArray(delta.tool_calls)) {
      for (const part of delta.tool_calls) this.#toolCall(turn, part);
      reply.advance("streaming");
    }
    if (choice.finish_reason) {
      reply.finishReason = choice.finish_reason;
      reply.sluice = event.sluice;
    }
  }

  /**
   * Adds a fragment of a tool call (OpenAI's `delta.tool_calls` entry: the name once, the arguments in pieces)
   * and shows the calls as a code block.
   * @param {Turn} turn
   * @param {any} part
   */
  #toolCall(turn, part) {
    const index = typeof part.index === "number" ? part.index : turn.toolCalls.length;
    let call = turn.toolCalls.find((c) => c.index === index);
    if (call === undefined) {
      call = { index, name: "", arguments: "" };
      turn.toolCalls.push(call);
    }
    call.name += part.function?.name ?? "";
    call.arguments += part.function?.arguments ?? "";
    if (turn.calls === undefined) {
      const pre = document.createElement("pre");
      pre.className = "tool-calls";
      pre.setAttribute("aria-label", "Tool calls");
      turn.calls = pre.appendChild(document.createElement("code"));
      turn.element.querySelector(".bubble")?.append(pre);
    }
    turn.calls.textContent = turn.toolCalls.map((c) => `${c.name}(${c.arguments})`).join("\n");
    this.#scroll();
  }

  /** @param {Reply} reply */
  #finish(reply) {
    if (this.#reply !== reply) return;
    reply.phase = "done";
    const { turn, question } = reply;
    // A reply stopped midway stays as far as it got, so the conversation is what was shown; one that failed or
    // said nothing leaves its question out of the next request too.
    const said = turn.content !== "" || turn.toolCalls.length > 0;
    turn.sent = said && reply.error === undefined;
    question.sent = turn.sent;
    for (const t of [turn, question]) t.element.classList.toggle("unsent", !t.sent);
    if (!turn.sent) question.element.title = "Not part of the conversation: it got no reply.";
    this.#render();
    this.elements.input.focus();
  }

  #render() {
    const reply = this.#reply;
    const busy = this.busy;
    const { send, stop, status, error } = this.elements;
    send.disabled = busy;
    stop.disabled = !busy || reply?.phase === "stopping";
    setText(status, reply === undefined ? "idle" : statusText(reply));
    if (reply === undefined) return;
    const { turn } = reply;
    turn.element.dataset.phase = reply.phase;
    if (turn.meta !== undefined) setText(turn.meta, metaText(reply));
    if (reply.phase === "done") {
      const usage = reply.usage;
      turn.element.dataset.finish = reply.finishReason ?? (reply.aborted ? "cancelled" : "");
      turn.element.dataset.tokens = String(reply.tokens);
      if (usage !== undefined) {
        turn.element.dataset.cached = String(usage.prompt_tokens_details?.cached_tokens ?? 0);
      }
      if (reply.error !== undefined) {
        error.textContent = reply.error;
        error.hidden = false;
      }
    }
    this.#scroll();
  }

  /** Keeps the newest message in view, unless the reader has scrolled up to read. */
  #scroll() {
    const log = this.elements.log;
    if (log.scrollHeight - log.scrollTop - log.clientHeight < 80) log.scrollTop = log.scrollHeight;
  }
}

/** @param {Reply} reply */
function statusText(reply) {
  if (reply.phase !== "done") return PHASE_TEXT[reply.phase];
  if (reply.error !== undefined) return "error";
  return reply.finishReason === "cancelled" || reply.aborted ? "stopped" : "done";
}

/**
 * The line under a reply: live while it streams; once done, the server's figures, e.g.
 * "20 tokens · 85 tok/s · 2.3 tok/step · prompt 75 tokens, 60 cached · stopped in 1 step" (tok/step only
 * above 1: several tokens per step, as speculative decoding gives).
 * @param {Reply} reply
 */
function metaText(reply) {
  const tokens = reply.tokens;
  const live = reply.liveRate;
  if (reply.phase !== "done") {
    const rate = live === undefined ? "" : ` · ${live.toFixed(0)} tok/s`;
    const perStep = perStepText(reply);
    const step = perStep === undefined ? "" : ` · ${perStep}`;
    return reply.chunks === 0 ? statusText(reply) : `${tokens} tokens${rate}${step} · ${statusText(reply)}`;
  }
  const parts = [`${tokens} token${tokens === 1 ? "" : "s"}`];
  const rate = tokens > 1 ? (reply.sluice?.timings.tokensPerSecond ?? live) : undefined;
  if (rate !== undefined && Number.isFinite(rate)) parts.push(`${rate.toFixed(0)} tok/s`);
  const perStep = perStepText(reply);
  if (perStep !== undefined) parts.push(perStep);
  const usage = reply.usage;
  if (usage !== undefined) {
    parts.push(
      `prompt ${usage.prompt_tokens} tokens, ${usage.prompt_tokens_details?.cached_tokens ?? 0} cached`,
    );
  }
  const cancel = reply.sluice?.cancel;
  if (reply.error !== undefined) parts.push("failed");
  else if (reply.finishReason === "cancelled") {
    parts.push(
      cancel === undefined
        ? "stopped"
        : `stopped, slot free in ${cancel.stepsToFree} step${cancel.stepsToFree === 1 ? "" : "s"}`,
    );
  } else if (reply.aborted) parts.push("stopped (connection closed)");
  else if (reply.finishReason === "length") parts.push("cut at max tokens");
  else if (reply.finishReason === "tool_calls") parts.push("tool calls");
  return parts.join(" · ");
}

/**
 * "2.3 tok/step" when the reply's chunks carry more than one token on average (the server counts them),
 * else undefined.
 * @param {Reply} reply
 * @returns {string | undefined}
 */
function perStepText(reply) {
  const perStep = reply.tokensPerStep?.toFixed(1);
  // Compared once rounded, so that 1.04 never shows as "1.0 tok/step".
  return perStep !== undefined && Number(perStep) > 1 ? `${perStep} tok/step` : undefined;
}
