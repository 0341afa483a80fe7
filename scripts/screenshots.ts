/**
 * Regenerates the playground screenshots in docs/: four panes mid-stream, the same after one was stopped
 * while the other three ran to the end, and chat mode on the bundled chat model with a stopped reply. Uses the
 * real runtime on the bundled models and Debian's Chromium (CHROMIUM_PATH overrides /usr/bin/chromium).
 *
 *   npx tsx scripts/screenshots.ts
 */
import { mkdir } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { BUNDLED_CHAT_MODEL_PATH } from "../src/engine/modelPath.ts";
import { launchChromium, PlaygroundPage, startRuntime, startServer } from "../test/web/harness.ts";

const DOCS = resolve(dirname(fileURLToPath(import.meta.url)), "../docs");
const PROMPTS = ["", "Psalm 23\n1 The LORD is my shepherd", "John 1\n1 In the beginning was", ""];

const browser = await launchChromium();
const runtime = await startRuntime();
const { server, url } = await startServer(runtime);
try {
  await mkdir(DOCS, { recursive: true });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const ui = new PlaygroundPage(page);

  async function start(): Promise<void> {
    await ui.open(url);
    await ui.set("Max tokens", "400");
    for (const [i, prompt] of PROMPTS.entries()) {
      if (prompt !== "")
        await ui
          .pane(i + 1)
          .getByLabel("Prompt for this pane", { exact: true })
          .fill(prompt);
    }
    await page.getByRole("button", { name: "Generate all" }).click();
  }

  await start();
  for (const n of [1, 2, 3, 4]) await ui.waitForText(n, 250);
  await page.waitForFunction(() =>
    Array.from(document.querySelectorAll<HTMLElement>("#slot-strip .slot")).every(
      (s) => s.dataset.state === "decode",
    ),
  );
  await page.screenshot({ path: resolve(DOCS, "playground.png"), fullPage: true });
  for (const n of [1, 2, 3, 4]) await ui.finishReason(n);

  await start();
  await ui.waitForText(2, 300);
  await ui.button(2, "Stop").click();
  for (const n of [1, 2, 3, 4]) await ui.finishReason(n);
  await ui.waitForSlots("all free");
  await page.screenshot({ path: resolve(DOCS, "playground-stop.png"), fullPage: true });
  console.log(`wrote ${resolve(DOCS, "playground.png")} and ${resolve(DOCS, "playground-stop.png")}`);
} finally {
  await server.close();
  await runtime.close();
}

const chatRuntime = await startRuntime({ model: BUNDLED_CHAT_MODEL_PATH, contextSize: 1024 });
const chat = await startServer(chatRuntime);
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const ui = new PlaygroundPage(page);
  await ui.open(chat.url);
  await ui.mode("Chat");
  await ui.set("Temperature", "0");
  await ui.set("System prompt", "You are a helpful assistant who knows the King James Bible.");
  // A reply that would run on (the model continues a KJV passage), stopped; then the conversation goes on.
  await ui.set("Max tokens", "400");
  await ui.sendChat("Genesis 1\n1 In the beginning");
  await ui.waitForReplyText(1, 200);
  await ui.chatButton("Stop").click();
  await ui.reply(1);
  await ui.set("Max tokens", "200");
  await ui.sendChat("Hello");
  await ui.reply(2);
  await ui.waitForSlots("all free");
  await page.screenshot({ path: resolve(DOCS, "playground-chat.png"), fullPage: true });
  console.log(`wrote ${resolve(DOCS, "playground-chat.png")}`);
} finally {
  await browser.close();
  await chat.server.close();
  await chatRuntime.close();
}
