import { deleteRequest, errorOf, postCompletion } from "./api.js";
import { readSse } from "./sse.js";

/**
 * @typedef {{ body: Record<string, unknown>, prompt: string }} Settings
 * @typedef {{ stepsToFree: number, msToFree: number, msToTerminal: number }} CancelLatency
 * @typedef {{
 *   reason: string,
 *   stop?: string | number,
 *   timings: { firstTokenMs: number, tokensPerSecond: number },
 *   cancel?: CancelLatency,
 * }} SluiceExtension
 *
 * One generation. Its phase only moves forward:
 * sending → waiting (headers in, no token yet) → streaming → done; "stopping" may come in at any point
 * before done.
 * @typedef {{
 *   phase: "sending" | "waiting" | "streaming" | "stopping" | "done",
 *   controller: AbortController,
 *   id?: string,
 *   startedAt: number,
 *   firstAt?: number,
 *   lastAt?: number,
 *   chunks: number,
 *   finishReason?: string,
 *   sluice?: SluiceExtension,
 *   completionTokens?: number,
 *   aborted: boolean,
 *   error?: string,
 * }} Run
 */

const NONE = "–";

/** One column of the playground: its own prompt, Generate, Stop, the streaming text and the numbers. */
export class Pane {
  /** @type {HTMLElement} */ element;
  /** @type {() => Settings} */ #settings;
  /** @type {Run | undefined} */ #run;
  /** @type {Record<string, HTMLElement>} */ #stats = {};
  /** @type {Text} */ #text;
  #renderQueued = false;
  /** Whether the text view sticks to the end as it grows; scrolling up to read turns it off. */
  #follow = true;
  /** Where following last put the view: a scroll event above it came from the reader. */
  #followedTo = 0;

  /**
   * @param {number} number 1-based, as shown
   * @param {HTMLTemplateElement} template
   * @param {() => Settings} settings the shared controls, read when Generate is pressed
   */
  constructor(number, template, settings) {
    this.number = number;
    this.#settings = settings;
    const fragment = /** @type {DocumentFragment} */ (template.content.cloneNode(true));
    this.element = /** @type {HTMLElement} */ (fragment.firstElementChild);
    const $ = (/** @type {string} */ selector) =>
      /** @type {HTMLElement} */ (this.element.querySelector(selector));
    const prefix = `pane-${number}`;
    this.element.id = prefix;
    this.element.setAttribute("aria-labelledby", `${prefix}-title`);
    Object.assign($(".pane-title"), { id: `${prefix}-title`, textContent: `Pane ${number}` });
    $(".override-label").setAttribute("for", `${prefix}-prompt`);
    this.override = /** @type {HTMLTextAreaElement} */ ($(".override"));
    this.override.id = `${prefix}-prompt`;
    this.output = $(".output");
    this.output.setAttribute("aria-label", `Pane ${number} text`);
    this.echo = $(".echo");
    this.#text = this.output.appendChild(document.createTextNode(""));
    this.error = $(".error");
    this.generateButton = /** @type {HTMLButtonElement} */ ($(".generate"));
    this.stopButton = /** @type {HTMLButtonElement} */ ($(".stop"));
    for (const dd of this.element.querySelectorAll("[data-stat]")) {
      this.#stats[/** @type {HTMLElement} */ (dd).dataset.stat ?? ""] = /** @type {HTMLElement} */ (dd);
    }
    this.output.addEventListener("scroll", () => {
      const out = this.output;
      // Scroll events arrive a frame late, after more text may have been added: only a move up is the
      // reader's doing, and coming back down to the end resumes following.
      if (out.scrollTop < this.#followedTo - 2) this.#follow = false;
      else if (out.scrollHeight - out.scrollTop - out.clientHeight < 24) this.#follow = true;
    });
    this.generateButton.addEventListener("click", () => void this.generate());
    this.stopButton.addEventListener("click", () => void this.stop());
  }

  /** Whether a generation is under way (until its stream has ended). */
  get busy() {
    return this.#run !== undefined && this.#run.phase !== "done";
  }

  /** The server's id for the running request, for the slot view. */
  get requestId() {
    return this.busy ? this.#run?.id : undefined;
  }

  async generate() {
    if (this.busy) return;
    const { body, prompt } = this.#settings();
    const override = this.override.value;
    const text = override.trim() === "" ? prompt : override;
    /** @type {Run} */
    const run = {
      phase: "sending",
      controller: new AbortController(),
      startedAt: now(),
      chunks: 0,
      aborted: false,
    };
    this.#run = run;
    this.#reset(text);
    try {
      const response = await postCompletion({ ...body, prompt: text }, run.controller.signal);
      if (!response.ok || response.body === null) throw new Error(await errorOf(response));
      run.id = response.headers.get("X-Request-Id") ?? undefined;
      this.#advance(run, "waiting");
      for await (const data of readSse(response.body)) {
        if (data === "[DONE]") break;
        this.#onEvent(run, JSON.parse(data));
      }
      if (run.finishReason === undefined && run.error === undefined) {
        run.error = "The stream ended without a finish reason.";
      }
    } catch (error) {
      // Our own abort (Stop's fallback) is a cancel, not a failure.
      if (!run.aborted) run.error = error instanceof Error ? error.message : String(error);
    } finally {
      this.#finish(run);
    }
  }

  /**
   * Stops the generation through the server (DELETE), then keeps reading: the stream's last chunk carries
   * the finish reason and the measured cancel latency. Closing the connection is only the fallback.
   */
  async stop() {
    const run = this.#run;
    if (run === undefined || run.phase === "done" || run.phase === "stopping") return;
    this.#advance(run, "stopping");
    if (run.id === undefined) return this.#abort(run);
    try {
      const status = await deleteRequest(run.id);
      // 404: it finished by itself meanwhile, and its own last chunk is already on the way.
      if (status === 200 || status === 404) return;
    } catch {
      // The DELETE did not get through: fall back below.
    }
    this.#abort(run);
  }

  /** @param {Run} run */
  #abort(run) {
    run.aborted = true;
    run.controller.abort();
  }

