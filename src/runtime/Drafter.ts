/**
 * Guesses the tokens that come next in a request's output, for the engine to verify in its next step
 * (speculative decoding). A drafter costs nothing when it has no guess: it returns an empty draft.
 */
export interface Drafter {
  /** Name for logs and metrics (`"prompt-lookup"`). */
  readonly name: string;
  /** One request's drafting state, from its prompt tokens (BOS included when the request has it). */
  start(prompt: readonly number[]): RequestDrafter;
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
}

/** The draft of a request with no guess this step. */
export const NO_DRAFT: readonly number[] = Object.freeze([]);

/** Whether a value implements `Drafter` (for option validation). */
export function isDrafter(value: unknown): value is Drafter {
  if (value === null || typeof value !== "object") return false;
  const drafter = value as Record<string, unknown>;
  return typeof drafter.name === "string" && typeof drafter.start === "function";
}
