import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import type { Browser, BrowserContext } from "playwright-core";
import { KJV } from "../../bench/corpus.ts";
import { BUNDLED_CHAT_MODEL_PATH } from "../../src/engine/modelPath.ts";
import type { RequestRecord } from "../../src/runtime/RequestState.ts";
import type { Runtime } from "../../src/runtime/Runtime.ts";
import type { SluiceServer } from "../../src/server/index.ts";
import { browserSkip, launchChromium, PlaygroundPage, startRuntime, startServer } from "./harness.ts";

/** The first verses of Genesis 1, then its heading again: greedy output quotes them, so prompt lookup drafts. */
const REPEAT = `${KJV.split("\n").slice(0, 9).join("\n")}\n\nGenesis 1\n1 In`;

/** Without a browser every test below is reported as skipped with the install hint (failed in CI). */
const skip = await browserSkip();

/**
 * The end record of the next request `runtime` finishes: its completion tokens are the ones its response's
 * usage reports (the page's own copy of a streamed body is not always readable in Chromium).
 */
function nextEnd(runtime: Runtime): Promise<RequestRecord> {
  return new Promise((resolve) => {
    const stop = runtime.observe((event) => {
      if (event.type !== "end") return;
      stop();
      resolve(event.record);
    });
  });
}

describe("web playground on a speculative server: tokens, not chunks", () => {
  let runtime: Runtime | undefined;
  let server: SluiceServer | undefined;
  let browser: Browser | undefined;
  let url = "";
  let context: BrowserContext | undefined;

  before(async () => {
    if (skip) return;
    browser = await launchChromium();
    runtime = await startRuntime({
      model: BUNDLED_CHAT_MODEL_PATH,
      slots: 2,
      contextSize: 1024,
      drafter: "prompt-lookup",
    });
    ({ server, url } = await startServer(runtime));
  });

  afterEach(async () => {
    await context?.close();
    context = undefined;
  });

  after(async () => {
    await browser?.close();
    await server?.close();
    await runtime?.close();
  });

  async function open(): Promise<PlaygroundPage> {
    context = await browser!.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    page.setDefaultTimeout(20_000);
    const ui = new PlaygroundPage(page);
    await ui.open(url);
    await ui.set("Temperature", "0");
    await ui.set("Max tokens", "80");
    return ui;
  }

  test("a pane counts the response's completion tokens and shows tokens per step above 1", {
    skip,
  }, async () => {
    const ui = await open();
    await ui.panes(1);
    await ui.set("Prompt", REPEAT);
    const ended = nextEnd(runtime!);
    const sent = ui.page.waitForRequest((r) => r.url().endsWith("/v1/completions"));
    await ui.button(1, "Generate").click();
    assert.deepEqual((await sent).postDataJSON().stream_options, {
      include_usage: true,
      continuous_usage_stats: true,
    });
    await ui.finishReason(1);
    const { completionTokens: tokens, reason } = await ended;
    assert.equal(reason, "length");

    assert.equal(Number(await ui.stat(1, "tokens").textContent()), tokens);
    const step = (await ui.stat(1, "step").textContent()) ?? "";
    const match = /^(\d+\.\d) tok\/step$/.exec(step);
    assert.ok(match, `tokens per step in the stats, got ${JSON.stringify(step)}`);
    assert.ok(Number(match[1]) > 1, step);
    assert.match((await ui.stat(1, "rate").textContent()) ?? "", /^\d+ tok\/s$/);
  });

  test("a chat reply's line shows tok/step, and its token count is the response's", { skip }, async () => {
    const ui = await open();
    await ui.mode("Chat");
    const ended = nextEnd(runtime!);
    await ui.sendChat(REPEAT);
    const reply = await ui.reply(1);
    const { completionTokens: tokens } = await ended;

    assert.equal(reply.tokens, tokens);
    const shape = /^(\d+) tokens · \d+ tok\/s · (\d+\.\d) tok\/step · prompt \d+ tokens, \d+ cached/;
    const meta = shape.exec(reply.meta);
    assert.ok(meta, `tokens, tok/s and tok/step under the reply, got ${JSON.stringify(reply.meta)}`);
    assert.equal(Number(meta[1]), tokens);
    assert.ok(Number(meta[2]) > 1, reply.meta);
  });

  test("a server without continuous usage: no tokens per step, the final usage gives the total", {
    skip,
  }, async () => {
    const ui = await open();
    await ui.panes(1);
    await ui.set("Prompt", "Genesis 1");
    // An upstream that knows only include_usage: usage null on its chunks, then the usage chunk.
    const chunk = (choice: Record<string, unknown>, usage: unknown = null) =>
      `data: ${JSON.stringify({ id: "cmpl-1", object: "text_completion", choices: [choice], usage })}\n\n`;
    const text = (t: string) => chunk({ text: t, index: 0, logprobs: null, finish_reason: null });
    await ui.page.route("**/v1/completions", (route) =>
      route.fulfill({
        status: 200,
        headers: { "content-type": "text/event-stream", "x-request-id": "cmpl-1" },
        body: [
          text(" In"),
          text(" the"),
          text(" beginning"),
          chunk({ text: "", index: 0, logprobs: null, finish_reason: "length" }),
          `data: ${JSON.stringify({ id: "cmpl-1", choices: [], usage: { prompt_tokens: 4, completion_tokens: 5, total_tokens: 9 } })}\n\n`,
          "data: [DONE]\n\n",
        ].join(""),
      }),
    );
    await ui.button(1, "Generate").click();
    assert.equal(await ui.finishReason(1), "length");
    assert.equal(await ui.completion(1), " In the beginning");
    assert.equal(await ui.stat(1, "tokens").textContent(), "5");
    assert.equal(await ui.stat(1, "step").textContent(), "–", "no tokens per step without counts per chunk");
  });

  test("Generation counts tokens from usage, one per chunk without it, and rates tokens, not chunks", {
    skip,
  }, async () => {
    const ui = await open();
    // The page's own module, as its views use it (a variable keeps the compiler from resolving it here).
    // Two generations fed the same three chunks 20 ms apart, one with the server's counts and one without;
    // each reports tokens, tokens per step, and its live rate times its span (the tokens the rate counts).
    // No named functions inside: the page gets this code as text, without the compiler's helpers.
    const figures = await ui.page.evaluate(
      async ([module, counts]) => {
        const { Generation } = await import(module);
        return Promise.all(
          [true, false].map(async (withCounts) => {
            const generation = new Generation(() => {});
            for (const tokens of counts) {
              generation.chunk(withCounts ? tokens : undefined);
              await new Promise((resolve) => setTimeout(resolve, 20));
            }
            generation.count(withCounts ? counts.at(-1)! + 1 : undefined);
            const seconds = (generation.lastAt - generation.firstAt) / 1000;
            return {
              tokens: generation.tokens as number,
              perStep: generation.tokensPerStep as number | undefined,
              rated: (generation.liveRate as number) * seconds,
            };
          }),
        );
      },
      ["/web/generation.js", [3, 7, 8]] as const,
    );
    const [counted, plain] = figures;
    // The rate counts the tokens after the first chunk (8 - 3), not the chunks after it (2).
    assert.equal(counted!.tokens, 9, "the finish chunk's count is taken too");
    assert.ok(Math.abs(counted!.rated - 5) < 1e-6, String(counted!.rated));
    assert.ok(Math.abs(counted!.perStep! - 8 / 3) < 1e-9, String(counted!.perStep));
    // Without counts: one token per chunk, and tokens per step are unknown.
    assert.equal(plain!.tokens, 3);
    assert.ok(Math.abs(plain!.rated - 2) < 1e-6, String(plain!.rated));
    assert.equal(plain!.perStep, undefined);
  });
});
