import type { ChunkError } from "../types.ts";
import type { UpstreamChoice } from "./upstreamEvent.ts";
import type { AttemptOutcome } from "./upstreamFailure.ts";

/** How a pooled request ended, as its target hears it once. */
export type TargetEnd =
  | AttemptOutcome
  /** No attempt could serve it (none eligible, every one failed, the pool closed). */
  | {
      kind: "error";
      error: ChunkError;
      /** The upstream refused the request itself (a 4xx): its status and error body, passed to the client. */
      rejected?: { status: number; body: unknown };
    };

/**
 * Where a pooled request's output goes, whichever upstream (or the local engine) serves it: a channel for the
 * library (`UpstreamWriter`, text and token ids), or the gateway server's response (`ResponseRelay`, every
 * field the upstream sends). Attempts may follow one another (retries) until `delivered`.
 */
export interface GenerationTarget {
  /** Something reached the consumer: a failed attempt can no longer be retried elsewhere. */
  readonly delivered: boolean;
  /** An upstream accepted the request (answered 200 with an event stream). */
  accepted(upstream: string): void;
  /** One chunk's choices. */
  chunk(choices: readonly UpstreamChoice[]): void;
  /** The model the upstream named. */
  model(name: string): void;
  /** The one end; later calls change nothing. */
  end(how: TargetEnd): void;
}
