import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import type { StreamChannel } from "../../src/channel/index.ts";
import type { Engine, StepItem, StepOutcome } from "../../src/engine/Engine.ts";
import { ScriptedEngine, type ScriptedEngineOptions } from "../../src/engine/ScriptedEngine.ts";
import type { Drafter, RequestDrafter } from "../../src/runtime/Drafter.ts";
import { Runtime } from "../../src/runtime/Runtime.ts";
import type { GenerationResult, StreamChunk } from "../../src/types.ts";
import { bundledVocabulary } from "../helpers/scripted.ts";

// Scripted engine: it verifies drafts against its script (or accepts a scripted number of them), so every
// way a multi-token step can end a request is reached deterministically: a stop string, EOS, a stop token or
// maxTokens inside an accepted run, stream intervals, cancels between steps and during one.
const vocabulary = await bundledVocabulary();
const EOS = vocabulary.eos!;
/** Tokens whose text is printable ASCII: stop strings are then plain substrings of the decoded text. */
const ASCII: number[] = [];
for (let id = 0; id < vocabulary.size; id++) {
  const bytes = vocabulary.bytesOf(id);
  if (!vocabulary.isSpecial(id) && bytes.length > 0 && bytes.every((b) => b >= 32 && b < 127)) ASCII.push(id);
}
const CONTROL = 4092; // a control token that does not end generation: no text, but a token

/** Script tokens: mostly ASCII text, some control tokens and end-of-generation tokens. */
const scriptToken = fc.oneof(
  { arbitrary: fc.integer({ min: 0, max: ASCII.length - 1 }).map((i) => ASCII[i]!), weight: 20 },
  { arbitrary: fc.constant(CONTROL), weight: 1 },
  { arbitrary: fc.constant(EOS), weight: 1 },
);
/** Few distinct tokens so that stop tokens and repeats (what prompt lookup finds) happen often. */
const script = fc.array(fc.oneof(scriptToken, fc.constantFrom(ASCII[7]!, ASCII[300]!, ASCII[301]!)), {
  minLength: 1,
  maxLength: 40,
});

/** What a test drafter guesses: per call a length and whether (and where) the guess goes wrong. */
const guesses = fc.array(
  fc.record({ length: fc.integer({ min: 0, max: 6 }), wrongAt: fc.option(fc.nat(6)), token: scriptToken }),
  { minLength: 1, maxLength: 12 },
);
type Guess = { length: number; wrongAt: number | null; token: number };

/**
 * An oracle drafter: it knows the script (the prompt after its first token) and guesses its continuation,
 * wrong at a chosen position; with `scripted` acceptance its guesses are whatever the engine accepts.
 */
function oracleDrafter(plan: Guess[]): Drafter {
  return {
    name: "oracle",
    start(prompt): RequestDrafter {
      const future = prompt.slice(1);
      let at = 0;
      let call = 0;
      return {
        push: () => {
          at++;
        },
        draft(max) {
          const guess = plan[call++ % plan.length]!;
          const out: number[] = [];
          for (let i = 0; i < Math.min(max, guess.length); i++) {
            out.push(i === guess.wrongAt ? guess.token : (future[at + i] ?? EOS));
          }
          return out;
        },
      };
    },
  };
}

/** Records, per request, every token the engine offered it (accepted draft tokens, then its own token). */
class Recorder implements Engine {
  readonly offered = new Map<string, number[]>();
  runtime!: Runtime;
  constructor(readonly inner: ScriptedEngine) {}
  get info() {
    return this.inner.info;
  }
  tokenize(text: string) {
    return this.inner.tokenize(text);
  }
  async step(items: readonly StepItem[]): Promise<StepOutcome[]> {
    const owners = this.runtime.snapshot().slots;
    const outcomes = await this.inner.step(items);
    items.forEach((item, i) => {
      const outcome = outcomes[i]!;
      if (!outcome.ok || outcome.token === undefined) return;
      const id = owners[item.slot]!.requestId!;
      const run = this.offered.get(id) ?? [];
      run.push(...(item.draft?.slice(0, outcome.accepted ?? 0) ?? []), outcome.token);
      this.offered.set(id, run);
    });
    return outcomes;
  }
  cachedTokens(slot: number) {
    return this.inner.cachedTokens(slot);
  }
  releaseSlot(slot: number) {
    return this.inner.releaseSlot(slot);
  }
  trimSlot(slot: number, keep: number) {
    return this.inner.trimSlot(slot, keep);
  }
  chatTemplate() {
    return this.inner.chatTemplate();
  }
  close() {
    return this.inner.close();
  }
}