  /**
   * @param {Run} run
   * @param {any} event one parsed `data:` event
   */
  #onEvent(run, event) {
    if (this.#run !== run) return;
    run.id ??= event.id;
    if (event.error !== undefined) {
      run.error = event.error?.message ?? "The generation failed.";
      return;
    }
    if (event.usage) run.completionTokens = event.usage.completion_tokens;
    const choice = event.choices?.[0];
    if (choice === undefined) return;
    if (typeof choice.text === "string" && choice.text !== "") {
      const at = now();
      run.firstAt ??= at;
      run.lastAt = at;
      run.chunks++;
      this.#text.appendData(choice.text);
      this.#advance(run, "streaming");
      this.#scheduleRender();
    }
    if (choice.finish_reason) {
      run.finishReason = choice.finish_reason;
      run.sluice = event.sluice;
    }
  }

  /**
   * @param {Run} run
   * @param {Run["phase"]} phase
   */
  #advance(run, phase) {
    const order = ["sending", "waiting", "streaming", "stopping", "done"];
    if (order.indexOf(phase) <= order.indexOf(run.phase)) return;
    run.phase = phase;
    this.#render();
  }

  /** @param {Run} run */
  #finish(run) {
    if (this.#run !== run) return;
    run.phase = "done";
    this.#render();
  }

  /** @param {string} prompt */
  #reset(prompt) {
    this.echo.textContent = prompt;
    this.#text.data = "";
    this.error.hidden = true;
    this.error.textContent = "";
    this.#follow = true;
    this.#followedTo = 0;
    this.#render();
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
    const run = this.#run;
    const busy = this.busy;
    this.generateButton.disabled = busy;
    this.stopButton.disabled = !busy || run?.phase === "stopping";
    this.element.dataset.phase = run?.phase ?? "idle";
    if (run === undefined) return;
    const final = run.phase === "done" ? run.sluice : undefined;
    const tokens = run.completionTokens ?? run.chunks;
    const liveRate =
      run.chunks > 1 && run.firstAt !== undefined && run.lastAt !== undefined && run.lastAt > run.firstAt
        ? ((run.chunks - 1) * 1000) / (run.lastAt - run.firstAt)
        : undefined;
    const rate = final !== undefined && tokens > 0 ? final.timings.tokensPerSecond : liveRate;
    const firstToken =
      final !== undefined && tokens > 0
        ? final.timings.firstTokenMs
        : run.firstAt !== undefined
          ? run.firstAt - run.startedAt
          : undefined;
    this.#set("status", statusText(run));
    // No request id: the server never accepted the request, so there is no count to show.
    this.#set("tokens", run.id === undefined && run.chunks === 0 ? NONE : String(tokens));
    this.#set("rate", rate === undefined || !Number.isFinite(rate) ? NONE : `${rate.toFixed(0)} tok/s`);
    this.#set("ttft", firstToken === undefined ? NONE : `${ms(firstToken)} ms`);
    const reason = run.finishReason ?? (run.aborted ? "cancelled" : "");
    this.#set("finish", run.phase === "done" ? finishText(run) : NONE, run.phase === "done" ? reason : "");
    this.#set("cancel", run.phase === "done" ? cancelText(run) : NONE);
    if (run.phase === "done" && run.error !== undefined) {
      this.error.textContent = run.error;
      this.error.hidden = false;
    }
    if (this.#follow) {
      this.output.scrollTop = this.output.scrollHeight;
      this.#followedTo = this.output.scrollTop;
    }
  }

  /**
   * @param {string} name
   * @param {string} text
   * @param {string} [value] machine-readable value, kept in data-value
   */
  #set(name, text, value) {
    const dd = this.#stats[name];
    if (dd === undefined) return;
    // Writing the same text again would make screen readers announce it again.
    if (dd.textContent !== text) dd.textContent = text;
    if (value !== undefined) dd.dataset.value = value;
  }
}

function now() {
  return performance.now();
}

/** @param {number} value */
function ms(value) {
  return value < 10 ? value.toFixed(1) : value.toFixed(0);
}

/** @param {Run} run */
function statusText(run) {
  switch (run.phase) {
    case "sending":
      return "sending";
    case "waiting":
      return "waiting for the first token";
    case "streaming":
      return "streaming";
    case "stopping":
      return "stopping";
    case "done":
      if (run.error !== undefined) return "error";
      return run.finishReason === "cancelled" ? "stopped" : "done";
  }
}

/** @param {Run} run */
function finishText(run) {
  const reason = run.finishReason;
  if (reason === undefined) return run.aborted ? "cancelled (connection closed)" : NONE;
  if (reason !== "stop") return reason;
  const stop = run.sluice?.stop;
  if (run.sluice?.reason === "eos" || typeof stop === "number") return "stop (end of text)";
  return typeof stop === "string" ? `stop (matched ${JSON.stringify(stop)})` : "stop";
}

/** @param {Run} run */
function cancelText(run) {
  const cancel = run.sluice?.cancel;
  if (cancel !== undefined) {
    const steps = cancel.stepsToFree;
    return `${steps} step${steps === 1 ? "" : "s"}, ${ms(cancel.msToFree)} ms`;
  }
  if (run.aborted) return "not measured (connection closed)";
  return run.finishReason === "cancelled" ? "not measured" : NONE;
}
