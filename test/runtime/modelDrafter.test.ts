import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { Vocabulary } from "../../src/detok/index.ts";
import { checkGguf } from "../../src/engine/checkGguf.ts";
import { BUNDLED_MODEL_PATH } from "../../src/engine/modelPath.ts";
import { ScriptedEngine, type ScriptedEngineOptions } from "../../src/engine/ScriptedEngine.ts";
import { SluiceError } from "../../src/errors.ts";
import type { RequestDrafter } from "../../src/runtime/Drafter.ts";
import { ModelDrafter } from "../../src/runtime/ModelDrafter.ts";
import { Runtime } from "../../src/runtime/Runtime.ts";
import type { GenerationRequest, GenerationResult } from "../../src/types.ts";
import { bundledVocabulary } from "../helpers/scripted.ts";

// Scripted engines as both the target and the draft model. Both continue a text by a rule over its last two
// tokens (a second-order Markov chain over ten letters), so what a model "would say next" depends on the
// context only, wherever the prompt ends: the draft model follows the target's rule except on chosen pairs,
// where it guesses wrong. Greedy output must be the target's, token for token, whatever the draft model does.
const vocabulary = await bundledVocabulary();
const probe = new ScriptedEngine(vocabulary);
const LETTERS = probe.encode("abcdefghij");
const BOS = vocabulary.bos!;

function letter(token: number | undefined): number {
  const i = token === undefined ? -1 : LETTERS.indexOf(token);
  return Math.max(i, 0);
}

/** The target's next token after `prev`, `last`; `wrong` (pairs `10 * prev + last`) makes the draft differ. */
function rule(prev: number | undefined, last: number | undefined, wrong?: ReadonlySet<number>): number {
  const p = letter(prev);
  const l = letter(last);
  const right = (5 * l + p + 1) % 10;
  return LETTERS[wrong?.has(10 * p + l) ? (right + 1) % 10 : right]!;
}

/** `count` tokens continuing `context` by the rule. */
function continuation(context: readonly number[], count: number, wrong?: ReadonlySet<number>): number[] {
  const out: number[] = [];
  let prev = context.at(-2);
  let last = context.at(-1);
  for (let i = 0; i < count; i++) {
    const next = rule(prev, last, wrong);
    out.push(next);
    prev = last;
    last = next;
  }
  return out;
}

const targetScript = (context: readonly number[]) => continuation(context, 400);
const draftScript = (wrong: ReadonlySet<number>) => (context: readonly number[]) =>
  continuation(context, 400, wrong);

function draftEngine(
  options: Omit<ScriptedEngineOptions, "vocabulary"> = {},
  wrong: ReadonlySet<number> = new Set<number>(),
) {
  return new ScriptedEngine(vocabulary, { script: draftScript(wrong), ...options });
}

function promptOf(text: string): number[] {
  return [BOS, ...probe.encode(text)];
}

/** The draft slot whose cache is `expected`, or undefined. */
function slotHolding(engine: ScriptedEngine, expected: readonly number[]): number | undefined {
  for (let slot = 0; slot < engine.info.slots; slot++) {
    const cache = engine.cachedTokens(slot);
    if (cache.length === expected.length && cache.every((t, i) => t === expected[i])) return slot;
  }
  return undefined;
}

