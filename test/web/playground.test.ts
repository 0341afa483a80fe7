import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import type { Browser, BrowserContext } from "playwright-core";
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
