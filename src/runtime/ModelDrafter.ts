import { type Engine, type EngineInfo, GREEDY, type StepItem, type StepOutcome } from "../engine/Engine.ts";
import { SluiceError } from "../errors.ts";
import { type Drafter, type DraftWanted, NO_DRAFT, type RequestDrafter } from "./Drafter.ts";

/** Counters of the draft engine's work, for benchmarks and tests. */
export interface ModelDrafterStats {
  /** Draft-engine steps run (each one batched across every request drafting). */
  steps: number;
  /** Tokens fed to bring draft slots up to date with their requests (prompt and accepted output). */
  catchUpTokens: number;
  /** Draft tokens sampled. */
  drafted: number;
  /** Requests whose drafting stopped on a draft-engine failure (a failed step or item). */
  failures: number;
  /** Times a request asked for a draft slot and none was free. */
  noSlot: number;
}

/**
 * Speculative decoding with a draft model (llama-server's `--model-draft`): a second, smaller model with the
 * same vocabulary, run on an engine of its own (`draftEngine`), guesses each request's next tokens greedily
 * and the target verifies them in its step.
 *
 * Each request takes one of the draft engine's slots the first time it asks for a draft (none free: it gets
 * no drafts until one is) and gives it back when it ends. Before each target step, `prepare` brings every
 * drafting request's slot up to date with its tokens (prompt and output: the slot is trimmed to what it still
 * shares with them and fed the rest, at most the engine's `maxStepTokens` per call across all requests) and
 * then runs up to `max` draft-engine steps, each one batched across every request. A slot keeps its cache
 * when its request ends, so a next request sharing a prefix with it reads only the rest.
 *
 * The draft engine is driven only from `prepare`, which the runtime awaits between target steps: it is never
 * touched while one of its own steps is in flight. A draft-engine failure never fails a request: that request
 * drafts no more and its slot is emptied before it is used again. One runtime at a time may use a drafter.
 */
export class ModelDrafter implements Drafter {
  readonly name = "draft-model";
  readonly engine: Engine;
  readonly stats: ModelDrafterStats = { steps: 0, catchUpTokens: 0, drafted: 0, failures: 0, noSlot: 0 };
  readonly #slots: DraftSlot[];
  /** Requests ended since the last `prepare`: their slots go back to the pool there. */
  #released: DraftRequest[] = [];

  /**
   * `draftEngine`: the draft model's engine, with slots that keep and trim their cache
   * (`capabilities.promptCache`); its slot count bounds the requests drafting at once. The caller owns it
   * (closes it). Throws `invalid_option` for an engine without a prompt cache.
   */
  constructor(draftEngine: Engine) {
    if (!draftEngine.info.capabilities.promptCache) {
      throw new SluiceError(
        "invalid_option",
        `draftModel: the draft engine ${draftEngine.info.model} cannot keep and trim its slots' caches (capabilities.promptCache), which drafting relies on; use an engine that can (LlamaEngine).`,
        { param: "draftModel" },
      );
    }
    this.engine = draftEngine;
    this.#slots = Array.from({ length: draftEngine.info.slots }, (_, index) => new DraftSlot(index));
  }

  /** Throws `invalid_option` unless the draft model's vocabulary is the target's, token for token. */
  checkTarget(target: EngineInfo): void {
    const ours = this.engine.info.vocabulary;
    const theirs = target.vocabulary;
    const refuse = (what: string) =>
      new SluiceError(
        "invalid_option",
        `draftModel: the draft model ${this.engine.info.model} cannot draft for ${target.model}: ${what}. Use a draft model with the target's vocabulary (the same tokenizer), or the drafter "prompt-lookup".`,
        { param: "draftModel" },
      );
    if (ours.size !== theirs.size) throw refuse(`${ours.size} tokens against ${theirs.size}`);
    for (let id = 0; id < ours.size; id++) {
      if (!sameBytes(ours.bytesOf(id), theirs.bytesOf(id))) throw refuse(`token ${id} differs`);
    }
  }

