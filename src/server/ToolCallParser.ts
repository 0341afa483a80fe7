import { randomBytes } from "node:crypto";
import type { ToolDefinition } from "../engine/ChatTemplate.ts";
import { SluiceError } from "../errors.ts";
import { HERMES_TOOL_CALLS, type ToolCall, type ToolCallDelta, type ToolCallFormat } from "./toolCalls.ts";

/** What one `push` (or `end`) gives: text for `content` and call pieces for `tool_calls`. */
export interface ToolCallOutput {
  content: string;
  calls: ToolCallDelta[];
}

export interface ToolCallParserOptions {
  /** The calls' format. Defaults to `HERMES_TOOL_CALLS`. */
  format?: ToolCallFormat;
  /** The functions offered: a call naming another is not a call. Defaults to any name. */
  tools?: readonly Pick<ToolDefinition, "name">[];
  /** Makes a call's id. Defaults to `call_` and 24 random hex digits. */
  newId?: () => string;
}

type Phase = "text" | "head" | "arguments" | "tail" | "raw" | "ended";

/**
 * Splits generated text into content and tool calls as it streams: `push` each text delta, then `end`.
 *
 * - Content outside the tags passes through at once, except a possible start of `<tool_call>` at the end of
 *   what came (held until decided) and trailing whitespace (whitespace next to a call is not content).
 * - A call is announced once its head `{"name": "…", "arguments": ` is complete and names an offered function;
 *   its arguments then stream as the model writes them: their fragments concatenate to the exact JSON text.
 *   Calls are indexed 0, 1, … in order.
 * - Malformed calls are content, as llama-server does: a call whose head does not parse is held until
 *   `</tool_call>` (or the end) and read as a whole JSON object `{name, arguments}` (any key order); if that
 *   fails, or the name is not an offered function, its raw text, tags included, is content.
 * - Once announced a call stays a call (a stream cannot take it back): should the generation end inside its
 *   arguments (`max_tokens`), they are what was written, as OpenAI returns them; should the arguments break
 *   off (a `<` outside a string), they end there. Text between the arguments and `</tool_call>` other than the
 *   wrapper's `}` is content.
 *
 * The result does not depend on how the text is split into deltas.
 */
export class ToolCallParser {
  readonly #format: ToolCallFormat;
  readonly #names: ReadonlySet<string> | undefined;
  readonly #newId: () => string;
  #phase: Phase = "text";
  /** Text phase: held back text (trailing whitespace, a partial open tag). */
  #held = "";
  /** Whitespace before the open tag of the call being read, given back if the call turns out to be content. */
  #gap = "";
  /** Text phase: right after a call, where whitespace is not content. */
  #afterCall = false;
  /** Head, tail and raw phases: the call's text read so far in that phase. */
  #buffer = "";
  /** Arguments phase: JSON nesting outside strings, and string state. */
  #depth = 0;
  #inString = false;
  #escaped = false;
  readonly #calls: ToolCall[] = [];

  constructor(options: ToolCallParserOptions = {}) {
    this.#format = options.format ?? HERMES_TOOL_CALLS;
    this.#names = options.tools === undefined ? undefined : new Set(options.tools.map((tool) => tool.name));
    this.#newId = options.newId ?? (() => `call_${randomBytes(12).toString("hex")}`);
  }

