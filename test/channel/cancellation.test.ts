import assert from "node:assert/strict";
import { getEventListeners } from "node:events";
import { describe, test } from "node:test";
import type { StreamChannel } from "../../src/channel/index.ts";
import { CancelReason, createStreamChannel } from "../../src/channel/index.ts";
import { info, open, turn } from "./helpers.ts";

/** Every way a consumer can cancel, with the reason each one reports. */
const paths: {
  name: string;
  reason: string | undefined;
  run: (channel: StreamChannel) => Promise<unknown>;
}[] = [
  { name: "cancel()", reason: undefined, run: async (channel) => channel.cancel() },
  { name: "cancel(reason)", reason: "user", run: async (channel) => channel.cancel("user") },
  {
    name: "break",
    reason: CancelReason.iteratorClosed,
    run: async (channel) => {
      for await (const _ of channel) break;
    },
  },
  {
    name: "iterator.return()",
    reason: CancelReason.iteratorClosed,
    run: async (channel) => channel[Symbol.asyncIterator]().return?.(),
  },
  {
    name: "stream.cancel()",
    reason: CancelReason.streamCancelled,
    run: (channel) => channel.toReadableStream().cancel(),
  },
  {
    name: "asyncDispose",
    reason: CancelReason.disposed,
    run: async (channel) => {
      void channel[Symbol.asyncDispose]();
    },
  },
  {
    name: "consume handler throws",
    reason: CancelReason.handlerError,
    run: (channel) =>
      channel
        .consume(() => {
          throw new Error("x");
        })
        .catch(() => {}),
  },
];

describe("cancellation paths", () => {
  for (const path of paths) {
    test(`${path.name}: onCancel once, synchronously, with its reason; the terminal chunk still comes`, async () => {
      const { channel, producer, cancels } = open();
      producer.push([1], "a");
      await path.run(channel);
      assert.deepEqual(cancels, [{ reason: path.reason, finishedAtCall: false }]);
      assert.equal(channel.cancelled, true);
      assert.equal(producer.cancelled, true);
      // Every other path afterwards is a no-op.
      channel.cancel("again");
      await channel[Symbol.asyncIterator]().return?.();
      await channel.toReadableStream().cancel();

      assert.equal(cancels.length, 1);
      producer.finish([2], "b", info("cancelled"));
      const result = await channel.result;
      assert.equal(result.reason, "cancelled");
      assert.equal(result.text, "ab");
    });

    test(`${path.name}: a no-op once the producer finished`, async () => {
      const { channel, producer, cancels } = open();
      producer.finish([1], "a", info("eos"));
      await path.run(channel);
      assert.equal(cancels.length, 0);
      assert.equal(channel.cancelled, false);
      assert.equal(producer.cancelled, false);
    });
  }

  test("cancel never throws, even when onCancel does", async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(warning.message);
    process.on("warning", onWarning);
    try {
      const { channel } = createStreamChannel({
        id: "r",
        onCancel: () => {
          throw new Error("runtime bug");
        },
      });
      assert.doesNotThrow(() => channel.cancel());
      assert.equal(channel.cancelled, true);
      await turn();
      assert.equal(warnings.length, 1);
      assert.match(warnings[0]!, /runtime bug/);
    } finally {
      process.off("warning", onWarning);
    }
  });

  test("cancel without onCancel still latches cancelled", () => {
    const { channel, producer } = createStreamChannel({ id: "r" });
    channel.cancel();
    assert.equal(producer.cancelled, true);
  });

  test("the channel never invents a terminal chunk on cancel: the runtime owns it", async () => {
    const { channel } = open();
    channel.cancel();
    await turn();
    assert.equal(channel.tryPop(), undefined);
    assert.equal(channel.finished, false);
  });
});

describe("AbortSignal", () => {
  test("aborting equals cancel(), with the DOMException mapped to 'aborted'", () => {
    const controller = new AbortController();
    const { channel, cancels } = open({ signal: controller.signal });
    assert.equal(getEventListeners(controller.signal, "abort").length, 1);
    controller.abort();
    assert.deepEqual(cancels, [{ reason: "aborted", finishedAtCall: false }]);
    assert.equal(channel.cancelled, true);
    assert.equal(getEventListeners(controller.signal, "abort").length, 0);
  });

  test("a string abort reason is passed through", () => {
    const controller = new AbortController();
    const { cancels } = open({ signal: controller.signal });
    controller.abort("navigation");
    assert.equal(cancels[0]?.reason, "navigation");
  });

  test("the listener is removed when the channel finishes", () => {
    const controller = new AbortController();
    const { producer, cancels } = open({ signal: controller.signal });
    producer.finish([], "", info("eos"));
    assert.equal(getEventListeners(controller.signal, "abort").length, 0);
    controller.abort();
    assert.equal(cancels.length, 0);
  });

  test("the listener is removed when the consumer cancels another way", () => {
    const controller = new AbortController();
    const { channel, cancels } = open({ signal: controller.signal });
    channel.cancel("user");
    assert.equal(getEventListeners(controller.signal, "abort").length, 0);
    controller.abort();
    assert.deepEqual(
      cancels.map((call) => call.reason),
      ["user"],
    );
  });

  test("an already-aborted signal: cancelled on return, onCancel one microtask later", async () => {
    const controller = new AbortController();
    controller.abort();
    const { channel, producer, cancels } = open({ signal: controller.signal });
    assert.equal(producer.cancelled, true);
    assert.equal(channel.cancelled, true);
    assert.equal(cancels.length, 0);
    assert.equal(getEventListeners(controller.signal, "abort").length, 0);
    await Promise.resolve();
    assert.deepEqual(cancels, [{ reason: "aborted", finishedAtCall: false }]);
    channel.cancel();
    assert.equal(cancels.length, 1);
  });

  test("an already-aborted signal: no onCancel if the producer finished synchronously", async () => {
    const controller = new AbortController();
    controller.abort();
    const { producer, cancels } = open({ signal: controller.signal });
    producer.finish([], "", info("cancelled"));
    await turn();
    assert.equal(cancels.length, 0);
  });

  test("one signal shared by many channels leaves no listener once they end", () => {
    const controller = new AbortController();
    const channels = Array.from({ length: 20 }, () => open({ signal: controller.signal }));
    assert.equal(getEventListeners(controller.signal, "abort").length, 20);
    channels.forEach(({ channel, producer }, i) => {
      if (i % 2 === 0) channel.cancel();
      else producer.finish([], "", info("eos"));
    });
    assert.equal(getEventListeners(controller.signal, "abort").length, 0);
  });
});
