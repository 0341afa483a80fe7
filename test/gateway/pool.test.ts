import assert from "node:assert/strict";
import type { ServerResponse } from "node:http";
import { after, describe, test } from "node:test";
import fc from "fast-check";
import type { SluiceError } from "../../src/errors.ts";
import { UpstreamPool } from "../../src/gateway/index.ts";
import { drain } from "../helpers/scripted.ts";
import {
  endEvents,
  type Scripted,
  SSE_HEADERS,
  startScripted,
  textEvent,
  write,
} from "./scriptedUpstream.ts";

type Behaviour = "ok" | "500" | "drop-before" | "drop-after" | "malformed" | "400" | "429";

/** An upstream that does what `next()` says for each request, answering with its own name. */
async function behaving(name: string, next: () => Behaviour, health: () => number = () => 200) {
  return startScripted(async (_req, res: ServerResponse) => {
    const b = next();
    if (b === "500" || b === "400" || b === "429") {
      res.writeHead(Number(b), { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { message: `${name} says ${b}` } }));
      return;
    }
    res.writeHead(200, SSE_HEADERS);
    if (b === "drop-before") {
      await write(res, ": headers sent, then nothing\n\n");
      res.socket?.destroy();
      return;
    }
    if (b === "malformed") {
      res.end("data: nope\n\n");
      return;
    }
    await write(res, textEvent(name));
    if (b === "drop-after") {
      res.socket?.destroy();
      return;
    }
    res.end(textEvent("", "stop") + endEvents());
  }, health);
}

