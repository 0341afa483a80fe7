import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { SluiceError } from "../../src/errors.ts";
import type { StreamChunk } from "../../src/types.ts";
import { activeTimeouts, collect, info, joinText, open, turn } from "./helpers.ts";

describe("tryPop", () => {
  test("returns nothing while empty, and nothing ever again after the terminal chunk", () => {
    const { channel, producer } = open();
    assert.equal(channel.tryPop(), undefined);
    producer.finish([1], "a", info("eos"));
    assert.equal(channel.tryPop()?.finished, true);
    assert.equal(channel.tryPop(), undefined);
    producer.push([2], "b");
    assert.equal(channel.tryPop(), undefined);
  });
});

describe("waitPop", () => {
  test("resolves with a chunk already queued", async () => {
    const { channel, producer } = open();
    producer.push([1], "a");
    assert.deepEqual(await channel.waitPop(), { tokenIds: [1], text: "a", finished: false });
  });

  test("a waiting consumer is woken by the push itself, with that delta", async () => {
    const { channel, producer } = open();
    const waiting = channel.waitPop();
    producer.push([1], "a");
    producer.push([2], "b");
    assert.deepEqual(await waiting, { tokenIds: [1], text: "a", finished: false });
    assert.deepEqual(channel.tryPop(), { tokenIds: [2], text: "b", finished: false });
  });

  test("several waiters are served in call order, the extra ones get nothing after the terminal", async () => {
    const { channel, producer } = open();
    const first = channel.waitPop();
    const second = channel.waitPop();
    const third = channel.waitPop();
    producer.push([1], "a");
    producer.finish([2], "b", info("eos"));
    assert.equal((await first)?.text, "a");
    assert.equal((await second)?.finished, true);
    assert.equal(await third, undefined);
  });

  test("0 does not wait", async () => {
    const { channel, producer } = open();
    const before = activeTimeouts();
    assert.equal(await channel.waitPop(0), undefined);
    assert.equal(activeTimeouts(), before);
    producer.push([1], "a");
    assert.equal((await channel.waitPop(0))?.text, "a");
  });

  test("negative and NaN timeouts do not wait either", async () => {
    const { channel } = open();
    const before = activeTimeouts();
    assert.deepEqual(await Promise.all([channel.waitPop(-1), channel.waitPop(Number.NaN)]), [
      undefined,
      undefined,
    ]);
    assert.equal(activeTimeouts(), before);
  });

  test("resolves undefined on timeout, and the next push goes to the next reader", async (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const { channel, producer } = open();
    const waiting = channel.waitPop(50);
    t.mock.timers.tick(49);
    producer.push([1], "a");
    assert.equal((await waiting)?.text, "a");
    const timingOut = channel.waitPop(50);
    t.mock.timers.tick(50);
    assert.equal(await timingOut, undefined);
    producer.push([2], "b");
    assert.equal(channel.tryPop()?.text, "b");
  });

  test("clears its timer as soon as it resolves early (chunk, terminal, drained)", async () => {
    const { channel, producer } = open();
    const before = activeTimeouts();
    const waiting = channel.waitPop(60_000);
    assert.equal(activeTimeouts(), before + 1);
    producer.push([1], "a");
    assert.equal(activeTimeouts(), before);
    await waiting;

    const ending = [channel.waitPop(60_000), channel.waitPop(60_000)];
    assert.equal(activeTimeouts(), before + 2);
    producer.finish([], "", info("eos"));
    assert.equal(activeTimeouts(), before);
    const [terminal, nothing] = await Promise.all(ending);
    assert.equal(terminal?.finished, true);
    assert.equal(nothing, undefined);
    assert.equal(await channel.waitPop(60_000), undefined);
    assert.equal(activeTimeouts(), before);
  });

  test("huge timeouts wait without a timer instead of firing at once", async () => {
    const { channel, producer } = open();
    const before = activeTimeouts();
    const waiting = channel.waitPop(Number.MAX_SAFE_INTEGER);
    assert.equal(activeTimeouts(), before);
    producer.push([1], "a");
    assert.equal((await waiting)?.text, "a");
  });

  test("a cancelled consumer still receives the terminal chunk", async () => {
    const { channel, producer } = open();
    const waiting = channel.waitPop();
    channel.cancel("user");
    producer.finish([4], "tail", info("cancelled"));
    assert.deepEqual(await waiting, {
      tokenIds: [4],
      text: "tail",
      finished: true,
      reason: "cancelled",
    });
  });
});

