import assert from "node:assert/strict";
import { networkInterfaces } from "node:os";
import { after, before, describe, test } from "node:test";
import type { ScriptedEngine } from "../../src/engine/ScriptedEngine.ts";
import type { Runtime } from "../../src/runtime/Runtime.ts";
import { createServer } from "../../src/server/index.ts";
import { scriptedRuntime } from "../helpers/scripted.ts";
import { post, type SseStream, send, serve } from "./client.ts";

// Who may do what (src/server/README.md, "Security model"): browsers only from the server's own pages
// (or allowed origins), only under the names the server answers to, and a request id is a capability
// that only its owner (or the admin) holds.

let runtime: Runtime;
let engine: ScriptedEngine;
/** Awaited inside every engine step while set: holds generations in their slots. */
let hold: Promise<void> | undefined;

const yieldOnce = () => new Promise<void>((resolve) => setImmediate(resolve));

const COMPLETION = JSON.stringify({ prompt: "p", max_tokens: 3 });

/** Starts a streaming completion held in its slot (see `hold`); resolves with its id once it is there. */
async function heldStream(
  url: string,
  headers: Record<string, string> = {},
): Promise<{ id: string; stream: SseStream }> {
  const stream = post(url, "/v1/completions", { prompt: "p", max_tokens: 50, stream: true }, { headers });
  const { status, headers: head } = await stream.head;
  assert.equal(status, 200);
  const id = String(head["x-request-id"]);
  while (!runtime.snapshot().slots.some((s) => s.requestId === id)) await yieldOnce();
  return { id, stream };
}

function withHold(): () => void {
  let release!: () => void;
  hold = new Promise<void>((resolve) => {
    release = resolve;
  });
  return () => {
    hold = undefined;
    release();
  };
}

