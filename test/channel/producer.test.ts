import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { info, open, popAll } from "./helpers.ts";

describe("producer: push", () => {
  test("a consumer that keeps up gets one chunk per push, in order", () => {
    const { channel, producer } = open();
    producer.push([1], "a");
    assert.deepEqual(channel.tryPop(), { tokenIds: [1], text: "a", finished: false });
    producer.push([2, 3], "bc");
    assert.deepEqual(channel.tryPop(), { tokenIds: [2, 3], text: "bc", finished: false });
    assert.equal(channel.tryPop(), undefined);
  });

  test("a lagging consumer gets the pending deltas merged into one chunk", () => {
    const { channel, producer } = open();
    producer.push([1], "He");
    producer.push([2, 3], "llo");
    producer.push([], " wo");
    producer.push([4], "");
    producer.push([5], "rld 👋");
    assert.deepEqual(popAll(channel), [
      { tokenIds: [1, 2, 3, 4, 5], text: "Hello world 👋", finished: false },
    ]);
  });

  test("a chunk already handed out is never changed by later pushes", () => {
    const { channel, producer } = open();
    producer.push([1], "a");
    const first = channel.tryPop();
    producer.push([2], "b");
    assert.deepEqual(first, { tokenIds: [1], text: "a", finished: false });
    assert.deepEqual(channel.tryPop(), { tokenIds: [2], text: "b", finished: false });
  });

  test("the pushed id array is copied, so the runtime may reuse it", () => {
    const { channel, producer } = open();
    const scratch = [7, 8];
    producer.push(scratch, "x");
    scratch[0] = 99;
    scratch.length = 0;
    assert.deepEqual(channel.tryPop()?.tokenIds, [7, 8]);
  });

  test("empty deltas are ignored: no empty chunk is ever queued", () => {
    const { channel, producer } = open();
    producer.push([], "");
    assert.equal(channel.tryPop(), undefined);
    producer.push([1], "");
    assert.deepEqual(channel.tryPop(), { tokenIds: [1], text: "", finished: false });
    producer.push([], "t");
    assert.deepEqual(channel.tryPop(), { tokenIds: [], text: "t", finished: false });
  });

  test("push never throws and is ignored after finish", () => {
    const { channel, producer } = open();
    producer.finish([1], "a", info("eos"));
    assert.doesNotThrow(() => producer.push([2], "b"));
    assert.deepEqual(popAll(channel), [{ tokenIds: [1], text: "a", finished: true, reason: "eos" }]);
  });

  test("push after cancel is still delivered: the runtime flushes what it generated", async () => {
    const { channel, producer } = open();
    channel.cancel();
    producer.push([1], "a");
    producer.finish([2], "b", info("cancelled"));
    assert.deepEqual(popAll(channel), [
      { tokenIds: [1, 2], text: "ab", finished: true, reason: "cancelled" },
    ]);
    assert.equal((await channel.result).text, "ab");
  });
});

describe("producer: finish", () => {
  test("queues one terminal chunk carrying the final delta and the terminal fields", async () => {
    const { channel, producer } = open();
    producer.push([1], "a");
    assert.ok(channel.tryPop());
    assert.equal(producer.finish([2], "b", info("stop", { stop: "\n\n" })), true);
    assert.deepEqual(channel.tryPop(), {
      tokenIds: [2],
      text: "b",
      finished: true,
      reason: "stop",
      stop: "\n\n",
    });
    assert.equal(channel.tryPop(), undefined);
    assert.deepEqual(await channel.result, {
      id: "req-1",
      reason: "stop",
      stop: "\n\n",
      text: "ab",
      tokenIds: [1, 2],
      usage: info("stop").usage,
      timings: info("stop").timings,
    });
  });

  test("merges a pending non-terminal delta into the terminal chunk", () => {
    const { channel, producer } = open();
    producer.push([1], "a");
    producer.push([2], "b");
    producer.finish([3], "c", info("length"));
    assert.deepEqual(popAll(channel), [
      { tokenIds: [1, 2, 3], text: "abc", finished: true, reason: "length" },
    ]);
  });

  test("an empty final delta still gives exactly one terminal chunk", () => {
    const { channel, producer } = open();
    producer.finish([], "", info("eos"));
    assert.deepEqual(popAll(channel), [{ tokenIds: [], text: "", finished: true, reason: "eos" }]);
  });

  test("is idempotent: the first call wins, later calls return false and change nothing", async () => {
    const { channel, producer } = open();
    assert.equal(producer.finished, false);
    assert.equal(producer.finish([1], "a", info("eos")), true);
    assert.equal(
      producer.finish([2], "b", info("error", { error: { code: "engine_error", message: "x" } })),
      false,
    );
    assert.equal(producer.finished, true);
    assert.equal(channel.finished, true);
    assert.deepEqual(popAll(channel), [{ tokenIds: [1], text: "a", finished: true, reason: "eos" }]);
    const result = await channel.result;
    assert.equal(result.reason, "eos");
    assert.equal(result.text, "a");
    assert.equal(result.error, undefined);
  });

  test("an error finish carries the error on the chunk and the result", async () => {
    const { channel, producer } = open();
    const error = { code: "engine_error", message: "decode failed" };
    producer.finish([], "", info("error", { error }));
    assert.deepEqual(channel.tryPop(), { tokenIds: [], text: "", finished: true, reason: "error", error });
    const result = await channel.result;
    assert.equal(result.reason, "error");
    assert.deepEqual(result.error, error);
  });

  test("result text and ids are the concatenation of every chunk, whoever read them", async () => {
    const { channel, producer } = open();
    producer.push([1, 2], "é");
    const first = channel.tryPop();
    producer.push([3], "🙂");
    producer.push([4], "x");
    producer.finish([5], "!", info("eos"));
    const rest = popAll(channel);
    const chunks = [first!, ...rest];
    const result = await channel.result;
    assert.equal(result.text, chunks.map((chunk) => chunk.text).join(""));
    assert.deepEqual(
      result.tokenIds,
      chunks.flatMap((chunk) => chunk.tokenIds),
    );
    assert.equal(result.text, "é🙂x!");
    assert.deepEqual(result.tokenIds, [1, 2, 3, 4, 5]);
  });

  test("producer reports id, cancelled and finished", () => {
    const { channel, producer } = open({ id: "abc" });
    assert.equal(producer.id, "abc");
    assert.equal(channel.id, "abc");
    assert.equal(producer.cancelled, false);
    channel.cancel();
    assert.equal(producer.cancelled, true);
    assert.equal(producer.finished, false);
    producer.finish([], "", info("cancelled"));
    assert.equal(producer.finished, true);
    assert.equal(producer.cancelled, true);
  });
});
