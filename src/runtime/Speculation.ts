import type { DraftCost } from "./DraftCost.ts";
import { NO_DRAFT, type RequestDrafter } from "./Drafter.ts";
import { DraftLength } from "./DraftLength.ts";

/**
 * At draft length 0, a costly drafter (a draft model) guesses one token every this many steps, to notice when
 * drafting would pay again; a free one (prompt lookup) guesses every step.
 */
export const PROBE_EVERY = 8;

/**
 * One request's speculative decoding: its drafter, its adaptive draft length and the draft of the step in
 * flight. The runtime asks for a draft when it plans a step (`propose`), reports the verification
 * (`verified`) and feeds every token the request takes (`push`).
 */
export class Speculation {
  /** The request's drafter (what `Drafter.prepare` is told about). */
  readonly drafter: RequestDrafter;
  readonly length: DraftLength;
  /** The draft sent with the step in flight (empty when none). */
  draft: readonly number[] = NO_DRAFT;
  /** Draft tokens sent to the engine, and those it accepted. */
  drafted = 0;
  accepted = 0;
  /** At length 0: the drafter's one-token guess, checked against the next token for free (-1: none). */
  #shadow = -1;
  /** Whether guesses cost work of their own (a drafter with `prepare`: a draft model's steps). */
  readonly #costly: boolean;
  /** Steps asked about at length 0, for a costly drafter's probe every `PROBE_EVERY` of them. */
  #idle = 0;

  /**
   * `costly`: the drafter computes its guesses (`Drafter.prepare`, a draft model), so at length 0 its
   * one-token guess is asked for only every `PROBE_EVERY` steps, not every step. Defaults to false.
   */
  constructor(drafter: RequestDrafter, maxDraft: number, costly = false) {
    this.drafter = drafter;
    this.length = new DraftLength(maxDraft);
    this.#costly = costly;
  }

  /** A token the request took. */
  push(token: number): void {
    this.drafter.push(token);
  }

  /** The request is over and its slot free: the drafter lets go of what it held. */
  release(): void {
    this.drafter.release?.();
  }

  /**
   * The most tokens `propose` will ask the drafter for with at most `room` tokens of room: the current draft
   * length, or 1 at length 0 (the one-token guess checked for free; a costly drafter's only every
   * `PROBE_EVERY` calls), 0 when there is no room. What `Drafter.prepare` is told, so that a drafter computing
   * its guesses ahead computes no more than will be asked. Called once per step.
   */
  wanted(room: number, cost: DraftCost): number {
    if (room <= 0) return 0;
    const length = this.#length(cost);
    if (length === 0 && this.#costly && this.#idle++ % PROBE_EVERY !== 0) return 0;
    return Math.min(Math.max(1, length), room);
  }

  /**
   * The draft for the next step, at most `room` tokens (what the step budget and maxTokens leave), as long
   * as pays for what verifying it costs (`DraftCost`).
   */
  propose(room: number, cost: DraftCost): readonly number[] {
    this.#shadow = -1;
    const length = this.#length(cost);
    if (length === 0 || room <= 0) {
      if (length === 0 && room > 0) this.#shadow = this.drafter.draft(1)[0] ?? -1;
      this.draft = NO_DRAFT;
    } else this.draft = this.drafter.draft(Math.min(length, room));
    this.drafted += this.draft.length;
    return this.draft;
  }

  /**
   * The draft length now: 0 until the runtime has timed a plain decode step (`DraftCost.perDecode`, what a
   * draft's cost is measured against), else what the acceptance and the cost make best. Without that one
   * plain step, a drafter that is right from the first token would never let the cost be learned.
   */
  #length(cost: DraftCost): number {
    return cost.perDecode === undefined ? 0 : this.length.current(cost);
  }

  /** The engine accepted `accepted` tokens of the draft and sampled `token` after them. */
  verified(accepted: number, token: number): void {
    const drafted = this.draft.length;
    if (drafted > 0) {
      this.length.observe(drafted, accepted);
      this.accepted += accepted;
    } else if (this.#shadow >= 0) this.length.observe(1, this.#shadow === token ? 1 : 0);
    this.#shadow = -1;
    this.draft = NO_DRAFT;
  }
}
