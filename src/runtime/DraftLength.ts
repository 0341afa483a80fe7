import type { DraftCost } from "./DraftCost.ts";

/** Weight of one verified position in the running acceptance estimate (about the last 5 positions count). */
const RATE_WEIGHT = 0.2;

/**
 * One request's draft length, adapted to its recent acceptance: positions are accepted one after another
 * with an estimated per-position chance `rate` (a running average over the positions verified), so a draft
 * of k tokens brings 1 + rate + ... + rate^k tokens per step for a step that costs `cost.costOf(k)` plain
 * decodes (`DraftCost`); the length is the k from 0 to `max` that brings the most tokens per unit of time,
 * 0 (no draft) when no draft pays. At 0, guesses the drafter makes anyway are checked against the output for
 * free (`observe` with a length-1 guess), so drafting comes back when the text starts repeating.
 */
export class DraftLength {
  readonly max: number;
  /** The estimated chance that a draft token is accepted, its predecessors being accepted. */
  rate: number;

  /** `max`: the longest draft (llama.cpp's `--spec-draft-n-max`); `rate`: the starting estimate. */
  constructor(max: number, rate = 0.6) {
    this.max = max;
    this.rate = rate;
  }

  /** The draft length to ask for now, 0 to `max`. */
  current(cost: DraftCost): number {
    const { rate, max } = this;
    let best = 0;
    let bestRate = 1 / cost.costOf(0);
    let expected = 1;
    let term = 1;
    for (let k = 1; k <= max; k++) {
      term *= rate;
      expected += term;
      const tokensPerCost = expected / cost.costOf(k);
      if (tokensPerCost > bestRate) {
        best = k;
        bestRate = tokensPerCost;
      }
    }
    return best;
  }

  /**
   * A verification: `drafted` tokens were guessed, the first `accepted` were right. Each accepted position
   * counts as a success, the first rejected one as a failure; positions after it tell nothing.
   */
  observe(drafted: number, accepted: number): void {
    let rate = this.rate;
    for (let i = 0; i < accepted; i++) rate += RATE_WEIGHT * (1 - rate);
    if (accepted < drafted) rate -= RATE_WEIGHT * rate;
    this.rate = rate;
  }
}