describe("ModelDrafter on its own", () => {
  test("drafts greedily, one draft-engine step per draft position across every request", async () => {
    const engine = draftEngine();
    const drafter = new ModelDrafter(engine);
    const prompts = [promptOf("abc"), promptOf("jihgf"), promptOf("bad")];
    const requests = prompts.map((p) => drafter.start(p));
    for (const [i, r] of requests.entries()) r.push(LETTERS[i]!);
    const maxes = [1, 4, 2];
    await drafter.prepare(requests.map((r, i) => ({ drafter: r, max: maxes[i]! })));
    // Four steps for the longest draft; each carries every request still drafting, one item per slot.
    assert.deepEqual(
      engine.steps.map((s) => s.items.length),
      [3, 2, 1, 1],
    );
    for (const step of engine.steps) {
      assert.equal(new Set(step.items.map((i) => i.slot)).size, step.items.length);
      for (const item of step.items) assert.equal(item.sample?.temperature, 0);
    }
    // The first step reads each request's whole history and samples; later ones feed the last draft token.
    assert.deepEqual(
      engine.steps[0]!.items.map((i) => i.tokens.length),
      prompts.map((p) => p.length + 1),
    );
    for (const step of engine.steps.slice(1))
      for (const item of step.items) assert.equal(item.tokens.length, 1);
    for (const [i, r] of requests.entries()) {
      const history = [...prompts[i]!, LETTERS[i]!];
      assert.deepEqual([...r.draft(8)], continuation(history, maxes[i]!));
      assert.deepEqual([...r.draft(1)], continuation(history, 1));
    }
    assert.equal(drafter.stats.steps, 4);
    // A token pushed after the prepare makes its draft stale: no draft until the next prepare.
    requests[1]!.push(LETTERS[0]!);
    assert.deepEqual([...requests[1]!.draft(4)], []);
  });

  test("property: after every prepare a slot holds its request's tokens then the draft but its last token", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(fc.integer({ min: 0, max: 99 }), { maxLength: 40 }),
        fc.integer({ min: 1, max: 3 }),
        fc.array(fc.stringMatching(/^[a-j]{1,12}$/), { minLength: 1, maxLength: 4 }),
        fc.array(
          fc.record({
            request: fc.nat(),
            max: fc.integer({ min: 1, max: 6 }),
            // Steps without a prepare (drafting at length 0 elsewhere): the slot falls further behind.
            skip: fc.boolean(),
            accept: fc.nat(6),
            token: fc.integer({ min: 0, max: 9 }),
            end: fc.integer({ min: 0, max: 15 }),
          }),
          { minLength: 1, maxLength: 40 },
        ),
        async (wrongPairs, slots, texts, rounds) => {
          const wrong = new Set(wrongPairs);
          const engine = draftEngine({ slots, maxStepTokens: 24 }, wrong);
          const drafter = new ModelDrafter(engine);
          type Live = { drafter: RequestDrafter; history: number[] };
          let live: Live[] = texts.map((t) => {
            const history = promptOf(t);
            return { drafter: drafter.start(history), history };
          });
          let started = texts.length;
          for (const round of rounds) {
            if (live.length === 0) break;
            const chosen = live[round.request % live.length]!;
            const drafts = new Map<Live, readonly number[]>();
            if (!round.skip) {
              await drafter.prepare(live.map((l) => ({ drafter: l.drafter, max: round.max })));
              for (const l of live) {
                const draft = l.drafter.draft(round.max);
                drafts.set(l, draft);
                if (draft.length === 0) continue;
                // Greedy on the draft model, and the slot's cache is the tokens then the draft but its last.
                assert.deepEqual([...draft], continuation(l.history, draft.length, wrong));
                assert.notEqual(slotHolding(engine, [...l.history, ...draft.slice(0, -1)]), undefined);
              }
              // Never more requests drafting than the draft engine has slots.
              assert.ok([...drafts.values()].filter((d) => d.length > 0).length <= slots);
            }
            // The target's step: some of the draft accepted, then a token of its own (any: a sampled one).
            for (const l of live) {
              const draft = drafts.get(l) ?? [];
              const accepted = l === chosen ? Math.min(round.accept, draft.length) : draft.length;
              const taken = [...draft.slice(0, accepted), LETTERS[(round.token + accepted) % 10]!];
              for (const token of taken) {
                l.drafter.push(token);
                l.history.push(token);
              }
            }
            // Requests end (their slots go back to the pool) and new ones start.
            if (round.end === 0) {
              chosen.drafter.release?.();
              live = live.filter((l) => l !== chosen);
              const history = promptOf(texts[started++ % texts.length]!);
              live.push({ drafter: drafter.start(history), history });
            }
          }
          // Every request gone: every slot is free again.
          for (const l of live) l.drafter.release?.();
          const again = texts.slice(0, slots).map((t) => drafter.start(promptOf(t)));
          // Prompts longer than a step's budget are read over several calls.
          for (let i = 0; i < 3; i++) await drafter.prepare(again.map((r) => ({ drafter: r, max: 2 })));
          for (const r of again) assert.ok(r.draft(2).length > 0);
          assert.equal(drafter.stats.failures, 0);
        },
      ),
      { numRuns: 150 },
    );
  });

  test("with every slot taken a request gets no draft and never waits; an ended request's slot is reused", async () => {
    const engine = draftEngine({ slots: 1 });
    const drafter = new ModelDrafter(engine);
    const a = drafter.start(promptOf("abc"));
    const b = drafter.start(promptOf("abd"));
    await drafter.prepare([
      { drafter: a, max: 3 },
      { drafter: b, max: 3 },
    ]);
    assert.equal(a.draft(3).length, 3);
    assert.deepEqual([...b.draft(3)], []);
    assert.equal(drafter.stats.noSlot, 1);
    a.release?.();
    let released = 0;
    const watched = draftEngine({ slots: 1, onReleaseSlot: () => void released++ });
    const other = new ModelDrafter(watched);
    const c = other.start(promptOf("abc"));
    await other.prepare([{ drafter: c, max: 2 }]);
    c.release?.();
    assert.equal(released, 0, "released only at the next prepare, never from release()");
    await drafter.prepare([{ drafter: b, max: 3 }]);
    assert.deepEqual([...b.draft(3)], continuation(promptOf("abd"), 3));
    // The slot kept the first request's cache: the second read only what differs ("d" after "ab").
    assert.equal(engine.steps.at(-3)!.items[0]!.tokens.length, 1);
  });

  test("a failed draft step or item stops that request's drafts; its slot is emptied and reused", async () => {
    // Step 2 fails as a whole (both requests), then a later item fault on one slot.
    const engine = draftEngine({ slots: 2, faults: [{ step: 2 }, { step: 5, slot: 0 }] });
    const drafter = new ModelDrafter(engine);
    const a = drafter.start(promptOf("abc"));
    const b = drafter.start(promptOf("cba"));
    await drafter.prepare([
      { drafter: a, max: 3 },
      { drafter: b, max: 3 },
    ]);
    assert.deepEqual([...a.draft(3)], []);
    assert.deepEqual([...b.draft(3)], []);
    assert.equal(drafter.stats.failures, 2);
    // New requests get the emptied slots and draft from scratch.
    const c = drafter.start(promptOf("abc"));
    const d = drafter.start(promptOf("cba"));
    await drafter.prepare([
      { drafter: a, max: 3 },
      { drafter: c, max: 3 },
      { drafter: d, max: 3 },
    ]);
    assert.deepEqual([...a.draft(3)], [], "a failed request drafts no more");
    const drafted = [c, d].filter((r) => r.draft(3).length > 0);
    assert.equal(drafted.length, 1, "the item fault at step 5 took one of them");
    for (const r of drafted) {
      const prompt = r === c ? promptOf("abc") : promptOf("cba");
      assert.deepEqual([...r.draft(3)], continuation(prompt, 3));
      assert.notEqual(slotHolding(engine, [...prompt, ...continuation(prompt, 2)]), undefined);
    }
  });

  test("a draft model with another vocabulary, or one whose slots cannot be trimmed, is refused", async () => {
    const init = (await checkGguf(BUNDLED_MODEL_PATH)).vocabulary;
    const tokens = [...init.tokens];
    tokens[300] = `${tokens[300]}x`;
    const other = Vocabulary.fromGguf({ ...init, tokens });
    const target = new ScriptedEngine(vocabulary);
    const refused = (error: unknown) =>
      error instanceof SluiceError &&
      error.code === "invalid_option" &&
      error.param === "draftModel" &&
      /token 300 differs.*vocabulary/.test(error.message);
    assert.throws(() => new ModelDrafter(new ScriptedEngine(other)).checkTarget(target.info), refused);
    await assert.rejects(
      Runtime.create({ engine: target, drafter: new ModelDrafter(new ScriptedEngine(other)) }),
      refused,
    );
    const small = Vocabulary.fromGguf({ model: "gpt2", tokens: ["a", "b"] });
    assert.throws(
      () => new ModelDrafter(new ScriptedEngine(small)).checkTarget(target.info),
      /2 tokens against 4096/,
    );
    assert.throws(
      () => new ModelDrafter(new ScriptedEngine(vocabulary, { promptCache: false })),
      (e: unknown) =>
        e instanceof SluiceError && e.code === "invalid_option" && /promptCache/.test(e.message),
    );
    new ModelDrafter(new ScriptedEngine(vocabulary)).checkTarget(target.info);
  });

  test('drafter "draft-model" needs draftModel; draftModel goes with no other drafter', async () => {
    const engine = new ScriptedEngine(vocabulary);
    await assert.rejects(
      Runtime.create({ engine, drafter: "draft-model" }),
      (e: unknown) =>
        e instanceof SluiceError && e.code === "invalid_option" && /needs draftModel/.test(e.message),
    );
    for (const drafter of ["prompt-lookup", "off"] as const) {
      await assert.rejects(
        Runtime.create({ engine, drafter, draftModel: "draft.gguf" }),
        (e: unknown) => e instanceof SluiceError && e.code === "invalid_option" && e.param === "draftModel",
      );
    }
  });
});