  /** Feeds the next text delta; returns the content and call pieces it completes. Throws after `end`. */
  push(text: string): ToolCallOutput {
    if (this.#phase === "ended") throw new SluiceError("internal_error", "ToolCallParser.push after end().");
    const out: ToolCallOutput = { content: "", calls: [] };
    let rest = text;
    while (rest !== "") rest = this.#step(rest, out);
    return out;
  }

  /** Ends the text: returns what was held back, and every call (`toolCalls`, in order). */
  end(): ToolCallOutput & { toolCalls: ToolCall[] } {
    const out: ToolCallOutput = { content: "", calls: [] };
    const { open } = this.#format;
    switch (this.#phase) {
      case "text":
        this.#text(this.#held, out);
        this.#held = "";
        break;
      case "head":
        out.content += this.#gap + open + this.#buffer;
        break;
      case "raw":
        this.#resolve(this.#buffer, false, out);
        break;
      case "tail": {
        const rest = this.#buffer.replace(/^\s*\}?\s*/, "");
        if (!this.#format.close.startsWith(rest)) out.content += rest;
        break;
      }
      default:
        break;
    }
    this.#phase = "ended";
    this.#buffer = "";
    return {
      ...out,
      toolCalls: this.#calls.map((call) => ({ ...call, function: { ...call.function } })),
    };
  }

  /** Consumes the start of `input` in the current phase; returns what is left for the next phase. */
  #step(input: string, out: ToolCallOutput): string {
    switch (this.#phase) {
      case "text":
        return this.#textPhase(input, out);
      case "head":
        return this.#head(input, out);
      case "arguments":
        return this.#arguments(input, out);
      case "tail":
        return this.#tail(input, out);
      case "raw":
        return this.#raw(input, out);
      default:
        return "";
    }
  }

  #textPhase(input: string, out: ToolCallOutput): string {
    const { open } = this.#format;
    const text = this.#held + input;
    this.#held = "";
    const at = text.indexOf(open);
    if (at !== -1) {
      const before = text.slice(0, at);
      const kept = before.trimEnd();
      this.#text(kept, out);
      this.#gap = this.#afterCall ? "" : before.slice(kept.length);
      this.#phase = "head";
      this.#buffer = "";
      return text.slice(at + open.length);
    }
    let end = text.length - partialSuffix(text, open);
    while (end > 0 && isSpace(text.charCodeAt(end - 1))) end--;
    this.#text(text.slice(0, end), out);
    this.#held = text.slice(end);
    return "";
  }

  /** Content, less the whitespace that follows a call. */
  #text(text: string, out: ToolCallOutput): void {
    const content = this.#afterCall ? text.trimStart() : text;
    if (content === "") return;
    this.#afterCall = false;
    out.content += content;
  }

  #head(input: string, out: ToolCallOutput): string {
    this.#buffer += input;
    const head = matchHead(this.#buffer);
    if (head === PARTIAL) return "";
    const buffer = this.#buffer;
    this.#buffer = "";
    if (head === FAIL || !this.#known(head.name)) {
      this.#phase = "raw";
      return buffer;
    }
    const call: ToolCall = {
      id: this.#newId(),
      type: "function",
      function: { name: head.name, arguments: "" },
    };
    out.calls.push({
      index: this.#calls.length,
      id: call.id,
      type: "function",
      function: { ...call.function },
    });
    this.#calls.push(call);
    this.#phase = "arguments";
    this.#depth = 0;
    this.#inString = false;
    this.#escaped = false;
    return buffer.slice(head.length);
  }

  #arguments(input: string, out: ToolCallOutput): string {
    let i = 0;
    let done = false;
    for (; i < input.length && !done; i++) {
      const c = input.charCodeAt(i);
      if (this.#inString) {
        if (this.#escaped) this.#escaped = false;
        else if (c === BACKSLASH) this.#escaped = true;
        else if (c === QUOTE) this.#inString = false;
      } else if (c === QUOTE) this.#inString = true;
      else if (c === OPEN_BRACE || c === OPEN_BRACKET) this.#depth++;
      else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) done = --this.#depth === 0;
      else if (!JSON_OUTSIDE_STRINGS.test(input[i]!)) {
        // Not JSON (the close tag, most likely): the arguments broke off here.
        done = true;
        i--;
      }
    }
    if (i > 0) this.#emitArguments(input.slice(0, i), out);
    if (!done) return "";
    this.#phase = "tail";
    this.#buffer = "";
    return input.slice(i);
  }

  #emitArguments(fragment: string, out: ToolCallOutput): void {
    const index = this.#calls.length - 1;
    this.#calls[index]!.function.arguments += fragment;
    const last = out.calls.at(-1);
    if (last !== undefined && last.index === index && last.id === undefined)
      last.function.arguments += fragment;
    else out.calls.push({ index, function: { arguments: fragment } });
  }

  #tail(input: string, out: ToolCallOutput): string {
    const { close } = this.#format;
    this.#buffer += input;
    const buffer = this.#buffer;
    // Expected: the wrapper object's "}", then the close tag, whitespace around either.
    const after = buffer.replace(/^\s*\}?\s*/, "");
    if (after.startsWith(close)) return this.#closeCall(after.slice(close.length));
    if (close.startsWith(after)) return "";
    const at = buffer.indexOf(close);
    if (at === -1) return "";
    out.content += buffer.slice(0, at).replace(/^\s*\}?\s*/, "");
    return this.#closeCall(buffer.slice(at + close.length));
  }

  #closeCall(rest: string): string {
    this.#phase = "text";
    this.#buffer = "";
    this.#afterCall = true;
    return rest;
  }

  #raw(input: string, out: ToolCallOutput): string {
    const { close } = this.#format;
    this.#buffer += input;
    const at = this.#buffer.indexOf(close);
    if (at === -1) return "";
    const rest = this.#buffer.slice(at + close.length);
    this.#resolve(this.#buffer.slice(0, at), true, out);
    return rest;
  }

  /** A call whose head did not stream: a call if its text is one JSON object naming an offered function. */
  #resolve(body: string, closed: boolean, out: ToolCallOutput): void {
    this.#phase = "text";
    this.#buffer = "";
    const call = wholeCall(body);
    if (call === undefined || !this.#known(call.name)) {
      const { open, close } = this.#format;
      out.content += this.#gap + open + body + (closed ? close : "");
      this.#afterCall = false;
      return;
    }
    const id = this.#newId();
    const index = this.#calls.length;
    this.#calls.push({ id, type: "function", function: { name: call.name, arguments: call.arguments } });
    out.calls.push({ index, id, type: "function", function: { name: call.name, arguments: "" } });
    out.calls.push({ index, function: { arguments: call.arguments } });
    this.#afterCall = true;
  }

  #known(name: string): boolean {
    return this.#names === undefined ? name !== "" : this.#names.has(name);
  }
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
/** Characters JSON has outside strings besides brackets: whitespace, punctuation, numbers and literals. */
const JSON_OUTSIDE_STRINGS = /[\s,:0-9.eE+\-truefalsn]/;