async function setup(
  plan: Guess[],
  engineOptions: Omit<ScriptedEngineOptions, "vocabulary">,
  draftMax: number,
): Promise<{ runtime: Runtime; recorder: Recorder; engine: ScriptedEngine }> {
  const engine = new ScriptedEngine(vocabulary, { slots: 3, script: (p) => p.slice(1), ...engineOptions });
  const recorder = new Recorder(engine);
  const runtime = await Runtime.create({ engine: recorder, drafter: oracleDrafter(plan), draftMax });
  recorder.runtime = runtime;
  return { runtime, recorder, engine };
}

function textOf(ids: readonly number[]): string {
  const kept = ids.filter((id) => !vocabulary.isSpecial(id));
  return Buffer.concat(kept.map((id) => vocabulary.bytesOf(id))).toString("latin1");
}

interface Limits {
  maxTokens: number;
  stop: string | undefined;
  stopToken: number | undefined;
}

/** Where a request offered `offered` must end: at its first finish cause, that token included. */
function expectedEnd(offered: readonly number[], limits: Limits): { ids: number[]; reason: string } {
  for (let i = 0; i < offered.length; i++) {
    const ids = offered.slice(0, i + 1);
    const token = offered[i]!;
    if (token === limits.stopToken) return { ids, reason: "stop" };
    if (limits.stop !== undefined && textOf(ids).includes(limits.stop)) return { ids, reason: "stop" };
    if (vocabulary.isEog(token)) return { ids, reason: "eos" };
    if (ids.length >= limits.maxTokens) return { ids, reason: "length" };
  }
  return { ids: [...offered], reason: "unfinished" };
}

async function read(channel: StreamChannel, cancelAfter: number | null): Promise<StreamChunk[]> {
  const chunks: StreamChunk[] = [];
  for await (const chunk of channel) {
    chunks.push(chunk);
    if (cancelAfter !== null && chunks.length === cancelAfter) channel.cancel();
  }
  assert.equal(chunks.filter((c) => c.finished).length, 1);
  assert.ok(chunks.at(-1)!.finished);
  return chunks;
}

function checkChunks(chunks: StreamChunk[], result: GenerationResult, interval: number): void {
  assert.deepEqual(
    chunks.flatMap((c) => c.tokenIds),
    result.tokenIds,
  );
  assert.equal(chunks.map((c) => c.text).join(""), result.text);
  // Stream interval counts tokens: a chunk before the terminal one carries at least `interval` of them.
  for (const chunk of chunks.slice(0, -1))
    assert.ok(chunk.tokenIds.length >= interval, JSON.stringify(chunk));
}

const limits = fc.record({
  maxTokens: fc.integer({ min: 1, max: 45 }),
  stopAt: fc.option(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 4 }))),
  stopTokenAt: fc.option(fc.nat()),
  streamInterval: fc.integer({ min: 1, max: 4 }),
  draftMax: fc.integer({ min: 1, max: 6 }),
});

function limitsFor(
  tokens: number[],
  o: { maxTokens: number; stopAt: [number, number] | null; stopTokenAt: number | null },
): Limits {
  const text = textOf(tokens);
  const stop =
    o.stopAt === null || text.length === 0
      ? undefined
      : text.slice(o.stopAt[0] % text.length, (o.stopAt[0] % text.length) + o.stopAt[1]);
  return {
    maxTokens: o.maxTokens,
    stop: stop !== undefined && stop.trim() !== "" ? stop : undefined,
    stopToken: o.stopTokenAt === null ? undefined : tokens[o.stopTokenAt % tokens.length],
  };
}

function requestOf(tokens: number[], l: Limits, streamInterval: number) {
  return {
    prompt: [EOS, ...tokens],
    maxTokens: l.maxTokens,
    streamInterval,
    ...(l.stop !== undefined ? { stop: l.stop } : {}),
    ...(l.stopToken !== undefined ? { stopTokenIds: [l.stopToken] } : {}),
  };
}

