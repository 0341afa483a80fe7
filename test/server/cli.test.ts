import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { describe, test } from "node:test";
import { send } from "./client.ts";

// `sluice serve` as a deployment runs it: HTTP first, the model after, an access log on stdout, and a
// failed load that ends the process with a non-zero status.

const MAIN = new URL("../../src/cli/main.ts", import.meta.url).pathname;

function serve(args: string[]): {
  child: ChildProcess;
  stderr: string[];
  stdout: string[];
  line: (re: RegExp, from: "stderr" | "stdout") => Promise<string>;
} {
  const child = spawn(process.execPath, ["--import", "tsx", MAIN, "serve", "--port", "0", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines = { stderr: [] as string[], stdout: [] as string[] };
  const waiters: { re: RegExp; from: "stderr" | "stdout"; resolve: (l: string) => void }[] = [];
  for (const from of ["stderr", "stdout"] as const) {
    createInterface({ input: child[from]! }).on("line", (l) => {
      lines[from].push(l);
      for (const w of waiters.filter((w) => w.from === from && w.re.test(l))) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(l);
      }
    });
  }
  const line = (re: RegExp, from: "stderr" | "stdout") => {
    const seen = lines[from].find((l) => re.test(l));
    if (seen) return Promise.resolve(seen);
    return new Promise<string>((resolve) => waiters.push({ re, from, resolve }));
  };
  return { child, ...lines, line };
}

describe("sluice serve", () => {
  test("listens before the model loads; /health turns 200 once it is; an access line per request; SIGTERM exits 0", async () => {
    const { child, stderr, stdout, line } = serve([
      "--slots",
      "1",
      "--context-size",
      "128",
      "--threads",
      "1",
    ]);
    try {
      const listening = await line(/^sluice: listening at /, "stderr");
      const url = listening.match(/(http:\/\/\S+)/)![1]!;
      assert.equal((await send(url, "/health/live")).status, 200);
      const early = await send(url, "/health");
      assert.ok(
        (early.status === 503 && early.json.status === "loading") || early.status === 200,
        JSON.stringify(early.json),
      );
      await line(/^sluice: serving /, "stdout");
      // The listening line came before the model's last progress report.
      assert.ok(stderr.indexOf(listening) < stderr.indexOf("loading model 100%"), stderr.join("\n"));
      assert.equal((await send(url, "/health")).json.status, "ok");
      const done = await send(url, "/v1/completions", {
        body: { prompt: "In the beginning", max_tokens: 2 },
      });
      assert.equal(done.status, 200);
      const logged = JSON.parse(await line(/"route":"\/v1\/completions"/, "stdout"));
      assert.equal(logged.id, done.headers["x-request-id"]);
      assert.equal(logged.completionTokens, 2);
      child.kill("SIGTERM");
      const [code] = await once(child, "close");
      assert.equal(code, 0, stdout.join("\n"));
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
    }
  });

  test("a model that fails to load: non-zero exit with the error", async () => {
    const { child, stderr } = serve(["--model", "/nonexistent/model.gguf"]);
    const [code] = await once(child, "close");
    assert.notEqual(code, 0);
    assert.ok(stderr.some((l) => /listening at/.test(l)));
    assert.ok(
      stderr.some((l) => /model failed to load/.test(l)),
      stderr.join("\n"),
    );
  });
});
