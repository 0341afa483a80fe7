import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Ajv } from "ajv";
import fc from "fast-check";
import type OpenAI from "openai";
import { zodResponseFormat } from "openai/helpers/zod";
import { z } from "zod";
import { objectSchema, propertyEntries, schemaLeaf, schemaNode } from "../helpers/schemas.ts";
import { type ModelServer, post, type Served, send, serveModel, textOf } from "./client.ts";

// Real engine: the bundled model under a grammar. It is a scripture model, not a JSON one: whatever it
// writes, the grammar decides the shape.
let served: Served;
let client: OpenAI;
const ajv = new Ajv({ strict: false });

const VERSE = {
  type: "object",
  properties: {
    book: { enum: ["Genesis", "Exodus", "Psalms"] },
    chapter: { type: "integer" },
    ok: { type: "boolean" },
    text: { type: "string", maxLength: 24 },
    names: { type: "array", items: { type: "string", maxLength: 6 }, maxItems: 2 },
  },
  required: ["book", "chapter", "ok", "text", "names"],
  additionalProperties: false,
};

function validates(schema: object, text: string): void {
  const value = JSON.parse(text);
  const validate = ajv.compile(schema);
  assert.ok(validate(value), `${text} against the schema: ${ajv.errorsText(validate.errors)}`);
}

