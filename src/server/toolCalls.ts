import type { ToolDefinition } from "../engine/ChatTemplate.ts";
import type { Engine } from "../engine/Engine.ts";
import { SluiceError } from "../errors.ts";
import type { GrammarSpec } from "../types.ts";
import { gbnfLiteral, prefixRules } from "./gbnf.ts";

/** How a model writes tool calls in its reply. */
export interface ToolCallFormat {
  /** The convention's name. */
  readonly name: "hermes";
  /** Opens one call. */
  readonly open: string;
  /** Closes one call. */
  readonly close: string;
}

/** Hermes-style calls: `<tool_call>\n{"name": "…", "arguments": {…}}\n</tool_call>`, one block per call. */
export const HERMES_TOOL_CALLS: ToolCallFormat = Object.freeze({
  name: "hermes",
  open: "<tool_call>",
  close: "</tool_call>",
});

/**
 * One piece of a streamed call, as OpenAI streams `delta.tool_calls`: the first for call `index` carries `id`,
 * `type` and `function.name` (with `arguments: ""`); the later ones carry fragments of `function.arguments`.
 */
export interface ToolCallDelta {
  index: number;
  id?: string;
  type?: "function";
  function: { name?: string; arguments: string };
}

/** A whole call (OpenAI's `message.tool_calls` entry). `arguments` is the JSON text the model wrote. */
export interface ToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

/** OpenAI's `tool_choice` when calls are allowed: `"none"` needs no grammar. */
export type ToolChoice = "auto" | "required" | { type: "function"; function: { name: string } };

/**
 * The grammar that holds tool calls to the Hermes format: `<tool_call>\n{"name": "…", "arguments": …}\n
 * </tool_call>`, the name one of `tools` (or the named one) and the arguments valid against that function's
 * `parameters` (compiled by `engine.grammarText`; none means an object without properties). `parallel`: one
 * call or more, separated by a newline; otherwise exactly one.
 *
 * `"required"` or a named function: the grammar applies from the first token. `"auto"`: lazily, from the
 * text `<tool_call>` on (the spec's `trigger`), so the model may answer in text instead.
 *
 * Throws `SluiceError` `invalid_request` when the engine has no grammars, `tools` is empty, the named function
 * is not among them, or a function's parameters use a schema feature the engine cannot enforce.
 */
export function toolCallGrammar(
  engine: Pick<Engine, "grammarText">,
  tools: readonly ToolDefinition[],
  choice: ToolChoice,
  parallel: boolean,
): GrammarSpec {
  if (engine.grammarText === undefined) {
    throw new SluiceError(
      "invalid_request",
      'This engine cannot constrain sampling with a grammar, so tool calls cannot be held to their functions (tool_choice "required" or a named function needs it): use tool_choice "auto".',
      { param: "tool_choice" },
    );
  }
  if (tools.length === 0) {
    throw new SluiceError(
      "invalid_request",
      "tools is empty: offer at least one function, or drop tool_choice.",
      {
        param: "tools",
      },
    );
  }
  let offered = tools;
  if (typeof choice === "object") {
    const name = choice.function.name;
    offered = tools.filter((tool) => tool.name === name);
    if (offered.length === 0) {
      throw new SluiceError(
        "invalid_request",
        `tool_choice names the function ${JSON.stringify(name)}, which is not in tools (${tools.map((t) => t.name).join(", ")}): name one of them.`,
        { param: "tool_choice" },
      );
    }
  }
  const rules: string[] = [];
  const calls: string[] = [];
  offered.forEach((tool, i) => {
    const prefix = `fn${i}-`;
    const schema = argumentsSchema(tool);
    let gbnf: string;
    try {
      gbnf = engine.grammarText!({ type: "json_schema", schema });
    } catch (cause) {
      if (!(cause instanceof SluiceError)) throw cause;
      throw new SluiceError(cause.code, `The parameters of function ${tool.name}: ${cause.message}`, {
        param: "tools",
        cause,
      });
    }
    const own = prefixRules(gbnf, prefix)
      .split("\n")
      // node-llama-cpp ends a JSON document with newlines that stop its own generation: arguments must not.
      .map((line) => (line.startsWith(`${prefix}root ::=`) ? line.replace(JSON_TERMINATOR, "") : line));
    rules.push(...own);
    const head = gbnfLiteral(`{"name": ${JSON.stringify(tool.name)}, "arguments": `);
    rules.push(`${prefix}call ::= ${head} ${prefix}root "}"`);
    calls.push(`${prefix}call`);
  });
  const { open, close } = HERMES_TOOL_CALLS;
  const root = parallel ? 'root ::= call-block ("\\n" call-block)*' : "root ::= call-block";
  const grammar = [
    root,
    `call-block ::= ${gbnfLiteral(`${open}\n`)} call ${gbnfLiteral(`\n${close}`)}`,
    `call ::= ${calls.join(" | ")}`,
    ...rules.filter((line) => line.trim() !== ""),
  ].join("\n");
  return choice === "auto" ? { type: "gbnf", grammar, trigger: open } : { type: "gbnf", grammar };
}

/** The `"\n\n\n\n" [\n]*` that node-llama-cpp's JSON-schema grammars end their root with. */
const JSON_TERMINATOR = /\s*"(?:\\n)+"\s*\[\\n\]\*\s*$/;

/**
 * A function's arguments are a JSON object (OpenAI's rule): no `parameters`, or `{}` as many SDKs send for a
 * function without parameters, is an object with none; a schema without `type` is taken as an object's; a
 * schema of anything else is refused (the call could never be parsed).
 */
function argumentsSchema(tool: ToolDefinition): Readonly<Record<string, unknown>> {
  const { parameters } = tool;
  if (parameters == null || Object.keys(parameters).length === 0) return { type: "object", properties: {} };
  if (parameters.type === undefined) return { ...parameters, type: "object" };
  if (parameters.type !== "object") {
    throw new SluiceError(
      "invalid_request",
      `The parameters of function ${tool.name} describe ${JSON.stringify(parameters.type)}; a function's arguments are a JSON object: use { "type": "object", "properties": { ... } }.`,
      { param: "tools" },
    );
  }
  return parameters;
}
