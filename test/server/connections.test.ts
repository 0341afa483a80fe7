import assert from "node:assert/strict";
import { once } from "node:events";
import { connect, type Socket } from "node:net";
import { after, before, describe, test } from "node:test";
import type { Runtime } from "../../src/runtime/Runtime.ts";
import { scriptedRuntime } from "../helpers/scripted.ts";
import { type RawResponse, rawExchange, type Served, serve } from "./client.ts";

// A client that connects and sends too little, too slowly or nothing at all must not hold the server's
// connections: small timeouts configured on the server, real sockets, and the events that end them.

let runtime: Runtime;

const yieldOnce = () => new Promise<void>((resolve) => setImmediate(resolve));

function openConnections(served: Served): Promise<number> {
  return new Promise((resolve, reject) =>
    served.server.http.getConnections((error, count) => (error ? reject(error) : resolve(count))),
  );
}

/** Yields until the server holds `count` connections (bounded). */
async function connectionsSettle(served: Served, count: number): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if ((await openConnections(served)) === count) return;
    await yieldOnce();
  }
  assert.fail(`the server still holds ${await openConnections(served)} connections, not ${count}`);
}

function assertTimeout(response: RawResponse | undefined, which: RegExp): void {
  assert.ok(response, "a 408 before the close");
  assert.equal(response.status, 408);
  assert.equal(response.headers.connection, "close");
  const { error } = JSON.parse(response.body);
  assert.equal(error.code, "request_timeout");
  assert.equal(error.type, "invalid_request_error");
  assert.match(error.message, which);
}

/** A connection that says nothing, open until `destroy()`: resolves once the server has accepted it. */
async function silent(served: Served): Promise<Socket> {
  const accepted = once(served.server.http, "connection");
  const { port } = new URL(served.url);
  const socket = connect(Number(port), "127.0.0.1");
  socket.on("error", () => {});
  await accepted;
  return socket;
}

describe("timeouts and the connection cap, over real sockets", () => {
  before(async () => {
    ({ runtime } = await scriptedRuntime({ slots: 1 }));
  });
  after(async () => {
    await runtime.close();
  });

  test("headers that do not arrive within headersTimeoutMs: 408 in OpenAI's shape, then the close", async () => {
    const served = await serve(runtime, { headersTimeoutMs: 100, bodyTimeoutMs: 1000 });
    try {
      for (const bytes of ["", "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"]) {
        const started = performance.now();
        const { responses, ending } = await rawExchange(served.url, bytes, { stayOpen: true });
        const elapsed = performance.now() - started;
        // Generous: the bound only shows that the server's setting applies, not node's default of 60 s.
        assert.ok(elapsed >= 100 && elapsed < 5000, `closed after ${elapsed} ms`);
        assertTimeout(responses[0], /headers did not arrive within 100 ms \(headersTimeoutMs\)/);
        assert.equal(ending, "closed");
      }
      await connectionsSettle(served, 0);
      assert.equal((await fetch(`${served.url}/health`)).status, 200);
    } finally {
      await served.server.close();
    }
  });

  test("a body that stops halfway: 408 at bodyTimeoutMs, the request never reaches the runtime", async () => {
    const served = await serve(runtime, { headersTimeoutMs: 100, bodyTimeoutMs: 300 });
    try {
      const submitted = runtime.stats.submitted;
      const started = performance.now();
      const { responses, ending } = await rawExchange(
        served.url,
        'POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{"prompt": "In the',
        { stayOpen: true },
      );
      const elapsed = performance.now() - started;
      assert.ok(elapsed >= 300 && elapsed < 5000, `closed after ${elapsed} ms`);
      assertTimeout(responses[0], /did not arrive within 300 ms \(bodyTimeoutMs\)/);
      assert.equal(responses.length, 1);
      assert.equal(ending, "closed");
      await connectionsSettle(served, 0);
      assert.equal(runtime.stats.submitted, submitted, "nothing was submitted");
      const metrics = await (await fetch(`${served.url}/metrics`)).text();
      assert.match(metrics, /sluice_http_requests_total\{route="\/v1\/completions",status="408"\} 1/);
      const ok = await fetch(`${served.url}/v1/completions`, {
        method: "POST",
        body: JSON.stringify({ prompt: "p", max_tokens: 2 }),
      });
      assert.equal(ok.status, 200);
    } finally {
      await served.server.close();
    }
  });

  test("a kept-alive connection with nothing to do is closed after idleTimeoutMs", async () => {
    const served = await serve(runtime, { idleTimeoutMs: 150 });
    try {
      let answeredAt = 0;
      const { responses, ending } = await rawExchange(
        served.url,
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        {
          stayOpen: true,
          onSocket: (socket) => socket.once("data", () => (answeredAt = performance.now())),
        },
      );
      const idle = performance.now() - answeredAt;
      // Node adds up to a second of its own; its default would be 5 s or more.
      assert.ok(idle >= 150 && idle < 4000, `closed after ${idle} ms idle`);
      assert.equal(responses.length, 1);
      assert.equal(responses[0]!.status, 200);
      assert.notEqual(responses[0]!.headers.connection, "close", "it was kept alive");
      assert.equal(ending, "closed");
      await connectionsSettle(served, 0);
    } finally {
      await served.server.close();
    }
  });

  test("past maxConnections: a 503 too_many_connections, past twice that no answer; then room again", async () => {
    const served = await serve(runtime, { maxConnections: 2 });
    const held: Socket[] = [];
    try {
      held.push(await silent(served), await silent(served));
      const excess = await rawExchange(
        served.url,
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n",
      );
      assert.equal(excess.responses.length, 1);
      const answer = excess.responses[0]!;
      assert.equal(answer.status, 503);
      assert.equal(answer.headers["retry-after"], "1");
      assert.equal(answer.headers.connection, "close");
      const { error } = JSON.parse(answer.body);
      assert.equal(error.code, "too_many_connections");
      assert.match(error.message, /limit of 2 connections/);
      assert.equal(excess.ending, "closed");
      // Two more, silent: four open, twice the cap. The next is dropped unread.
      held.push(await silent(served), await silent(served));
      await connectionsSettle(served, 4);
      const dropped = once(served.server.http, "drop");
      const refused = await rawExchange(served.url, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
      assert.equal(refused.responses.length, 0, "closed unanswered");
      await dropped;
      for (const socket of held.splice(0)) socket.destroy();
      await connectionsSettle(served, 0);
      assert.equal((await fetch(`${served.url}/health`)).status, 200);
    } finally {
      for (const socket of held) socket.destroy();
      await served.server.close();
    }
  });
});