describe("structured output: response_format json_object and json_schema, and a GBNF grammar", () => {
  let real: ModelServer;
  before(async () => {
    real = await serveModel();
    ({ served, client } = real);
  });
  after(() => real.close());

  test("chat json_object: a JSON object where the model would write scripture", async () => {
    const messages = [{ role: "user" as const, content: "Answer in JSON." }];
    const free = await client.chat.completions.create({
      model: "m",
      messages,
      max_completion_tokens: 40,
      temperature: 0,
    });
    assert.throws(() => JSON.parse(free.choices[0]!.message.content!), "unconstrained, it is not JSON");
    const json = await client.chat.completions.create({
      model: "m",
      messages,
      max_completion_tokens: 200,
      temperature: 0,
      response_format: { type: "json_object" },
    });
    assert.equal(json.choices[0]!.finish_reason, "stop");
    const value = JSON.parse(json.choices[0]!.message.content!);
    assert.equal(typeof value, "object");
    assert.ok(value !== null && !Array.isArray(value));
  });

  test("json_schema, chat and completions, streamed and not: the text parses and validates", async () => {
    const response_format = {
      type: "json_schema" as const,
      json_schema: { name: "verse", schema: VERSE, strict: true },
    };
    const chat = await client.chat.completions.create({
      model: "m",
      messages: [{ role: "user", content: "Which verse?" }],
      max_completion_tokens: 200,
      temperature: 1,
      seed: 11,
      response_format,
    });
    assert.equal(chat.choices[0]!.finish_reason, "stop");
    validates(VERSE, chat.choices[0]!.message.content!);

    const completion = await client.completions.create({
      model: "m",
      prompt: "Genesis 1\n1 In the beginning",
      max_tokens: 200,
      temperature: 0,
      ...({ response_format } as object),
    });
    assert.equal(completion.choices[0]!.finish_reason, "stop");
    validates(VERSE, completion.choices[0]!.text);

    const stream = await client.chat.completions.create({
      model: "m",
      messages: [{ role: "user", content: "Which verse?" }],
      max_completion_tokens: 200,
      temperature: 1,
      seed: 12,
      response_format,
      stream: true,
    });
    let text = "";
    let reason: string | null = null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? "";
      reason = chunk.choices[0]?.finish_reason ?? reason;
    }
    assert.equal(reason, "stop");
    validates(VERSE, text);

    // strict: false is still enforced: a constraint is never best effort.
    const loose = await send(served.url, "/v1/completions", {
      body: {
        prompt: "Genesis",
        max_tokens: 200,
        temperature: 0,
        response_format: {
          type: "json_schema",
          json_schema: { name: "verse", schema: VERSE, strict: false },
        },
      },
    });
    validates(VERSE, loose.json.choices[0].text);
  });

  test("the client's zod helper: a schema with .int() (bounds at the safe-integer limits) parses", async () => {
    const Verse = z.object({
      book: z.enum(["Genesis", "Exodus"]),
      chapter: z.number().int(),
      ok: z.boolean(),
    });
    const completion = await client.chat.completions.parse({
      model: "m",
      messages: [{ role: "user", content: "Genesis 1" }],
      response_format: zodResponseFormat(Verse, "verse"),
      temperature: 0,
      max_tokens: 120,
    });
    const parsed = completion.choices[0]!.message.parsed;
    assert.ok(parsed, completion.choices[0]!.message.content ?? "");
    assert.ok(Number.isSafeInteger(parsed.chapter));
  });

  test("llama-server's grammar field: GBNF text constrains a completion, streamed too", async () => {
    const grammar = 'root ::= ("Yea" | "Nay") ", " [a-z]+ "."';
    const answer = await send(served.url, "/v1/completions", {
      body: { prompt: "Genesis 1\n1 In the beginning", max_tokens: 40, temperature: 1, seed: 4, grammar },
    });
    assert.equal(answer.status, 200, answer.text);
    assert.match(answer.json.choices[0].text, /^(Yea|Nay), [a-z]+\.$/);
    const stream = post(served.url, "/v1/chat/completions", {
      messages: [{ role: "user", content: "Shall I?" }],
      max_tokens: 40,
      temperature: 0,
      grammar,
      stream: true,
    });
    await stream.done;
    assert.match(textOf(stream.events), /^(Yea|Nay), [a-z]+\.$/);
  });

  test("random schemas of the enforceable subset: every finished completion parses and validates", async () => {
    const node = schemaNode(schemaLeaf("null"));
    const schema = propertyEntries(["book", "chapter", "verse", "text"], node, {
      minLength: 1,
      maxLength: 3,
    }).map((entries) => objectSchema(entries));
    await fc.assert(
      fc.asyncProperty(schema, fc.boolean(), fc.integer({ min: 0, max: 1000 }), async (s, chat, seed) => {
        const response_format = { type: "json_schema", json_schema: { name: "s", schema: s } };
        const common = { max_tokens: 160, temperature: 1, seed, response_format };
        const answer = chat
          ? await send(served.url, "/v1/chat/completions", {
              body: { messages: [{ role: "user", content: "Say it." }], ...common },
            })
          : await send(served.url, "/v1/completions", { body: { prompt: "Exodus 3\n", ...common } });
        assert.equal(answer.status, 200, answer.text);
        const [choice] = answer.json.choices;
        const text: string = chat ? choice.message.content : choice.text;
        // Short leaves: the document ends well within the budget.
        assert.equal(choice.finish_reason, "stop", text);
        validates(s, text);
      }),
      { numRuns: 12, seed: 15 },
    );
  });

  test("refusals: a keyword the grammar cannot enforce, bad GBNF, two constraints, a malformed format", async () => {
    const cases: [string, Record<string, unknown>, string, RegExp][] = [
      [
        "/v1/chat/completions",
        {
          response_format: {
            type: "json_schema",
            json_schema: {
              name: "n",
              schema: { type: "object", properties: { a: { type: "string", pattern: "^a" } } },
            },
          },
        },
        "response_format",
        /"pattern" at #\/properties\/a, which the output grammar cannot enforce/,
      ],
      [
        "/v1/completions",
        {
          response_format: {
            type: "json_schema",
            json_schema: { name: "n", schema: { type: "integer", minimum: 3 } },
          },
        },
        "response_format",
        /"minimum"/,
      ],
      ["/v1/completions", { grammar: "root ::= undefined-rule" }, "grammar", /not valid GBNF/],
      ["/v1/completions", { grammar: "  " }, "grammar", /GBNF/],
      [
        "/v1/completions",
        { grammar: 'root ::= "a"', response_format: { type: "json_object" } },
        "grammar",
        /one constraint/,
      ],
      ["/v1/chat/completions", { response_format: { type: "xml" } }, "response_format.type", /json_schema/],
      [
        "/v1/chat/completions",
        { response_format: { type: "json_schema", json_schema: { schema: {} } } },
        "response_format.json_schema.name",
        /name/,
      ],
      [
        "/v1/chat/completions",
        { response_format: { type: "json_object", schema: {} } },
        "response_format.schema",
        /not a supported field/,
      ],
    ];
    for (const [path, extra, param, message] of cases) {
      const body =
        path === "/v1/completions"
          ? { prompt: "Genesis", max_tokens: 4, ...extra }
          : { messages: [{ role: "user", content: "x" }], max_tokens: 4, ...extra };
      const answer = await send(served.url, path, { body });
      assert.equal(answer.status, 400, JSON.stringify(extra));
      assert.equal(answer.json.error.code, "invalid_request");
      assert.equal(answer.json.error.param, param, answer.json.error.message);
      assert.match(answer.json.error.message, message);
    }
    // text is no constraint at all.
    const text = await send(served.url, "/v1/completions", {
      body: { prompt: "Genesis", max_tokens: 4, response_format: { type: "text" } },
    });
    assert.equal(text.status, 200);
  });
});
