import type { EngineInfo } from "../engine/Engine.ts";

/**
 * Guesses the tokens that come next in a request's output, for the engine to verify in its next step
 * (speculative decoding). A drafter costs nothing when it has no guess: it returns an empty draft.
 */
export interface Drafter {
  /** Name for logs and metrics (`"prompt-lookup"`, `"draft-model"`). */
  readonly name: string;
  /** One request's drafting state, from its prompt tokens (BOS included when the request has it). */
  start(prompt: readonly number[]): RequestDrafter;
  /**
   * Called once by `Runtime.create` with the target engine's info, before any request: throws `SluiceError`
   * `invalid_option` when this drafter cannot draft for that model (a draft model with another vocabulary).
   */
  checkTarget?(target: EngineInfo): void;
  /**
   * Drafts ahead of the step being planned, for drafters whose guesses cost a computation of their own (a
   * draft model): awaited once per loop iteration before the step is planned, with every decoding request
   * that will ask for a draft and the most tokens it may ask (`max` >= 1). The `draft` calls of that step are
   * then synchronous reads of what was prepared. Never touches the target engine; must not reject (a request
   * that could not be drafted for gets an empty draft).
   */
  prepare?(wanted: readonly DraftWanted[]): Promise<void>;
}

/** One request's share of `Drafter.prepare`. */
export interface DraftWanted {
  drafter: RequestDrafter;
  /** The most draft tokens the request may ask for in the coming step, >= 1. */
  max: number;
}

/** A drafter's state for one request: it sees every token the request generates, in order. */
export interface RequestDrafter {
  /** A token the request generated (the first one included). Called once per token, in order: keep it O(1). */
  push(token: number): void;
  /**
   * Up to `max` tokens (`max` >= 1) guessed to follow every token pushed so far, or an empty array when there
   * is no guess. The runtime does not keep or change the array beyond the step it is sent with.
   */
  draft(max: number): readonly number[];
  /**
   * The request is over and its slot is free (every path: finish, cancel, error; also a request that never
   * left the queue). Called once; no other call follows. Frees what the request held (a draft model's slot).
   */
  release?(): void;
}

/** The draft of a request with no guess this step. */
export const NO_DRAFT: readonly number[] = Object.freeze([]);

/** Whether a value implements `Drafter` (for option validation). */
export function isDrafter(value: unknown): value is Drafter {
  if (value === null || typeof value !== "object") return false;
  const drafter = value as Record<string, unknown>;
  return typeof drafter.name === "string" && typeof drafter.start === "function";
}
