import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import type { TerminalInfo } from "../../src/channel/index.ts";
import type { FinishReason, StreamChunk } from "../../src/types.ts";
import { type Delta, delta, reason } from "./arbitraries.ts";
import { info, open } from "./helpers.ts";

type Op =
  | { kind: "push"; delta: Delta }
  | { kind: "finish"; delta: Delta; reason: FinishReason }
  | { kind: "pop" }
  | { kind: "cancel" };

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ kind: fc.constant("push" as const), delta }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("finish" as const), delta, reason }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("pop" as const) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("cancel" as const) }) },
);

function terminalInfo(reason: FinishReason): TerminalInfo {
  if (reason === "stop") return info(reason, { stop: "\n" });
  if (reason === "error") return info(reason, { error: { code: "engine_error", message: "boom" } });
  return info(reason);
}

/**
 * The channel against a reference model of its queue: whatever was pushed since the last read comes out as
 * one chunk, the terminal chunk absorbs what is pending, and nothing is lost, duplicated or reordered.
 */
test("coalescing and the terminal chunk match the reference model on any op sequence", async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(op, { maxLength: 40 }), async (ops) => {
      const { channel, producer, cancels } = open();
      let pending: { ids: number[]; text: string } | undefined;
      let terminal: StreamChunk | undefined;
      let finished = false;
      let cancelled = false;
      const all = { ids: [] as number[], text: "" };

      const finish = (last: Delta, why: FinishReason): void => {
        const won = producer.finish(last.ids, last.text, terminalInfo(why));
        assert.equal(won, !finished, "only the first finish wins");
        if (finished) return;
        finished = true;
        all.ids.push(...last.ids);
        all.text += last.text;
        const { stop, error } = terminalInfo(why);
        terminal = {
          tokenIds: [...(pending?.ids ?? []), ...last.ids],
          text: (pending?.text ?? "") + last.text,
          finished: true,
          reason: why,
          ...(stop === undefined ? {} : { stop }),
          ...(error === undefined ? {} : { error }),
        };
        pending = undefined;
      };

      for (const step of ops) {
        switch (step.kind) {
          case "push": {
            producer.push(step.delta.ids, step.delta.text);
            if (finished || (step.delta.ids.length === 0 && step.delta.text === "")) break;
            all.ids.push(...step.delta.ids);
            all.text += step.delta.text;
            pending ??= { ids: [], text: "" };
            pending.ids.push(...step.delta.ids);
            pending.text += step.delta.text;
            break;
          }
          case "finish":
            finish(step.delta, step.reason);
            break;
          case "pop": {
            let expected: StreamChunk | undefined;
            if (pending !== undefined) {
              expected = { tokenIds: pending.ids, text: pending.text, finished: false };
              pending = undefined;
            } else if (terminal !== undefined) {
              expected = terminal;
              terminal = undefined;
            }
            assert.deepEqual(channel.tryPop(), expected);
            break;
          }
          case "cancel":
            channel.cancel("test");
            if (!finished) cancelled = true;
            break;
        }
        assert.equal(channel.finished, finished);
        assert.equal(channel.cancelled, cancelled);
        assert.equal(producer.cancelled, cancelled);
        assert.equal(cancels.length, cancelled ? 1 : 0);
      }

      // The runtime always finishes eventually; the consumer then drains.
      finish({ ids: [], text: "" }, cancelled ? "cancelled" : "eos");
      if (terminal !== undefined) assert.deepEqual(channel.tryPop(), terminal);
      assert.equal(channel.tryPop(), undefined);
      const result = await channel.result;
      assert.deepEqual(result.tokenIds, all.ids);
      assert.equal(result.text, all.text);
      assert.ok(cancels.every((call) => !call.finishedAtCall));
    }),
    { numRuns: 2000 },
  );
});
