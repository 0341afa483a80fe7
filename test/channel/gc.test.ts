import assert from "node:assert/strict";
import { test } from "node:test";
import { createStreamChannel } from "../../src/channel/index.ts";
import { info } from "./helpers.ts";

const gc = globalThis.gc;
if (gc === undefined) throw new Error("run the channel tests with node --expose-gc");

interface Probe {
  reasons: (string | undefined)[];
  producer: ReturnType<typeof createStreamChannel>["producer"];
}

/**
 * Creates a channel in its own frame so the handle is unreachable on return, after letting `use` touch it.
 * Only the producer and the onCancel log escape, as in the runtime.
 */
function abandon(use: (channel: ReturnType<typeof createStreamChannel>["channel"]) => void): Probe {
  const reasons: (string | undefined)[] = [];
  const { channel, producer } = createStreamChannel({ id: "gc", onCancel: (reason) => reasons.push(reason) });
  use(channel);
  return { reasons, producer };
}

/** Collects until `done()` holds, yielding a macrotask between rounds so finalizers can run. */
async function collectUntil(done: () => boolean): Promise<void> {
  for (let round = 0; round < 200 && !done(); round++) {
    gc!();
    await new Promise(setImmediate);
  }
}

test("an abandoned handle is cancelled with reason 'gc' when collected", async () => {
  const dropped = abandon(() => {});
  await collectUntil(() => dropped.reasons.length > 0);
  assert.deepEqual(dropped.reasons, ["gc"]);
  assert.equal(dropped.producer.cancelled, true);
  // The runtime then finishes it like any cancel.
  assert.equal(dropped.producer.finish([], "", info("cancelled")), true);
});

test("a handle whose result was taken, consumed or iterated is not cancelled when dropped", async () => {
  const results: Promise<unknown>[] = [];
  const pinned = [
    abandon((channel) => {
      results.push(channel.result);
    }),
    abandon((channel) => {
      results.push(channel.consume(() => {}));
    }),
    abandon((channel) => {
      channel[Symbol.asyncIterator]();
    }),
    abandon((channel) => {
      channel.toReadableStream();
    }),
  ];
  // Control: created alongside, never pinned. Once it is collected, the pinned handles were eligible too.
  const control = abandon(() => {});
  await collectUntil(() => control.reasons.length > 0);
  assert.deepEqual(control.reasons, ["gc"]);
  for (const probe of pinned) {
    assert.deepEqual(probe.reasons, []);
    assert.equal(probe.producer.cancelled, false);
  }
  // `runtime.generate(req).result.then(...)` completes although nobody holds the handle.
  pinned[0]!.producer.push([1], "a");
  pinned[0]!.producer.finish([2], "b", info("eos"));
  pinned[1]!.producer.finish([3], "c", info("eos"));
  const [fromResult, fromConsume] = (await Promise.all(results)) as { text: string }[];
  assert.equal(fromResult?.text, "ab");
  assert.equal(fromConsume?.text, "c");
});

test("a finished or cancelled handle that is collected does not call onCancel", async () => {
  const finished = abandon(() => {});
  finished.producer.finish([], "", info("eos"));
  const cancelled = abandon((channel) => channel.cancel("user"));
  const control = abandon(() => {});
  await collectUntil(() => control.reasons.length > 0);
  assert.deepEqual(finished.reasons, []);
  assert.deepEqual(cancelled.reasons, ["user"]);
});

test("queued chunks, a signal or a parked read do not keep an abandoned handle alive", async () => {
  const controller = new AbortController();
  const queued = abandon(() => {});
  queued.producer.push([1], "queued");
  queued.producer.push([2], "coalesced");
  const parked = abandon((channel) => {
    void channel.waitPop();
  });
  const signalled = (() => {
    const reasons: (string | undefined)[] = [];
    createStreamChannel({ id: "gc", signal: controller.signal, onCancel: (reason) => reasons.push(reason) });
    return reasons;
  })();
  await collectUntil(() => queued.reasons.length + parked.reasons.length + signalled.length === 3);
  assert.deepEqual([queued.reasons, parked.reasons, signalled], [["gc"], ["gc"], ["gc"]]);
});
