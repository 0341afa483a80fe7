import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { serveCommand } from "../../src/cli/serve.ts";
import type { Runtime } from "../../src/runtime/Runtime.ts";
import { createServer, type SluiceServer } from "../../src/server/index.ts";
import { scriptedRuntime } from "../helpers/scripted.ts";
import { scrape, send } from "./client.ts";

// The server listens before the model is loaded: health checks see "loading", clients a 503 they retry.

function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void; reject: (error: Error) => void } {
  let resolve!: (value: T) => void;
  let reject!: (error: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

let runtime: Runtime;

describe("readiness: the server answers while the model loads", () => {
  before(async () => {
    ({ runtime } = await scriptedRuntime({ slots: 2 }));
  });
  after(async () => {
    await runtime.close();
  });

  async function listening(source: Promise<Runtime>): Promise<{ server: SluiceServer; url: string }> {
    const server = createServer(source, { apiKey: "sk-a" });
    const { url } = await server.listen(0, "127.0.0.1");
    return { server, url };
  }

  test("loading: /health and /health/ready 503 with progress, /health/live 200, model routes 503 with Retry-After", async () => {
    const load = deferred<Runtime>();
    const { server, url } = await listening(load.promise);
    try {
      server.loadProgress(0.42);
      for (const path of ["/health", "/health/ready"]) {
        const { status, json, headers } = await send(url, path);
        assert.equal(status, 503, path);
        assert.deepEqual(json, { status: "loading", progress: 0.42 });
        assert.equal(headers["retry-after"], "1");
      }
      assert.deepEqual((await send(url, "/health/live")).json, { status: "alive" });
      const key = { authorization: "Bearer sk-a" };
      for (const [path, body] of [
        ["/v1/completions", { prompt: "x" }],
        ["/v1/chat/completions", { messages: [{ role: "user", content: "x" }] }],
        ["/tokenize", { content: "x" }],
        ["/detokenize", { tokens: [1] }],
        ["/apply-template", { messages: [{ role: "user", content: "x" }] }],
      ] as const) {
        const { status, json, headers } = await send(url, path, { body, headers: key });
        assert.equal(status, 503, path);
        assert.equal(json.error.code, "model_loading");
        assert.equal(json.error.type, "server_error");
        assert.match(json.error.message, /loading \(42%\)/);
        assert.equal(headers["retry-after"], "1");
      }
      for (const path of ["/v1/models", "/v1/slots"]) {
        assert.equal((await send(url, path, { headers: key })).status, 503, path);
      }
      // The key is still checked first: loading tells nothing to a caller without one.
      assert.equal((await send(url, "/v1/completions", { body: { prompt: "x" } })).status, 401);
      // Process metrics are there already; the runtime's are not.
      const metrics = await scrape(url, key);
      assert.ok(metrics.has("nodejs_eventloop_lag_seconds"));
      assert.equal(metrics.get("sluice_slots_total"), undefined);

      load.resolve(runtime);
      await load.promise;
      const ready = await send(url, "/health");
      assert.equal(ready.status, 200);
      assert.equal(ready.json.status, "ok");
      assert.equal((await send(url, "/health/ready")).status, 200);
      const done = await send(url, "/v1/completions", { body: { prompt: "x", max_tokens: 2 }, headers: key });
      assert.equal(done.status, 200);
      assert.equal((await scrape(url, key)).get("sluice_slots_total"), 2);
      // Late progress reports change nothing.
      server.loadProgress(0.5);
      assert.equal((await send(url, "/health")).json.status, "ok");
    } finally {
      await server.close();
    }
  });

  test("a model that fails to load: /health 503 with the error, model routes 503 model_load_failed", async () => {
    const load = deferred<Runtime>();
    const { server, url } = await listening(load.promise);
    try {
      load.reject(new Error("not a GGUF file"));
      await load.promise.catch(() => {});
      const health = await send(url, "/health");
      assert.equal(health.status, 503);
      assert.equal(health.json.status, "error");
      assert.match(health.json.error.message, /not a GGUF file/);
      const refused = await send(url, "/v1/completions", {
        body: { prompt: "x" },
        headers: { authorization: "Bearer sk-a" },
      });
      assert.equal(refused.status, 503);
      assert.equal(refused.json.error.code, "model_load_failed");
    } finally {
      await server.close();
    }
  });

  test("sluice serve: a model that cannot be loaded fails the command", async () => {
    await assert.rejects(
      serveCommand(["--port", "0", "--log-level", "silent", "--model", "/nonexistent/model.gguf"]),
      /model/i,
    );
  });
});
