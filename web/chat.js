import { deleteRequest, errorOf, postChat } from "./api.js";
import { readSse } from "./sse.js";

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
 * One reply being generated. Its phase only moves forward:
 * sending → waiting (headers in, no token yet) → streaming → done; "stopping" may come in at any point
 * before done.
 * @typedef {{
 *   phase: "sending" | "waiting" | "streaming" | "stopping" | "done",
 *   controller: AbortController,
 *   turn: Turn,
 *   question: Turn,
 *   id?: string,
 *   startedAt: number,
 *   firstAt?: number,
 *   lastAt?: number,
 *   chunks: number,
 *   finishReason?: string,
 *   sluice?: { reason: string, timings: { tokensPerSecond: number, firstTokenMs: number },
 *     cancel?: { stepsToFree: number, msToFree: number } },
 *   usage?: { prompt_tokens: number, completion_tokens: number,
 *     prompt_tokens_details?: { cached_tokens?: number } },
 *   aborted: boolean,
 *   error?: string,
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
  #renderQueued = false;

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
    /** @type {Reply} */
    const reply = {
      phase: "sending",
      controller: new AbortController(),
      turn: this.#add("assistant", ""),
      question,
      startedAt: performance.now(),
      chunks: 0,
      aborted: false,
    };
    this.#reply = reply;
    this.elements.error.hidden = true;
    this.#render();
    try {
      const { body } = this.#settings();
      const response = await postChat({ ...body, messages }, reply.controller.signal);
      if (!response.ok || response.body === null) throw new Error(await errorOf(response));
      reply.id = response.headers.get("X-Request-Id") ?? undefined;
      this.#advance(reply, "waiting");
      for await (const data of readSse(response.body)) {
        if (data === "[DONE]") break;
        this.#onEvent(reply, JSON.parse(data));
      }
      if (reply.finishReason === undefined && reply.error === undefined) {
        reply.error = "The stream ended without a finish reason.";
      }
    } catch (error) {
      // Our own abort (Stop's fallback) is a cancel, not a failure.
      if (!reply.aborted) reply.error = error instanceof Error ? error.message : String(error);
    } finally {
      this.#finish(reply);
    }
  }

  /**
   * Stops the reply through the server (DELETE): the stream's last chunk then carries the finish reason and
   * the measured cancel latency. Closing the connection (which the server also takes as a cancel) is the
   * fallback.
   */
  async stop() {
    const reply = this.#reply;
    if (reply === undefined || reply.phase === "done" || reply.phase === "stopping") return;
    this.#advance(reply, "stopping");
    if (reply.id !== undefined) {
      try {
        const status = await deleteRequest(reply.id);
        // 404: it finished by itself meanwhile, and its own last chunk is already on the way.
        if (status === 200 || status === 404) return;
      } catch {
        // The DELETE did not get through: fall back below.
      }
    }
    reply.aborted = true;
    reply.controller.abort();
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
    if (event.usage) reply.usage = event.usage;
    const choice = event.choices?.[0];
    if (choice === undefined) return;
    const delta = choice.delta ?? {};
    const { turn } = reply;
    if (typeof delta.content === "string" && delta.content !== "") {
      const at = performance.now();
      reply.firstAt ??= at;
      reply.lastAt = at;
      reply.chunks++;
      turn.content += delta.content;
      turn.text.appendData(delta.content);
      this.#advance(reply, "streaming");
      this.#scheduleRender();
    }
    if (Array.isArray(delta.tool_calls)) {
      for (const part of delta.tool_calls) this.#toolCall(turn, part);
      this.#advance(reply, "streaming");
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

  /**
   * @param {Reply} reply
   * @param {Reply["phase"]} phase
   */
  #advance(reply, phase) {
    const order = ["sending", "waiting", "streaming", "stopping", "done"];
    if (order.indexOf(phase) <= order.indexOf(reply.phase)) return;
    reply.phase = phase;
    this.#render();
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

  /** Token chunks can arrive hundreds per second; the numbers need repainting once per frame at most. */
  #scheduleRender() {
    if (this.#renderQueued) return;
    this.#renderQueued = true;
    requestAnimationFrame(() => {
      this.#renderQueued = false;
      this.#render();
    });
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
      turn.element.dataset.tokens = String(usage?.completion_tokens ?? reply.chunks);
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
  switch (reply.phase) {
    case "sending":
      return "sending";
    case "waiting":
      return "waiting for the first token";
    case "streaming":
      return "streaming";
    case "stopping":
      return "stopping";
    case "done":
      if (reply.error !== undefined) return "error";
      return reply.finishReason === "cancelled" || reply.aborted ? "stopped" : "done";
  }
}

/**
 * The line under a reply: live while it streams; once done, the server's figures, e.g.
 * "20 tokens · 85 tok/s · prompt 75 tokens, 60 cached · stopped in 1 step".
 * @param {Reply} reply
 */
function metaText(reply) {
  const tokens = reply.usage?.completion_tokens ?? reply.chunks;
  const live =
    reply.chunks > 1 &&
    reply.firstAt !== undefined &&
    reply.lastAt !== undefined &&
    reply.lastAt > reply.firstAt
      ? ((reply.chunks - 1) * 1000) / (reply.lastAt - reply.firstAt)
      : undefined;
  if (reply.phase !== "done") {
    const rate = live === undefined ? "" : ` · ${live.toFixed(0)} tok/s`;
    return reply.chunks === 0 ? statusText(reply) : `${tokens} tokens${rate} · ${statusText(reply)}`;
  }
  const parts = [`${tokens} token${tokens === 1 ? "" : "s"}`];
  const rate = tokens > 1 ? (reply.sluice?.timings.tokensPerSecond ?? live) : undefined;
  if (rate !== undefined && Number.isFinite(rate)) parts.push(`${rate.toFixed(0)} tok/s`);
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
 * @param {Element} element
 * @param {string} text
 */
function setText(element, text) {
  // Writing the same text again would make screen readers announce it again.
  if (element.textContent !== text) element.textContent = text;
}
