import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { after, before, describe, test } from "node:test";
import OpenAI from "openai";
import { BUNDLED_MODEL_PATH } from "../../src/engine/modelPath.ts";
import { Runtime } from "../../src/runtime/Runtime.ts";
import { scriptedRuntime } from "../helpers/scripted.ts";
import { post, type Served, type SseEvent, send, serve } from "./client.ts";

// strictFinishReason: strictly typed clients accept only OpenAI's finish_reason values; Sluice's own reason
// stays in the final chunk's `sluice` object.
const PROMPT = "Genesis 1\n1 In the beginning";
const OPENAI_REASONS = ["stop", "length", "tool_calls", "content_filter", "function_call"];

const finishOf = (events: SseEvent[]) =>
  events.find((e) => e !== "[DONE]" && e.choices.length > 0 && e.choices[0].finish_reason !== null);

describe("strict finish_reason on the real engine", () => {
  let runtime: Runtime;
  let strict: Served;
  let loose: Served;

  before(async () => {
    runtime = await Runtime.create({ model: BUNDLED_MODEL_PATH, slots: 2, threads: 1, contextSize: 512 });
    strict = await serve(runtime, { strictFinishReason: true });
    loose = await serve(runtime);
  });
  after(async () => {
    await strict.server.close();
    await loose.server.close();
    await runtime.close();
  });

  /** A stream stopped by DELETE after its first delta: its finish chunk. */
  async function stoppedStream(served: Served): Promise<SseEvent> {
    let deleted: Promise<Response> | undefined;
    const stream = post(
      served.url,
      "/v1/chat/completions",
      { messages: [{ role: "user", content: "Speak." }], max_tokens: 400, ignore_eos: true, stream: true },
      {
        onEvent: (event) => {
          if (deleted || event === "[DONE]" || !event.choices[0]?.delta?.content) return;
          deleted = fetch(`${served.url}/v1/requests/${event.id}`, { method: "DELETE" });
        },
      },
    );
    await stream.done;
    assert.equal((await deleted)?.status, 200);
    return finishOf(stream.events);
  }

  test("a cancelled stream says stop, and sluice.reason says cancelled; without the option, cancelled", async () => {
    const finish = await stoppedStream(strict);
    assert.equal(finish.choices[0].finish_reason, "stop");
    assert.equal(finish.sluice.reason, "cancelled");
    const plain = await stoppedStream(loose);
    assert.equal(plain.choices[0].finish_reason, "cancelled");
    assert.equal(plain.sluice.reason, "cancelled");
  });

  test("through the client: every finish_reason of a cancelled response is one of OpenAI's", async () => {
    const deadline = await serve(runtime, { strictFinishReason: true, requestTimeoutMs: 1 });
    try {
      const client = new OpenAI({ baseURL: `${deadline.url}/v1`, apiKey: "none", maxRetries: 0 });
      const completion = await client.completions.create({
        model: "m",
        prompt: PROMPT,
        max_tokens: 400,
        n: 2,
        ...({ ignore_eos: true } as object),
      });
      for (const choice of completion.choices) assert.ok(OPENAI_REASONS.includes(choice.finish_reason));
      assert.equal((completion as unknown as { sluice: { reason: string } }).sluice.reason, "cancelled");
      // The natural ends are OpenAI's already, strict or not.
      const ended = await send(strict.url, "/v1/completions", { body: { prompt: PROMPT, max_tokens: 3 } });
      assert.equal(ended.json.choices[0].finish_reason, "length");
    } finally {
      await deadline.server.close();
    }
  });
});

describe("strict finish_reason on an engine fault (scripted engine)", () => {
  test("a failed stream says stop, then the error event; without the option, error", async () => {
    const { runtime } = await scriptedRuntime({ slots: 1, faults: [{ step: 3 }, { step: 7 }] });
    const strict = await serve(runtime, { strictFinishReason: true });
    const loose = await serve(runtime);
    try {
      for (const [served, reason] of [
        [strict, "stop"],
        [loose, "error"],
      ] as const) {
        const stream = post(served.url, "/v1/completions", { prompt: "In the beginning", stream: true });
        await stream.done;
        const finish = finishOf(stream.events);
        assert.equal(finish.choices[0].finish_reason, reason);
        assert.equal(finish.sluice.reason, "error");
        assert.ok(stream.events.at(-2).error, "the error event follows the finish chunk");
        assert.equal(stream.events.at(-1), "[DONE]");
      }
    } finally {
      await strict.server.close();
      await loose.server.close();
      await runtime.close();
    }
  });
});

describe("sluice serve --strict-finish-reason and SLUICE_STRICT_FINISH_REASON", () => {
  const MAIN = new URL("../../src/cli/main.ts", import.meta.url).pathname;

  /** Starts `sluice serve` and resolves with its URL once the model is loaded. */
  async function start(
    args: string[],
    env: Record<string, string>,
  ): Promise<{ child: ChildProcess; url: string }> {
    const child = spawn(
      process.execPath,
      ["--import", "tsx", MAIN, "serve", "--port", "0", "--slots", "1", "--threads", "1", ...args],
      { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } },
    );
    let url: string | undefined;
    const ready = new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stderr! }).on("line", (line) => {
        url ??= line.match(/^sluice: listening at (http:\/\/\S+)/)?.[1];
      });
      createInterface({ input: child.stdout! }).on("line", (line) => {
        if (line.startsWith("sluice: serving ") && url !== undefined) resolve(url);
      });
      child.once("exit", (code) => reject(new Error(`sluice serve exited with ${code}`)));
    });
    return { child, url: await ready };
  }

  for (const [how, args, env] of [
    ["the flag", ["--strict-finish-reason"], {}],
    ["the environment", [], { SLUICE_STRICT_FINISH_REASON: "1" }],
  ] as const) {
    test(`strict through ${how}: a deadline-cancelled request says stop`, async () => {
      const { child, url } = await start(["--request-timeout", "1", "--log-level", "silent", ...args], env);
      try {
        const answer = await send(url, "/v1/completions", {
          body: { prompt: PROMPT, max_tokens: 400, ignore_eos: true },
        });
        assert.equal(answer.json.choices[0].finish_reason, "stop");
        assert.equal(answer.json.sluice.reason, "cancelled");
        child.kill("SIGTERM");
        const [code] = await once(child, "close");
        assert.equal(code, 0);
      } finally {
        if (child.exitCode === null) child.kill("SIGKILL");
      }
    });
  }
});
