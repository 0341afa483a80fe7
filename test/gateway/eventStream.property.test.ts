import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { createStreamChannel } from "../../src/channel/index.ts";
import { readEventStream } from "../../src/gateway/readEventStream.ts";
import { settle } from "../../src/gateway/streamFromUpstream.ts";
import { UpstreamWriter } from "../../src/gateway/UpstreamWriter.ts";
import type { StreamChunk } from "../../src/types.ts";

// The upstream producer's decoding path, from bytes to the channel: whatever the network split (byte
// boundaries inside a character, inside "data:", inside the blank line) and whatever way the stream ends,
// the consumer gets well-formed text, exactly one terminal chunk, last, with the right reason.

type Ending =
  | "full"
  | "length"
  | "finishThenClose"
  | "close"
  | "doneWithoutFinish"
  | "malformed"
  | "errorEvent";

const LONE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

const piece = fc.oneof(
  fc.string({ maxLength: 4 }),
  fc.string({ unit: "grapheme", maxLength: 3 }),
  fc.string({ unit: "binary", maxLength: 3 }),
  fc.constantFrom("é", "€", "😀", "👩‍💻", "日本", "\n", "data: x\n\n", "[DONE]"),
);

function chunkJson(kind: "chat" | "completion", text: string, extra: Record<string, unknown> = {}): string {
  const choice =
    kind === "chat"
      ? { index: 0, delta: { content: text }, finish_reason: null }
      : { index: 0, text, finish_reason: null };
  return JSON.stringify({ id: "x", object: "chunk", model: "m", choices: [{ ...choice, ...extra }] });
}

/** The SSE text an upstream sends, and what the consumer must get. */
function script(kind: "chat" | "completion", deltas: string[], ending: Ending, at: number, crlf: boolean) {
  const nl = crlf ? "\r\n" : "\n";
  const event = (data: string) => `data: ${data}${nl}${nl}`;
  const cut = Math.min(at, deltas.length);
  let sse = `: keep-alive${nl}${nl}`;
  if (kind === "chat")
    sse += event(JSON.stringify({ choices: [{ index: 0, delta: { role: "assistant", content: "" } }] }));
  const upTo = ending === "malformed" || ending === "errorEvent" ? cut : deltas.length;
  for (const d of deltas.slice(0, upTo)) sse += event(chunkJson(kind, d));
  const usage = {
    prompt_tokens: 7,
    completion_tokens: deltas.length,
    prompt_tokens_details: { cached_tokens: 3 },
  };
  const finish = (reason: string) =>
    kind === "chat"
      ? JSON.stringify({ choices: [{ index: 0, delta: {}, finish_reason: reason }] })
      : JSON.stringify({ choices: [{ index: 0, text: "", finish_reason: reason }] });
  switch (ending) {
    case "full":
    case "length":
      sse += event(finish(ending === "full" ? "stop" : "length"));
      sse += event(JSON.stringify({ choices: [], usage }));
      sse += event("[DONE]");
      break;
    case "finishThenClose":
      sse += event(finish("stop"));
      break;
    case "doneWithoutFinish":
      sse += event("[DONE]");
      break;
    case "malformed":
      sse += event("{not json");
      sse += event(chunkJson(kind, "after"));
      break;
    case "errorEvent":
      sse += event(JSON.stringify({ error: { code: "engine_error", message: "boom" } }));
      break;
    case "close":
      break;
  }
  const text = deltas.slice(0, upTo).join("");
  const expected =
    ending === "full" || ending === "finishThenClose"
      ? { reason: "eos", code: undefined }
      : ending === "length"
        ? { reason: "length", code: undefined }
        : ending === "malformed"
          ? { reason: "error", code: "upstream_bad_response" }
          : ending === "errorEvent"
            ? { reason: "error", code: "upstream_error" }
            : { reason: "error", code: "upstream_disconnected" };
  return { bytes: Buffer.from(sse, "utf8"), text, expected, usage: ending === "full" || ending === "length" };
}

function split(bytes: Buffer, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const parts: Uint8Array[] = [];
  let from = 0;
  for (const p of points) {
    parts.push(bytes.subarray(from, p));
    from = p;
  }
  parts.push(bytes.subarray(from));
  return parts;
}

function streamOf(parts: Uint8Array[]): ReadableStream<Uint8Array> {
  let i = 0;
  return new ReadableStream({
    pull(controller) {
      if (i < parts.length) controller.enqueue(parts[i++]!);
      else controller.close();
    },
  });
}

