import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { serveCommand } from "../../src/cli/serve.ts";
import { SluiceError } from "../../src/errors.ts";
import type { Runtime } from "../../src/runtime/Runtime.ts";
import { scriptedRuntime } from "../helpers/scripted.ts";
import { type Served, send, serve } from "./client.ts";

// Keys as clients send them: Authorization: Bearer (OpenAI's SDKs), x-api-key (Anthropic-style clients);
// from flags, a key file, or SLUICE_API_KEY with several keys.

let runtime: Runtime;
let served: Served;
let dir: string;

describe("API keys", () => {
  before(async () => {
    ({ runtime } = await scriptedRuntime({ slots: 1 }));
    dir = await mkdtemp(join(tmpdir(), "sluice-keys-"));
    const file = join(dir, "keys");
    await writeFile(file, "# one key per client\nsk-file-1\n\n  sk-file-2\n");
    served = await serve(runtime, { apiKey: "sk-flag", apiKeyFile: file });
  });
  after(async () => {
    await served.server.close();
    await runtime.close();
    await rm(dir, { recursive: true, force: true });
  });

  test("x-api-key is accepted like Authorization: Bearer; a wrong or missing key is a 401", async () => {
    for (const headers of [
      { authorization: "Bearer sk-flag" },
      { "x-api-key": "sk-flag" },
      { "x-api-key": "sk-file-1" },
      { authorization: "Bearer sk-file-2" },
    ] as Record<string, string>[]) {
      assert.equal((await send(served.url, "/v1/models", { headers })).status, 200, JSON.stringify(headers));
    }
    for (const headers of [
      {},
      { "x-api-key": "sk-wrong" },
      { "x-api-key": "" },
      { authorization: "Bearer sk-file-3" },
    ] as Record<string, string>[]) {
      const { status, json, headers: answer } = await send(served.url, "/v1/models", { headers });
      assert.equal(status, 401, JSON.stringify(headers));
      assert.equal(json.error.code, "invalid_api_key");
      assert.equal(answer["www-authenticate"], "Bearer");
    }
    // Authorization decides when both are sent: a good x-api-key does not rescue a wrong Bearer.
    const both = await send(served.url, "/v1/models", {
      headers: { authorization: "Bearer sk-wrong", "x-api-key": "sk-flag" },
    });
    assert.equal(both.status, 401);
  });

  test("a request belongs to its key whichever header carried it", async () => {
    const { json } = await send(served.url, "/v1/slots", { headers: { "x-api-key": "sk-file-1" } });
    assert.equal(json.slotsTotal, 1);
  });

  test("SLUICE_API_KEY holds several keys separated by commas (each checked like --api-key)", async () => {
    const saved = process.env.SLUICE_API_KEY;
    process.env.SLUICE_API_KEY = "sk-a, sk-b ,sk c";
    try {
      await assert.rejects(serveCommand(["--port", "0"]), (error: unknown) => {
        assert.ok(error instanceof SluiceError);
        // The third entry: the variable was split at the commas and each key trimmed.
        assert.equal(error.param, "apiKey.2");
        assert.match(error.message, /^--api-key must be printable ASCII/);
        return true;
      });
    } finally {
      if (saved === undefined) delete process.env.SLUICE_API_KEY;
      else process.env.SLUICE_API_KEY = saved;
    }
  });
});
