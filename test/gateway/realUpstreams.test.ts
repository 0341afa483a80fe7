import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  findLlamaBinaries,
  type LlamaServer,
  type SluiceServer as SluiceChild,
  startLlamaServer,
  startSluiceServer,
} from "../../bench/llamaServer.ts";
import { BUNDLED_MODEL_PATH } from "../../src/engine/modelPath.ts";
import {
  createGatewayServer,
  type GatewayServer,
  UpstreamPool,
  type UpstreamPoolOptions,
} from "../../src/gateway/index.ts";
import { idle, post, scrape, textOf } from "../server/client.ts";

// Sluice as a gateway in front of real servers over loopback: three `sluice serve` processes (bundled model,
// 2 slots, 1 thread each) and llama-server when it is built. Nothing scripted here.

// Each run gets its own first line, so neither finds anything cached by the other (or by earlier tests).
const PREFIX =
  "1 In the beginning God created the heaven and the earth. 2 And the earth was without form, and void; " +
  "and darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters. 3 And God " +
  "said, Let there be light: and there was light. 4 And God saw the light, that it was good: and God divided the " +
  "light from the darkness.";

describe("gateway over three Sluice servers", () => {
  let upstreams: SluiceChild[] = [];
  const gateways: { server: GatewayServer; pool: UpstreamPool }[] = [];
  before(async () => {
    upstreams = await Promise.all(
      [0, 1, 2].map(() =>
        startSluiceServer({
          model: BUNDLED_MODEL_PATH,
          slots: 2,
          threads: 1,
          contextPerSlot: 512,
          extraArgs: ["--log-level", "silent"],
        }),
      ),
    );
  });
  after(async () => {
    for (const g of gateways) {
      await g.server.close();
      await g.pool.close();
    }
    await Promise.all(upstreams.map((u) => u.stop()));
  });
  const gateway = async (options: Partial<UpstreamPoolOptions> = {}, urls = upstreams.map((u) => u.url)) => {
    const pool = await UpstreamPool.create({ upstreams: urls, healthIntervalMs: 60_000, ...options });
    const server = createGatewayServer(pool);
    const { url } = await server.listen(0);
    gateways.push({ server, pool });
    return { url, pool };
  };

  test("a stream through the gateway is the upstream's own: same text, one finish chunk, usage, [DONE]", async () => {
    const { url } = await gateway({ routing: "least_outstanding" });
    const body = { prompt: "Genesis 1\n1 In the beginning", max_tokens: 24, temperature: 0 };
    const direct = post(upstreams[0]!.url, "/v1/completions", { ...body, stream: true });
    const through = post(url, "/v1/completions", {
      ...body,
      stream: true,
      stream_options: { include_usage: true },
    });
    await Promise.all([direct.done, through.done]);
    assert.equal((await through.head).status, 200);
    assert.equal(textOf(through.events), textOf(direct.events));
    assert.ok(textOf(through.events).length > 0);
    const finishes = through.events.filter((e) => e !== "[DONE]" && e.choices?.[0]?.finish_reason);
    assert.equal(finishes.length, 1);
    assert.equal(finishes[0].choices[0].finish_reason, "length");
    assert.equal(through.events.at(-1), "[DONE]");
    const usage = through.events.find((e) => e !== "[DONE]" && e.usage)?.usage;
    assert.equal(usage.completion_tokens, 24);
    // Not streamed: the same JSON shape as the upstream's, the same text.
    const whole = await fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        messages: [{ role: "user", content: "In the beginning" }],
        max_tokens: 8,
        temperature: 0,
      }),
    });
    assert.equal(whole.status, 200);
    const json = (await whole.json()) as {
      choices: { message: { content: string }; finish_reason: string }[];
    };
    assert.equal(json.choices[0]!.finish_reason, "length");
    assert.ok(json.choices[0]!.message.content.length > 0);
  });

  test("/v1/models is the union of the upstreams'; an upstream's 400 is the client's 400", async () => {
    const { url } = await gateway();
    const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string }[] };
    assert.deepEqual(
      models.data.map((m) => m.id),
      ["kjv-tiny.gguf"],
    );
    const bad = await fetch(`${url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ prompt: "x", max_tokens: 0 }),
    });
    assert.equal(bad.status, 400);
    const error = ((await bad.json()) as { error: { code: string; message: string } }).error;
    assert.equal(error.code, "invalid_request");
    assert.match(error.message, /max_tokens/);
  });

  test("a client going away aborts the upstream request: the upstream's slot is free", async () => {
    const { url } = await gateway({ routing: "round_robin" });
    const stream = post(
      url,
      "/v1/completions",
      {
        prompt: "Genesis 1\n1 In the beginning",
        max_tokens: 400,
        ignore_eos: true,
        stream: true,
      },
      {
        onEvent: (event, s) => {
          if (event !== "[DONE]" && event.choices?.[0]?.text) s.destroy();
        },
      },
    );
    await stream.done;
    const cutAt = performance.now();
    // round robin, first request: upstream 0 served it.
    const m = await idle(upstreams[0]!.url);
    const freeMs = performance.now() - cutAt;
    assert.equal(m.get('sluice_requests_total{reason="cancelled"}'), 1);
    assert.ok((m.get("sluice_tokens_generated_total") ?? 0) < 400, "the generation was cut short");
    console.log(`# client gone → upstream slot free: ${freeMs.toFixed(1)} ms (polled)`);
  });

  test("prefix affinity: requests sharing a prefix land where it is cached (cache hits on the upstreams)", async () => {
    const before = await Promise.all(upstreams.map((u) => scrape(u.url)));
    const tokens = (ms: Map<string, number>[]) =>
      ms.reduce((n, m) => n + (m.get("sluice_prompt_tokens_cached_total") ?? 0), 0);
    /** Per request: whether most of its prompt came from an upstream's cache, and the tokens reused. */
    const run = async (url: string, n: number, tag: string) => {
      const reused: number[] = [];
      let warm = 0;
      for (let i = 0; i < n; i++) {
        const r = await fetch(`${url}/v1/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ prompt: `Psalm ${tag}\n${PREFIX}\n${i}`, max_tokens: 2, temperature: 0 }),
        });
        const { usage } = (await r.json()) as {
          usage: { prompt_tokens: number; prompt_tokens_details: { cached_tokens: number } };
        };
        reused.push(usage.prompt_tokens_details.cached_tokens);
        if (usage.prompt_tokens_details.cached_tokens > usage.prompt_tokens / 2) warm++;
      }
      return { reused, warm };
    };
    const affinity = await gateway({ routing: "prefix_affinity" });
    const a = await run(affinity.url, 6, "A");
    const mid = await Promise.all(upstreams.map((u) => scrape(u.url)));
    const roundRobin = await gateway({ routing: "round_robin" });
    const r = await run(roundRobin.url, 6, "B");
    const end = await Promise.all(upstreams.map((u) => scrape(u.url)));
    console.log(
      `# 6 requests sharing a ${PREFIX.length}-char prefix over 3 upstreams: prefix cached for ${a.warm} (affinity) vs ` +
        `${r.warm} (round robin); prompt tokens reused, upstream metrics: ${tokens(mid) - tokens(before)} vs ` +
        `${tokens(end) - tokens(mid)}; per request ${a.reused.join(",")} vs ${r.reused.join(",")}`,
    );
    // Affinity: one cold request, then every one finds the prefix; round robin is cold once on each upstream.
    assert.equal(a.warm, 5);
    assert.equal(r.warm, 3);
    assert.ok(tokens(mid) - tokens(before) > tokens(end) - tokens(mid));
    assert.match(
      await (await fetch(`${affinity.url}/metrics`)).text(),
      /sluice_gateway_affinity_total\{result="hit"\} 5/,
    );
  });

  test("an upstream killed mid-stream: its client gets an error finish chunk, the others carry on", async () => {
    const { url, pool } = await gateway({ routing: "round_robin", maxAttempts: 1 });
    const firstText = [0, 1, 2].map(() => {
      let resolve!: () => void;
      return { promise: new Promise<void>((r) => (resolve = r)), resolve: () => resolve() };
    });
    const streams = [0, 1, 2].map((i) =>
      post(
        url,
        "/v1/completions",
        {
          prompt: `Genesis ${i + 1}\n1`,
          max_tokens: 300,
          ignore_eos: true,
          temperature: 0,
          stream: true,
        },
        {
          onEvent: (event) => {
            if (event !== "[DONE]" && event.choices?.[0]?.text) firstText[i]!.resolve();
          },
        },
      ),
    );
    await Promise.all(firstText.map((f) => f.promise));
    process.kill(upstreams[0]!.pid, "SIGKILL");
    await Promise.all(streams.map((s) => s.done));
    const finish = (i: number) =>
      streams[i]!.events.filter((e) => e !== "[DONE]" && e.choices?.[0]?.finish_reason).map(
        (e) => e.choices[0].finish_reason,
      );
    assert.deepEqual(finish(0), ["error"]);
    const error = streams[0]!.events.find((e) => e !== "[DONE]" && e.error)?.error;
    assert.equal(error.code, "upstream_disconnected");
    assert.equal(streams[0]!.events.at(-1), "[DONE]");
    assert.deepEqual(finish(1), ["length"]);
    assert.deepEqual(finish(2), ["length"]);
    // The dead upstream is ejected by its health checks; new requests go to the others.
    await pool.checkHealth();
    await pool.checkHealth();
    assert.equal(pool.snapshot()[0]!.eligible, false);
    const next = post(url, "/v1/completions", { prompt: "In the beginning", max_tokens: 4, stream: true });
    await next.done;
    assert.equal(textOf(next.events).length > 0, true);
  });
});

