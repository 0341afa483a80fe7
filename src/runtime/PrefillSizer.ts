/** Steps a prompt read beside decoding streams is split into, by default (see `PrefillSizer`). */
export const PREFILL_STEPS = 6;

/**
 * Sizes prefill chunks by time rather than by a fixed token count. A step that reads a prompt chunk delays
 * every decoding stream by that chunk's cost and bounds how fast a cancel lands while prefilling, so what
 * matters is how long the step takes, and that differs by orders of magnitude between models (a tiny model
 * reads 64 prompt tokens in 9 ms on a CPU, a 0.5B one in about a second).
 *
 * Step time is modelled as `base + perToken * promptTokens`: `base` is learned from steps without prompt
 * tokens, `perToken` from steps with them. The chunk is the number of prompt tokens that keeps a step near
 * the target, within [min, max]. Until the per-token cost is measured the initial chunk is used.
 *
 * Two budgets, because two different people wait on a prefill step:
 * - while streams decode, each of them waits for the whole step (the decode-gap budget). By default a prompt
 *   is read in about `PREFILL_STEPS` (6) steps: a step may take a sixth of the prompt's own modelled read
 *   time, at least 3 decode steps (so a short prompt is not read in slivers) and at most `maxGapMs` (1 s, so
 *   a huge prompt on a slow model never stalls the streams for long). A stream's longest gap is then about a
 *   sixth of what reading the prompt in one go would cost it (llama-server's behaviour), while the prompt's
 *   first token comes within a few steps' overhead of that one-go time: chunks stay large enough to read
 *   efficiently. `targetStepMs` fixes the budget instead, in ms, whatever the prompt;
 * - with no stream decoding, only a cancel waits: the step may take `soloStepMs` (500 ms by default), so a
 *   lone prompt is read in large, efficient chunks (whole batches on a small model, as llama-server reads
 *   them) while a cancel still lands within half a second on a slow one.
 */
export class PrefillSizer {
  readonly #target: number | undefined;
  readonly #solo: number;
  readonly #maxGap: number;
  readonly #min: number;
  readonly #max: number;
  readonly #initial: number;
  #base: number | undefined;
  #perToken: number | undefined;

  constructor(options: {
    targetStepMs?: number;
    soloStepMs?: number;
    maxGapMs?: number;
    min: number;
    max: number;
    initial: number;
  }) {
    this.#target = options.targetStepMs;
    this.#solo = options.soloStepMs ?? 500;
    this.#maxGap = options.maxGapMs ?? 1000;
    this.#min = Math.max(1, Math.floor(options.min));
    this.#max = Math.max(this.#min, Math.floor(options.max));
    this.#initial = Math.min(this.#max, Math.max(this.#min, Math.floor(options.initial)));
  }

  /**
   * The step time a chunk aims for while streams decode, in ms, for a prompt of `promptTokens` tokens still to
   * read when the step plans its first chunk: `targetStepMs` when set, else a `PREFILL_STEPS`th of the prompt's
   * modelled read time within [3 decode steps, maxGapMs].
   */
  targetMs(promptTokens: number): number {
    if (this.#target !== undefined) return this.#target;
    const floor = 3 * (this.#base ?? 0);
    const share = ((this.#perToken ?? 0) * promptTokens) / PREFILL_STEPS;
    return Math.min(this.#maxGap, Math.max(floor, share));
  }

  /** The step time a prompt chunk may take when no stream is decoding, in ms. */
  get soloMs(): number {
    return this.#solo;
  }

  /**
   * Prompt tokens the next step may read: within the decode-gap budget while streams decode (for the longest
   * prompt being read, `promptTokens` in all, cached tokens left out), within the solo budget otherwise
   * (nobody but a cancel waits on that step).
   */
  chunk(streamsDecoding: boolean, promptTokens = 0): number {
    const base = this.#base;
    const perToken = this.#perToken;
    // Unmeasured: a small first chunk when streams would wait on it, a larger one when nobody does.
    if (perToken === undefined)
      return streamsDecoding ? this.#initial : Math.min(this.#max, 8 * this.#initial);
    const room = streamsDecoding ? this.targetMs(promptTokens) - (base ?? 0) : this.#solo;
    const tokens = perToken > 0 ? Math.floor(room / perToken) : this.#max;
    return Math.min(this.#max, Math.max(this.#min, tokens));
  }

  /** Learn from a finished step: its wall time and how many prompt tokens it read. */
  observe(stepMs: number, promptTokens: number): void {
    if (!(stepMs >= 0)) return;
    if (promptTokens === 0) {
      this.#base = ewma(this.#base, stepMs);
      return;
    }
    // A prompt of a few tokens says nothing about the per-token cost (the fixed part dominates): skip it.
    // From the minimum chunk on it is learned, fixed part taken out, so a slow model is caught on its first.
    if (promptTokens < this.#min) return;
    const perToken = Math.max(0, stepMs - (this.#base ?? 0)) / promptTokens;
    this.#perToken = ewma(this.#perToken, perToken);
  }
}

function ewma(previous: number | undefined, sample: number): number {
  return previous === undefined ? sample : previous * 0.7 + sample * 0.3;
}
