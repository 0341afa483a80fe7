import type { StepItem } from "../engine/Engine.ts";
import type { DraftCost } from "./DraftCost.ts";
import { NO_DRAFT } from "./Drafter.ts";
import type { RequestState } from "./RequestState.ts";

export interface StepBudget {
  /** Most prompt tokens one slot reads in one step: the cancellation granularity while prefilling. */
  prefillChunk: number;
  /** Most prompt tokens all slots together read in one step (bounds the step's duration). */
  prefillBudget: number;
  /** Most tokens in one step across all slots. */
  maxStepTokens: number;
  /**
   * Fewest prompt tokens one slot reads in a step unless they finish its prompt (`EngineInfo.minPromptChunk`):
   * a chunk never leaves a shorter tail, and a slot whose share of the budget is below it waits a step.
   */
  minChunk: number;
  /** What verifying drafts costs on the engine, which sets how long drafts are. */
  draftCost: DraftCost;
  /**
   * `prefillChunk` is a ceiling (a time budget), not a size: a prompt is read in as many chunks as the ceiling
   * needs, of (nearly) equal size, so no step reads a short tail it pays a whole step's fixed cost for, and the
   * longest step is as short as that count allows. Defaults to false: chunks of exactly `prefillChunk` (the
   * `prefillChunkSize` option).
   */
  evenChunks?: boolean;
}

/**
 * What a prompt with `remaining` tokens to read takes now when it may take at most `ceiling`: all of it when it
 * fits, else an equal share over the fewest chunks of at most `ceiling` (ceil(remaining / chunks)).
 * 325 tokens under a ceiling of 49: 7 chunks of 47 or 46 rather than 6 of 49 and one of 31.
 */
export function evenChunk(remaining: number, ceiling: number): number {
  if (remaining <= ceiling) return remaining;
  return Math.ceil(remaining / Math.ceil(remaining / ceiling));
}

/**
 * Prompt tokens a step keeps from drafts for the oldest prompt being read (or its minimum chunk, if larger;
 * never more than its chunk or what it has left, and all it has left rather than leave a tail shorter than
 * the minimum chunk): drafts are a speed-up, a prompt's progress is a promise.
 * Without it, speculative streams whose drafts fill `maxStepTokens` would hold a prompt back until they end.
 * 8 is the prefill sizer's smallest chunk.
 */
export const PROMPT_RESERVE = 8;

export interface PlannedItem {
  state: RequestState;
  item: StepItem;
}

/**
 * Decides one step. Every decoding slot gets its token first, so a long prompt never starves a stream; then
 * speculative requests get their drafts, in slot order, each at most what its maxTokens leaves after the
 * token the step samples anyway; the rest of the budget goes to prefilling slots in admission order (the
 * oldest prompt finishes first, which gives the best average time to first token), at most one chunk each.
 * The chunk that ends a prompt also samples the first token. Draft tokens count in `maxStepTokens`, not in
 * the prefill budget. No chunk shorter than `minChunk` is read, and none leaves a shorter tail, unless it
 * finishes its prompt (a tail that short is read with the chunk when the step has room) or it is the step's
 * first prompt and the step cannot hold more.
 */
export function planStep(running: readonly RequestState[], budget: StepBudget): PlannedItem[] {
  const planned: PlannedItem[] = [];
  let left = budget.maxStepTokens;
  for (const state of running) {
    if (state.phase !== "decode") continue;
    planned.push({
      state,
      item: { slot: state.slot, tokens: [state.lastToken], sample: state.request.sampler },
    });
    left -= 1;
  }
  // Prompts in admission order, not slot order: a prompt admitted later to a lower slot must not read first
  // (and hold back an older one for as long as it reads). Stable, so ties keep slot order.
  const prompts = running.filter((s) => s.phase === "prefill");
  if (prompts.length > 1) prompts.sort((a, b) => a.admittedAt - b.admittedAt);
  const oldest = prompts[0];
  let reserve = 0;
  if (oldest !== undefined) {
    const remaining = oldest.request.promptTokens.length - oldest.prefilled;
    const floor = Math.max(PROMPT_RESERVE, budget.minChunk);
    reserve = Math.min(remaining, budget.prefillChunk, budget.prefillBudget, floor);
    // A tail shorter than the minimum chunk would be a sliver read later: it is kept with the reserve (as the
    // prompt loop reads such a tail with its chunk when the step has room).
    if (remaining - reserve < budget.minChunk) reserve = remaining;
  }
  for (const { state, item } of planned) {
    const speculation = state.speculation;
    if (speculation === undefined) continue;
    const room = Math.min(left - reserve, state.request.maxTokens - state.generated - 1);
    const draft = speculation.propose(room, budget.draftCost);
    item.draft = draft;
    left -= draft.length;
  }
  let prefillLeft = budget.prefillBudget;
  /** Whether a prompt chunk is already planned in this step. */
  let reading = false;
  for (const state of prompts) {
    if (left <= 0 || prefillLeft <= 0) break;
    const prompt = state.request.promptTokens;
    const remaining = prompt.length - state.prefilled;
    const min = budget.minChunk;
    const even = budget.evenChunks === true ? evenChunk(remaining, budget.prefillChunk) : budget.prefillChunk;
    // An equal share below the minimum chunk would be a sliver: the ceiling itself is read then.
    let take = Math.min(even >= min ? even : budget.prefillChunk, prefillLeft, left, remaining);
    if (take < remaining && remaining - take < min) {
      // The tail would be a sliver: read it now if the step has room, else leave a whole minimum for later.
      if (remaining <= left) take = remaining;
      else if (remaining - min >= min) take = Math.min(take, remaining - min);
    }
    // A chunk that is a sliver, or leaves one, waits until it is the first prompt of a step; the first always
    // reads (a step too small for two minimum chunks must not stall it).
    const sliver = take < remaining && (take < min || remaining - take < min);
    if (sliver && reading) continue;
    reading = true;
    const end = state.prefilled + take;
    const last = end === prompt.length;
    planned.push({
      state,
      item: {
        slot: state.slot,
        tokens: prompt.slice(state.prefilled, end),
        sample: last ? state.request.sampler : undefined,
        // A speculative request's sampling items all carry a draft: it picks the engine's sampling path.
        ...(last && state.speculation !== undefined ? { draft: NO_DRAFT } : {}),
      },
    });
    left -= take;
    prefillLeft -= take;
  }
  return planned;
}
