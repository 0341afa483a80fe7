import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { PassThrough, Writable } from "node:stream";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { ChatSession, streamReply } from "../../src/cli/ChatSession.ts";
import { BUNDLED_CHAT_MODEL_PATH } from "../../src/engine/modelPath.ts";
import type { RequestRecord } from "../../src/runtime/RequestState.ts";
import { Runtime } from "../../src/runtime/Runtime.ts";
import { createChatFormatter } from "../../src/server/chat.ts";

// `sluice chat` on the bundled chat model: piped (one message in, the reply out) in a child process, and the
// interactive session driven key by key through readline's terminal mode, as a terminal would.

const MAIN = fileURLToPath(new URL("../../src/cli/main.ts", import.meta.url));

/** Runs `sluice chat` with `stdin` piped in; resolves with its exit code and output. */
async function chat(
  args: string[],
  stdin: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ["--import", "tsx", MAIN, "chat", ...args], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => {
    stdout += d;
  });
  child.stderr.setEncoding("utf8").on("data", (d: string) => {
    stderr += d;
  });
  child.stdin.end(stdin);
  const [code] = await once(child, "close");
  return { code, stdout, stderr };
}

/** The output of a session as a terminal receives it, with waits on what has appeared so far. */
class Screen extends Writable {
  text = "";
  #waiters: { re: RegExp; from: number; resolve: (m: RegExpExecArray) => void }[] = [];
  /** Called after each write, with the whole output so far. */
  onWrite: ((text: string) => void) | undefined;

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: () => void): void {
    this.text += chunk.toString("utf8");
    this.onWrite?.(this.text);
    for (const waiter of [...this.#waiters]) {
      const match = waiter.re.exec(this.text.slice(waiter.from));
      if (match) {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
        waiter.resolve(match);
      }
    }
    done();
  }

  /** Resolves with the first match of `re` in the output written from `from` on (what is there already counts). */
  waitFor(re: RegExp, from = 0): Promise<RegExpExecArray> {
    const match = re.exec(this.text.slice(from));
    if (match) return Promise.resolve(match);
    return new Promise((resolve) => this.#waiters.push({ re, from, resolve }));
  }
}

/** A status line: its numbers, from the end of the output written since `from`. */
const STATUS = /\[(\d+) tokens?(?: · [\d.]+ tok\/s)? · prompt (\d+) tokens, (\d+) cached(?: · ([^\]]+))?\]/;

async function nextStatus(
  screen: Screen,
  from: number,
): Promise<{ tokens: number; prompt: number; cached: number; end: string | undefined }> {
  const m = await screen.waitFor(STATUS, from);
  return { tokens: Number(m[1]), prompt: Number(m[2]), cached: Number(m[3]), end: m[4] };
}

describe("sluice chat, piped", () => {
  let runtime: Runtime | undefined;
  before(async () => {
    runtime = await Runtime.create({ model: BUNDLED_CHAT_MODEL_PATH, slots: 1, threads: 1 });
  });
  after(() => runtime?.close());

  test("stdin is one user message: the model's reply through its template on stdout, the status on stderr, exit 0", async () => {
    const { code, stdout, stderr } = await chat(["--threads", "1", "--temperature", "0"], "Hello\n");
    assert.equal(code, 0, stderr);
    // Greedy: the same reply as the chat model gives in this process to the same message.
    const expected = await streamReply(
      runtime!,
      createChatFormatter(runtime!.engine),
      [{ role: "user", content: "Hello" }],
      { temperature: 0 },
      { write: () => {} },
    );
    assert.ok(expected.text.length > 0);
    assert.equal(stdout, `${expected.text}\n`);
    const status = STATUS.exec(stderr);
    assert.ok(status, `a status line on stderr, got ${JSON.stringify(stderr)}`);
    assert.equal(Number(status[1]), expected.usage.completionTokens);
    assert.equal(Number(status[2]), expected.usage.promptTokens);
  });

  test("--system replaces the template's default system turn", async () => {
    const { code, stdout, stderr } = await chat(
      ["--threads", "1", "--temperature", "0", "--max-tokens", "8", "--system", "Be brief."],
      "Hello",
    );
    assert.equal(code, 0, stderr);
    assert.ok(stdout.trim().length > 0);
    const formatter = createChatFormatter(runtime!.engine);
    const withSystem = formatter.format([
      { role: "system", content: "Be brief." },
      { role: "user", content: "Hello" },
    ]);
    assert.equal(Number(STATUS.exec(stderr)?.[2]), withSystem.tokens.length);
    assert.notEqual(
      withSystem.tokens.length,
      formatter.format([{ role: "user", content: "Hello" }]).tokens.length,
    );
  });

  test("an empty stdin and a bad flag are refused with what to change, before the model loads", async () => {
    const empty = await chat([], "\n");
    assert.equal(empty.code, 1);
    assert.match(empty.stderr, /stdin held no message: pipe one in \(echo "Hello" \| sluice chat\)/);
    const bad = await chat(["--temperature", "3"], "Hello");
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /--temperature expects a number >= 0 and <= 2; got "3"/);
    assert.equal(bad.stdout, "");
  });
});

