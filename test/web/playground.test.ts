import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import type { Browser, BrowserContext } from "playwright-core";
import { BUNDLED_CHAT_MODEL_PATH } from "../../src/engine/modelPath.ts";
import type { Runtime } from "../../src/runtime/Runtime.ts";
import type { SluiceServer } from "../../src/server/index.ts";
import {
  browserSkip,
  checkChromium,
  launchChromium,
  PlaygroundPage,
  startRuntime,
  startServer,
} from "./harness.ts";

const PROMPT = "Genesis 1\n1 In the beginning";
/** Enough that a generation is still running when Stop is pressed (the prompt is 8 tokens of 512). */
const LONG = "480";

/** Without a browser every test below is reported as skipped with the install hint (failed in CI). */
const skip = await browserSkip();

// On its own so that a missing browser shows up with the fix in its message, skipped or failed.
test("Debian's chromium is installed for the browser tests", { skip }, () => checkChromium());

describe("web playground in headless Chromium", () => {
  let runtime: Runtime | undefined;
  let server: SluiceServer | undefined;
  let browser: Browser | undefined;
  let url = "";
  /** The current test's browser context: closed after it, so no page keeps polling into the next test. */
  let context: BrowserContext | undefined;

  before(async () => {
    // Hooks run even when every test is skipped: start nothing for tests that will not run.
    if (skip) return;
    browser = await launchChromium();
    runtime = await startRuntime();
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

  /** A fresh browser context (own localStorage) with the playground loaded. */
  async function open(at = url): Promise<PlaygroundPage> {
    context = await browser!.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    page.setDefaultTimeout(20_000);
    const playground = new PlaygroundPage(page);
    await playground.open(at);
    return playground;
  }

  test("type a prompt, watch it stream, Stop: cancelled within one step and the slot is free again", {
    skip,
  }, async () => {
    const ui = await open();
    assert.equal(await ui.page.locator("#model").textContent(), "kjv-tiny.gguf");
    await ui.panes(1);
    await ui.set("Prompt", PROMPT);
    await ui.set("Max tokens", LONG);
    await ui.button(1, "Generate").click();

    await ui.waitForText(1, 20);
    await ui.waitForSlots("some busy");
    await ui.waitForText(1, 40);
    assert.equal(await ui.stat(1, "status").textContent(), "streaming");
    await ui.button(1, "Stop").click();

    assert.equal(await ui.finishReason(1), "cancelled");
    assert.equal(await ui.stat(1, "status").textContent(), "stopped");
    const latency = (await ui.stat(1, "cancel").textContent()) ?? "";
    const match = /^(\d+) steps?, [\d.]+ ms$/.exec(latency);
    assert.ok(match, `cancel latency is shown in steps and ms, got ${JSON.stringify(latency)}`);
    assert.ok(Number(match[1]) <= 1, `the slot is freed within one step, got ${latency}`);
    const tokens = Number(await ui.stat(1, "tokens").textContent());
    assert.ok(tokens > 0 && tokens < Number(LONG), `stopped mid-stream after ${tokens} tokens`);
    assert.match((await ui.stat(1, "rate").textContent()) ?? "", /^\d+ tok\/s$/);
    assert.match((await ui.stat(1, "ttft").textContent()) ?? "", /^[\d.]+ ms$/);

    await ui.waitForSlots("all free");
    assert.deepEqual(await ui.slotStates(), ["free", "free", "free", "free"]);
    assert.match(
      (await ui.page.locator("#slot-summary").textContent()) ?? "",
      /^All 4 slots free, 0 queued\./,
    );
    assert.equal(await ui.button(1, "Generate").isEnabled(), true);
    assert.equal(await ui.button(1, "Stop").isDisabled(), true);
  });

  test("four panes at once: stopping one leaves the other three to finish", { skip }, async () => {
    const ui = await open();
    await ui.panes(4);
    await ui.set("Prompt", PROMPT);
    await ui.set("Max tokens", "400");
    await ui.page.getByRole("button", { name: "Generate all" }).click();

    for (const n of [1, 2, 3, 4]) await ui.waitForText(n, 10);
    // Continuous batching: all four are in slots at once.
    await ui.page.waitForFunction(() =>
      Array.from(document.querySelectorAll<HTMLElement>("#slot-strip .slot")).every(
        (s) => s.dataset.state !== "free",
      ),
    );
    await ui.button(2, "Stop").click();

    assert.equal(await ui.finishReason(2), "cancelled");
    assert.match((await ui.stat(2, "cancel").textContent()) ?? "", /^[01] steps?, [\d.]+ ms$/);
    for (const n of [1, 3, 4]) {
      const reason = await ui.finishReason(n);
      assert.ok(reason === "length" || reason === "stop", `pane ${n} finished by itself, got ${reason}`);
      assert.equal(await ui.stat(n, "cancel").textContent(), "–");
    }
    const stopped = Number(await ui.stat(2, "tokens").textContent());
    assert.ok(stopped > 0 && stopped < 400, `pane 2 was stopped mid-stream, after ${stopped} tokens`);
    await ui.waitForSlots("all free");
  });

  test("multi-byte text: the prompt echoes intact and no pane shows U+FFFD", { skip }, async () => {
    const ui = await open();
    await ui.panes(2);
    const prompt = "café 日本 🎉\n1 In the beginning";
    await ui.set("Prompt", prompt);
    await ui.set("Max tokens", "60");
    await ui.page.getByRole("button", { name: "Generate all" }).click();
    for (const n of [1, 2]) {
      assert.ok(["length", "stop"].includes(await ui.finishReason(n)));
      assert.equal(await ui.pane(n).locator(".echo").textContent(), prompt);
      assert.ok((await ui.completion(n)).length > 0);
    }
    const text = (await ui.page.locator("body").textContent()) ?? "";
    assert.ok(!text.includes("\uFFFD"), "no replacement character anywhere on the page");
  });

  test("the page's SSE reader keeps characters and events whole across any chunk split", {
    skip,
  }, async () => {
    const ui = await open();
    const results = await ui.page.evaluate(async () => {
      const module = "/web/sse.js";
      const { readSse } = await import(module);
      const events = [
        JSON.stringify({ choices: [{ text: "café 日本 🎉" }] }),
        JSON.stringify({ choices: [{ text: "\u00e9\u{1F389}" }] }),
        "[DONE]",
      ];
      const wire = `: keep-alive\r\n\r\ndata: ${events[0]}\r\n\r\ndata:${events[1]}\n\n: keep-alive\r\rdata: ${events[2]}\n\n`;
      const bytes = new TextEncoder().encode(wire);
      const outcomes: string[][] = [];
      // Every two-way split, and one byte at a time.
      const splits: number[][] = [...Array(bytes.length).keys()].map((i) => [i]);
      splits.push([...Array(bytes.length).keys()]);
      for (const cuts of splits) {
        const pieces: Uint8Array[] = [];
        let from = 0;
        for (const cut of [...cuts, bytes.length]) {
          pieces.push(bytes.slice(from, cut));
          from = cut;
        }
        const body = new ReadableStream<Uint8Array>({
          start(controller) {
            for (const piece of pieces) controller.enqueue(piece);
            controller.close();
          },
        });
        const got: string[] = [];
        for await (const data of readSse(body)) got.push(data);
        outcomes.push(got);
      }
      return { events, outcomes };
    });
    for (const got of results.outcomes) assert.deepEqual(got, results.events);
  });

  test("a request the server refuses shows the server's message in the pane", { skip }, async () => {
    const ui = await open();
    await ui.panes(1);
    await ui.set("Prompt", PROMPT);
    await ui.set("Max tokens", "5000");
    await ui.button(1, "Generate").click();
    const error = ui.pane(1).getByRole("alert");
    await error.waitFor({ state: "visible" });
    assert.match(
      (await error.textContent()) ?? "",
      /prompt \(\d+ tokens\) \+ max_tokens \(5000\) exceeds the context of 512 tokens/,
    );
    assert.equal(await ui.stat(1, "status").textContent(), "error");
    assert.equal(await ui.button(1, "Generate").isEnabled(), true);
  });

  test("with an API key: the page asks for it, sends it as a Bearer token, and works", { skip }, async () => {
    const keyed = await startServer(runtime!, { apiKey: "sesame" });
    try {
      const ui = await open(keyed.url);
      assert.match((await ui.page.locator("#model").textContent()) ?? "", /^unavailable \(Missing API key/);
      await ui.set("API key", "sesame");
      await ui.control("API key").press("Tab");
      await ui.page.waitForFunction(() => document.getElementById("model")?.textContent === "kjv-tiny.gguf");
      await ui.panes(1);
      await ui.set("Max tokens", "20");
      await ui.button(1, "Generate").click();
      assert.equal(await ui.finishReason(1), "length");
      assert.equal(await ui.stat(1, "tokens").textContent(), "20");
      // Reloading keeps the key (localStorage).
      await ui.open(keyed.url);
      assert.equal(await ui.page.locator("#model").textContent(), "kjv-tiny.gguf");
    } finally {
      await keyed.server.close();
    }
  });
});

describe("web playground chat mode on the bundled chat model, in headless Chromium", () => {
  let runtime: Runtime | undefined;
  let server: SluiceServer | undefined;
  let browser: Browser | undefined;
  let url = "";
  let context: BrowserContext | undefined;

  before(async () => {
    if (skip) return;
    browser = await launchChromium();
    runtime = await startRuntime({ model: BUNDLED_CHAT_MODEL_PATH, contextSize: 1024 });
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

  /** The playground in chat mode, greedy, in a fresh browser context. */
  async function openChat(): Promise<PlaygroundPage> {
    context = await browser!.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    page.setDefaultTimeout(20_000);
    const ui = new PlaygroundPage(page);
    await ui.open(url);
    await ui.mode("Chat");
    await ui.set("Temperature", "0");
    return ui;
  }

  /** The server's own greedy answer to `messages`, not streamed: what the page must have shown. */
  async function answer(messages: { role: string; content: string }[]): Promise<string> {
    const response = await fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ messages, temperature: 0, max_tokens: 200, cache_prompt: false }),
    });
    assert.equal(response.status, 200);
    const json = (await response.json()) as { choices: { message: { content: string } }[] };
    return json.choices[0]!.message.content;
  }

  test("a conversation: replies stream in through the chat template, the second reads the first from the cache", {
    skip,
  }, async () => {
    const ui = await openChat();
    assert.equal(await ui.page.locator("#model").textContent(), "kjv-chat.gguf");
    // Chat mode shows the conversation and hides the completion panes.
    assert.equal(await ui.chat.isVisible(), true);
    assert.equal(await ui.control("Prompt").isVisible(), false);
    assert.equal(await ui.page.getByRole("region", { name: "Pane 1" }).isVisible(), false);

    await ui.sendChat("Hello");
    const first = await ui.reply(1);
    assert.equal(first.finish, "stop");
    assert.equal(first.text, await answer([{ role: "user", content: "Hello" }]));
    const shape = /^(\d+) tokens · \d+ tok\/s · prompt (\d+) tokens, (\d+) cached$/;
    const firstMeta = shape.exec(first.meta);
    assert.ok(
      firstMeta,
      `tokens, tok/s and cached prompt tokens under the reply, got ${JSON.stringify(first.meta)}`,
    );
    assert.equal(Number(firstMeta[1]), first.tokens);
    assert.equal(await ui.page.locator("#chat-status").textContent(), "done");

    // Enter sends too.
    await ui.control("Message").fill("Tell me more");
    await ui.control("Message").press("Enter");
    const second = await ui.reply(2);
    assert.equal(second.finish, "stop");
    assert.equal(
      second.text,
      await answer([
        { role: "user", content: "Hello" },
        { role: "assistant", content: first.text },
        { role: "user", content: "Tell me more" },
      ]),
    );
    const secondMeta = shape.exec(second.meta);
    assert.ok(secondMeta, second.meta);
    // The whole first turn is a prefix of the second prompt, and the server's cache still holds it.
    assert.ok(Number(secondMeta[2]) > Number(firstMeta[2]) + first.tokens, second.meta);
    assert.ok(
      second.cached! >= Number(firstMeta[2]),
      `the first turn was read from the cache: ${second.meta}`,
    );

    // A new chat forgets the conversation: the same message gets the same prompt as the first time.
    await ui.chatButton("New chat").click();
    assert.equal(await ui.page.locator("#chat-log .turn").count(), 0);
    await ui.sendChat("Hello");
    const again = shape.exec((await ui.reply(1)).meta);
    assert.equal(again?.[2], firstMeta[2]);
  });

  test("Stop mid-reply: cancelled within one step, the slot is free, and the conversation goes on", {
    skip,
  }, async () => {
    const ui = await openChat();
    await ui.set("Max tokens", "480");
    // The chat model continues a KJV passage at length, so the reply is still streaming when Stop is pressed.
    await ui.sendChat("Genesis 1\n1 In the beginning");
    await ui.waitForReplyText(1, 40);
    await ui.waitForSlots("some busy");
    assert.equal(await ui.page.locator("#chat-status").textContent(), "streaming");
    await ui.chatButton("Stop").click();

    const stopped = await ui.reply(1);
    assert.equal(stopped.finish, "cancelled");
    assert.ok(stopped.tokens > 0 && stopped.tokens < 480, `stopped mid-reply after ${stopped.tokens} tokens`);
    const steps = /stopped, slot free in (\d+) steps?$/.exec(stopped.meta);
    assert.ok(steps, `the cancel latency is shown, got ${JSON.stringify(stopped.meta)}`);
    assert.ok(Number(steps[1]) <= 1, `the slot is freed within one step: ${stopped.meta}`);
    assert.equal(await ui.page.locator("#chat-status").textContent(), "stopped");
    await ui.waitForSlots("all free");
    const slots = (await (await fetch(`${url}/v1/slots`)).json()) as { slots: { state: string }[] };
    assert.deepEqual(
      slots.slots.map((slot) => slot.state),
      ["free", "free", "free", "free"],
    );
    assert.equal(await ui.chatButton("Send").isEnabled(), true);
    assert.equal(await ui.chatButton("Stop").isDisabled(), true);

    // The stopped reply stays in the conversation as far as it got.
    await ui.set("Max tokens", "40");
    await ui.sendChat("Amen");
    const next = await ui.reply(2);
    assert.ok(["stop", "length"].includes(next.finish), next.finish);
    assert.ok(next.text.length > 0);
    assert.ok(next.cached! > 0, `the stopped exchange was read from the cache: ${next.meta}`);
  });

  test("a system prompt is sent first; a refused request shows the server's message", { skip }, async () => {
    const ui = await openChat();
    await ui.set("System prompt", "Answer in one short sentence.");
    await ui.sendChat("Hello");
    const reply = await ui.reply(1);
    assert.equal(
      reply.text,
      await answer([
        { role: "system", content: "Answer in one short sentence." },
        { role: "user", content: "Hello" },
      ]),
    );

    await ui.set("Max tokens", "5000");
    await ui.sendChat("Hello again");
    await ui.reply(2);
    const error = ui.chat.getByRole("alert");
    await error.waitFor({ state: "visible" });
    assert.match((await error.textContent()) ?? "", /exceeds the context of 1024 tokens/);
    assert.equal(await ui.page.locator("#chat-status").textContent(), "error");
    // The refused message is not part of the conversation sent next.
    assert.equal(await ui.page.locator("#chat-log .turn.unsent").count(), 2);
  });
});