describe("gateway over llama-server", () => {
  let reason: string | undefined;
  try {
    findLlamaBinaries();
  } catch (error) {
    reason = (error as Error).message;
  }
  if (reason !== undefined && process.env.SLUICE_REQUIRE_LLAMA_SERVER === "1") {
    test("llama-server is built (required here)", () => assert.fail(reason));
    return;
  }
  let llama: LlamaServer;
  let pool: UpstreamPool;
  let server: GatewayServer;
  let url: string;
  before(async () => {
    if (reason !== undefined) return;
    llama = await startLlamaServer({ model: BUNDLED_MODEL_PATH, slots: 2, threads: 1, contextPerSlot: 512 });
    pool = await UpstreamPool.create({ upstreams: [llama.url], healthIntervalMs: 60_000 });
    server = createGatewayServer(pool);
    ({ url } = await server.listen(0));
  });
  after(async () => {
    await server?.close();
    await pool?.close();
    await llama?.stop();
  });

  test("streams through the gateway, with usage", { skip: reason }, async () => {
    const s = post(url, "/v1/completions", {
      prompt: "Genesis 1\n1 In the beginning",
      max_tokens: 16,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    await s.done;
    assert.ok(textOf(s.events).length > 0);
    const finishes = s.events.filter((e) => e !== "[DONE]" && e.choices?.[0]?.finish_reason);
    assert.deepEqual(
      finishes.map((e) => e.choices[0].finish_reason),
      ["length"],
    );
    const usage = s.events.find((e) => e !== "[DONE]" && e.usage)?.usage;
    assert.equal(usage?.completion_tokens, 16);
  });

  test("a client going away frees llama-server's slot (/slots: is_processing false)", {
    skip: reason,
  }, async () => {
    const s = post(
      url,
      "/v1/completions",
      {
        prompt: "Genesis 1\n1 In the beginning",
        max_tokens: 400,
        ignore_eos: true,
        stream: true,
      },
      {
        onEvent: (event, stream) => {
          if (event !== "[DONE]" && event.choices?.[0]?.text) stream.destroy();
        },
      },
    );
    await s.done;
    const cutAt = performance.now();
    let slots: { is_processing: boolean }[] = [];
    for (let i = 0; i < 400; i++) {
      slots = (await (await fetch(`${llama.url}/slots`)).json()) as { is_processing: boolean }[];
      if (slots.every((slot) => !slot.is_processing)) break;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    assert.ok(
      slots.every((slot) => !slot.is_processing),
      "a llama-server slot is still processing",
    );
    console.log(
      `# client gone → llama-server slot free: ${(performance.now() - cutAt).toFixed(1)} ms (polled)`,
    );
  });
});
