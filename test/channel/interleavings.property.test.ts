import assert from "node:assert/strict";
import { getEventListeners } from "node:events";
import { test } from "node:test";
import fc from "fast-check";
import type { ChannelProducer, StreamChannel } from "../../src/channel/index.ts";
import type { FinishReason, StreamChunk } from "../../src/types.ts";
import { type Delta, delta, pace, pause, reason } from "./arbitraries.ts";
import { activeTimeouts, info, isWellFormed, joinIds, joinText, open } from "./helpers.ts";

type PollRead = "tryPop" | "waitPop0" | "waitPop" | "waitPopTimer";

/** How the consumer reads; `stopAt` / `throwAt` make it leave early after that many chunks. */
type Reader =
  | { kind: "poll"; reads: { read: PollRead; pace: number }[] }
  | { kind: "iterate"; stopAt: number | null; paces: number[] }
  | { kind: "consume"; throwAt: number | null; paces: number[]; async: boolean }
  | { kind: "stream"; stopAt: number | null; paces: number[] };

interface Scenario {
  pushes: Delta[];
  /** The runtime finishes after this many pushes; later pushes must be ignored. */
  finishAt: number;
  last: Delta;
  reason: FinishReason;
  producerPaces: number[];
  reader: Reader;
  /** Cancel (and keep reading) after this many chunks. */
  cancelAt: number | null;
  cancelVia: "cancel" | "abort";
}

const stopAt = fc.option(fc.nat({ max: 12 }), { nil: null });
const paces = fc.array(pace, { minLength: 1, maxLength: 6 });

const reader: fc.Arbitrary<Reader> = fc.oneof(
  fc.record({
    kind: fc.constant("poll" as const),
    reads: fc.array(
      fc.record({ read: fc.constantFrom<PollRead>("tryPop", "waitPop0", "waitPop", "waitPopTimer"), pace }),
      { minLength: 1, maxLength: 6 },
    ),
  }),
  fc.record({ kind: fc.constant("iterate" as const), stopAt, paces }),
  fc.record({ kind: fc.constant("consume" as const), throwAt: stopAt, paces, async: fc.boolean() }),
  fc.record({ kind: fc.constant("stream" as const), stopAt, paces }),
);

const scenario: fc.Arbitrary<Scenario> = fc.array(delta, { maxLength: 16 }).chain((pushes) =>
  fc.record({
    pushes: fc.constant(pushes),
    finishAt: fc.integer({ min: 0, max: pushes.length }),
    last: delta,
    reason,
    producerPaces: paces,
    reader,
    cancelAt: fc.option(fc.nat({ max: 12 }), { nil: null }),
    cancelVia: fc.constantFrom("cancel" as const, "abort" as const),
  }),
);

/** Plays the runtime: pushes at its own pace, finishes once (cancelled if the consumer asked), then strays. */
async function produce(s: Scenario, producer: ChannelProducer): Promise<Delta[]> {
  const sent: Delta[] = [];
  for (let i = 0; i < s.finishAt; i++) {
    const wait = s.producerPaces[i % s.producerPaces.length]!;
    if (wait > 0) await pause(wait);
    // Cancellation is applied before the next step: nothing more is generated.
    if (producer.cancelled) break;
    const next = s.pushes[i]!;
    producer.push(next.ids, next.text);
    sent.push(next);
  }
  if (s.producerPaces[0]! > 0) await pause(s.producerPaces[0]!);
  assert.equal(
    producer.finish(s.last.ids, s.last.text, info(producer.cancelled ? "cancelled" : s.reason)),
    true,
  );
  sent.push(s.last);
  for (const stray of s.pushes.slice(s.finishAt)) producer.push(stray.ids, stray.text);
  assert.equal(producer.finish([1], "late", info("error")), false);
  return sent;
}

interface Reading {
  chunks: StreamChunk[];
  /** Left before reading everything (break, throw, stream cancel). */
  leftEarly: boolean;
  /** Some consumer cancel happened while the channel was not finished yet. */
  cancelledInTime: boolean;
  /**
   * An async consume handler threw: consume cancels a few microtasks later, so whether that beat the
   * producer's finish is only known from the outcome (checked to be consistent instead).
   */
  cancelRaced: boolean;
}

