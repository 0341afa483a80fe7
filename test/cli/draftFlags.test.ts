import assert from "node:assert/strict";
import { test } from "node:test";
import { DRAFT_FLAGS, draftOptions } from "../../src/cli/draftFlags.ts";
import { parseArgs } from "../../src/cli/env.ts";
import { SluiceError } from "../../src/errors.ts";

const parse = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  draftOptions(parseArgs({ args, options: DRAFT_FLAGS }, env).values);

test("--model-draft implies the draft-model drafter; SLUICE_MODEL_DRAFT sets it too, a flag wins", () => {
  assert.deepEqual(parse(["--model-draft", "d.gguf"]), { draftModel: "d.gguf" });
  assert.deepEqual(parse([], { SLUICE_MODEL_DRAFT: "e.gguf", SLUICE_DRAFT_MAX: "4" }), {
    draftModel: "e.gguf",
    draftMax: 4,
  });
  assert.deepEqual(
    parse(["--model-draft", "d.gguf", "--drafter", "draft-model"], { SLUICE_MODEL_DRAFT: "e.gguf" }),
    {
      drafter: "draft-model",
      draftModel: "d.gguf",
    },
  );
  assert.deepEqual(parse(["--drafter", "prompt-lookup"]), { drafter: "prompt-lookup" });
  assert.deepEqual(parse([]), {});
});

test("draft-model without a draft model, or a draft model with another drafter, is refused by flag name", () => {
  const refused = (flag: string) => (e: unknown) => e instanceof SluiceError && e.message.includes(flag);
  assert.throws(() => parse(["--drafter", "draft-model"]), refused("--model-draft <path>"));
  assert.throws(
    () => parse(["--drafter", "off", "--model-draft", "d.gguf"]),
    refused("--drafter draft-model"),
  );
  assert.throws(() => parse(["--draft-max", "two"]), refused("--draft-max"));
  // Past the runtime's bound too, under the flag's name rather than Runtime.create's draftMax.
  for (const bad of ["0", "65", "1.5", ""]) {
    assert.throws(() => parse(["--draft-max", bad]), refused("from 1 to 64"), bad);
  }
  assert.deepEqual(parse(["--draft-max", "64"]), { draftMax: 64 });
});
