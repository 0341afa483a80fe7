import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import OpenAI from "openai";
import type { Runtime } from "../../src/runtime/Runtime.ts";
import { scriptedRuntime } from "../helpers/scripted.ts";
import { post, type Served, send, serve } from "./client.ts";

// Model names: clients configured for another server's model name keep working (one model is served),
// --served-model-name gives the model the names clients expect, --strict-model-name refuses the others.

let runtime: Runtime;
let lax: Served;
let strict: Served;

describe("served model names", () => {
  before(async () => {
    ({ runtime } = await scriptedRuntime({ slots: 2 }));
    lax = await serve(runtime, { servedModelNames: ["gpt-4o-mini", "local"] });
    strict = await serve(runtime, { servedModelNames: ["gpt-4o-mini", "local"], strictModelName: true });
  });
  after(async () => {
    await lax.server.close();
    await strict.server.close();
    await runtime.close();
  });

  test("/v1/models lists every alias in OpenAI's list shape", async () => {
    const { status, json } = await send(lax.url, "/v1/models");
    assert.equal(status, 200);
    assert.equal(json.object, "list");
    assert.deepEqual(
      json.data.map((m: { id: string }) => m.id),
      ["gpt-4o-mini", "local"],
    );
    for (const model of json.data) {
      assert.equal(model.object, "model");
      assert.equal(typeof model.created, "number");
      assert.equal(model.owned_by, "sluice");
    }
  });

  test("by default any model is answered, and the response names the requested one", async () => {
    for (const model of ["gpt-4o-mini", "local", "some-other-model"]) {
      const { status, json } = await send(lax.url, "/v1/completions", {
        body: { model, prompt: "In the beginning", max_tokens: 3 },
      });
      assert.equal(status, 200, JSON.stringify(json));
      assert.equal(json.model, model);
    }
    // No model: the first served name.
    const { json } = await send(lax.url, "/v1/chat/completions", {
      body: { messages: [{ role: "user", content: "hi" }], max_tokens: 2 },
    });
    assert.equal(json.model, "gpt-4o-mini");
    // Every chunk of a stream names it too.
    const stream = post(lax.url, "/v1/chat/completions", {
      model: "my-model",
      messages: [{ role: "user", content: "hi" }],
      max_tokens: 3,
      stream: true,
    });
    await stream.done;
    const chunks = stream.events.filter((e) => e !== "[DONE]");
    assert.ok(chunks.length >= 2);
    assert.ok(chunks.every((c) => c.model === "my-model"));
  });

  test("with strictModelName a name that is not served is a 404 model_not_found", async () => {
    const refused = await send(strict.url, "/v1/completions", {
      body: { model: "gpt-4", prompt: "x", max_tokens: 1 },
    });
    assert.equal(refused.status, 404);
    assert.equal(refused.json.error.code, "model_not_found");
    assert.equal(refused.json.error.param, "model");
    assert.match(
      refused.json.error.message,
      /"gpt-4" does not exist on this server; it serves "gpt-4o-mini", "local"/,
    );
    assert.equal((await send(strict.url, "/v1/models/gpt-4")).status, 404);
    const alias = await send(strict.url, "/v1/completions", {
      body: { model: "local", prompt: "x", max_tokens: 1 },
    });
    assert.equal(alias.status, 200);
    assert.equal(alias.json.model, "local");
    assert.equal((await send(strict.url, "/v1/models/local")).json.id, "local");
  });

  test("the official client, configured for another server's model, works unchanged", async () => {
    const client = new OpenAI({ baseURL: `${lax.url}/v1`, apiKey: "unused", maxRetries: 0 });
    const completion = await client.chat.completions.create({
      model: "gpt-4o",
      messages: [{ role: "user", content: "hi" }],
      max_tokens: 3,
    });
    assert.equal(completion.model, "gpt-4o");
    assert.equal(completion.choices[0]!.message.role, "assistant");
  });
});