function isSpace(code: number): boolean {
  return code === 0x20 || code === 0x0a || code === 0x0d || code === 0x09;
}

/** Length of the longest end of `text` that is the start of `tag` (shorter than `tag`). */
function partialSuffix(text: string, tag: string): number {
  for (let n = Math.min(tag.length - 1, text.length); n > 0; n--) {
    if (text.endsWith(tag.slice(0, n))) return n;
  }
  return 0;
}

const PARTIAL = "partial";
const FAIL = "fail";
const WS = 0;
const NAME = 1;
/** `{"name": "…", "arguments": ` with any whitespace between the JSON tokens. */
const HEAD = [WS, "{", WS, '"name"', WS, ":", WS, NAME, WS, ",", WS, '"arguments"', WS, ":", WS] as const;

/**
 * Matches a call's head at the start of `s`: the name and the length up to the arguments' `{`, `PARTIAL`
 * while more text could still make it match, `FAIL` when it cannot (another key order, a name with escapes,
 * arguments that are not an object).
 */
function matchHead(s: string): { name: string; length: number } | typeof PARTIAL | typeof FAIL {
  let i = 0;
  let name = "";
  for (const part of HEAD) {
    if (part === WS) {
      while (i < s.length && isSpace(s.charCodeAt(i))) i++;
    } else if (part === NAME) {
      if (i >= s.length) return PARTIAL;
      if (s[i] !== '"') return FAIL;
      const end = s.indexOf('"', i + 1);
      const body = end === -1 ? s.slice(i + 1) : s.slice(i + 1, end);
      if (!/^[\w.-]*$/.test(body)) return FAIL;
      if (end === -1) return PARTIAL;
      name = body;
      i = end + 1;
    } else {
      const n = Math.min(part.length, s.length - i);
      if (s.slice(i, i + n) !== part.slice(0, n)) return FAIL;
      if (n < part.length) return PARTIAL;
      i += n;
    }
  }
  if (i >= s.length) return PARTIAL;
  return s[i] === "{" ? { name, length: i } : FAIL;
}

/** `{"name": …, "arguments": {…}}` as a whole (arguments may also be JSON text of an object, or absent). */
function wholeCall(body: string): { name: string; arguments: string } | undefined {
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    return undefined;
  }
  if (!isObject(value) || typeof value.name !== "string") return undefined;
  const args = value.arguments;
  if (args === undefined) return { name: value.name, arguments: "{}" };
  if (isObject(args)) return { name: value.name, arguments: JSON.stringify(args) };
  if (typeof args !== "string") return undefined;
  try {
    return isObject(JSON.parse(args)) ? { name: value.name, arguments: args } : undefined;
  } catch {
    return undefined;
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
