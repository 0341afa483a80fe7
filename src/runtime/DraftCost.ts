/** The acceptance chance a draft token needs before its cost is measured. */
const INITIAL_THRESHOLD = 0.3;
/** Bounds of the learned threshold: a draft token is never free, and one sure to be accepted always pays. */
const MIN_THRESHOLD = 0.05;
const MAX_THRESHOLD = 0.95;

/**
 * What a draft token costs, learned from the runtime's own steps, as the acceptance chance it needs to pay
 * for itself (`threshold`): verifying one more draft token adds `perDraft` ms to a step whose decodes cost
 * `perDecode` ms each, and it brings a token only if accepted, so it pays when its acceptance chance is at
 * least `perDraft / perDecode`. On a CPU a small model is compute-bound (a draft token costs about what a
 * decode does: speculation pays only on text that repeats closely); a larger one is memory-bound (a draft
 * token costs a fraction of a decode). Steps that read prompt tokens say nothing here and are skipped.
 */
export class DraftCost {
  /** Step time per decoding item in steps without draft or prompt tokens, in ms (EWMA). */
  perDecode: number | undefined;
  /** Step time added per draft token, in ms (EWMA). */
  perDraft: number | undefined;

  /** The acceptance chance from which a draft token pays, between 0.05 and 0.95. */
  get threshold(): number {
    const { perDecode, perDraft } = this;
    if (perDecode === undefined || perDraft === undefined || perDecode <= 0) return INITIAL_THRESHOLD;
    return Math.min(MAX_THRESHOLD, Math.max(MIN_THRESHOLD, perDraft / perDecode));
  }

  /** A finished step: its wall time, its sampling items, its draft tokens and its prompt tokens. */
  observe(stepMs: number, decodes: number, draftTokens: number, promptTokens: number): void {
    if (promptTokens > 0 || decodes === 0 || !(stepMs >= 0)) return;
    if (draftTokens === 0) {
      this.perDecode = ewma(this.perDecode, stepMs / decodes);
      return;
    }
    if (this.perDecode === undefined) return;
    this.perDraft = ewma(this.perDraft, Math.max(0, stepMs - this.perDecode * decodes) / draftTokens);
  }
}

function ewma(previous: number | undefined, sample: number): number {
  return previous === undefined ? sample : previous * 0.9 + sample * 0.1;
}
