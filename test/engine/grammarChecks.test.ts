import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { checkGbnf, MAX_GRAMMAR_BYTES } from "../../src/engine/gbnfCheck.ts";
import { toGrammarSchema } from "../../src/engine/jsonSchemaSubset.ts";
import { SluiceError } from "../../src/errors.ts";

function refusal(f: () => unknown): string {
  try {
    f();
  } catch (error) {
    assert.ok(error instanceof SluiceError, String(error));
    assert.equal(error.code, "invalid_request");
    return error.message;
  }
  assert.fail("accepted");
}

describe("GBNF checks before llama.cpp parses", () => {
  test("forms llama.cpp turns into a hang, a terminator or an empty range are refused by name", () => {
    assert.match(
      refusal(() => checkGbnf('root ::= "a"{5,2}')),
      /most \(2\) is below the least \(5\)/,
    );
    assert.match(
      refusal(() => checkGbnf('root ::= "a"{2001}')),
      /at most 2000 repetitions/,
    );
    assert.match(
      refusal(() => checkGbnf('root ::= "\\x00"')),
      /NUL/,
    );
    assert.match(
      refusal(() => checkGbnf('root ::= "a\\u0000b"')),
      /NUL/,
    );
    assert.match(
      refusal(() => checkGbnf("root ::= [\\x00-\\x1F]")),
      /NUL/,
    );
    assert.match(
      refusal(() => checkGbnf("root ::= [z-a]")),
      /empty character range z-a/,
    );
    assert.match(
      refusal(() => checkGbnf(`root ::= "${"a".repeat(MAX_GRAMMAR_BYTES)}"`)),
      /at most 128 KiB/,
    );
    assert.match(
      refusal(() => checkGbnf('root ::= "\ud800"')),
      /surrogate/,
    );
  });

  test("ordinary grammars pass, braces and brackets inside literals and comments included", () => {
    for (const gbnf of [
      'root ::= "a"{2,5} "b"{3} "c"{1,}',
      'root ::= "{5,2}" [a-z] [^"\\\\] # {9,1} [z-a] in a comment\n',
      'root ::= [\\x01-\\x7F]+ "\\n"',
      'root ::= ("Amen" | "Selah") "."',
    ]) {
      checkGbnf(gbnf);
    }
  });
});

describe("JSON schemas: translated into the enforceable subset, or refused by name", () => {
  test("unsatisfiable bounds and counts", () => {
    assert.match(
      refusal(() => toGrammarSchema({ type: "array", minItems: 5, maxItems: 2 })),
      /minItems 5 above maxItems 2/,
    );
    assert.match(
      refusal(() => toGrammarSchema({ type: "string", minLength: 5, maxLength: 2 })),
      /minLength/,
    );
    assert.match(
      refusal(() => toGrammarSchema({ type: "object", minProperties: 3, maxProperties: 1 })),
      /minProperties/,
    );
    assert.match(
      refusal(() => toGrammarSchema({ type: "string", maxLength: 1e9 })),
      /up to 2000/,
    );
    const two = { a: { type: "integer" }, b: { type: "integer" } };
    assert.match(
      refusal(() => toGrammarSchema({ type: "object", properties: two, maxProperties: 1 })),
      /maxProperties 1 below the 2 properties/,
    );
    assert.match(
      refusal(() =>
        toGrammarSchema({ type: "object", properties: two, minProperties: 3, additionalProperties: false }),
      ),
      /minProperties 3 above the 2 properties allowed/,
    );
  });

  test("required names and minProperties beyond the listed properties are generated, as JSON Schema allows", () => {
    const schema = toGrammarSchema({
      type: "object",
      properties: { a: { type: "integer" } },
      required: ["b"],
    });
    assert.deepEqual(Object.keys(schema.properties as object), ["a", "b"]);
    assert.match(
      refusal(() =>
        toGrammarSchema({ type: "object", properties: {}, required: ["b"], additionalProperties: false }),
      ),
      /required "b"/,
    );
    assert.equal(toGrammarSchema({ type: "object", minProperties: 2 }).additionalProperties, true);
  });

  test("$ref: to nothing, or with keywords beside it, is refused; definitions become $defs", () => {
    assert.match(
      refusal(() => toGrammarSchema({ $ref: "#/$defs/nope" })),
      /no \$defs defines/,
    );
    assert.match(
      refusal(() => toGrammarSchema({ $defs: { a: { type: "string" } }, $ref: "#/$defs/a", maxLength: 2 })),
      /keywords beside \$ref/,
    );
    assert.deepEqual(toGrammarSchema({ definitions: { a: { type: "string" } }, $ref: "#/definitions/a" }), {
      $defs: { a: { type: "string" } },
      $ref: "#/$defs/a",
    });
  });

  test("oneOf only when no value can match two branches; anyOf always", () => {
    assert.match(
      refusal(() => toGrammarSchema({ oneOf: [{ type: "integer" }, { type: "number" }] })),
      /oneOf branch/,
    );
    assert.match(
      refusal(() => toGrammarSchema({ oneOf: [{ enum: ["a", "b"] }, { const: "b" }] })),
      /oneOf branch/,
    );
    toGrammarSchema({ anyOf: [{ type: "integer" }, { type: "number" }] });
    toGrammarSchema({ oneOf: [{ type: "string" }, { type: "integer" }, { type: "null" }] });
    toGrammarSchema({ oneOf: [{ enum: ["a"] }, { enum: ["b", "c"] }] });
    // A tagged union, as generated for discriminated types.
    toGrammarSchema({
      oneOf: [
        { type: "object", properties: { kind: { const: "verse" }, n: { type: "integer" } } },
        { type: "object", properties: { kind: { const: "chapter" }, n: { type: "integer" } } },
      ],
      discriminator: { propertyName: "kind" },
    });
  });

  test("values the grammar cannot write exactly are refused", () => {
    assert.match(
      refusal(() => toGrammarSchema({ enum: ["a\u0000"] })),
      /enum/,
    );
    assert.match(
      refusal(() => toGrammarSchema({ const: "\ud800" })),
      /const/,
    );
    assert.match(
      refusal(() => toGrammarSchema({ type: "object", properties: { "\u0000": { type: "string" } } })),
      /property name/,
    );
  });

  test("an integer's bounds are accepted when the grammar's integers lie within them (zod's .int())", () => {
    const safe = { type: "integer", minimum: -Number.MAX_SAFE_INTEGER, maximum: Number.MAX_SAFE_INTEGER };
    assert.deepEqual(toGrammarSchema(safe), { type: "integer" });
    assert.match(
      refusal(() => toGrammarSchema({ type: "integer", minimum: 0 })),
      /"minimum"/,
    );
    assert.match(
      refusal(() => toGrammarSchema({ type: "number", maximum: Number.MAX_SAFE_INTEGER })),
      /"maximum"/,
    );
  });

  test("a schema for any value becomes the scalar union; properties imply an object", () => {
    assert.deepEqual(toGrammarSchema({}), { type: ["string", "number", "boolean", "null"] });
    assert.equal(toGrammarSchema({ properties: { a: {} } }).type, "object");
  });
});