describe("for await", () => {
  test("yields every chunk in order and ends right after the terminal chunk", async () => {
    const { channel, producer } = open();
    const reading = collect(channel);
    // The reader is parked: "a" goes straight to it, "b" and "c" coalesce while it is busy.
    producer.push([1], "a");
    producer.push([2], "b");
    producer.push([3], "c");
    await turn();
    producer.finish([4], "d", info("eos"));
    const chunks = await reading;
    assert.deepEqual(
      chunks.map((chunk) => [chunk.text, chunk.finished]),
      [
        ["a", false],
        ["bc", false],
        ["d", true],
      ],
    );
  });

  test("does not end before the terminal chunk, even after a cancel", async () => {
    const { channel, producer } = open();
    const reading = collect(channel);
    channel.cancel();
    await turn();
    let ended = false;
    void reading.then(() => {
      ended = true;
    });
    await turn();
    assert.equal(ended, false);
    producer.finish([], "", info("cancelled"));
    const chunks = await reading;
    assert.equal(chunks.length, 1);
    assert.equal(chunks[0]?.reason, "cancelled");
  });

  test("break cancels the generation at once, without waiting for the terminal chunk", async () => {
    const { channel, producer, cancels } = open();
    producer.push([1], "a");
    for await (const chunk of channel) {
      assert.equal(chunk.text, "a");
      break;
    }
    assert.deepEqual(cancels, [{ reason: "iterator_closed", finishedAtCall: false }]);
    assert.equal(channel.cancelled, true);
    assert.equal(producer.cancelled, true);
    producer.finish([], "", info("cancelled"));
    assert.equal((await channel.result).reason, "cancelled");
  });

  test("a throw in the loop body cancels too", async () => {
    const { channel, producer, cancels } = open();
    producer.push([1], "a");
    await assert.rejects(async () => {
      for await (const _ of channel) throw new Error("boom");
    }, /boom/);
    assert.equal(cancels.length, 1);
  });

  test("break on the terminal chunk does not cancel a finished generation", async () => {
    const { channel, producer, cancels } = open();
    producer.finish([1], "a", info("eos"));
    for await (const chunk of channel) if (chunk.finished) break;
    assert.equal(cancels.length, 0);
    assert.equal(channel.cancelled, false);
  });

  test("return() while a next() is pending settles that next() as done: nothing left parked", async () => {
    const { channel, producer, cancels } = open();
    const iterator = channel[Symbol.asyncIterator]();
    const pending = iterator.next();
    assert.deepEqual(await iterator.return?.(), { done: true, value: undefined });
    assert.deepEqual(await pending, { done: true, value: undefined });
    assert.equal(cancels.length, 1);
    // The released read must not swallow the terminal chunk: another reader still gets it.
    producer.finish([], "", info("cancelled"));
    assert.equal(channel.tryPop()?.reason, "cancelled");
    assert.deepEqual(await iterator.next(), { done: true, value: undefined });
  });

  test("throw() cancels and rethrows", async () => {
    const { channel, cancels } = open();
    const iterator = channel[Symbol.asyncIterator]();
    await assert.rejects(iterator.throw!(new Error("thrown in")), /thrown in/);
    assert.equal(cancels.length, 1);
  });
});

describe("consume", () => {
  test("delivers every chunk in order, awaiting an async handler, then resolves with the result", async () => {
    const { channel, producer } = open();
    const seen: string[] = [];
    let inHandler = 0;
    const consuming = channel.consume(async (chunk) => {
      inHandler++;
      assert.equal(inHandler, 1, "handler calls must not overlap");
      await turn();
      seen.push(chunk.text);
      inHandler--;
    });
    producer.push([1], "a");
    producer.push([2], "b");
    await turn();
    producer.push([3], "c");
    producer.finish([4], "d", info("eos"));
    const result = await consuming;
    assert.equal(seen.join(""), "abcd");
    assert.equal(result.text, "abcd");
    assert.equal(result.reason, "eos");
  });

  test("a throwing handler cancels the generation and consume rejects with that error", async () => {
    const { channel, producer, cancels } = open();
    const failure = new Error("handler failed");
    const consuming = channel.consume((chunk) => {
      if (chunk.text === "b") throw failure;
    });
    producer.push([1], "a");
    await turn();
    producer.push([2], "b");
    await assert.rejects(consuming, (error) => error === failure);
    assert.deepEqual(cancels, [{ reason: "handler_error", finishedAtCall: false }]);
    producer.finish([], "", info("cancelled"));
    assert.equal((await channel.result).reason, "cancelled");
  });

  test("a rejecting async handler behaves the same", async () => {
    const { channel, producer, cancels } = open();
    const consuming = channel.consume(async () => {
      await turn();
      throw new Error("async failure");
    });
    producer.push([1], "a");
    await assert.rejects(consuming, /async failure/);
    assert.equal(cancels.length, 1);
  });
});