describe("UpstreamPool over scripted upstreams", () => {
  const servers: Scripted[] = [];
  const pools: UpstreamPool[] = [];
  after(async () => {
    await Promise.all(pools.map((p) => p.close()));
    await Promise.all(servers.map((s) => s.close()));
  });
  const pool = async (urls: string[], options: Record<string, unknown> = {}) => {
    const p = await UpstreamPool.create({ upstreams: urls, healthIntervalMs: 60_000, ...options });
    pools.push(p);
    return p;
  };
  const up = async (...args: Parameters<typeof behaving>) => {
    const s = await behaving(...args);
    servers.push(s);
    return s;
  };
  const body = { prompt: "In the beginning", max_tokens: 4 };

  test("options are checked: invalid_option naming the option", async () => {
    await assert.rejects(UpstreamPool.create({ upstreams: [] }), (e: SluiceError) => e.param === "upstreams");
    await assert.rejects(
      UpstreamPool.create({ upstreams: ["ftp://x"] }),
      (e: SluiceError) => e.code === "invalid_option" && /http\(s\) base URL/.test(e.message),
    );
    await assert.rejects(
      UpstreamPool.create({ upstreams: ["http://a:1", "http://a:1/v1"] }),
      (e: SluiceError) => e.param === "upstreams.1",
    );
    await assert.rejects(
      UpstreamPool.create({ upstreams: ["http://a:1"], routing: "random" as never }),
      (e: SluiceError) => e.param === "routing",
    );
  });

  test("a failure before the first token is retried on another upstream; the consumer sees one clean stream", async () => {
    const a = await up("A", () => "500");
    const b = await up("B", () => "ok");
    const p = await pool([a.url, b.url], { routing: "round_robin" });
    const { text, terminal } = await drain(p.generate(body, { kind: "completion" }));
    assert.equal(text, "B");
    assert.equal(terminal.reason, "eos");
    assert.match(await p.metrics.render(), /sluice_gateway_retries_total 1/);
  });

  test("no retry once a token reached the consumer: error terminal chunk after the text", async () => {
    const a = await up("A", () => "drop-after");
    const b = await up("B", () => "ok");
    const p = await pool([a.url, b.url], { routing: "round_robin" });
    const { text, terminal } = await drain(p.generate(body, { kind: "completion" }));
    assert.equal(text, "A");
    assert.equal(terminal.error?.code, "upstream_disconnected");
    assert.equal(b.bodies.length, 0);
  });

  test("a 4xx is not retried, and the upstream's status reaches onRejected", async () => {
    const a = await up("A", () => "400");
    const b = await up("B", () => "ok");
    const p = await pool([a.url, b.url], { routing: "round_robin" });
    let rejected: number | undefined;
    const { terminal } = await drain(
      p.generate(body, { kind: "completion", onRejected: (status) => (rejected = status) }),
    );
    assert.equal(terminal.error?.code, "upstream_rejected");
    assert.equal(rejected, 400);
    assert.equal(b.bodies.length, 0);
  });

  test("every upstream failing: the last failure, after maxAttempts distinct upstreams", async () => {
    const s = await Promise.all([0, 1, 2, 3].map((i) => up(`U${i}`, () => "drop-before")));
    const p = await pool(
      s.map((x) => x.url),
      { maxAttempts: 3 },
    );
    const { terminal } = await drain(p.generate(body, { kind: "completion" }));
    assert.equal(terminal.error?.code, "upstream_disconnected");
    assert.equal(
      s.reduce((n, x) => n + x.bodies.length, 0),
      3,
    );
    assert.ok(s.every((x) => x.bodies.length <= 1));
  });

  test("least outstanding: a busy upstream is passed over while its request is in flight", async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const a = await startScripted(async (_req, res) => {
      res.writeHead(200, SSE_HEADERS);
      await write(res, textEvent("A"));
      await held;
      res.end(textEvent("", "stop") + endEvents());
    });
    servers.push(a);
    const b = await up("B", () => "ok");
    const p = await pool([a.url, b.url], { routing: "least_outstanding" });
    const first = p.generate(body, { kind: "completion" });
    const firstChunk = await first.waitPop();
    const busyOn = firstChunk?.text;
    assert.equal(busyOn, "A", "the first request takes the first upstream (tie, turn 0)");
    for (let i = 0; i < 3; i++)
      assert.equal((await drain(p.generate(body, { kind: "completion" }))).text, "B");
    release();
    assert.equal((await first.result).reason, "eos");
  });

  test("health checks eject an upstream and bring it back; the breaker opens after failed requests", async () => {
    let healthy = true;
    const a = await up(
      "A",
      () => "500",
      () => (healthy ? 200 : 503),
    );
    const b = await up("B", () => "ok");
    const p = await pool([a.url, b.url], {
      routing: "round_robin",
      unhealthyThreshold: 2,
      breakerFailures: 2,
      breakerOpenMs: 60_000,
      maxAttempts: 1,
    });
    healthy = false;
    await p.checkHealth();
    assert.equal(p.snapshot()[0]!.healthy, true, "one failed check is not enough");
    await p.checkHealth();
    assert.equal(p.snapshot()[0]!.eligible, false);
    for (let i = 0; i < 4; i++)
      assert.equal((await drain(p.generate(body, { kind: "completion" }))).text, "B");
    assert.equal(a.bodies.length, 0);
    healthy = true;
    await p.checkHealth();
    assert.equal(p.snapshot()[0]!.eligible, true);
    const metrics = await p.metrics.render();
    assert.match(
      metrics,
      new RegExp(`sluice_gateway_ejections_total\\{upstream="${a.url}",cause="health"\\} 1`),
    );
    assert.match(
      metrics,
      new RegExp(`sluice_gateway_returns_total\\{upstream="${a.url}",cause="health"\\} 1`),
    );
    // A answers 500 every time: two failures in a row open its breaker.
    for (let i = 0; i < 4; i++) await drain(p.generate(body, { kind: "completion" }));
    assert.equal(a.bodies.length, 2);
    assert.equal(p.snapshot()[0]!.breaker, "open");
    assert.match(
      await p.metrics.render(),
      new RegExp(`sluice_gateway_ejections_total\\{upstream="${a.url}",cause="breaker"\\} 1`),
    );
  });

  test("models: /v1/models of every upstream, and requests for a listed model go where it is", async () => {
    const a = await up("A", () => "ok");
    const p = await pool([a.url, "http://127.0.0.1:9"]);
    assert.deepEqual(p.models(), ["scripted"]);
    assert.equal(p.snapshot()[1]!.healthy, false, "nothing listens on port 9: ejected at start");
    const { text } = await drain(p.generate({ ...body, model: "scripted" }, { kind: "completion" }));
    assert.equal(text, "A");
  });

  test("no eligible upstream: upstream_unavailable saying why", async () => {
    const p = await pool(["http://127.0.0.1:9"]);
    const { terminal } = await drain(p.generate(body, { kind: "completion" }));
    assert.equal(terminal.error?.code, "upstream_unavailable");
    assert.match(terminal.error!.message, /1 of 1 are ejected/);
  });

  test("close() ends every generation in flight and aborts its upstream request", async () => {
    const a = await startScripted(async (_req, res) => {
      res.writeHead(200, SSE_HEADERS);
      await write(res, textEvent("A"));
    });
    servers.push(a);
    const p = await UpstreamPool.create({ upstreams: [a.url] });
    const channel = p.generate(body, { kind: "completion" });
    await channel.waitPop();
    await p.close();
    const result = await channel.result;
    assert.equal(result.error?.code, "runtime_closed");
    await a.closed(0);
    assert.throws(
      () => p.generate(body),
      (e: SluiceError) => e.code === "runtime_closed",
    );
  });

  test("whatever each upstream does, every request ends with exactly one terminal chunk", async () => {
    const plan: Behaviour[] = [];
    const next = () => plan.shift() ?? "ok";
    const s = await Promise.all(["A", "B", "C"].map((n) => up(n, next)));
    const p = await pool(
      s.map((x) => x.url),
      { breakerFailures: 1000 },
    );
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.constantFrom<Behaviour>("ok", "500", "drop-before", "drop-after", "malformed", "400", "429"),
          {
            maxLength: 4,
          },
        ),
        fc.boolean(),
        async (behaviours, cancelEarly) => {
          plan.splice(0, plan.length, ...behaviours);
          const channel = p.generate(body, { kind: "completion" });
          if (cancelEarly) channel.cancel();
          const { terminal } = await drain(channel);
          if (cancelEarly) assert.equal(terminal.reason, "cancelled");
          else if (terminal.reason === "error") assert.match(terminal.error!.code, /^upstream_/);
          else assert.equal(terminal.reason, "eos");
        },
      ),
      { numRuns: 60 },
    );
  });
});
