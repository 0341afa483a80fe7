import { createParser, type EventSourceParser } from "eventsource-parser";
import { readUpstreamEvent, type UpstreamChoice, type UpstreamUsage } from "./upstreamEvent.ts";
import {
  type AttemptOutcome,
  badResponse,
  type ChoiceFinish,
  disconnected,
  type UpstreamFailure,
  upstreamError,
} from "./upstreamFailure.ts";

export interface AttemptSink {
  /** The upstream answered 200 with an event stream. */
  accepted(): void;
  /**
   * One chunk's choices, in the order sent: deltas (text, token ids, tool-call fragments, log-probabilities)
   * and finish reasons. A choice past its own finish reason is left out (anything after it would contradict
   * it); usage-only chunks do not come here.
   */
  chunk(choices: readonly UpstreamChoice[]): void;
  /** The model name the upstream reported (first one seen). */
  model?(name: string): void;
}

/**
 * An upstream's event stream read to its outcome, text in (whole characters: the caller decodes bytes with a
 * streaming decoder), choices out to the sink. The finish reasons alone do not end it: usage follows (the
 * upstream is asked for it), then `[DONE]`; `settled` says when nothing more needs to be read. A stream that
 * closes after every choice's finish reason but before `[DONE]` still counts as finished.
 */
export class EventStreamReader {
  readonly #sink: AttemptSink;
  readonly #parser: EventSourceParser;
  /** Per choice index, how it ended; the request's `n` sets how many must end. */
  readonly #finishes: (ChoiceFinish | undefined)[];
  #finished = 0;
  #usage: UpstreamUsage | undefined;
  #done = false;
  #failure: UpstreamFailure | undefined;
  #named = false;
  #errorFinish = false;

  constructor(sink: AttemptSink, choices = 1) {
    this.#sink = sink;
    this.#finishes = new Array<ChoiceFinish | undefined>(choices).fill(undefined);
    this.#parser = createParser({
      onEvent: ({ data }) => this.#event(data),
      onError: (error) => {
        if (error.type === "max-buffer-size-exceeded") this.#failure ??= badResponse(error.message);
      },
    });
  }

  /** Nothing more to read: a failure, `[DONE]`, or every choice finished with usage in hand. */
  get settled(): boolean {
    if (this.#failure !== undefined || this.#done) return true;
    // An error finish is followed by the error event that says what went wrong: wait for it.
    return this.#allFinished && this.#usage !== undefined && !this.#errorFinish;
  }

  get #allFinished(): boolean {
    return this.#finished === this.#finishes.length;
  }

  feed(text: string): void {
    this.#parser.feed(text);
  }

  /** The stream closed: a last event without its blank line still counts. */
  end(): void {
    this.#parser.reset({ consume: true });
  }

  /**
   * How the stream ended: `broken` is the network's cause when the connection broke mid-stream. `ended` turns
   * a failure into the outcome (the caller's view of aborts and timers).
   */
  outcome(
    broken: string | undefined,
    ended: (failure: UpstreamFailure | undefined) => AttemptOutcome,
  ): AttemptOutcome {
    if (this.#failure !== undefined && !this.#allFinished) return ended(this.#failure);
    if (!this.#allFinished) {
      if (broken !== undefined) return ended(disconnected(`the connection broke mid-stream (${broken})`));
      const what = this.#done ? "ended ([DONE])" : "ended";
      return ended(disconnected(`the stream ${what} without a finish reason`));
    }
    return finishedOutcome(this.#finishes as ChoiceFinish[], this.#usage, this.#failure);
  }

  #event(data: string): void {
    if (this.#done || this.#failure !== undefined) return;
    const event = readUpstreamEvent(data);
    switch (event.kind) {
      case "done":
        this.#done = true;
        return;
      case "malformed":
        this.#failure = badResponse(event.why);
        return;
      case "error":
        // Sluice sends its finish chunk (reason error) and then the error itself: keep the error's words.
        this.#failure = upstreamError(`${event.error.code}: ${event.error.message}`);
        return;
      case "chunk": {
        if (!this.#named && event.model !== undefined && this.#sink.model !== undefined) {
          this.#named = true;
          this.#sink.model(event.model);
        }
        // The whole request's usage comes in a chunk of its own (no choices); a chunk with choices may carry
        // a running count of its choice alone (vLLM's continuous_usage_stats), kept only until that comes.
        if (event.usage !== undefined && (event.choices.length === 0 || this.#usage === undefined))
          this.#usage = event.usage;
        if (event.choices.length === 0) return;
        let open = event.choices;
        for (const choice of event.choices) {
          const { index } = choice;
          while (this.#finishes.length <= index) this.#finishes.push(undefined);
          if (this.#finishes[index] !== undefined) {
            open = open.filter((c) => c !== choice);
            continue;
          }
          if (choice.finish !== undefined) {
            this.#finishes[index] = {
              ...choice.finish,
              ...(choice.finishReason !== undefined ? { finishReason: choice.finishReason } : {}),
            };
            this.#finished++;
            if (choice.finish.reason === "error") this.#errorFinish = true;
          }
        }
        if (open.length > 0) this.#sink.chunk(open);
      }
    }
  }
}

function finishedOutcome(
  choices: ChoiceFinish[],
  usage: UpstreamUsage | undefined,
  failure: UpstreamFailure | undefined,
): AttemptOutcome {
  // The upstream cancelling its own generation (shutting down) is a failure worth a retry elsewhere.
  if (choices.some((c) => c.reason === "cancelled")) {
    return {
      kind: "failed",
      failure: {
        code: "upstream_cancelled",
        message: "The upstream cancelled the generation (it may be shutting down).",
        retryable: true,
        countsAgainstUpstream: false,
      },
    };
  }
  const withErrors = choices.map((c) => {
    if (c.reason !== "error" || c.error !== undefined) return c;
    const error =
      failure !== undefined
        ? { code: failure.code, message: failure.message }
        : {
            code: "upstream_error",
            message: "The upstream ended the generation with an error.",
          };
    return { ...c, error };
  });
  const finish = withErrors.find((c) => c.reason === "error") ?? withErrors[0]!;
  return { kind: "finished", finish, choices: withErrors, ...(usage ? { usage } : {}) };
}

/**
 * Reads an event stream given as a byte stream (split anywhere) to its outcome: the streaming decoder, then
 * `EventStreamReader`. `activity` is called on every read; `ended` turns a failure into the outcome (by
 * default, the failure itself). Used by the decoder's property tests.
 */
export async function readEventStream(
  body: ReadableStream<Uint8Array>,
  sink: AttemptSink,
  activity: () => void = () => {},
  ended: (failure: UpstreamFailure | undefined) => AttemptOutcome = (failure) =>
    failure === undefined ? { kind: "aborted" } : { kind: "failed", failure },
  choices = 1,
): Promise<AttemptOutcome> {
  const decoder = new TextDecoder("utf-8");
  const reader = new EventStreamReader(sink, choices);
  const bytes = body.getReader();
  let broken: string | undefined;
  try {
    for (;;) {
      let read: ReadableStreamReadResult<Uint8Array>;
      try {
        read = await bytes.read();
      } catch (error) {
        broken = error instanceof Error ? error.message : String(error);
        break;
      }
      activity();
      if (read.done) {
        reader.feed(decoder.decode());
        reader.end();
        break;
      }
      reader.feed(decoder.decode(read.value, { stream: true }));
      if (reader.settled) break;
    }
  } finally {
    bytes.cancel().catch(() => {});
  }
  return reader.outcome(broken, ended);
}
