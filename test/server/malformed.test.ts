import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import fc from "fast-check";
import type { Runtime } from "../../src/runtime/Runtime.ts";
import { scriptedRuntime } from "../helpers/scripted.ts";
import { fetchFromWorker, type RawResponse, rawExchange, type Served, serve } from "./client.ts";

// Whatever arrives on the socket, the answer is a 4xx in OpenAI's shape (or a 2xx/3xx), never a 500 or a
// reset, and the server goes on serving. The scripted engine: no model is needed to refuse a request.

let runtime: Runtime;
let served: Served;

function request(method: string, target: string, headers = "Host: 127.0.0.1\r\nConnection: close\r\n") {
  return `${method} ${target} HTTP/1.1\r\n${headers}\r\n`;
}

function assertOpenAIError(response: RawResponse, status: number, code: string): { message: string } {
  assert.equal(response.status, status, response.body);
  assert.match(response.headers["content-type"] ?? "", /^application\/json/);
  const { error } = JSON.parse(response.body);
  assert.equal(error.code, code, response.body);
  assert.equal(typeof error.message, "string");
  assert.equal(typeof error.type, "string");
  assert.ok("param" in error, "OpenAI's error shape has param");
  return error;
}

async function assertServing(): Promise<void> {
  const health = await fetch(`${served.url}/health`);
  assert.equal(health.status, 200);
  assert.equal((await health.json()).status, "ok");
}

