import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import type { SluiceError } from "../../src/errors.ts";
import { createGatewayServer, UpstreamPool } from "../../src/gateway/index.ts";
import { post, textOf } from "../server/client.ts";
import { endEvents, SSE_HEADERS, startScripted, textEvent, write } from "./scriptedUpstream.ts";

// The gateway's HTTP edge against scripted upstreams: how each upstream failure is answered (a status
// before the stream starts, an error finish chunk after), and what a bad request gets.
describe("gateway server: answers to upstream failures", () => {
  const closers: (() => Promise<void>)[] = [];
  after(async () => {
    for (const close of closers.reverse()) await close();
  });
  const upstream = async (script: Parameters<typeof startScripted>[0]) => {
    const s = await startScripted(script);
    closers.push(() => s.close());
    return s;
  };
  const gateway = async (urls: string[], options: Record<string, unknown> = {}) => {
    const pool = await UpstreamPool.create({
      upstreams: urls,
      healthIntervalMs: 60_000,
      maxAttempts: 1,
      ...options,
    });
    const server = createGatewayServer(pool);
    const { url } = await server.listen(0);
    closers.push(async () => {
      await server.close();
      await pool.close();
    });
    return url;
  };
  const postJson = (url: string, path: string, body: unknown) =>
    fetch(`${url}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: typeof body === "string" ? body : JSON.stringify(body),
    });

  test("model options are refused: a gateway has no local model", async () => {
    const pool = await UpstreamPool.create({ upstreams: ["http://127.0.0.1:9"], healthIntervalMs: 60_000 });
    closers.push(() => pool.close());
    assert.throws(
      () => createGatewayServer(pool, { modelName: "x" } as never),
      (e: SluiceError) => e.code === "invalid_option" && e.param === "modelName",
    );
  });

  test("bad JSON and a body that is not an object are 400s; nothing reaches the upstream", async () => {
    const s = await upstream((_req, res) => {
      res.end();
    });
    const url = await gateway([s.url]);
    const bad = await postJson(url, "/v1/completions", "{nope");
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as { error: { code: string } }).error.code, "invalid_json");
    const list = await postJson(url, "/v1/completions", [{ prompt: "x" }]);
    assert.equal(list.status, 400);
    assert.equal(((await list.json()) as { error: { code: string } }).error.code, "invalid_request");
    assert.equal(s.bodies.length, 0);
  });

  test("a continuous_usage_stats that is not a boolean is a 400 naming it, as a Sluice server answers", async () => {
    const s = await upstream((_req, res) => {
      res.end();
    });
    const url = await gateway([s.url]);
    // The gateway drops the option from what it sends: no upstream would see it to refuse it.
    for (const path of ["/v1/completions", "/v1/chat/completions"]) {
      const r = await postJson(url, path, {
        prompt: "x",
        messages: [{ role: "user", content: "x" }],
        stream: true,
        stream_options: { include_usage: true, continuous_usage_stats: "yes" },
      });
      assert.equal(r.status, 400, path);
      const { error } = (await r.json()) as { error: { code: string; param: string; message: string } };
      assert.equal(error.code, "invalid_request");
      assert.equal(error.param, "stream_options.continuous_usage_stats");
      assert.match(error.message, /must be a boolean; got "yes"/);
    }
    assert.equal(s.bodies.length, 0);
  });

  test("no upstream up: 503 with Retry-After, streaming or not; /health says so", async () => {
    const url = await gateway(["http://127.0.0.1:9"]);
    const r = await postJson(url, "/v1/completions", { prompt: "x", stream: true });
    assert.equal(r.status, 503);
    assert.equal(r.headers.get("retry-after"), "1");
    assert.equal(((await r.json()) as { error: { code: string } }).error.code, "upstream_unavailable");
    const health = await fetch(`${url}/health`);
    assert.equal(health.status, 503);
    assert.deepEqual(await health.json(), { status: "no_upstream", upstreams: { eligible: 0, total: 1 } });
  });

  test("a 500 upstream is a 502; slow headers a 504", async () => {
    const failing = await upstream((_req, res) => {
      res.writeHead(500, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { message: "boom" } }));
    });
    const r = await postJson(await gateway([failing.url]), "/v1/chat/completions", {
      messages: [{ role: "user", content: "hi" }],
    });
    assert.equal(r.status, 502);
    const error = ((await r.json()) as { error: { code: string; type: string } }).error;
    assert.deepEqual([error.code, error.type], ["upstream_error", "server_error"]);
    const silent = await upstream(() => {});
    const t = await postJson(await gateway([silent.url], { headersTimeoutMs: 100 }), "/v1/completions", {
      prompt: "x",
    });
    assert.equal(t.status, 504);
  });

  test("a failure after the first token: the text, a finish chunk with error, an error event, [DONE]", async () => {
    const s = await upstream(async (_req, res) => {
      res.writeHead(200, SSE_HEADERS);
      await write(res, textEvent("In the"));
      res.socket?.destroy();
    });
    const stream = post(await gateway([s.url]), "/v1/completions", { prompt: "x", stream: true });
    await stream.done;
    assert.equal((await stream.head).status, 200);
    assert.equal(textOf(stream.events), "In the");
    const finishes = stream.events.filter((e) => e !== "[DONE]" && e.choices?.[0]?.finish_reason);
    assert.deepEqual(
      finishes.map((e) => e.choices[0].finish_reason),
      ["error"],
    );
    assert.equal(stream.events.find((e) => e !== "[DONE]" && e.error)?.error.code, "upstream_disconnected");
    assert.equal(stream.events.at(-1), "[DONE]");
  });

  test("the client going away aborts the upstream request", async () => {
    const s = await upstream(async (_req, res) => {
      res.writeHead(200, SSE_HEADERS);
      await write(res, textEvent("In"));
    });
    const url = await gateway([s.url]);
    const stream = post(
      url,
      "/v1/chat/completions",
      {
        messages: [{ role: "user", content: "hi" }],
        stream: true,
      },
      {
        onEvent: (event, st) => {
          if (event !== "[DONE]" && event.choices?.[0]?.delta?.content) st.destroy();
        },
      },
    );
    await stream.done;
    await s.closed(0);
  });

  test("the response is re-rendered: the client's model and usage options, the upstream's text", async () => {
    const s = await upstream(async (_req, res) => {
      res.writeHead(200, SSE_HEADERS);
      await write(res, textEvent("Let there be"));
      res.end(textEvent(" light", "stop") + endEvents(5, 2));
    });
    const url = await gateway([s.url]);
    const stream = post(url, "/v1/completions", { model: "alias", prompt: "x", stream: true });
    await stream.done;
    assert.equal(textOf(stream.events), "Let there be light");
    assert.ok(stream.events.filter((e) => e !== "[DONE]").every((e) => e.model === "alias" && !e.usage));
    const whole = (await (await postJson(url, "/v1/completions", { prompt: "x" })).json()) as {
      choices: { text: string; finish_reason: string }[];
      usage: { prompt_tokens: number; completion_tokens: number };
      model: string;
    };
    assert.equal(whole.choices[0]!.text, "Let there be light");
    assert.equal(whole.choices[0]!.finish_reason, "stop");
    assert.deepEqual([whole.usage.prompt_tokens, whole.usage.completion_tokens], [5, 2]);
    assert.equal(whole.model, "scripted");
  });
});