/** A target runtime over the rule, and a second one drafting with a scripted draft model. */
async function pair(
  options: {
    wrong?: ReadonlySet<number>;
    draftSlots?: number;
    faults?: ScriptedEngineOptions["faults"];
    acceptDraft?: ScriptedEngineOptions["acceptDraft"];
    onStep?: ScriptedEngineOptions["onStep"];
    targetFaults?: ScriptedEngineOptions["faults"];
  } = {},
) {
  const plainEngine = new ScriptedEngine(vocabulary, { script: targetScript, slots: 3 });
  const plain = await Runtime.create({ engine: plainEngine });
  const drafts = draftEngine(
    { slots: options.draftSlots ?? 3, ...(options.faults ? { faults: options.faults } : {}) },
    options.wrong,
  );
  const drafter = new ModelDrafter(drafts);
  const target = new ScriptedEngine(vocabulary, {
    script: targetScript,
    slots: 3,
    ...(options.acceptDraft ? { acceptDraft: options.acceptDraft } : {}),
    ...(options.onStep ? { onStep: options.onStep } : {}),
    ...(options.targetFaults ? { faults: options.targetFaults } : {}),
  });
  const runtime = await Runtime.create({ engine: target, drafter });
  return {
    plain,
    runtime,
    target,
    drafts,
    drafter,
    close: () => Promise.all([plain.close(), runtime.close()]),
  };
}

