import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import type { StreamChannel } from "../../src/channel/index.ts";
import { ScriptedEngine } from "../../src/engine/ScriptedEngine.ts";
import type { RequestRecord } from "../../src/runtime/RequestState.ts";
import { Runtime } from "../../src/runtime/Runtime.ts";
import { bundledVocabulary, drain } from "../helpers/scripted.ts";

/**
 * A cancel frees its slot within one step whenever it lands: inside a step, a few microtasks or macrotasks
 * after one, or while another slot's reset is in flight, by every cancel path. Each case checks the end record
 * (the slot was given back), the slot view, at most one step between cancel and free, no tokens computed after
 * the cancel, and that the runtime still serves the next request.
 */

const PATHS = [
  "cancel",
  "iteratorReturn",
  "signal",
  "readableCancel",
  "runtimeCancel",
  "asyncDispose",
  "consumeThrow",
] as const;
type Path = (typeof PATHS)[number];

type Trigger = { at: "step"; step: number; inside: boolean } | { at: "reset"; inside: boolean };
type Delay = { kind: "microtasks" | "immediates" | "timeouts"; n: number };

const trigger: fc.Arbitrary<Trigger> = fc.oneof(
  fc.record({ at: fc.constant("step" as const), step: fc.integer({ min: 1, max: 8 }), inside: fc.boolean() }),
  fc.record({ at: fc.constant("reset" as const), inside: fc.boolean() }),
);
const delay: fc.Arbitrary<Delay> = fc.oneof(
  fc.record({ kind: fc.constant("microtasks" as const), n: fc.integer({ min: 0, max: 24 }) }),
  fc.record({
    kind: fc.constantFrom("immediates" as const, "timeouts" as const),
    n: fc.integer({ min: 0, max: 3 }),
  }),
);

async function wait(d: Delay): Promise<void> {
  for (let i = 0; i < d.n; i++) {
    if (d.kind === "microtasks") await Promise.resolve();
    else if (d.kind === "immediates") await new Promise<void>((resolve) => setImmediate(resolve));
    else await new Promise<void>((resolve) => setTimeout(resolve, 0));
  }
}

/** Starts reading the victim the way `path` reads, and returns the action that stops it that way. */
function reader(
  channel: StreamChannel,
  path: Path,
  runtime: Runtime,
  abort: AbortController,
): { stop: () => void; done: Promise<unknown> } {
  switch (path) {
    case "cancel":
      return { stop: () => channel.cancel(), done: drain(channel) };
    case "signal":
      return { stop: () => abort.abort(), done: drain(channel) };
    case "runtimeCancel":
      return { stop: () => runtime.cancel(channel.id), done: drain(channel) };
    case "asyncDispose":
      return { stop: () => void channel[Symbol.asyncDispose](), done: channel.result };
    case "iteratorReturn": {
      const it = channel[Symbol.asyncIterator]();
      const done = (async () => {
        for (;;) if ((await it.next()).done) return;
      })();
      return { stop: () => void it.return?.(), done };
    }
    case "readableCancel": {
      const r = channel.toReadableStream().getReader();
      const done = (async () => {
        for (;;) if ((await r.read()).done) return;
      })();
      return { stop: () => void r.cancel(), done };
    }
    case "consumeThrow": {
      let stopping = false;
      const done = channel
        .consume(() => {
          if (stopping) throw new Error("consumer gave up");
        })
        .catch(() => {});
      // The handler throws on the next chunk it is given: the victim produces one every step.
      return { stop: () => (stopping = true), done };
    }
  }
}

test("a cancel at any offset around a step or a slot reset frees the slot within one step", async () => {
  const vocabulary = await bundledVocabulary();
  let runs = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(...PATHS),
      trigger,
      delay,
      fc.integer({ min: 1, max: 4 }),
      async (path, when, after, otherTokens) => {
        runs++;
        let fire: (() => Promise<void>) | undefined;
        let fired = false;
        const arm = async (inside: boolean) => {
          if (fired || fire === undefined) return;
          fired = true;
          const go = fire;
          // Inside: the step (or reset) resolves only after the cancel landed. After: it resolves at once.
          if (inside) await go();
          else void go();
        };
        const engine: ScriptedEngine = new ScriptedEngine(vocabulary, {
          slots: 2,
          // Timer-sized offsets need steps that take timer-sized time, as real ones do (else the victim ends first).
          stepMs: after.kind === "timeouts" ? 1 : 0,
          script: (): number[] => Array.from({ length: 40 }, () => engine.encode(" and")).flat(),
          onStep: ({ step }) => (when.at === "step" && step === when.step ? arm(when.inside) : undefined),
          onReleaseSlot: () => (when.at === "reset" ? arm(when.inside) : undefined),
        });
        const runtime = await Runtime.create({ engine, prefillChunkSize: 4 });
        const ends = new Map<string, RequestRecord>();
        const endWaiters = new Map<string, (r: RequestRecord) => void>();
        runtime.observe((event) => {
          if (event.type !== "end") return;
          ends.set(event.record.id, event.record);
          endWaiters.get(event.record.id)?.(event.record);
        });
        const ended = (id: string) =>
          ends.has(id)
            ? Promise.resolve(ends.get(id)!)
            : new Promise<RequestRecord>((resolve, reject) => {
                // A failure bound, not a synchronisation: a freed slot reports at once.
                const bound = setTimeout(() => {
                  const slots = JSON.stringify(runtime.snapshot().slots);
                  reject(
                    new Error(
                      `no end record for ${id} (${path}, ${JSON.stringify(when)}, ${JSON.stringify(after)}): ${slots}`,
                    ),
                  );
                }, 2000);
                endWaiters.set(id, (record) => {
                  clearTimeout(bound);
                  resolve(record);
                });
              });

        const abort = new AbortController();
        // The other request finishes early, so its slot is reset while the victim still runs.
        const other = runtime.generate({ prompt: "ab", maxTokens: otherTokens, id: "other" });
        const victim = runtime.generate({
          prompt: "In the beginning",
          maxTokens: 100,
          id: "victim",
          signal: abort.signal,
        });
        const read = reader(victim, path, runtime, abort);
        fire = async () => {
          await wait(after);
          read.stop();
        };
        const otherDone = drain(other);

        const record = await ended("victim");
        await read.done;
        await otherDone;
        const result = await victim.result;
        assert.equal(result.reason, "cancelled");
        assert.ok(record.cancel, "a cancelled request carries its cancel record");
        assert.ok(record.cancel.stepsToFree <= 1, `stepsToFree ${record.cancel.stepsToFree}`);
        assert.equal(record.cancel.tokensAfterCancel, 0);
        const slot = runtime.snapshot().slots.find((s) => s.requestId === "victim");
        assert.equal(slot, undefined, "the victim's slot is free once its end record is out");
        // The loop is alive and not stuck on the freed slot: a new request runs to its natural end.
        const next = await drain(runtime.generate({ prompt: "xy", maxTokens: 3 }));
        assert.equal(next.terminal.reason, "length");
        await runtime.close();
        assert.ok(fired, "the trigger fired before the victim ended");
      },
    ),
    { numRuns: 400, verbose: 1 },
  );
  assert.equal(runs, 400);
});