describe("access: origins, hosts, and who may see and cancel a request", () => {
  before(async () => {
    ({ runtime, engine } = await scriptedRuntime({
      slots: 2,
      onStep: () => hold,
      script: () => engine.encode("In the beginning God created the heaven and the earth. ".repeat(4)),
    }));
  });
  after(async () => {
    hold = undefined;
    await runtime.close();
  });

  test("a page from another origin is refused, even a simple text/plain POST; curl and the server's own pages are not", async () => {
    const served = await serve(runtime);
    try {
      const { port } = new URL(served.url);
      const submitted = runtime.stats.submitted;
      for (const origin of [
        "http://evil.example",
        "null",
        `http://127.0.0.1:${Number(port) + 1}`,
        "http://localhost",
      ]) {
        const refused = await send(served.url, "/v1/completions", {
          method: "POST",
          headers: { origin, "content-type": "text/plain" },
          body: COMPLETION,
        });
        assert.equal(refused.status, 403, origin);
        assert.equal(refused.json.error.code, "origin_not_allowed");
        assert.equal(refused.json.error.type, "invalid_request_error");
        assert.match(refused.json.error.message, /--allowed-origin/);
      }
      const cancel = await send(served.url, "/v1/requests/cmpl-x", {
        method: "DELETE",
        headers: { origin: "http://evil.example" },
      });
      assert.equal(cancel.status, 403);
      assert.equal(runtime.stats.submitted, submitted, "no refused request reached the runtime");
      // The playground's own requests, by either name, and curl -d (form encoding, no Origin).
      for (const [host, origin] of [
        [undefined, served.url],
        [`localhost:${port}`, `http://localhost:${port}`],
      ] as const) {
        const own = await send(served.url, "/v1/completions", {
          method: "POST",
          headers: { origin, "content-type": "application/json", ...(host ? { host } : {}) },
          body: COMPLETION,
        });
        assert.equal(own.status, 200, `${origin}: ${JSON.stringify(own.json)}`);
      }
      const curl = await send(served.url, "/v1/completions", {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: COMPLETION,
      });
      assert.equal(curl.status, 200);
    } finally {
      await served.server.close();
    }
  });

  test("Sec-Fetch-Site without Origin: cross-site and same-site subresources refused, navigations and same-origin not", async () => {
    const served = await serve(runtime);
    try {
      for (const [site, mode, status] of [
        ["cross-site", "no-cors", 403],
        ["same-site", "cors", 403],
        ["cross-site", "navigate", 200],
        ["same-origin", "cors", 200],
        ["none", "navigate", 200],
      ] as const) {
        const answer = await send(served.url, "/v1/models", {
          headers: { "sec-fetch-site": site, "sec-fetch-mode": mode },
        });
        assert.equal(answer.status, status, `${site} ${mode}`);
        if (status === 403) assert.equal(answer.json.error.code, "origin_not_allowed");
      }
    } finally {
      await served.server.close();
    }
  });

  test("allowedOrigins lets those pages in (and only those); ['*'] lets every page in", async () => {
    const listed = await serve(runtime, { allowedOrigins: ["https://app.example", "http://localhost:5173"] });
    const open = await serve(runtime, { allowedOrigins: ["*"] });
    try {
      for (const [origin, status] of [
        ["https://app.example", 200],
        ["https://APP.example:443", 200],
        ["http://localhost:5173", 200],
        ["http://app.example", 403],
        ["https://app.example.evil", 403],
      ] as const) {
        const answer = await send(listed.url, "/v1/models", { headers: { origin } });
        assert.equal(answer.status, status, origin);
      }
      assert.equal(
        (await send(open.url, "/v1/models", { headers: { origin: "http://evil.example" } })).status,
        200,
      );
    } finally {
      await listed.server.close();
      await open.server.close();
    }
  });

  test("DNS rebinding: on loopback a foreign Host is refused; localhost, IP literals and allowedHosts are served", async () => {
    const served = await serve(runtime);
    const named = await serve(runtime, { allowedHosts: ["sluice.test", ".example.com"] });
    const any = await serve(runtime, { allowedHosts: ["*"] });
    try {
      const { port } = new URL(served.url);
      for (const host of [
        `evil.example:${port}`,
        "evil.example",
        `sluice.test:${port}`,
        "localhost.evil.example",
      ]) {
        const refused = await send(served.url, "/v1/slots", { headers: { host } });
        assert.equal(refused.status, 403, host);
        assert.equal(refused.json.error.code, "host_not_allowed");
        assert.match(refused.json.error.message, /--allowed-host/);
      }
      for (const host of [
        `localhost:${port}`,
        "LOCALHOST",
        `app.localhost:${port}`,
        "127.0.0.1",
        `[::1]:${port}`,
        "10.1.2.3:80",
      ]) {
        assert.equal((await send(served.url, "/v1/slots", { headers: { host } })).status, 200, host);
      }
      const bad = await send(served.url, "/health", { headers: { host: "a@b" } });
      assert.equal(bad.status, 400);
      assert.equal(bad.json.error.code, "invalid_request");
      for (const [host, status] of [
        ["sluice.test", 200],
        ["api.example.com:1234", 200],
        ["example.com", 200],
        ["badexample.com", 403],
        ["evil.example", 403],
      ] as const) {
        assert.equal((await send(named.url, "/health", { headers: { host } })).status, status, host);
      }
      assert.equal((await send(any.url, "/health", { headers: { host: "evil.example" } })).status, 200);
    } finally {
      await served.server.close();
      await named.server.close();
      await any.server.close();
    }
  });

  test("a connection to a non-loopback address is checked only when allowedHosts is given", async (t) => {
    const address = Object.values(networkInterfaces())
      .flat()
      .find((i) => i !== undefined && i.family === "IPv4" && !i.internal)?.address;
    if (address === undefined) {
      t.skip("no non-loopback IPv4 interface");
      return;
    }
    for (const [options, status] of [
      [{}, 200],
      [{ allowedHosts: ["sluice.test"] }, 403],
    ] as const) {
      const server = createServer(runtime, options);
      const { url } = await server.listen(0, address);
      try {
        const answer = await send(url, "/health", { headers: { host: "evil.example" } });
        assert.equal(answer.status, status, JSON.stringify(options));
        assert.equal((await send(url, "/health", { headers: { host: "sluice.test" } })).status, 200);
      } finally {
        await server.close();
      }
    }
  });

  test("without keys: ids are unguessable, /v1/slots shows none, and knowing an id is what it takes to cancel", async () => {
    const served = await serve(runtime);
    const release = withHold();
    try {
      const { id, stream } = await heldStream(served.url);
      assert.match(id, /^cmpl-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      const slots = await send(served.url, "/v1/slots");
      assert.equal(slots.status, 200);
      assert.ok(
        slots.json.slots.some((s: { state: string }) => s.state !== "free"),
        "the slot is busy",
      );
      assert.ok(!JSON.stringify(slots.json).includes(id), "the id is not shown");
      const cancelled = await send(served.url, `/v1/requests/${id}`, { method: "DELETE" });
      assert.equal(cancelled.status, 200);
      assert.deepEqual(cancelled.json, { id, cancelled: true });
      release();
      await stream.done;
      assert.equal(stream.events.at(-2).choices[0].finish_reason, "cancelled");
    } finally {
      release();
      await served.server.close();
    }
  });

  test("with keys: a request's id is shown to and cancellable by its own key and the admin only", async () => {
    const served = await serve(runtime, { apiKey: ["sk-a", "sk-b"], adminApiKey: "sk-admin" });
    const as = (key: string) => ({ authorization: `Bearer ${key}` });
    const release = withHold();
    try {
      const a = await heldStream(served.url, as("sk-a"));
      // The step in flight holds a's slot: b waits in the queue, where it can be cancelled as well.
      const b = post(
        served.url,
        "/v1/completions",
        { prompt: "p", max_tokens: 50, stream: true },
        { headers: as("sk-b") },
      );
      const bId = String((await b.head).headers["x-request-id"]);
      const seen = async (key: string) =>
        (await send(served.url, "/v1/slots", { headers: as(key) })).json.slots
          .map((s: { requestId?: string }) => s.requestId)
          .filter((x: string | undefined) => x !== undefined);
      assert.deepEqual(await seen("sk-a"), [a.id]);
      assert.deepEqual(await seen("sk-b"), []);
      assert.deepEqual(await seen("sk-admin"), [a.id]);
      // Someone else's request does not exist for this key: 404, and it keeps running.
      for (const [id, key] of [
        [a.id, "sk-b"],
        [bId, "sk-a"],
      ] as const) {
        const foreign = await send(served.url, `/v1/requests/${id}`, { method: "DELETE", headers: as(key) });
        assert.equal(foreign.status, 404);
        assert.equal(foreign.json.error.code, "request_not_found");
      }
      assert.equal((await send(served.url, `/v1/requests/${a.id}`, { method: "DELETE" })).status, 401);
      assert.ok(runtime.snapshot().slots.some((s) => s.requestId === a.id && s.state !== "freeing"));
      assert.equal(runtime.load.queued, 1);
      const own = await send(served.url, `/v1/requests/${a.id}`, { method: "DELETE", headers: as("sk-a") });
      assert.equal(own.status, 200);
      const admin = await send(served.url, `/v1/requests/${bId}`, {
        method: "DELETE",
        headers: as("sk-admin"),
      });
      assert.equal(admin.status, 200);
      release();
      for (const stream of [a.stream, b]) {
        await stream.done;
        assert.equal(stream.events.at(-2).choices[0].finish_reason, "cancelled");
      }
    } finally {
      release();
      await served.server.close();
    }
  });

  test("an admin key alone: the API stays open, ids only for the admin, a wrong key is refused", async () => {
    const served = await serve(runtime, { adminApiKey: "sk-admin" });
    const release = withHold();
    try {
      const { id, stream } = await heldStream(served.url);
      assert.ok(!JSON.stringify((await send(served.url, "/v1/slots")).json).includes(id));
      const admin = await send(served.url, "/v1/slots", { headers: { authorization: "Bearer sk-admin" } });
      assert.ok(JSON.stringify(admin.json).includes(id));
      const wrong = await send(served.url, "/v1/slots", { headers: { authorization: "Bearer sk-guess" } });
      assert.equal(wrong.status, 401);
      release();
      await stream.done;
    } finally {
      release();
      await served.server.close();
    }
  });
});