function same(a: GenerationResult, b: GenerationResult, what: string): void {
  assert.deepEqual(a.tokenIds, b.tokenIds, what);
  assert.equal(a.text, b.text, what);
  assert.equal(a.reason, b.reason, what);
  assert.equal(a.stop, b.stop, what);
}

/**
 * At every target step (the draft engine is idle then), each drafting item's draft slot holds the request's
 * tokens then its draft but the last token: the target's cache before the step, the item's token, the draft.
 */
function checkSlots(get: () => { target: ScriptedEngine; drafts: ScriptedEngine }) {
  let checked = 0;
  const onStep: ScriptedEngineOptions["onStep"] = ({ items }) => {
    const { target, drafts } = get();
    for (const item of items) {
      if (item.draft === undefined || item.draft.length === 0) continue;
      const expected = [...target.cachedTokens(item.slot), ...item.tokens, ...item.draft.slice(0, -1)];
      assert.notEqual(slotHolding(drafts, expected), undefined, `slot ${item.slot}: draft ${item.draft}`);
      checked++;
    }
  };
  return { onStep, checked: () => checked };
}

describe("ModelDrafter in the runtime", () => {
  test("property: output is plain output token for token; every draft slot stays in step with its request", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(fc.integer({ min: 0, max: 99 }), { maxLength: 60 }),
        fc.array(fc.nat(8), { minLength: 1, maxLength: 16 }),
        fc.array(
          fc.record({
            text: fc.stringMatching(/^[a-j]{1,10}$/),
            maxTokens: fc.integer({ min: 1, max: 40 }),
            stop: fc.option(fc.stringMatching(/^[a-j]{2}$/)),
          }),
          { minLength: 1, maxLength: 5 },
        ),
        fc.integer({ min: 1, max: 3 }),
        async (wrongPairs, cuts, specs, draftSlots) => {
          let call = 0;
          let env: { target: ScriptedEngine; drafts: ScriptedEngine } | undefined;
          const check = checkSlots(() => env!);
          const p = await pair({
            wrong: new Set(wrongPairs),
            draftSlots,
            onStep: check.onStep,
            // Random acceptance patterns: accept at most the matching prefix, cut where the test says.
            acceptDraft: (draft, expected) => {
              let match = 0;
              while (match < draft.length && draft[match] === expected[match]) match++;
              return Math.min(match, cuts[call++ % cuts.length]!);
            },
          });
          env = { target: p.target, drafts: p.drafts };
          try {
            const requests: GenerationRequest[] = specs.map((s) => ({
              prompt: s.text,
              maxTokens: s.maxTokens,
              ...(s.stop !== null ? { stop: [s.stop] } : {}),
            }));
            const [refs, outs] = await Promise.all([
              Promise.all(requests.map((r) => p.plain.generate(r).result)),
              Promise.all(requests.map((r) => p.runtime.generate(r).result)),
            ]);
            for (const [i, out] of outs.entries()) same(out, refs[i]!, `#${i}`);
            assert.equal(p.drafter.stats.failures, 0);
          } finally {
            await p.close();
          }
        },
      ),
      { numRuns: 60 },
    );
  });

  test("drafts are batched and counted in the stats: a right draft model brings several tokens a step", async () => {
    let env: { target: ScriptedEngine; drafts: ScriptedEngine } | undefined;
    const check = checkSlots(() => env!);
    const p = await pair({ onStep: check.onStep });
    env = { target: p.target, drafts: p.drafts };
    try {
      const requests = ["abc", "hij", "eee"].map((prompt) => ({ prompt, maxTokens: 48 }));
      const [refs, outs] = await Promise.all([
        Promise.all(requests.map((r) => p.plain.generate(r).result)),
        Promise.all(requests.map((r) => p.runtime.generate(r).result)),
      ]);
      for (const [i, out] of outs.entries()) same(out, refs[i]!, `#${i}`);
      const stats = p.runtime.stats;
      assert.ok(stats.draftTokens > 48, String(stats.draftTokens));
      assert.equal(stats.draftTokensAccepted, stats.draftTokens, "a right draft model: every token accepted");
      assert.ok(p.target.steps.length < 48, `${p.target.steps.length} target steps for 3 x 48 tokens`);
      // Batched: draft-engine steps are far fewer than draft tokens (three requests share each step).
      const draftItems = p.drafts.steps.reduce((n, s) => n + s.items.length, 0);
      assert.ok(
        p.drafts.steps.length * 2 < draftItems,
        `${p.drafts.steps.length} steps, ${draftItems} items`,
      );
      assert.ok(check.checked() > 10);
    } finally {
      await p.close();
    }
  });

  test("more requests than draft slots: the others decode without drafts, and take a slot once one is free", async () => {
    let env: { target: ScriptedEngine; drafts: ScriptedEngine } | undefined;
    const check = checkSlots(() => env!);
    const p = await pair({ draftSlots: 1, onStep: check.onStep });
    env = { target: p.target, drafts: p.drafts };
    try {
      const requests = ["abc", "hij", "eee"].map((prompt, i) => ({ prompt, maxTokens: 12 + 12 * i }));
      const [refs, outs] = await Promise.all([
        Promise.all(requests.map((r) => p.plain.generate(r).result)),
        Promise.all(requests.map((r) => p.runtime.generate(r).result)),
      ]);
      for (const [i, out] of outs.entries()) same(out, refs[i]!, `#${i}`);
      for (const step of p.target.steps) {
        assert.ok(step.items.filter((i) => (i.draft?.length ?? 0) > 0).length <= 1);
      }
      assert.ok(p.drafter.stats.noSlot > 0);
      // The longest request outlived the others: its slot freed, it drafted at the end.
      const last = p.target.steps.at(-1)!;
      assert.ok((last.items[0]!.draft?.length ?? 0) > 0 || p.runtime.stats.draftTokens > 0);
    } finally {
      await p.close();
    }
  });

  test("a request that finishes, is cancelled, fails or is cancelled queued gives its draft slot back", async () => {
    for (const ending of ["finish", "cancel", "error", "queued"] as const) {
      let released = 0;
      const drafts = draftEngine({ slots: 1, onReleaseSlot: () => void released++ });
      const drafter = new ModelDrafter(drafts);
      // One target slot; "error": the target fails the request's item at its fourth step.
      const engine = new ScriptedEngine(vocabulary, {
        script: targetScript,
        slots: 1,
        ...(ending === "error" ? { faults: [{ step: 4, slot: 0 }] } : {}),
      });
      const runtime = await Runtime.create({ engine, drafter });
      try {
        const first = runtime.generate({ prompt: "abc", maxTokens: ending === "finish" ? 6 : 200 });
        if (ending === "queued") {
          const queued = runtime.generate({ prompt: "abd", maxTokens: 4 });
          queued.cancel();
          assert.equal((await queued.result).reason, "cancelled");
          first.cancel();
        } else if (ending === "cancel") {
          let n = 0;
          for await (const _ of first) if (++n === 4) first.cancel();
        }
        const reason = (await first.result).reason;
        assert.equal(
          reason,
          { finish: "length", cancel: "cancelled", error: "error", queued: "cancelled" }[ending],
        );
        const draftSteps = drafts.steps.length;
        const second = await runtime.generate({ prompt: "hij", maxTokens: 10 }).result;
        assert.equal(second.usage.completionTokens, 10);
        // The second request drafted on the draft engine: the only draft slot came back to the pool, released
        // first. (Whether its drafts reach the target depends on what they are priced at, which is timing.)
        assert.ok(drafts.steps.length > draftSteps, ending);
        assert.ok(released > 0, ending);
      } finally {
        await runtime.close();
      }
    }
  });

  test("draft-engine failures never fail a request; later requests draft again", async () => {
    const p = await pair({
      faults: [{ step: 2 }, { step: 6, slot: 1 }, { step: 9, slot: 0 }, { step: 14 }],
    });
    try {
      for (let round = 0; round < 2; round++) {
        const requests = ["abc", "hij", "eee"].map((prompt) => ({ prompt, maxTokens: 30 }));
        const [refs, outs] = await Promise.all([
          Promise.all(requests.map((r) => p.plain.generate(r).result)),
          Promise.all(requests.map((r) => p.runtime.generate(r).result)),
        ]);
        for (const [i, out] of outs.entries()) {
          same(out, refs[i]!, `round ${round} #${i}`);
          assert.equal(out.reason, "length");
        }
      }
      assert.ok(p.drafter.stats.failures >= 3, String(p.drafter.stats.failures));
      assert.ok(p.runtime.stats.draftTokensAccepted > 0);
      // The draft engine was driven only between target steps: the runtime's rule holds for it too.
    } finally {
      await p.close();
    }
  });
});
