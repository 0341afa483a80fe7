import assert from "node:assert/strict";
import { createServer as createHttpServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, afterEach, before, describe, test } from "node:test";
import type { Browser, BrowserContext, Page } from "playwright-core";
import type { Runtime } from "../../src/runtime/Runtime.ts";
import type { SluiceServer } from "../../src/server/index.ts";
import { scriptedRuntime } from "../helpers/scripted.ts";
import { browserSkip, launchChromium, startServer } from "./harness.ts";

// A page on another origin (another port) calls the API from Chromium: with the page's origin in
// corsOrigins, a fetch with Authorization and a streamed chat completion work; without it, the browser
// gets nothing and the server runs nothing.

const skip = await browserSkip();

const PAGE = "<!doctype html><title>another app</title><p>another origin</p>";

/** What the page's script reports about one call. */
interface Outcome {
  ok: boolean;
  status?: number;
  requestId?: string | null;
  body?: string;
  error?: string;
}

describe("CORS from a page on another origin, in headless Chromium", () => {
  let runtime: Runtime | undefined;
  let browser: Browser | undefined;
  let pages: Server | undefined;
  let allowing: SluiceServer | undefined;
  let closed: SluiceServer | undefined;
  let allowingUrl = "";
  let closedUrl = "";
  let pageUrl = "";
  let context: BrowserContext | undefined;

  before(async () => {
    if (skip) return;
    ({ runtime } = await scriptedRuntime({ slots: 2 }));
    pages = createHttpServer((_req, res) => {
      res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" }).end(PAGE);
    });
    await new Promise<void>((resolve) => pages!.listen(0, "127.0.0.1", resolve));
    pageUrl = `http://127.0.0.1:${(pages.address() as AddressInfo).port}`;
    ({ server: allowing, url: allowingUrl } = await startServer(runtime, {
      apiKey: "sk-page",
      corsOrigins: [pageUrl],
    }));
    ({ server: closed, url: closedUrl } = await startServer(runtime, { apiKey: "sk-page" }));
    browser = await launchChromium();
  });
  afterEach(async () => {
    await context?.close();
    context = undefined;
  });
  after(async () => {
    await browser?.close();
    await allowing?.close();
    await closed?.close();
    await new Promise<void>((resolve) => (pages ? pages.close(() => resolve()) : resolve()));
    await runtime?.close();
  });

  async function openPage(): Promise<Page> {
    context = await browser!.newContext();
    const page = await context.newPage();
    page.setDefaultTimeout(20_000);
    await page.goto(pageUrl);
    return page;
  }

  /** From the page: a streamed chat completion with a Bearer key, read to its end. */
  function streamChat(page: Page, api: string, key: string): Promise<Outcome> {
    return page.evaluate(
      async ({ api, key }) => {
        try {
          const res = await fetch(`${api}/v1/chat/completions`, {
            method: "POST",
            headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
            body: JSON.stringify({
              messages: [{ role: "user", content: "hi" }],
              max_tokens: 5,
              stream: true,
            }),
          });
          const reader = res.body!.getReader();
          const decoder = new TextDecoder();
          let body = "";
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            body += decoder.decode(value, { stream: true });
          }
          return { ok: true, status: res.status, requestId: res.headers.get("X-Request-Id"), body };
        } catch (error) {
          return { ok: false, error: String(error) };
        }
      },
      { api, key },
    );
  }

  test("allowed: the preflighted POST with Authorization streams to [DONE]; the page reads X-Request-Id", {
    skip,
  }, async () => {
    const page = await openPage();
    const outcome = await streamChat(page, allowingUrl, "sk-page");
    assert.equal(outcome.ok, true, outcome.error);
    assert.equal(outcome.status, 200);
    assert.match(outcome.requestId ?? "", /^chatcmpl-/);
    const events = outcome.body!.split("\n\n").filter((e) => e.startsWith("data: "));
    assert.equal(events.at(-1), "data: [DONE]");
    assert.ok(
      events.some((e) => e.includes('"finish_reason":"length"')),
      outcome.body,
    );
  });

  test("allowed: the page can read an error (a wrong key's 401 in OpenAI's shape)", { skip }, async () => {
    const page = await openPage();
    const outcome = await page.evaluate(async (api) => {
      const res = await fetch(`${api}/v1/models`, { headers: { "x-api-key": "sk-wrong" } });
      return { status: res.status, body: await res.text() };
    }, allowingUrl);
    assert.equal(outcome.status, 401);
    assert.equal(JSON.parse(outcome.body).error.code, "invalid_api_key");
  });

  test("not allowed: the browser blocks the call and the server starts no generation", { skip }, async () => {
    const page = await openPage();
    const submitted = runtime!.stats.submitted;
    const outcome = await streamChat(page, closedUrl, "sk-page");
    assert.equal(outcome.ok, false);
    assert.match(outcome.error ?? "", /Failed to fetch/);
    // A "simple" request needs no preflight: the Origin check refuses it before it runs.
    const simple = await page.evaluate(async (api) => {
      try {
        await fetch(`${api}/v1/completions`, {
          method: "POST",
          headers: { "Content-Type": "text/plain" },
          body: JSON.stringify({ prompt: "x" }),
        });
        return "read";
      } catch {
        return "blocked";
      }
    }, closedUrl);
    assert.equal(simple, "blocked");
    assert.equal(runtime!.stats.submitted, submitted);
  });
});
