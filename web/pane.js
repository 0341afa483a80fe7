import { postCompletion } from "./api.js";
import { Generation, oncePerFrame, PHASE_TEXT, setText } from "./generation.js";

/**
 * @typedef {{ body: Record<string, unknown>, prompt: string }} Settings
 * @typedef {Generation} Run one generation
 */

const NONE = "–";

/** One column of the playground: its own prompt, Generate, Stop, the streaming text and the numbers. */
export class Pane {
  /** @type {HTMLElement} */ element;
  /** @type {() => Settings} */ #settings;
  /** @type {Run | undefined} */ #run;
  /** @type {Record<string, HTMLElement>} */ #stats = {};
  /** @type {Text} */ #text;
  #scheduleRender = oncePerFrame(() => this.#render());
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
    const run = new Generation(() => this.#render());
    this.#run = run;
    this.#reset(text);
    await run.stream(
      (signal) => postCompletion({ ...body, prompt: text }, signal),
      (event) => this.#onEvent(run, event),
    );
    this.#finish(run);
  }

  /** Stops the generation (see Generation.stop: through the server, so the numbers still come). */
  async stop() {
    await this.#run?.stop();
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
    const completionTokens = event.usage?.completion_tokens;
    const choice = event.choices?.[0];
    if (typeof choice?.text === "string" && choice.text !== "") {
      run.chunk(completionTokens);
      this.#text.appendData(choice.text);
      run.advance("streaming");
      this.#scheduleRender();
    } else run.count(completionTokens);
    if (choice === undefined) return;
    if (choice.finish_reason) {
      run.finishReason = choice.finish_reason;
      run.sluice = event.sluice;
    }
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

  #render() {
    const run = this.#run;
    const busy = this.busy;
    this.generateButton.disabled = busy;
    this.stopButton.disabled = !busy || run?.phase === "stopping";
    this.element.dataset.phase = run?.phase ?? "idle";
    if (run === undefined) return;
    const final = run.phase === "done" ? run.sluice : undefined;
    const tokens = run.tokens;
    const liveRate = run.liveRate;
    const perStep = run.tokensPerStep;
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
    this.#set("step", perStep === undefined ? NONE : `${perStep.toFixed(1)} tok/step`);
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
    setText(dd, text);
    if (value !== undefined) dd.dataset.value = value;
  }
}

/** @param {number} value */
function ms(value) {
  return value < 10 ? value.toFixed(1) : value.toFixed(0);
}

/** @param {Run} run */
function statusText(run) {
  if (run.phase !== "done") return PHASE_TEXT[run.phase];
  if (run.error !== undefined) return "error";
  return run.finishReason === "cancelled" ? "stopped" : "done";
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
