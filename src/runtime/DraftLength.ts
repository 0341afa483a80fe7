/** Weight of one verified position in the running acceptance estimate (about the last 10 positions count). */
const RATE_WEIGHT = 0.1;

/**
 * One request's draft length, adapted to its recent acceptance: positions are accepted one after another
 * with an estimated per-position chance `rate` (a running average over the positions verified), and the
 * draft is as long as the chance of its last token being accepted (`rate^k`) stays at least the threshold
 * where a draft token pays for itself (`DraftCost`), down to 0 (no draft) when even one token does not pay.
 * At 0, guesses the drafter makes anyway are checked against the output for free (`observe` with a
 * length-1 guess), so drafting comes back when the text starts repeating.
 */
export class DraftLength {
  readonly max: number;
  /** The estimated chance that a draft token is accepted, its predecessors being accepted. */
  rate: number;

  /** `max`: the longest draft (llama.cpp's `--draft-max`); `rate`: the starting estimate. */
  constructor(max: number, rate = 0.6) {
    this.max = max;
    this.rate = rate;
  }

  /** The draft length to ask for now, 0 to `max`, for a draft token that pays from `threshold` (0 to 1). */
  current(threshold: number): number {
    const { rate, max } = this;
    if (rate < threshold) return 0;
    if (rate >= 0.999) return max;
    return Math.min(max, Math.floor(Math.log(threshold) / Math.log(rate)));
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
