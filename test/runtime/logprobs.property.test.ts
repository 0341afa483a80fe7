import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import fc from "fast-check";
import { scriptedLogprob } from "../../src/engine/ScriptedEngine.ts";
import type { Runtime } from "../../src/runtime/Runtime.ts";
import type { StreamChunk } from "../../src/types.ts";
import { bundledVocabulary, scriptedRuntime } from "../helpers/scripted.ts";

// Scripted engine: byte-exact control of what is generated, so every emission path (stream interval,
// stop-string hold-back, stop tokens, minTokens, cancel, coalescing behind a slow reader) is reached.
let runtime: Runtime;
const vocabulary = await bundledVocabulary();
const EOS = vocabulary.eos!;

before(async () => {
  ({ runtime } = await scriptedRuntime({ slots: 2, script: (prompt) => prompt.slice(1) }));
});
after(() => runtime.close());

/** Ordinary tokens, a few control tokens among them (filtered from text, kept in ids). */
const tokens = fc.array(
  fc.oneof(
    { arbitrary: fc.integer({ min: 0, max: 4090 }), weight: 9 },
    { arbitrary: fc.constant(4093), weight: 1 },
  ),
  { minLength: 1, maxLength: 40 },
);

test("logprobs stay aligned with token ids in every chunk and in the result, on every path", async () => {
  await fc.assert(
    fc.asyncProperty(
      tokens,
      fc.record({
        top: fc.integer({ min: 0, max: 5 }),
        streamInterval: fc.integer({ min: 1, max: 4 }),
        minTokens: fc.integer({ min: 0, max: 6 }),
        stopAt: fc.option(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 3 }))),
        stopToken: fc.option(fc.nat()),
        cancelAfter: fc.option(fc.integer({ min: 1, max: 8 })),
        slowReader: fc.boolean(),
      }),
      async (script, o) => {
        // The script is the prompt after its first token, then EOS.
        const text = new TextDecoder().decode(Buffer.concat(script.map((t) => vocabulary.bytesOf(t))));
        const stop =
          o.stopAt === null || text.length === 0
            ? undefined
            : text.slice(o.stopAt[0] % text.length, (o.stopAt[0] % text.length) + o.stopAt[1]);
        const stopTokenIds = o.stopToken === null ? [] : [script[o.stopToken % script.length]!];
        const maxTokens = script.length + 1;
        const channel = runtime.generate({
          prompt: [EOS, ...script, EOS],
          maxTokens: Math.max(maxTokens, o.minTokens),
          logprobs: o.top,
          streamInterval: o.streamInterval,
          minTokens: Math.min(o.minTokens, Math.max(maxTokens, o.minTokens)),
          ...(stop !== undefined && stop.trim() !== "" ? { stop } : {}),
          stopTokenIds,
        });
        const chunks: StreamChunk[] = [];
        let reads = 0;
        for await (const chunk of channel) {
          chunks.push(chunk);
          if (o.cancelAfter !== null && ++reads === o.cancelAfter) channel.cancel();
          // A reader that lags lets the channel coalesce several deltas into one chunk.
          if (o.slowReader) await new Promise<void>((resolve) => setImmediate(resolve));
        }
        const result = await channel.result;
        for (const chunk of chunks) {
          assert.deepEqual(
            chunk.logprobs?.map((e) => e.token),
            chunk.tokenIds,
          );
        }
        assert.deepEqual(
          result.logprobs?.map((e) => e.token),
          result.tokenIds,
        );
        for (const entry of result.logprobs!) assert.deepEqual(entry, scriptedLogprob(entry.token, o.top));
        // Nothing that ends a generation counts before minTokens.
        if (result.reason === "stop" || result.reason === "eos") {
          assert.ok(result.usage.completionTokens > Math.min(o.minTokens, maxTokens), JSON.stringify(result));
        }
      },
    ),
    { numRuns: 300 },
  );
});
