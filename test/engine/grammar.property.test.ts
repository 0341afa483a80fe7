import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Ajv } from "ajv";
import fc from "fast-check";
import { BUNDLED_MODEL_PATH } from "../../src/engine/modelPath.ts";
import { Runtime } from "../../src/runtime/Runtime.ts";
import { objectSchema, propertyEntries } from "../helpers/schemas.ts";

// Real engine: random schemas from the enforceable subset, sampled at temperature 1 so that the model's
// own preferences do not decide the shape of the output; the grammar must.
let runtime: Runtime;

before(async () => {
  runtime = await Runtime.create({ model: BUNDLED_MODEL_PATH, slots: 1, threads: 1, contextSize: 512 });
});
after(() => runtime.close());

const leaf = fc.oneof(
  fc.constant({ type: "boolean" }),
  fc.constant({ type: "integer" }),
  fc.constant({ type: "number" }),
  fc.constant({ type: "null" }),
  fc.integer({ min: 1, max: 6 }).map((maxLength) => ({ type: "string", maxLength })),
  fc
    .uniqueArray(fc.constantFrom("Moses", "Aaron", "Miriam", "Joshua"), { minLength: 1, maxLength: 3 })
    .map((values) => ({ enum: values })),
  fc.constantFrom("Genesis", 3, true).map((value) => ({ const: value })),
  fc.constant({ type: ["string", "null"], maxLength: 4 }),
);

const NAMES = ["book", "chapter", "verse", "text", "ok"];

const schema: fc.Arbitrary<Record<string, unknown>> = fc.letrec((tie) => ({
  node: fc.oneof({ maxDepth: 2, withCrossShrink: true }, leaf, tie("object"), tie("array"), tie("anyOf")),
  object: propertyEntries(NAMES, tie("node"), { minLength: 1, maxLength: 3 }).map((entries) =>
    objectSchema(entries),
  ),
  array: fc
    .tuple(tie("node"), fc.integer({ min: 0, max: 2 }))
    .map(([items, minItems]) => ({ type: "array", items, minItems, maxItems: minItems + 1 })),
  anyOf: fc.tuple(leaf, leaf).map((options) => ({ anyOf: options })),
})).node as fc.Arbitrary<Record<string, unknown>>;

// Objects at the top, as response_format requires.
const topLevel = propertyEntries(NAMES, schema, { minLength: 1, maxLength: 2 }).map((entries) =>
  objectSchema(entries),
);

test("every completion under a random JSON schema parses and validates; a cancelled one is a prefix of one", async () => {
  const ajv = new Ajv({ strict: false });
  await fc.assert(
    fc.asyncProperty(
      topLevel,
      fc.integer({ min: 0, max: 2 ** 31 }),
      fc.integer({ min: 1, max: 12 }),
      async (s, seed, cutAt) => {
        const request = {
          prompt: "Genesis 1\n1 In the beginning",
          temperature: 1,
          seed,
          maxTokens: 480,
          grammar: { type: "json_schema" as const, schema: s },
        };
        const full = await runtime.generate(request).result;
        assert.equal(full.reason, "eos", `did not finish: ${full.text}`);
        const value = JSON.parse(full.text);
        assert.ok(ajv.validate(s, value), `${JSON.stringify(ajv.errors)} for ${full.text}`);
        // The same seeded run, cancelled after a few chunks: what was sent is a prefix of that valid document.
        const channel = runtime.generate(request);
        let chunks = 0;
        for await (const _ of channel) if (++chunks === cutAt) channel.cancel();
        const cut = await channel.result;
        assert.ok(
          full.text.startsWith(cut.text),
          `${JSON.stringify(cut.text)} vs ${JSON.stringify(full.text)}`,
        );
      },
    ),
    { numRuns: 20 },
  );
});
