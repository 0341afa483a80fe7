import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { streamFromUpstream } from "../../src/gateway/index.ts";
import { drain } from "../helpers/scripted.ts";
import {
  endEvents,
  type Scripted,
  SSE_HEADERS,
  startScripted,
  textEvent,
  write,
} from "./scriptedUpstream.ts";

// The upstream producer against scripted upstreams on loopback: every fault ends the stream with exactly one
// terminal chunk and an upstream_* code, and a cancel aborts the upstream request.
describe("streamFromUpstream: faults over loopback", () => {
  const servers: Scripted[] = [];
  after(async () => {
    await Promise.all(servers.map((s) => s.close()));
  });
  const start = async (...args: Parameters<typeof startScripted>) => {
    const s = await startScripted(...args);
    servers.push(s);
    return s;
  };
  const body = { model: "m", prompt: "In the beginning", max_tokens: 8 };

  test("a natural end: text, finish reason, usage; stream and include_usage forced upstream", async () => {
    const s = await start(async (_req, res) => {
      res.writeHead(200, SSE_HEADERS);
      await write(res, textEvent("In"));
      await write(res, textEvent(" the", "length"));
      res.end(endEvents(4, 2));
    });
    const { text, terminal } = await drain(streamFromUpstream(body, { url: s.url, kind: "completion" }));
    assert.equal(text, "In the");
    assert.equal(terminal.reason, "length");
    assert.equal(s.bodies[0]!.stream, true);
    assert.deepEqual(s.bodies[0]!.stream_options, { include_usage: true });
    assert.equal(s.bodies[0]!.prompt, "In the beginning");
  });

  test("UTF-8 cut between writes on the wire arrives whole", async () => {
    const bytes = Buffer.from(textEvent("a😀é中b", "stop") + endEvents());
    const s = await start(async (_req, res) => {
      res.writeHead(200, SSE_HEADERS);
      for (let i = 0; i < bytes.length; i += 3) await write(res, bytes.subarray(i, i + 3));
      res.end();
    });
    const { text, terminal, chunks } = await drain(
      streamFromUpstream(body, { url: s.url, kind: "completion" }),
    );
    assert.equal(text, "a😀é中b");
    assert.equal(terminal.reason, "eos");
    for (const c of chunks) assert.ok(!c.text.includes("\ufffd"));
  });

  test("a 500 is an error terminal chunk with upstream_error and the upstream's message", async () => {
    const s = await start((_req, res) => {
      res.writeHead(500, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { message: "kv cache exploded", type: "server_error" } }));
    });
    const { terminal } = await drain(streamFromUpstream(body, { url: s.url, kind: "completion" }));
    assert.equal(terminal.reason, "error");
    assert.equal(terminal.error?.code, "upstream_error");
    assert.match(terminal.error!.message, /500: kv cache exploded/);
  });

  test("a 400 is upstream_rejected with the upstream's own words", async () => {
    const s = await start((_req, res) => {
      res.writeHead(400, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { message: "max_tokens: too large", code: "invalid_request" } }));
    });
    const { terminal } = await drain(streamFromUpstream(body, { url: s.url, kind: "completion" }));
    assert.equal(terminal.error?.code, "upstream_rejected");
    assert.equal(terminal.error?.message, "max_tokens: too large");
  });

  test("a connection dropped mid-stream: the text so far, then upstream_disconnected", async () => {
    const s = await start(async (_req, res) => {
      res.writeHead(200, SSE_HEADERS);
      await write(res, textEvent("In the"));
      res.socket?.destroy();
    });
    const { text, terminal } = await drain(streamFromUpstream(body, { url: s.url, kind: "completion" }));
    assert.equal(text, "In the");
    assert.equal(terminal.error?.code, "upstream_disconnected");
  });

  test("a malformed event: upstream_bad_response, nothing after it", async () => {
    const s = await start(async (_req, res) => {
      res.writeHead(200, SSE_HEADERS);
      await write(res, textEvent("ok"));
      res.end(`data: {"choices": [\n\n${textEvent("never")}`);
    });
    const { text, terminal } = await drain(streamFromUpstream(body, { url: s.url, kind: "completion" }));
    assert.equal(text, "ok");
    assert.equal(terminal.error?.code, "upstream_bad_response");
  });

  test("200 that is not an event stream: upstream_bad_response", async () => {
    const s = await start((_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end("{}");
    });
    const { terminal } = await drain(streamFromUpstream(body, { url: s.url, kind: "completion" }));
    assert.equal(terminal.error?.code, "upstream_bad_response");
  });

  test("slow headers: upstream_timeout after headersTimeoutMs, and the request is aborted", async () => {
    const s = await start(() => {});
    const { terminal } = await drain(
      streamFromUpstream(body, { url: s.url, kind: "completion", headersTimeoutMs: 100 }),
    );
    assert.equal(terminal.error?.code, "upstream_timeout");
    assert.match(terminal.error!.message, /headersTimeoutMs/);
    await s.closed(0);
  });

  test("silence mid-stream: upstream_timeout after idleTimeoutMs", async () => {
    const s = await start(async (_req, res) => {
      res.writeHead(200, SSE_HEADERS);
      await write(res, textEvent("In"));
    });
    const { text, terminal } = await drain(
      streamFromUpstream(body, { url: s.url, kind: "completion", idleTimeoutMs: 100 }),
    );
    assert.equal(text, "In");
    assert.equal(terminal.error?.code, "upstream_timeout");
    assert.match(terminal.error!.message, /idleTimeoutMs/);
  });

  test("nobody listening: upstream_unavailable", async () => {
    const s = await start(() => {});
    const url = s.url;
    await s.close();
    const { terminal } = await drain(streamFromUpstream(body, { url, kind: "completion" }));
    assert.equal(terminal.error?.code, "upstream_unavailable");
  });

  test("cancel: the terminal chunk at once, and the upstream sees its request closed", async () => {
    const s = await start(async (_req, res) => {
      res.writeHead(200, SSE_HEADERS);
      await write(res, textEvent("In"));
      // and then nothing: a long generation
    });
    const channel = streamFromUpstream(body, { url: s.url, kind: "completion" });
    const first = await channel.waitPop();
    assert.equal(first?.text, "In");
    channel.cancel();
    const terminal = channel.tryPop();
    assert.equal(terminal?.finished, true);
    assert.equal(terminal?.reason, "cancelled");
    await s.closed(0);
  });

  test("break out of for-await and an AbortSignal abort the upstream request too", async () => {
    const s = await start(async (_req, res) => {
      res.writeHead(200, SSE_HEADERS);
      await write(res, textEvent("In"));
    });
    for await (const _ of streamFromUpstream(body, { url: s.url, kind: "completion" })) break;
    await s.closed(0);
    const abort = new AbortController();
    const channel = streamFromUpstream(body, { url: s.url, kind: "completion", signal: abort.signal });
    await channel.waitPop();
    abort.abort();
    assert.equal((await channel.result).reason, "cancelled");
    await s.closed(1);
  });
});