  start(prompt: readonly number[]): RequestDrafter {
    // An ended request's slot is freed at the next `prepare`, never while a draft step may be in flight.
    return new DraftRequest(this, prompt, (request) => this.#released.push(request));
  }

  async prepare(wanted: readonly DraftWanted[]): Promise<void> {
    await this.#free();
    const drafting: { request: DraftRequest; slot: DraftSlot; max: number }[] = [];
    for (const { drafter, max } of wanted) {
      // Another drafter's requests are not this one's to draft for.
      if (!(drafter instanceof DraftRequest) || drafter.owner !== this || !drafter.active) continue;
      drafter.prepared = NO_DRAFT;
      if (drafter.history.length >= this.engine.info.contextSize) {
        // Its tokens fill the draft context and only grow: it can never draft again, so it holds no slot
        // that another request could draft with.
        this.#retire(drafter);
        continue;
      }
      const slot = drafter.slot ?? this.#take(drafter);
      if (slot === undefined) continue;
      drafting.push({ request: drafter, slot, max });
    }
    if (drafting.length === 0) return;
    const ready = await this.#catchUp(drafting);
    await this.#draft(ready);
  }

  /** Slots of ended requests back to the pool, emptied first when a failure left their cache unknown. */
  async #free(): Promise<void> {
    const released = this.#released;
    if (released.length === 0) return;
    this.#released = [];
    const frees: Promise<void>[] = [];
    for (const request of released) {
      const slot = request.slot;
      request.slot = undefined;
      if (slot !== undefined) frees.push(this.#reset(slot).then(() => (slot.owner = undefined)));
    }
    await Promise.all(frees);
  }

  /** Ends the engine's per-request state on the slot; empties its cache when a failure left it unknown. */
  async #reset(slot: DraftSlot, keep?: number): Promise<void> {
    try {
      if (slot.live) await this.engine.releaseSlot(slot.index);
      slot.live = false;
      const target = slot.dirty ? 0 : keep;
      if (target !== undefined && target < slot.cache.length) {
        const kept = await this.engine.trimSlot(slot.index, target);
        // Never trust more than asked: a cache that kept more would no longer match the mirror.
        if (kept > target) throw new Error(`kept ${kept} of ${target}`);
        slot.cache.length = kept;
      } else if (slot.dirty) {
        await this.engine.trimSlot(slot.index, 0);
        slot.cache.length = 0;
      }
      slot.dirty = false;
    } catch {
      slot.dirty = true;
      slot.cache.length = 0;
    }
    slot.matched = Math.min(slot.matched, slot.cache.length);
  }

  /** A free slot for the request: the one whose cache shares the longest prefix with its tokens. */
  #take(request: DraftRequest): DraftSlot | undefined {
    let best: DraftSlot | undefined;
    let bestShared = -1;
    for (const slot of this.#slots) {
      if (slot.owner !== undefined) continue;
      const shared = slot.dirty ? 0 : commonPrefix(slot.cache, request.history);
      if (shared > bestShared) {
        best = slot;
        bestShared = shared;
      }
    }
    if (best === undefined) {
      this.stats.noSlot++;
      return undefined;
    }
    best.owner = request;
    best.matched = bestShared;
    request.slot = best;
    return best;
  }

  /**
   * Trims each slot to what it shares with its request's tokens, always leaving the last token out so that
   * feeding it samples the first draft token; returns the first draft step's items. A request whose missing
   * tokens do not fit in what is left of the engine's step budget reads a chunk of them and drafts nothing
   * this time (it catches up over the next calls).
   */
  async #catchUp(
    drafting: readonly { request: DraftRequest; slot: DraftSlot; max: number }[],
  ): Promise<Drafting[]> {
    const limit = this.engine.info.contextSize;
    // Only what the cache holds past its known-matching prefix is compared: the last draft, not the history.
    const keeps = drafting.map(({ request, slot }) =>
      Math.min(commonPrefix(slot.cache, request.history, slot.matched), request.history.length - 1),
    );
    await Promise.all(drafting.map(({ slot }, i) => this.#reset(slot, keeps[i])));
    for (const { slot } of drafting) slot.matched = slot.cache.length;
    let budget = Math.max(1, this.engine.info.maxStepTokens - drafting.length);
    const ready: Drafting[] = [];
    for (const { request, slot, max } of drafting) {
      const history = request.history;
      const from = slot.cache.length;
      // The draft must fit in the draft slot's context (its tokens but the last one are fed).
      const room = Math.min(max, limit - history.length);
      if (room < 1 || budget <= 0) continue;
      const missing = history.length - from;
      const take = Math.min(missing, budget);
      budget -= take;
      const tokens = history.slice(from, from + take);
      const sample = take === missing ? GREEDY : undefined;
      ready.push({ request, slot, max: room, item: { slot: slot.index, tokens, sample }, draft: [] });
      this.stats.catchUpTokens += take;
    }
    return ready;
  }

  /** Draft steps, each one batched across the requests still drafting, until each has its `max` tokens. */
  async #draft(ready: Drafting[]): Promise<void> {
    const vocabulary = this.engine.info.vocabulary;
    let active = ready;
    while (active.length > 0) {
      const items = active.map((d) => d.item);
      let outcomes: StepOutcome[] | undefined;
      for (const d of active) d.slot.live ||= d.item.sample !== undefined;
      try {
        outcomes = await this.engine.step(items);
      } catch {
        outcomes = undefined;
      }
      this.stats.steps++;
      const next: Drafting[] = [];
      for (let i = 0; i < active.length; i++) {
        const d = active[i]!;
        const outcome = outcomes?.[i];
        if (
          outcome === undefined ||
          !outcome.ok ||
          (d.item.sample !== undefined && outcome.token === undefined)
        ) {
          this.#fail(d);
          continue;
        }
        for (const token of d.item.tokens) d.slot.cache.push(token);
        // The first item of a request reads its own tokens; later ones feed draft tokens.
        if (d.draft.length === 0) d.slot.matched = d.slot.cache.length;
        const token = outcome.token;
        if (d.item.sample === undefined || token === undefined) continue;
        d.draft.push(token);
        this.stats.drafted++;
        // An end-of-generation token ends the target's output: nothing after it can be accepted.
        if (d.draft.length < d.max && !vocabulary.isEog(token)) {
          d.item = { slot: d.slot.index, tokens: [token], sample: GREEDY };
          next.push(d);
        }
      }
      active = next;
    }
    for (const d of ready) {
      if (d.draft.length === 0 || !d.request.active) continue;
      d.request.prepared = d.draft;
      d.request.preparedAt = d.request.history.length;
    }
  }

  /** A draft-engine failure: the request drafts no more; its slot's cache is unknown until emptied. */
  #fail(d: Drafting): void {
    this.stats.failures++;
    d.draft.length = 0;
    d.slot.dirty = true;
    this.#retire(d.request);
  }

  /**
   * The request drafts no more: its slot goes back to the pool at the next call, without waiting for the
   * request to end.
   */
  #retire(request: DraftRequest): void {
    request.failed = true;
    if (request.slot !== undefined) this.#released.push(request);
  }
}

