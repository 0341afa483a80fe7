import { getJson } from "./api.js";

const POLL_MS = 250;
const RETRY_MS = 1000;

/**
 * @typedef {{ index: number, state: "free" | "prefill" | "decode" | "freeing", requestId?: string,
 *   promptTokens?: number, prefilled?: number, generated?: number }} Slot
 * @typedef {{ model: string, slotsTotal: number, slots: Slot[], queued: number, steps: number,
 *   closing: boolean }} Snapshot
 */

/** The live strip of engine slots, polled from `GET /v1/slots`. */
export class SlotView {
  /** @type {HTMLElement[]} */ #boxes = [];
  #timer = 0;
  #stopped = false;

  /**
   * @param {{ strip: HTMLElement, summary: HTMLElement, queued: HTMLElement, steps: HTMLElement }} elements
   * @param {(requestId: string) => string | undefined} owner which pane a request belongs to, if any
   */
  constructor(elements, owner) {
    this.elements = elements;
    this.owner = owner;
  }

  start() {
    this.#stopped = false;
    void this.#poll();
  }

  stop() {
    this.#stopped = true;
    clearTimeout(this.#timer);
  }

  /** Polls again right away (after the API key changed, say). */
  refresh() {
    clearTimeout(this.#timer);
    void this.#poll();
  }

  async #poll() {
    let delay = POLL_MS;
    try {
      this.render(/** @type {Snapshot} */ (await getJson("/v1/slots")));
    } catch (error) {
      this.#say(`Slot view unavailable: ${error instanceof Error ? error.message : String(error)}`);
      delay = RETRY_MS;
    }
    if (this.#stopped) return;
    clearTimeout(this.#timer);
    this.#timer = window.setTimeout(() => void this.#poll(), delay);
  }

  /** @param {Snapshot} snapshot */
  render(snapshot) {
    const { strip, queued, steps } = this.elements;
    while (this.#boxes.length < snapshot.slots.length) {
      const box = document.createElement("li");
      box.className = "slot";
      for (const part of ["slot-name", "slot-state", "slot-detail"]) {
        box.append(Object.assign(document.createElement("span"), { className: part }));
      }
      strip.append(box);
      this.#boxes.push(box);
    }
    while (this.#boxes.length > snapshot.slots.length) this.#boxes.pop()?.remove();
    let busy = 0;
    snapshot.slots.forEach((slot, i) => {
      const box = /** @type {HTMLElement} */ (this.#boxes[i]);
      if (slot.state !== "free") busy++;
      box.dataset.state = slot.state;
      setText(box.children[0], `Slot ${slot.index}`);
      setText(box.children[1], slot.state);
      setText(box.children[2], detail(slot, this.owner));
    });
    setText(queued, String(snapshot.queued));
    setText(steps, String(snapshot.steps));
    const total = snapshot.slots.length;
    const closing = snapshot.closing ? " The server is shutting down." : "";
    this.#say(
      busy === 0
        ? `All ${total} slots free, ${snapshot.queued} queued.${closing}`
        : `${busy} of ${total} slots busy, ${total - busy} free, ${snapshot.queued} queued.${closing}`,
    );
  }

  /** @param {string} text */
  #say(text) {
    // The summary is a live region: only real changes should be announced.
    setText(this.elements.summary, text);
  }
}

/**
 * @param {Slot} slot
 * @param {(requestId: string) => string | undefined} owner
 */
function detail(slot, owner) {
  if (slot.state === "free") return "";
  const pane = slot.requestId === undefined ? undefined : owner(slot.requestId);
  const who = pane === undefined ? "" : `${pane} · `;
  if (slot.state === "prefill") return `${who}prompt ${slot.prefilled ?? 0}/${slot.promptTokens ?? "?"}`;
  return `${who}${slot.generated ?? 0} tokens`;
}

/**
 * @param {Element | undefined} element
 * @param {string} text
 */
function setText(element, text) {
  if (element !== undefined && element.textContent !== text) element.textContent = text;
}
