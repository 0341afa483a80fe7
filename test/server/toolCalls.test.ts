import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Ajv } from "ajv";
import { getLlama, type Llama, LlamaGrammar, LlamaJsonSchemaGrammar } from "node-llama-cpp";
import type { ChatTemplate } from "../../src/engine/ChatTemplate.ts";
import { BUNDLED_CHAT_MODEL_PATH } from "../../src/engine/modelPath.ts";
import { SluiceError } from "../../src/errors.ts";
import { Runtime } from "../../src/runtime/Runtime.ts";
import { gbnfLiteral, prefixRules } from "../../src/server/gbnf.ts";
import { ToolCallParser } from "../../src/server/ToolCallParser.ts";
import { type ToolCall, type ToolCallDelta, toolCallGrammar } from "../../src/server/toolCalls.ts";
import type { GrammarSpec } from "../../src/types.ts";
import { VERSE_TOOLS as TOOLS } from "../helpers/tools.ts";

function parser(): ToolCallParser {
  let n = 0;
  return new ToolCallParser({ tools: TOOLS, newId: () => `call_${n++}` });
}

/** Feeds the chunks and gathers what came out: content, deltas, and the calls `end` reports. */
function run(chunks: readonly string[]) {
  const p = parser();
  const pushes = chunks.map((chunk) => p.push(chunk));
  const end = p.end();
  const all = [...pushes, end];
  return {
    pushes,
    end,
    content: all.map((out) => out.content).join(""),
    deltas: all.flatMap((out) => out.calls),
  };
}

const CALL =
  '<tool_call>\n{"name": "get_verse", "arguments": {"book": "John", "chapter": 3, "verse": 16}}\n</tool_call>';