describe("sluice chat, interactive (readline terminal mode over streams)", () => {
  let runtime: Runtime | undefined;
  before(async () => {
    runtime = await Runtime.create({ model: BUNDLED_CHAT_MODEL_PATH, slots: 1, threads: 1 });
  });
  after(() => runtime?.close());

  function open(): { session: ChatSession; keys: PassThrough; screen: Screen; done: Promise<void> } {
    const keys = new PassThrough();
    const screen = new Screen();
    const session = new ChatSession({
      runtime: runtime!,
      input: keys,
      output: screen,
      terminal: true,
      color: false,
      sampling: { temperature: 0 },
    });
    return { session, keys, screen, done: session.run() };
  }

  test("turns stream in; the next turn reads the earlier ones from the prompt cache; /reset forgets them", async () => {
    const { session, keys, screen, done } = open();
    keys.write("Hello\r");
    const first = await nextStatus(screen, 0);
    assert.ok(first.tokens > 0 && first.end === undefined, JSON.stringify(first));
    assert.deepEqual(
      session.history.map((m) => m.role),
      ["user", "assistant"],
    );
    const reply = session.history[1]!.content as string;
    assert.ok(screen.text.includes(reply), "the reply was shown");

    let mark = screen.text.length;
    keys.write("Tell me more\r");
    const second = await nextStatus(screen, mark);
    // Turn 1's prompt is a prefix of turn 2's, and the one slot still holds it.
    assert.ok(second.prompt > first.prompt + first.tokens, JSON.stringify({ first, second }));
    assert.ok(second.cached >= first.prompt, `turn 2 read turn 1 from the cache: ${JSON.stringify(second)}`);
    assert.equal(session.history.length, 4);

    mark = screen.text.length;
    keys.write("/reset\r");
    await screen.waitFor(/\[new conversation\]/, mark);
    assert.equal(session.history.length, 0);
    mark = screen.text.length;
    keys.write("Hello\r");
    const again = await nextStatus(screen, mark);
    assert.equal(again.prompt, first.prompt, "after /reset the prompt holds only the new message");

    keys.write("/exit\r");
    await done;
  });

  test("Ctrl-C during a reply stops it, frees the slot within one step and returns to the prompt", async () => {
    const { session, keys, screen, done } = open();
    const ended: RequestRecord[] = [];
    const unobserve = runtime!.observe((event) => {
      if (event.type === "end") ended.push(event.record);
    });
    try {
      // Ctrl-C as soon as the reply's first text is on the screen (after the echoed line).
      let sent = false;
      screen.onWrite = (text) => {
        const echoed = /Hello\r?\n/.exec(text);
        // readline writes nothing after the echoed line until the prompt: what follows is the reply.
        if (!sent && echoed !== null && text.length > echoed.index + echoed[0].length) {
          sent = true;
          keys.write("\x03");
        }
      };
      keys.write("Hello\r");
      const stopped = await nextStatus(screen, 0);
      assert.equal(stopped.end, "stopped");
      assert.ok(stopped.tokens >= 1, "the reply had begun");
      const record = ended.at(-1)!;
      assert.equal(record.reason, "cancelled");
      assert.ok(record.cancel !== undefined && record.cancel.stepsToFree <= 1, JSON.stringify(record.cancel));
      assert.ok(runtime!.snapshot().slots.every((slot) => slot.state === "free"));

      // What was shown stays in the history; the unstopped reply is longer.
      assert.equal(session.history.length, 2);
      const partial = session.history[1]!.content as string;
      assert.ok(partial.length > 0);
      const whole = await streamReply(
        runtime!,
        createChatFormatter(runtime!.engine),
        [{ role: "user", content: "Hello" }],
        { temperature: 0 },
        { write: () => {} },
      );
      assert.ok(whole.text.startsWith(partial) && whole.text.length > partial.length);

      // Back at the prompt: the session takes the next message.
      const mark = screen.text.length;
      keys.write("Amen\r");
      const next = await nextStatus(screen, mark);
      assert.equal(next.end, undefined);
      assert.equal(session.history.length, 4);
      keys.write("/exit\r");
      await done;
    } finally {
      unobserve();
    }
  });

  test("Ctrl-C clears a typed line and exits at an empty prompt; Ctrl-D exits too", async () => {
    const viaCtrlC = open();
    viaCtrlC.keys.write("abc\x03");
    // The line was cleared rather than the session closed: the next line is the command alone.
    viaCtrlC.keys.write("/reset\r");
    await viaCtrlC.screen.waitFor(/\[new conversation\]/);
    viaCtrlC.keys.write("\x03");
    await viaCtrlC.done;
    assert.ok(!viaCtrlC.screen.text.includes("Unknown command"));

    const viaCtrlD = open();
    viaCtrlD.keys.write("/nope\r");
    await viaCtrlD.screen.waitFor(/Unknown command \/nope: \/reset starts a new conversation/);
    viaCtrlD.keys.write("\x04");
    await viaCtrlD.done;
    assert.equal(viaCtrlD.session.history.length, 0);
  });
});
