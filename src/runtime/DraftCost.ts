/** Until measured: a drafting item costs nothing extra and each draft token a third of a decode. */
const INITIAL = { fixed: 0, perToken: 0.3 };
/** Weight of one step in the running estimates (about the last 20 steps count). */
const WEIGHT = 0.05;
/**
 * The fit starts from `INITIAL` as if it had seen this many steps' worth of weight (`WEIGHT` each) of one item
 * drafting 4 tokens at that cost, and drifts back to that prior between drafts. Without it the fit is a ratio
 * of running sums, so its first drafting step decides it alone: one step slowed by another process (52 ms
 * against a 12.5 ms plain step, measured on a loaded machine) priced drafts out for the next ~70 steps.
 */
const PRIOR_STEPS = 3;
const PRIOR = priorMoments(INITIAL, PRIOR_STEPS * WEIGHT);

/**
 * Per step without drafts, how far the estimates move back toward `INITIAL` (half-way in about 70 steps):
 * costs measured while the machine was busy would otherwise stop drafting for good, since only drafting
 * steps can show that drafts got cheaper again. A retry that finds them still costly puts the estimates back.
 */
const RELAX = 0.01;

/**
 * What verifying drafts costs on this engine, learned from the runtime's own steps, in units of one plain
 * decode (one sampling item in a step without drafts or prompt tokens): a step's time is modelled as
 * `decodes + fixed × (items with a draft) + perToken × (draft tokens)` decodes. Both parts matter on a CPU: a
 * small model is compute-bound (a draft token costs a good share of a decode), and llama.cpp switches from
 * its one-token kernels to its batch kernels as soon as an item feeds two tokens, a fixed cost that makes a
 * one-token draft cost more than it can bring (bench/speculative.ts: on the bundled model a one-token
 * draft about doubles a step, four more tokens add about half a step). Steps that read prompt tokens are
 * skipped; the two parts are a least-squares fit over recent drafting steps, each step's excess clipped to
 * 1.5 times what the model predicts so that a step slowed by another process does not switch drafting off.
 */
export class DraftCost {
  /** Step time per decoding item in steps without draft or prompt tokens, in ms. */
  perDecode: number | undefined;
  fixed = INITIAL.fixed;
  perToken = INITIAL.perToken;
  // Running (weighted) second moments of the fit: m = drafting items, d = draft tokens, y = excess decodes.
  #mm = PRIOR.mm;
  #md = PRIOR.md;
  #dd = PRIOR.dd;
  #my = PRIOR.my;
  #dy = PRIOR.dy;

  /** The time of a step for one item drafting `k` tokens, in plain decodes (1 for k = 0). */
  costOf(k: number): number {
    return k === 0 ? 1 : 1 + this.fixed + this.perToken * k;
  }

  /** A finished step: its wall time, its sampling items, those with a draft, its draft and prompt tokens. */
  observe(
    stepMs: number,
    decodes: number,
    drafting: number,
    draftTokens: number,
    promptTokens: number,
  ): void {
    if (promptTokens > 0 || decodes === 0 || !(stepMs >= 0)) return;
    if (draftTokens === 0) {
      const sample = stepMs / decodes;
      const estimate = this.perDecode;
      this.perDecode =
        estimate === undefined ? sample : estimate + WEIGHT * (Math.min(sample, 1.5 * estimate) - estimate);
      this.fixed += RELAX * (INITIAL.fixed - this.fixed);
      this.perToken += RELAX * (INITIAL.perToken - this.perToken);
      // The fit's history fades back to the prior with it, so that the next drafting steps count more than
      // the old ones, and no single one of them decides alone.
      this.#mm += RELAX * (PRIOR.mm - this.#mm);
      this.#md += RELAX * (PRIOR.md - this.#md);
      this.#dd += RELAX * (PRIOR.dd - this.#dd);
      this.#my += RELAX * (PRIOR.my - this.#my);
      this.#dy += RELAX * (PRIOR.dy - this.#dy);
      return;
    }
    if (this.perDecode === undefined) return;
    const m = drafting;
    const d = draftTokens;
    const predicted = this.fixed * m + this.perToken * d;
    // Clipped: a step slowed by another process moves the estimate by a few percent, never prices drafts out;
    // a real change still gets through, a few percent per step.
    const y = Math.min(Math.max(0, stepMs / this.perDecode - decodes), 1.5 * predicted + 0.5);
    this.#mm += WEIGHT * (m * m - this.#mm);
    this.#md += WEIGHT * (m * d - this.#md);
    this.#dd += WEIGHT * (d * d - this.#dd);
    this.#my += WEIGHT * (m * y - this.#my);
    this.#dy += WEIGHT * (d * y - this.#dy);
    const det = this.#mm * this.#dd - this.#md * this.#md;
    if (det > 0.02 * this.#mm * this.#dd) {
      // Both parts identifiable: the draft lengths seen vary enough (not nearly proportional to the items).
      this.fixed = Math.max(0, (this.#my * this.#dd - this.#dy * this.#md) / det);
      this.perToken = Math.max(0.01, (this.#dy * this.#mm - this.#my * this.#md) / det);
    } else {
      // Always the same draft length: the split cannot be told apart. The per-token part keeps its current
      // value and the fixed part takes the rest: blaming the tokens would price longer drafts out for good
      // (after one-token drafts on a compute-bound model no draft would ever be tried again to correct it).
      this.fixed = Math.max(0, (this.#my - this.perToken * this.#md) / this.#mm);
    }
  }
}

/** The fit's moments for `weight` worth of steps of one item drafting 4 tokens at `cost`. */
function priorMoments(cost: { fixed: number; perToken: number }, weight: number) {
  const m = 1;
  const d = 4;
  const y = cost.fixed * m + cost.perToken * d;
  return {
    mm: weight * m * m,
    md: weight * m * d,
    dd: weight * d * d,
    my: weight * m * y,
    dy: weight * d * y,
  };
}
