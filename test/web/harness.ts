import { constants } from "node:fs";
import { access } from "node:fs/promises";
import { type Browser, chromium, type Locator, type Page } from "playwright-core";
import { Runtime } from "../../src/runtime/Runtime.ts";
import type { RuntimeOptions } from "../../src/runtime/RuntimeOptions.ts";
import { createServer, type ServerOptions, type SluiceServer } from "../../src/server/index.ts";

/** Debian's package; the tests never download a browser. */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

/**
 * Set by .ci/run: there a missing browser fails the browser tests, so CI can never go green without having
 * run them. Elsewhere (a newcomer's machine) a missing browser only skips them.
 */
export const REQUIRE_BROWSER = process.env.SLUICE_REQUIRE_BROWSER === "1";

const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

function missingChromium(): string {
  return (
    `No Chromium at ${CHROMIUM_PATH}. The playground's browser tests need Debian's chromium: ` +
    `install it with "apt-get install chromium" (.ci/run does), or set CHROMIUM_PATH to a Chromium binary.` +
    (REQUIRE_BROWSER ? " SLUICE_REQUIRE_BROWSER=1 makes it required here rather than skipped." : "")
  );
}

async function hasChromium(): Promise<boolean> {
  try {
    await access(CHROMIUM_PATH, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Throws, saying how to install it, when there is no Chromium. */
export async function checkChromium(): Promise<void> {
  if (!(await hasChromium())) throw new Error(missingChromium());
}

/**
 * node:test's `skip` for a browser test: the reason and the install hint when there is no Chromium, so the
 * runner counts the test as skipped (never as passed); false when the browser is there, or when it is
 * required, so that its absence fails the tests instead.
 */
export async function browserSkip(): Promise<string | false> {
  if (REQUIRE_BROWSER || (await hasChromium())) return false;
  return (
    `no Chromium at ${CHROMIUM_PATH} (install: apt-get install chromium, or set CHROMIUM_PATH); ` +
    `with SLUICE_REQUIRE_BROWSER=1, as in .ci/run, this fails instead`
  );
}

export async function launchChromium(): Promise<Browser> {
  await checkChromium();
  return chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_ARGS });
}

/** The real runtime on the bundled model (or on `options.model`), four slots, one thread. */
export function startRuntime(options: RuntimeOptions = {}): Promise<Runtime> {
  return Runtime.create({ slots: 4, contextSize: 512, threads: 1, ...options });
}

/** One assistant reply of the chat mode, once its stream has ended. */
export interface ChatReply {
  text: string;
  /** The finish reason as the server sent it ("cancelled" when the connection was closed instead). */
  finish: string;
  tokens: number;
  /** Prompt tokens the server's prompt cache held (`usage.prompt_tokens_details.cached_tokens`). */
  cached: number | undefined;
  /** The line under the reply: tokens, tok/s, prompt and cached tokens, how it ended. */
  meta: string;
}

export async function startServer(
  runtime: Runtime,
  options: ServerOptions = {},
): Promise<{ server: SluiceServer; url: string }> {
  const server = createServer(runtime, options);
  const { url } = await server.listen(0, "127.0.0.1");
  return { server, url };
}

/** The playground as a user sees it: controls found by their labels and roles. */
export class PlaygroundPage {
  constructor(readonly page: Page) {}

  async open(url: string): Promise<void> {
    await this.page.goto(url);
    // The model name arrives from /v1/models once the page's script is running.
    await this.page.waitForFunction(() => document.getElementById("model")?.textContent !== "loading…");
  }

  control(label: string): Locator {
    return this.page.getByLabel(label, { exact: true });
  }

  async set(label: string, value: string): Promise<void> {
    await this.control(label).fill(value);
  }

  async panes(count: number): Promise<void> {
    await this.control("Panes").selectOption(String(count));
  }

  pane(n: number): Locator {
    return this.page.getByRole("region", { name: `Pane ${n}`, exact: true });
  }

  button(n: number, name: "Generate" | "Stop"): Locator {
    return this.pane(n).getByRole("button", { name, exact: true });
  }

  stat(n: number, name: "status" | "tokens" | "rate" | "step" | "ttft" | "finish" | "cancel"): Locator {
    return this.pane(n).locator(`[data-stat="${name}"]`);
  }

  /** Waits until pane n has streamed more than `chars` characters of completion. */
  async waitForText(n: number, chars: number): Promise<void> {
    await this.page.waitForFunction(
      ([n, chars]) => {
        const output = document.querySelector(`#pane-${n} .output`);
        const echo = output?.querySelector(".echo");
        return (output?.textContent?.length ?? 0) - (echo?.textContent?.length ?? 0) > chars;
      },
      [n, chars] as const,
    );
  }

  /** The completion text of pane n (without the echoed prompt). */
  completion(n: number): Promise<string> {
    return this.page.evaluate((n) => {
      const output = document.querySelector(`#pane-${n} .output`)!;
      return output.textContent!.slice(output.querySelector(".echo")!.textContent!.length);
    }, n);
  }

  /** Waits for pane n's stream to end and returns its finish reason as sent by the server. */
  async finishReason(n: number): Promise<string> {
    await this.page.waitForFunction((n) => {
      const pane = document.getElementById(`pane-${n}`);
      return pane?.dataset.phase === "done";
    }, n);
    return (await this.stat(n, "finish").getAttribute("data-value")) ?? "";
  }

  /** Slot states as shown in the strip, e.g. ["decode", "free", …]. */
  slotStates(): Promise<string[]> {
    return this.page
      .locator("#slot-strip .slot")
      .evaluateAll((boxes) => boxes.map((box) => (box as HTMLElement).dataset.state ?? ""));
  }

  async mode(name: "Completion" | "Chat"): Promise<void> {
    await this.page.getByRole("radio", { name, exact: true }).check();
  }

  get chat(): Locator {
    return this.page.getByRole("region", { name: "Chat", exact: true });
  }

  chatButton(name: "Send" | "Stop" | "New chat"): Locator {
    return this.chat.getByRole("button", { name, exact: true });
  }

  async sendChat(message: string): Promise<void> {
    await this.control("Message").fill(message);
    await this.chatButton("Send").click();
  }

  /** Waits until the n-th assistant reply (1-based) has streamed more than `chars` characters. */
  async waitForReplyText(n: number, chars: number): Promise<void> {
    await this.page.waitForFunction(
      ([n, chars]) => {
        const turn = document.querySelectorAll('#chat-log .turn[data-role="assistant"]')[n - 1];
        return (turn?.querySelector(".bubble")?.textContent?.length ?? 0) > chars;
      },
      [n, chars] as const,
    );
  }

  /** Waits for the n-th assistant reply (1-based) to end, and reads it. */
  async reply(n: number): Promise<ChatReply> {
    const handle = await this.page.waitForFunction((n) => {
      const turn = document.querySelectorAll<HTMLElement>('#chat-log .turn[data-role="assistant"]')[n - 1];
      return turn?.dataset.phase === "done" ? turn : null;
    }, n);
    return handle.evaluate((found) => {
      const turn = found as HTMLElement;
      const { finish, tokens, cached } = turn.dataset;
      return {
        text: turn.querySelector(".bubble")?.textContent ?? "",
        finish: finish ?? "",
        tokens: Number(tokens),
        cached: cached === undefined ? undefined : Number(cached),
        meta: turn.querySelector(".meta")?.textContent ?? "",
      };
    });
  }

  async waitForSlots(predicate: "all free" | "some busy"): Promise<void> {
    await this.page.waitForFunction((predicate) => {
      const states = Array.from(document.querySelectorAll<HTMLElement>("#slot-strip .slot")).map(
        (box) => box.dataset.state,
      );
      if (states.length === 0) return false;
      return predicate === "all free" ? states.every((s) => s === "free") : states.some((s) => s !== "free");
    }, predicate);
  }
}