async function run(parts: Uint8Array[]) {
  const { channel, producer } = createStreamChannel({ id: "t" });
  const writer = new UpstreamWriter(producer);
  const outcome = await readEventStream(streamOf(parts), {
    accepted: () => writer.accepted(),
    chunk: (choices) => writer.chunk(choices),
  });
  settle(writer, outcome);
  const chunks: StreamChunk[] = [];
  for await (const chunk of channel) chunks.push(chunk);
  return { chunks, result: await channel.result };
}

describe("upstream event stream → channel", () => {
  test("any split, any ending: well-formed text, one terminal chunk last, the mapped reason", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom<"chat" | "completion">("chat", "completion"),
        fc.array(piece, { minLength: 0, maxLength: 8 }),
        fc.constantFrom<Ending>(
          "full",
          "length",
          "finishThenClose",
          "close",
          "doneWithoutFinish",
          "malformed",
          "errorEvent",
        ),
        fc.nat({ max: 8 }),
        fc.boolean(),
        fc.array(fc.nat({ max: 100_000 }), { maxLength: 24 }),
        async (kind, deltas, ending, at, crlf, cuts) => {
          const s = script(kind, deltas, ending, at, crlf);
          const { chunks, result } = await run(split(s.bytes, cuts));
          const terminals = chunks.filter((c) => c.finished);
          assert.equal(terminals.length, 1);
          assert.equal(chunks.at(-1)!.finished, true);
          for (const c of chunks)
            assert.ok(!LONE.test(c.text), `lone surrogate in ${JSON.stringify(c.text)}`);
          assert.equal(chunks.map((c) => c.text).join(""), result.text);
          assert.equal(result.text, s.text.replace(new RegExp(LONE.source, "g"), "\ufffd"));
          assert.equal(result.reason, s.expected.reason);
          assert.equal(result.error?.code, s.expected.code);
          if (s.usage)
            assert.deepEqual(result.usage, {
              promptTokens: 7,
              completionTokens: deltas.length,
              cachedTokens: 3,
            });
        },
      ),
      { numRuns: 400 },
    );
  });

  test("a surrogate pair split across two JSON strings is joined; a lone one at the end becomes U+FFFD", async () => {
    const sse = [
      `data: ${chunkJson("completion", "a\ud83d")}\n\n`,
      `data: ${chunkJson("completion", "\ude00b\ud83d")}\n\n`,
      `data: ${JSON.stringify({ choices: [{ index: 0, text: "", finish_reason: "length" }] })}\n\n`,
      "data: [DONE]\n\n",
    ].join("");
    const { chunks, result } = await run([Buffer.from(sse)]);
    assert.equal(result.text, "a😀b\ufffd");
    // The consumer read late, so the deltas merged: still never half a pair in any chunk.
    for (const c of chunks) assert.ok(!LONE.test(c.text));
  });

  test("a character cut between two network reads arrives whole, in one delta", async () => {
    const bytes = Buffer.from(`data: ${chunkJson("completion", "→😀←")}\n\ndata: [DONE]\n\n`);
    const emoji = bytes.indexOf(Buffer.from("😀"));
    const { chunks, result } = await run(split(bytes, [emoji + 1, emoji + 2, emoji + 3]));
    assert.equal(chunks[0]!.text, "→😀←");
    assert.equal(result.reason, "error");
    assert.equal(result.error?.code, "upstream_disconnected");
  });

  test("token ids from the upstream (vLLM token_ids, llama-server tokens) reach the channel", async () => {
    const sse = [
      `data: ${JSON.stringify({ choices: [{ index: 0, text: "In", token_ids: [5, 6] }] })}\n\n`,
      `data: ${JSON.stringify({ tokens: [7], choices: [{ index: 0, text: " the" }] })}\n\n`,
      `data: ${JSON.stringify({ choices: [{ index: 0, text: "", finish_reason: "stop" }], sluice: { reason: "stop", stop: "\n" } })}\n\n`,
    ].join("");
    const { result } = await run([Buffer.from(sse)]);
    assert.deepEqual(result.tokenIds, [5, 6, 7]);
    assert.equal(result.reason, "stop");
    assert.equal(result.stop, "\n");
    assert.equal(result.usage.completionTokens, 3);
  });
});
