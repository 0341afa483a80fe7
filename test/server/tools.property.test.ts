import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Ajv } from "ajv";
import fc from "fast-check";
import OpenAI from "openai";
import { BUNDLED_CHAT_MODEL_PATH } from "../../src/engine/modelPath.ts";
import { Runtime } from "../../src/runtime/Runtime.ts";
import { type Served, serve } from "./client.ts";

// Random functions whose parameters use the enforceable schema subset, tool_choice "required": whatever the
// model would rather say, every call names an offered function and its arguments validate.
let runtime: Runtime;
let served: Served;
let client: OpenAI;
const ajv = new Ajv({ strict: false });

before(async () => {
  runtime = await Runtime.create({ model: BUNDLED_CHAT_MODEL_PATH, slots: 2, threads: 1, contextSize: 1024 });
  served = await serve(runtime);
  client = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: "none", maxRetries: 0 });
});
after(async () => {
  await served.server.close();
  await runtime.close();
});

const leaf = fc.oneof(
  fc.constant({ type: "boolean" }),
  fc.constant({ type: "integer" }),
  fc.integer({ min: 1, max: 8 }).map((maxLength) => ({ type: "string", maxLength })),
  fc
    .uniqueArray(fc.constantFrom("Moses", "Aaron", "Miriam"), { minLength: 1, maxLength: 3 })
    .map((e) => ({ enum: e })),
  fc.constantFrom("Genesis", 7, false).map((value) => ({ const: value })),
);
const node = fc.oneof(
  leaf,
  fc.tuple(leaf, fc.integer({ min: 0, max: 2 })).map(([items, min]) => ({
    type: "array",
    items,
    minItems: min,
    maxItems: min + 1,
  })),
  fc.tuple(leaf, leaf).map((options) => ({ anyOf: options })),
);
const parameters = fc
  .uniqueArray(fc.tuple(fc.constantFrom("book", "chapter", "verse", "text"), node), {
    minLength: 0,
    maxLength: 3,
    selector: ([name]) => name,
  })
  .chain((entries) =>
    fc.subarray(entries.map(([name]) => name)).map((required) => ({
      type: "object",
      properties: Object.fromEntries(entries),
      required,
      additionalProperties: false,
    })),
  );
const tools = fc
  .uniqueArray(fc.tuple(fc.constantFrom("get_verse", "count_verses", "find", "amen"), parameters), {
    minLength: 1,
    maxLength: 2,
    selector: ([name]) => name,
  })
  .map((entries) =>
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