/** A slot of the draft engine and what its KV cache holds (a mirror, so that no step asks the engine). */
class DraftSlot {
  owner: DraftRequest | undefined;
  /** The tokens in the slot's cache, in order (the last sampled draft token is never in it). */
  readonly cache: number[] = [];
  /** Leading cache tokens known to equal the owner's tokens (what was fed from them), so as not to compare them again. */
  matched = 0;
  /** The engine holds per-request state for the slot (a sampling step ran since its last `releaseSlot`). */
  live = false;
  /** A failure left the cache unknown: it is emptied before the slot is used again. */
  dirty = false;

  constructor(readonly index: number) {}
}

interface Drafting {
  request: DraftRequest;
  slot: DraftSlot;
  /** Most draft tokens for this request in this call. */
  max: number;
  /** The request's item in the next draft step. */
  item: StepItem;
  draft: number[];
}

/** One request's tokens (prompt and every pushed token), its draft slot and the draft prepared for it. */
class DraftRequest implements RequestDrafter {
  readonly history: number[];
  slot: DraftSlot | undefined;
  /** The draft `prepare` computed, valid while `history` is `preparedAt` tokens long. */
  prepared: readonly number[] = NO_DRAFT;
  preparedAt = -1;
  /** Drafts no more (a draft-engine failure, or tokens past the draft context); its slot is given back. */
  failed = false;
  ended = false;

  constructor(
    readonly owner: ModelDrafter,
    prompt: readonly number[],
    readonly onRelease: (request: DraftRequest) => void,
  ) {
    this.history = prompt.slice();
  }

  /** Still drafting: not ended and not retired (`failed`). */
  get active(): boolean {
    return !this.ended && !this.failed;
  }

  push(token: number): void {
    this.history.push(token);
  }

  draft(max: number): readonly number[] {
    const prepared = this.prepared;
    if (prepared.length === 0 || this.preparedAt !== this.history.length || !this.active) return NO_DRAFT;
    return prepared.length <= max ? prepared : prepared.slice(0, max);
  }

  release(): void {
    if (this.ended) return;
    this.ended = true;
    this.prepared = NO_DRAFT;
    // A failed request already gave its slot back.
    if (!this.failed) this.onRelease(this);
  }
}

/** The length of the common prefix of `a` and `b`, known to be at least `from`. */
function commonPrefix(a: readonly number[], b: readonly number[], from = 0): number {
  const n = Math.min(a.length, b.length);
  let i = Math.min(from, n);
  while (i < n && a[i] === b[i]) i++;
  return i;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
