import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Runtime } from "../../src/runtime/Runtime.ts";
import { scriptedRuntime } from "../helpers/scripted.ts";
import { Ends, post, type Served, scrape, send, serve } from "./client.ts";

// What an operator sees: one access-log line per request (pino JSON) and process metrics next to
// Sluice's own on /metrics (prom-client).

let runtime: Runtime;
let ends: Ends;
/** Awaited inside every engine step while set. */
let onStep: (() => void | Promise<void>) | undefined;

// biome-ignore lint/suspicious/noExplicitAny: log lines are checked field by field.
type Line = any;

/** A log destination that hands each line to whoever waits for it. */
class Lines {
  readonly all: Line[] = [];
  #waiters: { test: (l: Line) => boolean; resolve: (l: Line) => void }[] = [];

  write(text: string): void {
    const line = JSON.parse(text);
    this.all.push(line);
    this.#waiters = this.#waiters.filter((waiter) => {
      if (!waiter.test(line)) return true;
      waiter.resolve(line);
      return false;
    });
  }

  /** The first line (logged or to come) that passes `test`. */
  next(test: (l: Line) => boolean): Promise<Line> {
    const found = this.all.find(test);
    if (found) return Promise.resolve(found);
    return new Promise((resolve) => this.#waiters.push({ test, resolve }));
  }
}

describe("operations: access log and metrics", () => {
  let served: Served;
  const lines = new Lines();

  before(async () => {
    ({ runtime } = await scriptedRuntime({ slots: 2, onStep: () => onStep?.() }));
    ends = new Ends(runtime);
    served = await serve(runtime, { logLevel: "info", logDestination: lines });
  });
  after(async () => {
    await served.server.close();
    await runtime.close();
  });

  test("a finished generation: id, method, route, status, tokens, cached tokens, TTFT, finish reason, duration", async () => {
    const { headers, json } = await send(served.url, "/v1/completions", {
      body: { prompt: "In the beginning", max_tokens: 4, ignore_eos: true },
    });
    const id = headers["x-request-id"];
    const line = await lines.next((l) => l.id === id);
    assert.equal(line.msg, "request");
    assert.equal(line.level, 30);
    assert.equal(line.method, "POST");
    assert.equal(line.route, "/v1/completions");
    assert.equal(line.status, 200);
    assert.equal(line.promptTokens, json.usage.prompt_tokens);
    assert.equal(line.completionTokens, 4);
    assert.equal(line.cachedTokens, json.usage.prompt_tokens_details.cached_tokens);
    assert.equal(line.finishReason, "length");
    assert.equal(typeof line.ttftMs, "number");
    assert.ok(line.durationMs >= line.ttftMs, JSON.stringify(line));
    assert.equal(line.aborted, false);
    assert.equal(line.cancelMs, undefined);
  });

  test("a cancelled stream logs its cancel latency; other requests their route and status", async () => {
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    let id = "";
    const stream = post(served.url, "/v1/completions", {
      prompt: "In the beginning",
      max_tokens: 200,
      ignore_eos: true,
      stream: true,
    });
    id = String((await stream.head).headers["x-request-id"]);
    onStep = () => held;
    const cancelled = await send(served.url, `/v1/requests/${id}`, { method: "DELETE" });
    assert.equal(cancelled.status, 200);
    onStep = undefined;
    release();
    await stream.done;
    await ends.of(id);
    const line = await lines.next((l) => l.id === id);
    assert.equal(line.finishReason, "cancelled");
    assert.equal(typeof line.cancelMs, "number");
    const del = await lines.next((l) => l.method === "DELETE");
    assert.equal(del.route, "/v1/requests/:id");
    assert.equal(del.status, 200);
    await send(served.url, "/nowhere");
    const missing = await lines.next((l) => l.status === 404);
    assert.equal(missing.route, "unmatched");
  });

  test("logLevel silent (the library's default) writes nothing", async () => {
    const quiet = new Lines();
    const silent = await serve(runtime, { logLevel: "silent", logDestination: quiet });
    try {
      await send(silent.url, "/v1/completions", { body: { prompt: "x", max_tokens: 1 } });
      assert.equal((await send(silent.url, "/health")).status, 200);
    } finally {
      await silent.server.close();
    }
    assert.deepEqual(quiet.all, []);
    // warn is above the access lines' info: nothing either.
    const warn = new Lines();
    const warned = await serve(runtime, { logLevel: "warn", logDestination: warn });
    await send(warned.url, "/health");
    await warned.server.close();
    assert.deepEqual(warn.all, []);
  });

  test("/metrics: process metrics (event-loop lag, memory, CPU) next to Sluice's own, in Prometheus text", async () => {
    const res = await fetch(`${served.url}/metrics`);
    assert.match(res.headers.get("content-type")!, /^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    for (const name of [
      "nodejs_eventloop_lag_seconds",
      "nodejs_eventloop_lag_p99_seconds",
      "process_cpu_seconds_total",
      "process_resident_memory_bytes",
      "nodejs_heap_size_used_bytes",
    ]) {
      assert.match(text, new RegExp(`^# TYPE ${name} `, "m"), name);
    }
    const m = await scrape(served.url);
    assert.ok(m.get("sluice_requests_submitted_total")! >= 2);
    assert.equal(m.get("sluice_slots_total"), 2);
    assert.ok(m.get('sluice_http_requests_total{route="/v1/completions",status="200"}')! >= 2);
    // Histograms keep their buckets, sum and count.
    const count = m.get("sluice_time_to_first_token_seconds_count")!;
    assert.ok(count >= 2);
    assert.equal(m.get('sluice_time_to_first_token_seconds_bucket{le="+Inf"}'), count);
    // Two servers in one process: each its own registry, no name registered twice.
    const second = await serve(runtime);
    try {
      const other = await scrape(second.url);
      assert.equal(other.get('sluice_http_requests_total{route="/v1/completions",status="200"}'), undefined);
      assert.ok(other.has("nodejs_eventloop_lag_seconds"));
    } finally {
      await second.server.close();
    }
  });
});
