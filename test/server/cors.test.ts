import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Runtime } from "../../src/runtime/Runtime.ts";
import { scriptedRuntime } from "../helpers/scripted.ts";
import { post, type Served, send, serve } from "./client.ts";

// CORS as a browser sees it, header by header (test/web/cors.test.ts runs the same in Chromium).

const APP = "http://app.example:3000";
const OTHER = "http://evil.example";

let runtime: Runtime;
let served: Served;
let closed: Served;

const preflight = (url: string, origin: string, path = "/v1/chat/completions") =>
  send(url, path, {
    method: "OPTIONS",
    headers: {
      origin,
      "access-control-request-method": "POST",
      "access-control-request-headers": "authorization,content-type,x-stainless-os",
    },
  });

describe("CORS", () => {
  before(async () => {
    ({ runtime } = await scriptedRuntime({ slots: 2 }));
    served = await serve(runtime, { apiKey: "sk-a", corsOrigins: [APP] });
    closed = await serve(runtime, { apiKey: "sk-a" });
  });
  after(async () => {
    await served.server.close();
    await closed.server.close();
    await runtime.close();
  });

  test("a preflight from an allowed origin: 204 with methods, headers, max-age and Vary: Origin; no key needed", async () => {
    const { status, headers, text } = await preflight(served.url, APP);
    assert.equal(status, 204);
    assert.equal(text, "");
    assert.equal(headers["access-control-allow-origin"], APP);
    assert.deepEqual(headers["access-control-allow-methods"]?.split(","), [
      "GET",
      "HEAD",
      "POST",
      "DELETE",
      "OPTIONS",
    ]);
    const allowed = headers["access-control-allow-headers"]!.toLowerCase().split(",");
    for (const name of ["authorization", "content-type", "x-api-key", "x-stainless-os"]) {
      assert.ok(allowed.includes(name), `${name} in ${allowed}`);
    }
    assert.equal(headers["access-control-max-age"], "600");
    assert.match(headers.vary ?? "", /\bOrigin\b/);
  });

  test("a preflight from any other origin is refused: 403, no CORS headers", async () => {
    for (const url of [served.url, closed.url]) {
      const { status, headers, json } = await preflight(url, url === served.url ? OTHER : APP);
      assert.equal(status, 403);
      assert.equal(json.error.code, "origin_not_allowed");
      assert.equal(headers["access-control-allow-origin"], undefined);
    }
  });

  test("responses to an allowed page carry Access-Control-Allow-Origin: streams, errors and 404s too", async () => {
    const stream = post(
      served.url,
      "/v1/chat/completions",
      { messages: [{ role: "user", content: "hi" }], max_tokens: 3, stream: true },
      { headers: { origin: APP, authorization: "Bearer sk-a" } },
    );
    const head = await stream.head;
    await stream.done;
    assert.equal(head.status, 200);
    assert.equal(head.headers["access-control-allow-origin"], APP);
    assert.match(String(head.headers["access-control-expose-headers"]), /X-Request-Id/i);
    assert.equal(stream.events.at(-1), "[DONE]");
    for (const [path, status] of [
      ["/v1/models", 401],
      ["/nowhere", 404],
    ] as const) {
      const answer = await send(served.url, path, { headers: { origin: APP } });
      assert.equal(answer.status, status);
      assert.equal(answer.headers["access-control-allow-origin"], APP, path);
      assert.match(answer.headers.vary ?? "", /\bOrigin\b/);
    }
  });

  test("off by default: no CORS headers for a request without Origin or from the server's own page", async () => {
    const plain = await send(closed.url, "/v1/models", { headers: { authorization: "Bearer sk-a" } });
    assert.equal(plain.status, 200);
    assert.equal(plain.headers["access-control-allow-origin"], undefined);
    // The playground is same-origin: it needs no CORS, and gets its own origin back at most.
    const own = await send(closed.url, "/v1/models", {
      headers: { authorization: "Bearer sk-a", origin: closed.url },
    });
    assert.equal(own.status, 200);
    assert.ok([undefined, closed.url].includes(own.headers["access-control-allow-origin"] as string));
  });

  test('corsOrigins ["*"]: every origin, reflected', async () => {
    const open = await serve(runtime, { corsOrigins: ["*"] });
    try {
      const { status, headers } = await preflight(open.url, OTHER, "/v1/models");
      assert.equal(status, 204);
      assert.equal(headers["access-control-allow-origin"], OTHER);
    } finally {
      await open.server.close();
    }
  });
});
