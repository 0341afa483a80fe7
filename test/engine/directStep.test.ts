import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { LlamaEngine } from "../../src/engine/LlamaEngine.ts";
import { Runtime } from "../../src/runtime/Runtime.ts";
import type { GenerationRequest } from "../../src/types.ts";
import { assertSameResult as same } from "../helpers/results.ts";

// Real engine: the bundled model, one thread, two slots. A step whose items are all plain (no grammar,
// log-probabilities, biases or penalties) is decoded by the engine itself; any other step goes through
// node-llama-cpp's evaluation. Which path a step takes must never show in a request's tokens.
let engine: LlamaEngine;
let runtime: Runtime;

before(async () => {
  engine = await LlamaEngine.create({ slots: 2, threads: 1, contextSize: 512 });
  runtime = await Runtime.create({ engine });
});
after(async () => {
  await runtime.close();
  await engine.close();
});

const PLAIN: { request: GenerationRequest; what: string }[] = [
  { request: { prompt: "Genesis 1\n1 In the beginning", maxTokens: 40, temperature: 0 }, what: "greedy" },
  {
    request: { prompt: "The LORD is my shepherd", maxTokens: 40, temperature: 0.9, seed: 7 },
    what: "sampled, seed 7",
  },
];

test("a plain request's tokens are the same alone, beside a plain one and beside one that is not", async () => {
  for (const { request, what } of PLAIN) {
    let direct = engine.directSteps;
    let steps = runtime.steps;
    const alone = await runtime.generate(request).result;
    assert.equal(engine.directSteps - direct, runtime.steps - steps, `${what}: alone, every step direct`);

    // Beside a request with log-probabilities, the steps they share go through node-llama-cpp.
    direct = engine.directSteps;
    steps = runtime.steps;
    const [mixed] = await Promise.all([
      runtime.generate(request).result,
      runtime.generate({ prompt: "And it came to pass", maxTokens: 60, logprobs: 2 }).result,
    ]);
    assert.ok(runtime.steps - steps >= 40, what);
    assert.ok(engine.directSteps - direct < 5, `${what}: the shared steps were not direct`);
    same(mixed, alone, `${what}: beside log-probabilities`);

    // Beside another plain request: one direct batch for both.
    direct = engine.directSteps;
    steps = runtime.steps;
    const [paired] = await Promise.all([
      runtime.generate(request).result,
      runtime.generate({ prompt: "Psalm 23\n1 The LORD", maxTokens: 60 }).result,
    ]);
    assert.equal(
      engine.directSteps - direct,
      runtime.steps - steps,
      `${what}: beside a plain one, all direct`,
    );
    same(paired, alone, `${what}: beside a plain request`);
  }
});

test("requests that need node-llama-cpp's evaluation and plain ones take turns on the same slots", async () => {
  // Each kind of request, twice over, on both slots: what one path leaves in a slot the other must take up.
  const kinds: GenerationRequest[] = [
    { prompt: "Genesis 1\n1 In the beginning", maxTokens: 24 },
    { prompt: "Genesis 1\n1 In the beginning", maxTokens: 24, repeatPenalty: 1.5 },
    { prompt: "Genesis 1\n1 In the beginning", maxTokens: 24, logprobs: 1 },
    {
      prompt: "Genesis 1\n1 In the beginning",
      maxTokens: 24,
      grammar: { type: "gbnf", grammar: 'root ::= [a-z ]+ "."' },
    },
  ];
  const first = await Promise.all(kinds.map((request) => runtime.generate(request).result));
  for (let round = 0; round < 2; round++) {
    const again = await Promise.all([...kinds].reverse().map((request) => runtime.generate(request).result));
    for (const [i, result] of again.reverse().entries()) same(result, first[i]!, `kind ${i}, round ${round}`);
  }
  assert.match(first[3]!.text, /^[a-z ]+\.?$/);
});