async function consume(s: Scenario, channel: StreamChannel, abort: AbortController): Promise<Reading> {
  const reading: Reading = { chunks: [], leftEarly: false, cancelledInTime: false, cancelRaced: false };
  const { chunks } = reading;
  const exitNow = (): void => {
    reading.leftEarly = true;
    if (!channel.finished) reading.cancelledInTime = true;
  };
  const received = (chunk: StreamChunk): void => {
    chunks.push(chunk);
    if (s.cancelAt !== null && chunks.length === s.cancelAt + 1) {
      if (!channel.finished) reading.cancelledInTime = true;
      if (s.cancelVia === "cancel") channel.cancel("test");
      else abort.abort();
    }
  };
  const r = s.reader;
  switch (r.kind) {
    case "poll": {
      for (let i = 0; ; i++) {
        assert.ok(i < 100_000, "poll loop made no progress");
        const { read, pace: wait } = r.reads[i % r.reads.length]!;
        const chunk =
          read === "tryPop"
            ? channel.tryPop()
            : await channel.waitPop(read === "waitPop0" ? 0 : read === "waitPop" ? undefined : 60_000);
        if (chunk === undefined) {
          assert.ok(
            read === "tryPop" || read === "waitPop0",
            "a blocking wait ended before the terminal chunk",
          );
          await pause(4); // nothing queued: let the producer run
          continue;
        }
        received(chunk);
        if (chunk.finished) break;
        if (wait > 0) await pause(wait);
      }
      assert.equal(channel.tryPop(), undefined);
      assert.equal(await channel.waitPop(0), undefined);
      assert.equal(await channel.waitPop(), undefined);
      return reading;
    }
    case "iterate": {
      for await (const chunk of channel) {
        received(chunk);
        if (r.stopAt !== null && chunks.length > r.stopAt) {
          exitNow();
          break;
        }
        const wait = r.paces[chunks.length % r.paces.length]!;
        if (wait > 0) await pause(wait);
      }
      return reading;
    }
    case "consume": {
      const failure = new Error("handler failure");
      const handle = (chunk: StreamChunk): void => {
        received(chunk);
        if (r.throwAt !== null && chunks.length > r.throwAt) {
          if (r.async) {
            reading.leftEarly = true;
            reading.cancelRaced = true;
          } else {
            exitNow();
          }
          throw failure;
        }
      };
      const consumed = channel.consume(
        r.async
          ? async (chunk) => {
              const wait = r.paces[chunks.length % r.paces.length]!;
              if (wait > 0) await pause(wait);
              handle(chunk);
            }
          : handle,
      );
      try {
        assert.deepEqual(await consumed, await channel.result);
      } catch (error) {
        assert.equal(error, failure);
        // Consume has cancelled by now: if the channel is still unfinished, that cancel was in time.
        if (!channel.finished) reading.cancelledInTime = true;
      }
      return reading;
    }
    case "stream": {
      const streamReader = channel.toReadableStream().getReader();
      for (;;) {
        const step = await streamReader.read();
        if (step.done) break;
        received(step.value);
        if (r.stopAt !== null && chunks.length > r.stopAt) {
          exitNow();
          await streamReader.cancel();
          break;
        }
        const wait = r.paces[chunks.length % r.paces.length]!;
        if (wait > 0) await pause(wait);
      }
      return reading;
    }
  }
}

test("any interleaving of producer, consumer and cancels keeps every channel invariant", async () => {
  const timersBefore = activeTimeouts();
  await fc.assert(
    fc.asyncProperty(scenario, async (s) => {
      const abort = new AbortController();
      const { channel, producer, cancels } = open({ signal: abort.signal });
      const [sent, reading] = await Promise.all([produce(s, producer), consume(s, channel, abort)]);
      const result = await channel.result;
      const { chunks } = reading;

      // Nothing lost, duplicated or reordered: result = everything sent = (prefix of) what was read.
      assert.equal(result.text, sent.map((d) => d.text).join(""));
      assert.deepEqual(
        result.tokenIds,
        sent.flatMap((d) => d.ids),
      );
      const text = joinText(chunks);
      const ids = joinIds(chunks);
      assert.ok(result.text.startsWith(text));
      assert.deepEqual(ids, result.tokenIds.slice(0, ids.length));

      // Exactly one terminal chunk, last; a consumer that read to the end saw it and everything.
      const terminals = chunks.filter((chunk) => chunk.finished);
      assert.ok(terminals.length <= 1);
      if (terminals.length === 1) assert.equal(chunks.at(-1), terminals[0]);
      if (!reading.leftEarly) {
        assert.equal(terminals.length, 1);
        assert.equal(text, result.text);
      }
      if (terminals[0] !== undefined) assert.equal(terminals[0].reason, result.reason);

      // Chunks are whole deltas merged: boundaries fall between pushes, never inside a character.
      const boundaries = new Set<string>();
      let idCount = 0;
      let textLength = 0;
      for (const d of sent) boundaries.add(`${(idCount += d.ids.length)}:${(textLength += d.text.length)}`);
      idCount = 0;
      textLength = 0;
      for (const chunk of chunks) {
        idCount += chunk.tokenIds.length;
        textLength += chunk.text.length;
        assert.ok(boundaries.has(`${idCount}:${textLength}`), "chunk ends inside a delta");
        assert.ok(
          chunk.finished || chunk.tokenIds.length > 0 || chunk.text !== "",
          "empty non-terminal chunk",
        );
        assert.ok(isWellFormed(chunk.text));
      }

      // onCancel: exactly once if the consumer cancelled in time, never after finish; nothing left behind.
      const cancelledInTime = reading.cancelledInTime || (reading.cancelRaced && cancels.length === 1);
      assert.equal(cancels.length, cancelledInTime ? 1 : 0);
      assert.ok(cancels.every((call) => !call.finishedAtCall));
      assert.equal(channel.cancelled, cancelledInTime);
      assert.equal(producer.cancelled, cancelledInTime);
      if (cancelledInTime) assert.equal(result.reason, "cancelled");
      assert.equal(getEventListeners(abort.signal, "abort").length, 0);
      assert.equal(activeTimeouts(), timersBefore, "a waitPop timer was left behind");
    }),
    { numRuns: 1500 },
  );
});