describe("request-targets, methods and bodies the server cannot use get a 4xx, never a 500 or a reset", () => {
  before(async () => {
    ({ runtime } = await scriptedRuntime({ slots: 1 }));
    served = await serve(runtime, { maxBodyBytes: 64 * 1024, headersTimeoutMs: 2000, bodyTimeoutMs: 4000 });
  });
  after(async () => {
    await served.server.close();
    await runtime.close();
  });

  test("targets that do not parse as a URL: paths starting with //, bad absolute-form, *", async () => {
    for (const [target, status, code] of [
      ["//", 404, "not_found"],
      ["//:99999/health", 404, "not_found"],
      ["//evil.example/v1/models", 404, "not_found"],
      ["/\\\\x", 404, "not_found"],
      ["http://x:99999/", 400, "invalid_url"],
      ["http://[::1/", 400, "invalid_url"],
      ["ftp://127.0.0.1/health", 400, "invalid_url"],
      ["*", 400, "invalid_url"],
    ] as const) {
      const { responses } = await rawExchange(served.url, request("GET", target));
      assert.equal(responses.length, 1, target);
      const error = assertOpenAIError(responses[0]!, status, code);
      if (code === "invalid_url") assert.match(error.message, /request-target .* cannot be read/);
    }
    // Absolute-form as a proxy sends it is served.
    const { responses } = await rawExchange(served.url, request("GET", `${served.url}/health`));
    assert.equal(responses[0]?.status, 200);
    await assertServing();
  });

  test("percent-encoding that does not decode is a 400 naming the segment, on every route", async () => {
    for (const [method, target, param] of [
      ["GET", "/v1/models/%E0%A4%A", "model"],
      ["GET", "/v1/models/%", "model"],
      ["DELETE", "/v1/requests/%ZZ", "id"],
      ["DELETE", "/v1/requests/%C0%AF", "id"],
      ["GET", "/web/%E0%A4%A.js", "path"],
    ] as const) {
      const { responses } = await rawExchange(served.url, request(method, target));
      const error = assertOpenAIError(responses[0]!, 400, "invalid_url") as {
        message: string;
        param: string;
      };
      assert.equal(error.param, param, target);
      assert.match(error.message, /is not valid percent-encoding/);
    }
    await assertServing();
  });

  test("what node's parser refuses is answered in OpenAI's shape too", async () => {
    const cases: [string, number, string][] = [
      [request("FOO", "/health"), 400, "invalid_request"],
      ["GET /\x00 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, "invalid_request"],
      ["GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header: x\r\n\r\n", 400, "invalid_request"],
      [request("GET", `/${"a".repeat(20_000)}`), 431, "headers_too_large"],
      [
        "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        400,
        "invalid_request",
      ],
      ["CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n", 405, "method_not_allowed"],
      [
        request("GET", "/health", "Host: 127.0.0.1\r\nExpect: teapot\r\nConnection: close\r\n"),
        417,
        "expectation_failed",
      ],
      ["GET /health HTTP/1.1\r\nConnection: close\r\n\r\n", 400, "invalid_request"],
      ["PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "invalid_request"],
      [
        "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
        "invalid_request",
      ],
    ];
    for (const [bytes, status, code] of cases) {
      const { responses, ending } = await rawExchange(served.url, bytes);
      assert.equal(responses.length, 1, JSON.stringify(bytes.slice(0, 60)));
      assertOpenAIError(responses[0]!, status, code);
      assert.equal(ending, "closed", "the connection is closed, not reset");
    }
    // HTTP/1.0 has no Host header; HEAD is GET without the body.
    const old = await rawExchange(served.url, "GET /health HTTP/1.0\r\n\r\n");
    assert.equal(old.responses[0]?.status, 200);
    const head = await rawExchange(served.url, request("HEAD", "/health"), { headOnly: true });
    assert.equal(head.responses[0]?.status, 200);
    await assertServing();
  });

  test("property: random methods and request-targets over a raw socket answer < 500; the server keeps serving", async () => {
    const methods = fc.oneof(
      fc.constantFrom(
        "GET",
        "POST",
        "DELETE",
        "PUT",
        "PATCH",
        "HEAD",
        "OPTIONS",
        "TRACE",
        "CONNECT",
        "PROPFIND",
      ),
      fc.stringMatching(/^[A-Za-z!#$%&'*+.^_`|~-]{1,12}$/),
    );
    // Anything but CR and LF, which end the request line: NUL, controls, spaces, bytes >= 0x80, "%".
    const byte = fc.integer({ min: 0, max: 255 }).filter((b) => b !== 0x0d && b !== 0x0a);
    const rawBytes = fc.array(byte, { maxLength: 40 }).map((bytes) => Buffer.from(bytes).toString("latin1"));
    const piece = fc.oneof(
      fc.constantFrom("%", "%2", "%ZZ", "%E0%A4%A", "%C0%AF", "%2e%2e", "..", "?", "#", "@", ":", "\\"),
      fc.constantFrom(
        "v1",
        "models",
        "requests",
        "slots",
        "web",
        "health",
        "metrics",
        "completions",
        "app.js",
      ),
      fc.stringMatching(/^%[0-9A-Fa-f]{2}$/),
      rawBytes,
    );
    const segment = fc.array(piece, { maxLength: 4 }).map((parts) => parts.join(""));
    const path = fc.array(segment, { maxLength: 6 }).map((segments) => segments.join("/"));
    const target = fc.oneof(
      path.map((p) => `/${p}`),
      path.map((p) => `//${p}`),
      path.map((p) => `http://127.0.0.1/${p}`),
      fc
        .tuple(fc.constantFrom("http://", "https://", "ftp://", "", "//"), fc.string({ maxLength: 30 }), path)
        .map(([scheme, host, p]) => `${scheme}${host}/${p}`),
      fc.constant("*"),
      fc.integer({ min: 8_000, max: 40_000 }).map((n) => `/${"x".repeat(n)}`),
    );
    // The routes with a parameter and their method, so that a random segment reaches the code that decodes it.
    const routed = fc
      .tuple(
        fc.constantFrom(
          ["GET", "/v1/models/"],
          ["DELETE", "/v1/requests/"],
          ["GET", "/web/"],
          ["HEAD", "/web/"],
        ),
        segment,
      )
      .map(([[method, prefix], s]) => [method, `${prefix}${s}`] as [string, string]);
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.tuple(methods, target), routed), async ([method, t]) => {
        const { responses, ending } = await rawExchange(
          served.url,
          Buffer.from(request(method, t), "latin1"),
          method === "HEAD" ? { headOnly: true } : {},
        );
        assert.ok(
          responses.length >= 1,
          `${method} ${JSON.stringify(t.slice(0, 80))}: no answer (${ending})`,
        );
        for (const response of responses) {
          assert.ok(response.status < 500, `${method} ${JSON.stringify(t.slice(0, 80))}: ${response.status}`);
          if (response.status >= 400 && method !== "HEAD") {
            assert.equal(typeof JSON.parse(response.body).error.code, "string", response.body);
          }
        }
        await assertServing();
      }),
      { numRuns: 300 },
    );
  });

  test("a body over the limit: 413 that fetch() receives, the rest of the body read and dropped, then a clean close", async () => {
    const big = await fetchFromWorker(`${served.url}/v1/completions`, {
      method: "POST",
      bodyBytes: 4_000_000,
    });
    assert.ok("status" in big, `fetch failed: ${JSON.stringify(big)}`);
    assert.equal(big.status, 413);
    assert.equal(JSON.parse(big.body).error.code, "request_too_large");
    // Refused before the body is read for any reason, a client still sending gets the answer too.
    const unauthorized = await serve(runtime, { apiKey: "k" });
    try {
      const refused = await fetchFromWorker(`${unauthorized.url}/v1/completions`, {
        method: "POST",
        bodyBytes: 4_000_000,
      });
      assert.ok("status" in refused, `fetch failed: ${JSON.stringify(refused)}`);
      assert.equal(refused.status, 401);
    } finally {
      await unauthorized.server.close();
    }
    // On a raw socket: the answer comes before the body is sent; the connection closes once it is.
    let socket!: import("node:net").Socket;
    let answered!: () => void;
    const answer = new Promise<void>((resolve) => {
      answered = resolve;
    });
    const exchange = rawExchange(
      served.url,
      "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 200000\r\n\r\n",
      {
        stayOpen: true,
        onSocket: (s) => {
          socket = s;
          s.once("data", () => answered());
        },
      },
    );
    await answer;
    assert.ok(!socket.destroyed, "the server waits for the body it refused");
    socket.end("a".repeat(200_000));
    const { responses, ending } = await exchange;
    assert.equal(ending, "closed");
    assertOpenAIError(responses[0]!, 413, "request_too_large");
    assert.equal(responses[0]!.headers.connection, "close");
    await assertServing();
  });

  test("a refused body that never ends is cut at bodyTimeoutMs; one declared past the drain bound at once", async () => {
    const started = performance.now();
    const slow = await rawExchange(
      served.url,
      "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n",
      { stayOpen: true },
    );
    assertOpenAIError(slow.responses[0]!, 413, "request_too_large");
    assert.ok(
      performance.now() - started >= 3000,
      "cut at bodyTimeoutMs (4000), counted from the first byte",
    );
    const huge = await rawExchange(
      served.url,
      "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000000\r\n\r\n",
      { stayOpen: true },
    );
    assertOpenAIError(huge.responses[0]!, 413, "request_too_large");
    await assertServing();
  });
});