describe("result", () => {
  test("is one promise that resolves once the terminal chunk is queued, before it is read", async () => {
    const { channel, producer } = open();
    const result = channel.result;
    assert.equal(channel.result, result);
    producer.push([1], "a");
    producer.finish([], "", info("eos"));
    assert.equal((await result).text, "a");
    assert.equal(channel.tryPop()?.finished, true);
  });

  test("never rejects for a cancel", async () => {
    const { channel, producer } = open({ rejectOnError: true });
    channel.cancel();
    producer.finish([], "", info("cancelled"));
    assert.equal((await channel.result).reason, "cancelled");
  });

  test("resolves on an error finish by default", async () => {
    const { channel, producer } = open();
    producer.finish([], "", info("error", { error: { code: "engine_error", message: "x" } }));
    assert.equal((await channel.result).reason, "error");
  });

  test("rejectOnError rejects result and consume with a SluiceError carrying the chunk's code", async () => {
    const { channel, producer } = open({ rejectOnError: true });
    const consuming = channel.consume(() => {});
    producer.finish([], "", info("error", { error: { code: "engine_error", message: "decode failed" } }));
    for (const settled of [channel.result, consuming]) {
      await assert.rejects(settled, (error) => {
        assert.ok(error instanceof SluiceError);
        assert.equal(error.code, "engine_error");
        assert.equal(error.message, "decode failed");
        return true;
      });
    }
  });
});

describe("toReadableStream", () => {
  test("streams every chunk and closes after the terminal one, pulling only on demand", async () => {
    const { channel, producer } = open();
    const reader = channel.toReadableStream().getReader();
    producer.push([1], "a");
    producer.push([2], "b");
    await turn();
    // Nothing was read ahead: the two pushes are still coalesced in the channel.
    assert.deepEqual(await reader.read(), {
      done: false,
      value: { tokenIds: [1, 2], text: "ab", finished: false },
    });
    const next = reader.read();
    producer.finish([3], "c", info("eos"));
    assert.equal((await next).value?.finished, true);
    assert.deepEqual(await reader.read(), { done: true, value: undefined });
  });

  test("cancelling the stream cancels the generation with the stream's reason", async () => {
    const { channel, producer, cancels } = open();
    const stream = channel.toReadableStream();
    const reader = stream.getReader();
    const pending = reader.read();
    await reader.cancel("client went away");
    assert.deepEqual(await pending, { done: true, value: undefined });
    assert.deepEqual(cancels, [{ reason: "client went away", finishedAtCall: false }]);
    producer.finish([], "", info("cancelled"));
    assert.equal(channel.tryPop()?.reason, "cancelled");
  });

  test("a non-string cancel reason maps to stream_cancelled", async () => {
    const { channel, cancels } = open();
    await channel.toReadableStream().cancel(new Error("gone"));
    assert.equal(cancels[0]?.reason, "stream_cancelled");
  });
});

describe("asyncDispose", () => {
  test("await using cancels an unfinished generation and waits for its terminal chunk", async () => {
    const { channel, producer, cancels } = open();
    const order: string[] = [];
    const scope = (async () => {
      await using owned = channel;
      assert.equal(owned.id, "req-1");
    })().then(() => order.push("disposed"));
    await turn();
    assert.deepEqual(cancels, [{ reason: "disposed", finishedAtCall: false }]);
    assert.equal(order.length, 0);
    order.push("finish");
    producer.finish([], "", info("cancelled"));
    await scope;
    assert.deepEqual(order, ["finish", "disposed"]);
  });

  test("disposing a finished channel does not cancel and does not reject on error", async () => {
    const { channel, producer, cancels } = open({ rejectOnError: true });
    producer.finish([], "", info("error", { error: { code: "engine_error", message: "x" } }));
    await channel[Symbol.asyncDispose]();
    assert.equal(cancels.length, 0);
  });
});

describe("encapsulation", () => {
  test("nothing reachable from the handle can push or finish", () => {
    const { channel } = open();
    const reachable: unknown[] = [];
    for (const key of Reflect.ownKeys(channel)) reachable.push(Reflect.get(channel, key));
    let proto: object | null = Object.getPrototypeOf(channel);
    const names = new Set<string | symbol>();
    for (; proto !== null && proto !== Object.prototype; proto = Object.getPrototypeOf(proto)) {
      for (const key of Reflect.ownKeys(proto)) names.add(key);
    }
    assert.deepEqual(Reflect.ownKeys(channel), ["id"]);
    for (const name of ["push", "finish", "producer", "core"]) assert.equal(names.has(name), false, name);
    const iterator = channel[Symbol.asyncIterator]();
    for (const value of [...reachable, iterator, channel.toReadableStream()]) {
      if (typeof value !== "object" || value === null) continue;
      assert.equal("push" in value, false);
      assert.equal("finish" in value, false);
    }
  });

  test("chunks are plain data", () => {
    const { channel, producer } = open();
    producer.push([1], "a");
    const chunk = channel.tryPop() as StreamChunk;
    assert.equal(Object.getPrototypeOf(chunk), Object.prototype);
    assert.deepEqual(JSON.parse(JSON.stringify(chunk)), chunk);
    assert.equal(joinText([chunk]), "a");
  });
});
