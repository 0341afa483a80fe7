import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { after, describe, test } from "node:test";
import { UpstreamPool } from "../../src/gateway/index.ts";
import { drain } from "../helpers/scripted.ts";
import { endEvents, SSE_HEADERS, textEvent } from "./scriptedUpstream.ts";

// A kept-alive connection the upstream closed while it sat idle: the next POST on it is reset before any
// response. Nothing was generated, so it goes again on a fresh connection, even with one upstream.
describe("a POST on a kept-alive connection the upstream closed", () => {
  let server: Server | undefined;
  after(() => new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve())));

  test("is sent once more on a fresh connection and served; the closed socket is never tried twice", async () => {
    const served = new WeakMap<Socket, number>();
    const sockets = new Set<Socket>();
    let resets = 0;
    server = createServer((req, res) => {
      req.resume();
      req.on("end", () => {
        if (req.method !== "POST") {
          res.writeHead(200, { "content-type": "application/json" }).end("{}");
          return;
        }
        const n = (served.get(req.socket) ?? 0) + 1;
        served.set(req.socket, n);
        sockets.add(req.socket);
        // The second request on one connection: the upstream closed it meanwhile (as an idle timeout would).
        if (n === 2) {
          resets++;
          req.socket.destroy();
          return;
        }
        res.writeHead(200, SSE_HEADERS);
        res.end(textEvent("In the", "length") + endEvents(4, 2));
      });
    });
    await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const pool = await UpstreamPool.create({ upstreams: [url], healthIntervalMs: 60_000 });
    try {
      const body = { prompt: "In the beginning", max_tokens: 2 };
      const first = await drain(pool.generate(body, { kind: "completion" }));
      assert.equal(first.terminal.reason, "length");
      // The first response ended with [DONE]: its connection went back to the pool, kept alive.
      const second = await drain(pool.generate(body, { kind: "completion" }));
      assert.equal(second.terminal.reason, "length", JSON.stringify(second.terminal.error));
      assert.equal(second.text, "In the");
      assert.equal(resets, 1, "the reused connection was reset once");
      assert.equal(sockets.size, 2, "the retry went on a connection of its own");
      assert.equal(pool.snapshot()[0]!.failures, 0);
    } finally {
      await pool.close();
    }
  });
});
