import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Ajv } from "ajv";
import fc from "fast-check";
import type OpenAI from "openai";
import { BUNDLED_CHAT_MODEL_PATH } from "../../src/engine/modelPath.ts";
import { objectSchema, propertyEntries, schemaLeaf, schemaNode } from "../helpers/schemas.ts";
import { type ModelServer, serveModel } from "./client.ts";

// Random functions whose parameters use the enforceable schema subset, tool_choice "required": whatever the
// model would rather say, every call names an offered function and its arguments validate.
let client: OpenAI;
const ajv = new Ajv({ strict: false });

let real: ModelServer;
before(async () => {
  real = await serveModel({ model: BUNDLED_CHAT_MODEL_PATH, contextSize: 1024 });
  ({ client } = real);
});
after(() => real.close());

const node = schemaNode(schemaLeaf("integer"));
const parameters = propertyEntries(["book", "chapter", "verse", "text"], node, {
  minLength: 0,
  maxLength: 3,
}).chain((entries) =>
  fc.subarray(entries.map(([name]) => name)).map((required) => objectSchema(entries, required)),
);
const tools = propertyEntries(["get_verse", "count_verses", "find", "amen"], parameters, {
  minLength: 1,
  maxLength: 2,
}).map((entries) =>
  entries.map(
    ([name, schema]): OpenAI.Chat.Completions.ChatCompletionFunctionTool => ({
      type: "function",
      function: { name, parameters: schema },
    }),
  ),
);

test('random functions, tool_choice "required": every call is to an offered function, arguments valid', async () => {
  await fc.assert(
    fc.asyncProperty(
      tools,
      fc.constantFrom("Hello.", "Quote John 3:16.", "How many verses has Psalms 117?"),
      fc.boolean(),
      fc.integer({ min: 0, max: 1000 }),
      async (offered, question, parallel, seed) => {
        const answer = await client.chat.completions.create({
          model: "m",
          messages: [{ role: "user", content: question }],
          tools: offered,
          tool_choice: "required",
          parallel_tool_calls: parallel,
          max_completion_tokens: 200,
          temperature: 1,
          seed,
        });
        const [choice] = answer.choices;
        const calls = choice!.message.tool_calls ?? [];
        // Short leaves: the calls end well within the budget.
        assert.equal(choice!.finish_reason, "tool_calls", JSON.stringify(choice!.message));
        assert.ok(calls.length >= 1);
        if (!parallel) assert.equal(calls.length, 1);
        for (const call of calls) {
          const fn = (call as OpenAI.Chat.Completions.ChatCompletionMessageFunctionToolCall).function;
          const tool = offered.find((t) => t.function.name === fn.name);
          assert.ok(tool, `${fn.name} was offered`);
          const validate = ajv.compile(tool.function.parameters!);
          assert.ok(
            validate(JSON.parse(fn.arguments)),
            `${ajv.errorsText(validate.errors)}: ${fn.arguments}`,
          );
        }
      },
    ),
    { numRuns: 12, seed: 15 },
  );
});