test("verified against the target, speculative output equals plain output, chunk for chunk interval", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(script, { minLength: 1, maxLength: 3 }),
      guesses,
      limits,
      async (scripts, plan, o) => {
        const { runtime } = await setup(plan, {}, o.draftMax);
        try {
          await Promise.all(
            scripts.map(async (tokens) => {
              const l = limitsFor(tokens, o);
              const request = requestOf(tokens, l, o.streamInterval);
              const plain = await runtime.generate({ ...request, speculative: false }).result;
              const channel = runtime.generate({ ...request, speculative: true });
              const chunks = await read(channel, null);
              const result = await channel.result;
              checkChunks(chunks, result, o.streamInterval);
              assert.deepEqual(result.tokenIds, plain.tokenIds);
              assert.equal(result.text, plain.text);
              assert.equal(result.reason, plain.reason);
              assert.equal(result.stop, plain.stop);
              assert.equal(result.usage.completionTokens, plain.usage.completionTokens);
            }),
          );
        } finally {
          await runtime.close();
        }
      },
    ),
    { numRuns: 150 },
  );
});

test("a finish cause inside an accepted run ends the request at that token; cancels free the slot with nothing after", async () => {
  await fc.assert(
    fc.asyncProperty(
      script,
      guesses,
      limits,
      fc.array(fc.integer({ min: 0, max: 6 }), { minLength: 1, maxLength: 8 }),
      fc.oneof(
        fc.constant({ kind: "none" as const }),
        fc.record({ kind: fc.constant("read" as const), after: fc.integer({ min: 1, max: 6 }) }),
        fc.record({ kind: fc.constant("step" as const), step: fc.integer({ min: 1, max: 12 }) }),
      ),
      async (tokens, plan, o, accepts, cancel) => {
        let channel: StreamChannel | undefined;
        let steps = 0;
        const { runtime, recorder, engine } = await setup(
          plan,
          {
            // Accept a scripted number of draft tokens, right or wrong: the runtime must take them as given.
            acceptDraft: (draft) => Math.min(draft.length, accepts[steps % accepts.length]!),
            onStep: () => {
              steps++;
              // A cancel while this step is in flight: its tokens must never reach the consumer.
              if (cancel.kind === "step" && steps === cancel.step) channel?.cancel();
            },
          },
          o.draftMax,
        );
        try {
          const l = limitsFor(tokens, o);
          channel = runtime.generate(requestOf(tokens, l, o.streamInterval));
          const id = channel.id;
          const record = runtime.endRecord(id)!;
          const chunks = await read(channel, cancel.kind === "read" ? cancel.after : null);
          const result = await channel.result;
          checkChunks(chunks, result, o.streamInterval);
          const { cancel: cancelRecord } = await record;
          const offered = recorder.offered.get(id) ?? [];
          const expected = expectedEnd(offered, l);
          assert.equal(result.usage.completionTokens, result.tokenIds.length);
          const slot = engine.steps.find((s) => s.items.length > 0)!.items[0]!.slot;
          const cached = engine.cachedTokens(slot);
          const prompt = [EOS, ...tokens];
          const whole = [...prompt, ...result.tokenIds];
          if (result.reason === "cancelled") {
            // Nothing after the cancel: what was emitted is a prefix of where the request would have ended.
            assert.deepEqual(result.tokenIds, expected.ids.slice(0, result.tokenIds.length));
            assert.ok(cancelRecord !== undefined);
            assert.equal(cancelRecord.tokensAfterCancel, 0);
            assert.ok(cancelRecord.stepsToFree <= 1, `freed after ${cancelRecord.stepsToFree} steps`);
            assert.ok(cached.length <= whole.length);
          } else {
            assert.equal(result.reason, expected.reason, JSON.stringify({ offered, l }));
            assert.deepEqual(result.tokenIds, expected.ids);
            // The slot keeps the prompt and the output but its last token: no accepted token after the end.
            assert.equal(cached.length, whole.length - 1);
          }
          assert.deepEqual(cached, whole.slice(0, cached.length));
        } finally {
          await runtime.close();
        }
      },
    ),
    { numRuns: 300 },
  );
});
