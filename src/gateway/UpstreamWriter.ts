import type { ChannelProducer } from "../channel/index.ts";
import type { ChunkError, FinishReason, Timings } from "../types.ts";
import type { GenerationTarget, TargetEnd } from "./GenerationTarget.ts";
import type { UpstreamChoice, UpstreamUsage } from "./upstreamEvent.ts";

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/**
 * The producer side of one gateway generation, whatever upstream serves it: deltas go to the channel as
 * well-formed text, the timings are measured here, and `finish` is the one exit path (first call wins).
 *
 * Bytes split across network reads are whole characters by the time they get here (a streaming
 * TextDecoder sits before the SSE parser); what is left is an upstream that splits a surrogate pair across
 * two JSON strings (`"\ud83d"`, then `"\ude00"`): a trailing high surrogate is held back until the next
 * delta, and anything still lone becomes U+FFFD.
 *
 * As a pool's `GenerationTarget` it carries choice 0's text and token ids (tool-call fragments and
 * log-probabilities are the gateway server's to pass through, see `ResponseRelay`).
 */
export class UpstreamWriter implements GenerationTarget {
  readonly #producer: ChannelProducer;
  readonly #submittedAt: number;
  #acceptedAt: number | undefined;
  #firstTokenAt: number | undefined;
  #held = "";
  #deltas = 0;
  #tokenIds = 0;

  constructor(producer: ChannelProducer, submittedAt = performance.now()) {
    this.#producer = producer;
    this.#submittedAt = submittedAt;
  }

  /** Whether anything reached the consumer: past this point a failed attempt cannot be retried elsewhere. */
  get delivered(): boolean {
    return this.#firstTokenAt !== undefined;
  }

  get finished(): boolean {
    return this.#producer.finished;
  }

  /** An upstream accepted the request (answered 200 with an event stream). */
  accepted(): void {
    this.#acceptedAt ??= performance.now();
  }

  chunk(choices: readonly UpstreamChoice[]): void {
    for (const choice of choices) if (choice.index === 0) this.push(choice.text, choice.tokenIds);
  }

  model(): void {}

  /** Finishes the channel as the request's end says (a no-op when it already finished). */
  end(how: TargetEnd): void {
    switch (how.kind) {
      case "aborted":
        this.finish("cancelled");
        return;
      case "error":
        this.finish("error", { error: how.error });
        return;
      case "failed":
        this.finish("error", { error: { code: how.failure.code, message: how.failure.message } });
        return;
      case "finished": {
        const { finish, usage } = how;
        this.finish(finish.reason, {
          ...(finish.stop !== undefined ? { stop: finish.stop } : {}),
          ...(finish.error !== undefined ? { error: finish.error } : {}),
          ...(usage !== undefined ? { usage } : {}),
        });
      }
    }
  }

  push(text: string, tokenIds: readonly number[]): void {
    if (this.#producer.finished || (text.length === 0 && tokenIds.length === 0)) return;
    this.#firstTokenAt ??= performance.now();
    this.#deltas++;
    this.#tokenIds += tokenIds.length;
    this.#producer.push(tokenIds, this.#wellFormed(text));
  }

  /**
   * The terminal chunk; returns false when the channel had already finished. Usage comes from the upstream
   * when it reported one, else completion tokens are the ids received (or, without ids, the deltas).
   */
  finish(
    reason: FinishReason,
    extra: { stop?: string | number; error?: ChunkError; usage?: UpstreamUsage } = {},
  ): boolean {
    if (this.#producer.finished) return false;
    const held = this.#held.length > 0 ? "\ufffd" : "";
    this.#held = "";
    const usage = extra.usage ?? {
      promptTokens: 0,
      completionTokens: this.#tokenIds > 0 ? this.#tokenIds : this.#deltas,
      cachedTokens: 0,
    };
    return this.#producer.finish([], held, {
      reason,
      ...(extra.stop !== undefined ? { stop: extra.stop } : {}),
      ...(extra.error !== undefined ? { error: extra.error } : {}),
      usage,
      timings: this.#timings(usage.completionTokens),
    });
  }

  #wellFormed(text: string): string {
    let out = this.#held + text;
    this.#held = "";
    const last = out.charCodeAt(out.length - 1);
    if (last >= 0xd800 && last <= 0xdbff) {
      this.#held = out.slice(-1);
      out = out.slice(0, -1);
    }
    return out.replace(LONE_SURROGATE, "\ufffd");
  }

  #timings(completionTokens: number): Timings {
    return timingsOf(this.#submittedAt, this.#acceptedAt, this.#firstTokenAt, completionTokens);
  }
}

/** Timings of a gateway generation from its instants (`performance.now()` ms), as the runtime reports them. */
export function timingsOf(
  submittedAt: number,
  acceptedAt: number | undefined,
  firstTokenAt: number | undefined,
  completionTokens: number,
): Timings {
  const now = performance.now();
  const accepted = acceptedAt ?? firstTokenAt ?? now;
  const first = firstTokenAt;
  const decodeMs = first === undefined ? 0 : now - first;
  return {
    queuedMs: round(accepted - submittedAt),
    prefillMs: first === undefined ? 0 : round(first - accepted),
    decodeMs: round(decodeMs),
    firstTokenMs: first === undefined ? 0 : round(first - submittedAt),
    tokensPerSecond:
      decodeMs > 0 && completionTokens > 1 ? round(((completionTokens - 1) * 1000) / decodeMs) : 0,
  };
}

function round(value: number): number {
  return Math.round(value * 1000) / 1000;
}
