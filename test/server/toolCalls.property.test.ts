import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { ToolCallParser } from "../../src/server/ToolCallParser.ts";
import type { ToolCall } from "../../src/server/toolCalls.ts";

const NAMES = ["get_verse", "count_verses", "amen"];

/** Everything a parse gave: content, the calls as the deltas build them, and the calls `end` reports. */
function parse(chunks: readonly string[]) {
  let n = 0;
  const parser = new ToolCallParser({ tools: NAMES.map((name) => ({ name })), newId: () => `call_${n++}` });
  const outputs = [...chunks.map((chunk) => parser.push(chunk))];
  const end = parser.end();
  outputs.push(end);
  const streamed: ToolCall[] = [];
  for (const delta of outputs.flatMap((out) => out.calls)) {
    if (delta.id !== undefined) {
      assert.equal(delta.index, streamed.length, "calls are announced in index order");
      assert.equal(delta.function.arguments, "", "the announcing delta carries no arguments");
      streamed.push({
        id: delta.id,
        type: "function",
        function: { name: delta.function.name!, arguments: "" },
      });
    } else {
      assert.equal(delta.id, undefined);
      streamed[delta.index]!.function.arguments += delta.function.arguments;
    }
  }
  assert.deepEqual(streamed, end.toolCalls, "the deltas add up to the calls end() reports");
  return { content: outputs.map((out) => out.content).join(""), calls: end.toolCalls };
}

/** `text` cut at the given points. */
function split(text: string, cuts: readonly number[]): string[] {
  const points = [...new Set(cuts.map((cut) => cut % (text.length + 1)))].sort((a, b) => a - b);
  const chunks: string[] = [];
  let from = 0;
  for (const point of points) {
    chunks.push(text.slice(from, point));
    from = point;
  }
  chunks.push(text.slice(from));
  return chunks;
}

/** Content that may hold pieces of the tags, never a whole open tag. */
const content = fc
  .array(
    fc.constantFrom(
      "In",
      " the",
      " beginning",
      "\n",
      " ",
      "<",
      "<tool",
      "_call",
      ">",
      "</tool_call>",
      "{",
      "é",
    ),
    {
      maxLength: 6,
    },
  )
  .map((parts) => parts.join(""))
  .filter((text) => !text.includes("<tool_call>"));

const call = fc.record({
  name: fc.constantFrom(...NAMES),
  args: fc.dictionary(fc.string(), fc.jsonValue(), { maxKeys: 4 }),
  indent: fc.constantFrom(undefined, 2),
  compact: fc.boolean(),
});

test("for random content and calls cut into random chunks, the parse is the one-chunk parse, and arguments parse back", () => {
  fc.assert(
    fc.property(
      content,
      fc.array(fc.tuple(call, content), { maxLength: 3 }),
      fc.array(fc.nat(), { maxLength: 12 }),
      (first, rest, cuts) => {
        let text = first;
        let expected = rest.length > 0 ? first.trimEnd() : first;
        rest.forEach(([c, after], i) => {
          const args = JSON.stringify(c.args, null, c.indent);
          const head = c.compact ? `{"name":"${c.name}","arguments":` : `{"name": "${c.name}", "arguments": `;
          text += `<tool_call>\n${head}${args}}\n</tool_call>${after}`;
          // Whitespace next to a call is not content.
          expected += i + 1 < rest.length ? after.trim() : after.trimStart();
        });
        const whole = parse([text]);
        assert.deepEqual(parse(split(text, cuts)), whole);
        assert.equal(whole.content, expected);
        assert.deepEqual(
          whole.calls.map((c) => c.function.name),
          rest.map(([c]) => c.name),
        );
        whole.calls.forEach((c, i) => {
          assert.deepEqual(JSON.parse(c.function.arguments), JSON.parse(JSON.stringify(rest[i]![0].args)));
        });
      },
    ),
    { numRuns: 300 },
  );
});

test("for any text made of tag and JSON pieces, the parse does not depend on the chunking", () => {
  const piece = fc.constantFrom(
    "<tool_call>",
    "</tool_call>",
    '{"name": "get_verse", "arguments": ',
    '{"name": "nope", "arguments": ',
    '"arguments": {}, "name": "amen"',
    "{",
    "}",
    "[",
    '"',
    "\\",
    " ",
    "\n",
    "x",
    "1",
    ":",
    ",",
    "<",
  );
  fc.assert(
    fc.property(fc.array(piece, { maxLength: 30 }), fc.array(fc.nat(), { maxLength: 12 }), (parts, cuts) => {
      const text = parts.join("");
      assert.deepEqual(parse(split(text, cuts)), parse([text]));
    }),
    { numRuns: 500 },
  );
});