describe("ToolCallParser", () => {
  test("content without calls passes through at once", () => {
    const { pushes, content, end } = run(["In the", " beginning God", " created."]);
    assert.deepEqual(
      pushes.map((out) => out.content),
      ["In the", " beginning God", " created."],
    );
    assert.equal(content, "In the beginning God created.");
    assert.deepEqual(end.toolCalls, []);
  });

  test("a possible start of <tool_call> and trailing whitespace are held until decided", () => {
    const { pushes, end, content } = run(["See <to", "ol> here\n", "and <tool_", "x>"]);
    assert.deepEqual(
      pushes.map((out) => out.content),
      ["See", " <tool> here", "\nand", " <tool_x>"],
    );
    assert.equal(end.content, "");
    assert.equal(content, "See <tool> here\nand <tool_x>");
  });

  test("a call streams: announced with its name, then its arguments as written", () => {
    const { pushes, end, content } = run([
      "<tool_call>\n",
      '{"name": "get_ve',
      'rse", "argu',
      'ments": {"book": "Jo',
      'hn", "chapter": 3, "verse": 16}}',
      "\n</tool_call>",
    ]);
    assert.deepEqual(
      pushes.map((out) => out.calls),
      [
        [],
        [],
        [],
        [
          { index: 0, id: "call_0", type: "function", function: { name: "get_verse", arguments: "" } },
          { index: 0, function: { arguments: '{"book": "Jo' } },
        ],
        [{ index: 0, function: { arguments: 'hn", "chapter": 3, "verse": 16}' } }],
        [],
      ],
    );
    assert.equal(content, "");
    assert.deepEqual(end.toolCalls, [
      {
        id: "call_0",
        type: "function",
        function: { name: "get_verse", arguments: '{"book": "John", "chapter": 3, "verse": 16}' },
      },
    ]);
  });

  test("parallel calls get indexes 0, 1; whitespace between them and around is not content", () => {
    const second = CALL.replace("get_verse", "count_verses").replace(', "verse": 16', "");
    const { end, content, deltas } = run([`\n${CALL}\n${second}\n`]);
    assert.equal(content, "");
    assert.deepEqual(
      deltas.filter((d) => d.id !== undefined).map((d) => [d.index, d.function.name]),
      [
        [0, "get_verse"],
        [1, "count_verses"],
      ],
    );
    assert.deepEqual(
      end.toolCalls.map((call) => JSON.parse(call.function.arguments)),
      [
        { book: "John", chapter: 3, verse: 16 },
        { book: "John", chapter: 3 },
      ],
    );
  });

  test("content before and after a call stays content", () => {
    const { content, end } = run([`Let me look.\n${CALL}\nHere it is.`]);
    assert.equal(content, "Let me look.Here it is.");
    assert.equal(end.toolCalls.length, 1);
  });

  test("<tool_call> and braces inside an argument string do not end the call", () => {
    const text =
      '<tool_call>\n{"name": "get_verse", "arguments": {"book": "}<tool_call>\\"]", "chapter": 1, "verse": 1}}\n</tool_call>';
    const { content, end } = run([...text]);
    assert.equal(content, "");
    assert.deepEqual(JSON.parse(end.toolCalls[0]!.function.arguments), {
      book: '}<tool_call>"]',
      chapter: 1,
      verse: 1,
    });
  });

  test("an unknown function is content, raw, as llama-server returns it", () => {
    const text = `Hi\n${CALL.replace("get_verse", "launch")}\nBye`;
    const { content, end, deltas } = run([...text]);
    assert.equal(content, text);
    assert.deepEqual(deltas, []);
    assert.deepEqual(end.toolCalls, []);
  });

  test("a call that is not JSON is content, raw", () => {
    const text = "<tool_call>\nget_verse(John 3:16)\n</tool_call>";
    for (const chunks of [[text], [...text]]) {
      const { content, deltas } = run(chunks);
      assert.equal(content, text);
      assert.deepEqual(deltas, []);
    }
  });

  test("another key order is read whole when the call closes", () => {
    const text =
      '<tool_call>\n{"arguments": {"book": "Ruth", "chapter": 1, "verse": 16}, "name": "get_verse"}\n</tool_call>';
    const { content, end, deltas } = run([...text]);
    assert.equal(content, "");
    assert.equal(end.toolCalls[0]!.function.name, "get_verse");
    assert.deepEqual(JSON.parse(end.toolCalls[0]!.function.arguments), {
      book: "Ruth",
      chapter: 1,
      verse: 16,
    });
    assert.equal(deltas.map((d) => d.function.arguments).join(""), end.toolCalls[0]!.function.arguments);
  });

  test("cut inside the head: content; cut inside the arguments: the call with what was written", () => {
    const head = run(['<tool_call>\n{"name": "get_v']);
    assert.equal(head.content, '<tool_call>\n{"name": "get_v');
    assert.deepEqual(head.end.toolCalls, []);
    const args = run(['<tool_call>\n{"name": "get_verse", "arguments": {"book": "Jo']);
    assert.equal(args.content, "");
    assert.deepEqual(
      args.end.toolCalls.map((call) => call.function),
      [{ name: "get_verse", arguments: '{"book": "Jo' }],
    );
  });

  test("a call whose </tool_call> never comes is still a call once its arguments closed", () => {
    const { content, end } = run([
      '<tool_call>\n{"name": "count_verses", "arguments": {"book": "Jude", "chapter": 1}}',
    ]);
    assert.equal(content, "");
    assert.equal(end.toolCalls[0]!.function.arguments, '{"book": "Jude", "chapter": 1}');
  });

  test("arguments that break off at a tag end there; stray text before </tool_call> is content", () => {
    const broken = run(['<tool_call>\n{"name": "get_verse", "arguments": {"book": 1\n</tool_call>after']);
    assert.equal(broken.end.toolCalls[0]!.function.arguments, '{"book": 1\n');
    assert.equal(broken.content, "after");
    const extra = run(['<tool_call>\n{"name": "count_verses", "arguments": {}, "x": 1}\n</tool_call>']);
    assert.equal(extra.end.toolCalls[0]!.function.arguments, "{}");
    assert.equal(extra.content, ', "x": 1}\n');
  });

  test("ids default to call_ and 24 hex digits, one per call", () => {
    const p = new ToolCallParser({ tools: TOOLS });
    p.push(`${CALL}${CALL}`);
    const ids = p.end().toolCalls.map((call) => call.id);
    assert.equal(ids.length, 2);
    for (const id of ids) assert.match(id, /^call_[0-9a-f]{24}$/);
    assert.notEqual(ids[0], ids[1]);
  });

  test("without a tools list any name is a call; push after end throws", () => {
    const p = new ToolCallParser();
    p.push(CALL.replace("get_verse", "anything"));
    assert.equal(p.end().toolCalls[0]!.function.name, "anything");
    assert.throws(
      () => p.push("more"),
      (e: unknown) => e instanceof SluiceError,
    );
  });
});

