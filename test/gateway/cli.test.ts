import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { after, describe, test } from "node:test";
import { BUNDLED_MODEL_PATH } from "../../src/engine/modelPath.ts";
import { post, textOf } from "../server/client.ts";
import {
  endEvents,
  type Scripted,
  SSE_HEADERS,
  startScripted,
  textEvent,
  write,
} from "./scriptedUpstream.ts";

// `sluice serve --upstream URL`: a gateway with no local model, started and stopped as a deployment would.

const MAIN = new URL("../../src/cli/main.ts", import.meta.url).pathname;

function serve(args: string[], env: NodeJS.ProcessEnv = {}) {
  const child = spawn(process.execPath, ["--import", "tsx", MAIN, "serve", "--port", "0", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
  });
  const out: string[] = [];
  const err: string[] = [];
  let onLine: ((line: string) => void) | undefined;
  createInterface({ input: child.stdout! }).on("line", (l) => {
    out.push(l);
    onLine?.(l);
  });
  createInterface({ input: child.stderr! }).on("line", (l) => err.push(l));
  const address = new Promise<string>((resolve) => {
    onLine = (l) => {
      const m = /^sluice: gateway at (http:\/\/\S+)/.exec(l);
      if (m) resolve(m[1]!);
    };
  });
  return { child, out, err, address };
}

describe("sluice serve --upstream", () => {
  let upstream: Scripted;
  after(() => upstream?.close());

  test("serves the upstream's stream with no model loaded; SIGTERM exits 0", async () => {
    upstream = await startScripted(async (_req, res) => {
      res.writeHead(200, SSE_HEADERS);
      await write(res, textEvent("In the"));
      res.end(textEvent(" beginning", "length") + endEvents());
    });
    const { child, out, address } = serve(["--upstream", upstream.url, "--routing", "least_outstanding"]);
    const url = await address;
    assert.ok(out.some((l) => l.includes(upstream.url) && l.includes("up") && l.includes("scripted")));
    const stream = post(url, "/v1/completions", { prompt: "x", stream: true });
    await stream.done;
    assert.equal(textOf(stream.events), "In the beginning");
    const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string }[] };
    assert.deepEqual(
      models.data.map((m) => m.id),
      ["scripted"],
    );
    child.kill("SIGTERM");
    const [code] = await once(child, "exit");
    assert.equal(code, 0);
  });

  test("SLUICE_UPSTREAM works like the flag; a missing --model file and a bad URL fail with a message", async () => {
    const viaEnv = serve([], { SLUICE_UPSTREAM: upstream.url });
    await viaEnv.address;
    viaEnv.child.kill("SIGTERM");
    assert.equal((await once(viaEnv.child, "exit"))[0], 0);
    const both = serve(["--upstream", upstream.url, "--model", "x.gguf"]);
    assert.equal((await once(both.child, "exit"))[0], 1);
    assert.match(both.err.join("\n"), /x\.gguf/);
    const bad = serve(["--upstream", "ftp://nowhere"]);
    assert.equal((await once(bad.child, "exit"))[0], 1);
    assert.match(bad.err.join("\n"), /upstreams\.0 must be an http\(s\) base URL/);
  });

  test("--model with --upstream: the local engine is one more member; /v1/models lists both", async () => {
    const both = serve([
      "--upstream",
      upstream.url,
      "--model",
      BUNDLED_MODEL_PATH,
      "--slots",
      "2",
      "--threads",
      "1",
      "--log-level",
      "silent",
    ]);
    const url = await both.address;
    const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string }[] };
    assert.deepEqual(
      models.data.map((m) => m.id),
      ["kjv-tiny.gguf", "scripted"],
    );
    const upstreams = (await (await fetch(`${url}/v1/upstreams`)).json()) as { data: { local: boolean }[] };
    assert.deepEqual(
      upstreams.data.map((u) => u.local),
      [false, true],
    );
    both.child.kill("SIGTERM");
    assert.equal((await once(both.child, "exit"))[0], 0);
  });
});