describe("gbnf helpers", () => {
  test("prefixRules renames definitions and references, not literals, classes, counts or comments", () => {
    const gbnf = [
      'root ::= "{" ws item ("," ws item)* "}" # root item',
      'item ::= [a-z]{1,4} | "root item" | x-1',
      "x-1 ::= [\\]root] ws",
      'ws ::= [ ]? "\\"ws"',
    ].join("\n");
    assert.equal(
      prefixRules(gbnf, "p-"),
      [
        'p-root ::= "{" p-ws p-item ("," p-ws p-item)* "}" # root item',
        'p-item ::= [a-z]{1,4} | "root item" | p-x-1',
        "p-x-1 ::= [\\]root] p-ws",
        'p-ws ::= [ ]? "\\"ws"',
      ].join("\n"),
    );
  });

  test("gbnfLiteral escapes quotes, backslashes and newlines", () => {
    assert.equal(gbnfLiteral('a"b\\c\nd'), '"a\\"b\\\\c\\nd"');
  });
});

describe("toolCallGrammar", () => {
  let llama: Llama;
  const schemas: unknown[] = [];
  /** The engine's JSON-schema compiler, as LlamaEngine builds it on node-llama-cpp. */
  const engine = {
    grammarText(spec: GrammarSpec): string {
      assert.equal(spec.type, "json_schema");
      schemas.push((spec as { schema: unknown }).schema);
      return new LlamaJsonSchemaGrammar(llama, (spec as { schema: unknown }).schema as never).grammar;
    },
  };

  before(async () => {
    llama = await getLlama({ gpu: false, build: "never", skipDownload: true });
  });

  const parses = (grammar: string) => new LlamaGrammar(llama, { grammar });

  test("auto: a lazy grammar from <tool_call> on, over every function; it parses", () => {
    const spec = toolCallGrammar(engine, TOOLS, "auto", true);
    assert.equal(spec.type, "gbnf");
    assert.equal((spec as { trigger?: string }).trigger, "<tool_call>");
    const { grammar } = spec as { grammar: string };
    assert.match(grammar, /^root ::= call-block \("\\n" call-block\)\*$/m);
    assert.match(grammar, /^call-block ::= "<tool_call>\\n" call "\\n<\/tool_call>"$/m);
    assert.match(grammar, /^call ::= fn0-call \| fn1-call$/m);
    assert.match(grammar, /"\{\\"name\\": \\"get_verse\\", \\"arguments\\": " fn0-root "\}"/);
    assert.match(grammar, /"\{\\"name\\": \\"count_verses\\", \\"arguments\\": " fn1-root "\}"/);
    assert.doesNotMatch(grammar, /\\n\\n\\n\\n/, "node-llama-cpp's document terminator is gone");
    parses(grammar);
  });

  test("required: from the first token; not parallel: exactly one call", () => {
    const spec = toolCallGrammar(engine, TOOLS, "required", false);
    assert.equal((spec as { trigger?: string }).trigger, undefined);
    assert.match((spec as { grammar: string }).grammar, /^root ::= call-block$/m);
    parses((spec as { grammar: string }).grammar);
  });

  test("a named function: only it; its schema is compiled, a function without parameters gets {}", () => {
    schemas.length = 0;
    const tools = [...TOOLS, { name: "amen" }];
    const spec = toolCallGrammar(engine, tools, { type: "function", function: { name: "amen" } }, true);
    const { grammar } = spec as { grammar: string };
    assert.match(grammar, /^call ::= fn0-call$/m);
    assert.doesNotMatch(grammar, /get_verse/);
    assert.deepEqual(schemas, [{ type: "object", properties: {} }]);
    parses(grammar);
  });

  test("refusals: an unknown named function, no tools, an engine without grammars, a bad schema", () => {
    const refused = (fn: () => unknown, param: string) =>
      assert.throws(
        fn,
        (e: unknown) => e instanceof SluiceError && e.code === "invalid_request" && e.param === param,
      );
    refused(
      () => toolCallGrammar(engine, TOOLS, { type: "function", function: { name: "nope" } }, true),
      "tool_choice",
    );
    refused(() => toolCallGrammar(engine, [], "required", true), "tools");
    refused(() => toolCallGrammar({}, TOOLS, "required", true), "tool_choice");
    const strict = {
      grammarText(): string {
        throw new SluiceError(
          "invalid_request",
          "The schema uses patternProperties, which cannot be enforced.",
          {
            param: "grammar",
          },
        );
      },
    };
    assert.throws(
      () => toolCallGrammar(strict, TOOLS, "required", true),
      (e: unknown) =>
        e instanceof SluiceError && e.param === "tools" && /get_verse.*patternProperties/.test(e.message),
    );
  });

  describe("on the bundled chat model, through the runtime", () => {
    let runtime: Runtime;
    let template: ChatTemplate;
    const ajv = new Ajv({ strict: false });

    before(async () => {
      runtime = await Runtime.create({
        model: BUNDLED_CHAT_MODEL_PATH,
        slots: 1,
        contextSize: 1024,
        threads: 1,
      });
      template = runtime.engine.chatTemplate()!;
      assert.ok(template);
    });
    after(async () => {
      await runtime.close();
    });

    /** Greedy reply to `question` with the tools offered under `spec`, parsed. */
    async function reply(question: string, spec: GrammarSpec) {
      const prompt = template.render([{ role: "user", content: question }], { tools: TOOLS });
      const result = await runtime.generate({
        prompt: prompt.tokens,
        stopTokenIds: prompt.stopTokenIds,
        stop: prompt.stop,
        maxTokens: 120,
        temperature: 0,
        grammar: spec,
      }).result;
      const parser = new ToolCallParser({ tools: TOOLS });
      const first = parser.push(result.text);
      const end = parser.end();
      const deltas: ToolCallDelta[] = [...first.calls, ...end.calls];
      return { text: result.text, content: first.content + end.content, calls: end.toolCalls, deltas };
    }

    /** Every call names an offered function and its arguments validate against that function's schema. */
    function assertValid(calls: readonly ToolCall[], text: string): void {
      assert.ok(calls.length > 0, text);
      for (const call of calls) {
        const tool = TOOLS.find((t) => t.name === call.function.name);
        assert.ok(tool, `a known function: ${text}`);
        const validate = ajv.compile(tool.parameters!);
        assert.ok(
          validate(JSON.parse(call.function.arguments)),
          `${ajv.errorsText(validate.errors)}: ${text}`,
        );
      }
    }

    test("required, greedy, not parallel: one call the parser reads, valid against its schema", async () => {
      const spec = toolCallGrammar(runtime.engine, TOOLS, "required", false);
      const out = await reply("Hello.", spec);
      assert.equal(out.content, "", out.text);
      assert.equal(out.calls.length, 1, out.text);
      assertValid(out.calls, out.text);
      assert.equal(out.deltas.map((d) => d.function.arguments).join(""), out.calls[0]!.function.arguments);
    });

    test("a named function: the call is to it, whatever was asked", async () => {
      const spec = toolCallGrammar(
        runtime.engine,
        TOOLS,
        { type: "function", function: { name: "count_verses" } },
        true,
      );
      const out = await reply("Quote John 3:16.", spec);
      assert.deepEqual(
        out.calls.map((call) => call.function.name),
        ["count_verses"],
        out.text,
      );
      assertValid(out.calls, out.text);
    });

    test("auto (lazy from <tool_call>): a call when one is asked for, text when none is", async () => {
      const spec = toolCallGrammar(runtime.engine, TOOLS, "auto", true);
      const verse = await reply("Quote John 3:16.", spec);
      assert.equal(verse.content, "", verse.text);
      assertValid(verse.calls, verse.text);
      const hello = await reply("Hello.", spec);
      assert.deepEqual(hello.calls, [], hello.text);
      assert.notEqual(hello.content, "");
    });
  });

  after(async () => {
    await llama.dispose();
  });
});
