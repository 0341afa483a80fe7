import { SluiceError } from "../errors.ts";

/**
 * The JSON Schema subset a grammar can enforce (node-llama-cpp's GBNF JSON schema), and the translation of
 * a client's schema into it. Keywords that only annotate (`title`, `default`, `examples`, `discriminator`,
 * ...) are dropped; a keyword that constrains values in a way the grammar cannot (`pattern`, `minimum`,
 * `allOf`, ...), a schema no value satisfies (`minItems` above `maxItems`, a required property that
 * `additionalProperties: false` forbids), a `$ref` to nothing or with keywords beside it, and a `oneOf` whose
 * branches may overlap are refused with `invalid_request` naming what and where: a schema is never silently
 * weakened.
 *
 * Translations that keep the schema's meaning: `anyOf` and `oneOf` become alternations, `definitions`
 * becomes `$defs`, `type: ["object", "null"]`-style unions become alternations, a required property that
 * `properties` does not list is added with its `additionalProperties` schema, and an object whose
 * `minProperties` asks for more than it lists gets the additional properties JSON Schema allows by default.
 * Narrowings that keep every output valid: every listed property is generated (`required` or not), an
 * object without `properties` or `additionalProperties` generates `{}`, and a schema that allows any value
 * (`{}`, `true`) generates a string, number, boolean or null.
 */
export function toGrammarSchema(schema: unknown, param = "grammar"): Record<string, unknown> {
  const context: Context = { param, defs: new Set(), refs: [] };
  const out = convert(schema, "#", context) as Record<string, unknown>;
  for (const { name, where } of context.refs) {
    if (!context.defs.has(name)) refuse(context, where, `$ref "#/$defs/${name}", which no $defs defines`);
  }
  return out;
}

interface Context {
  param: string;
  /** Every `$defs` name in the schema (node-llama-cpp resolves a reference against all of them). */
  defs: Set<string>;
  refs: { name: string; where: string }[];
}

const ANNOTATIONS = new Set([
  "title",
  "default",
  "examples",
  "$schema",
  "$id",
  "$comment",
  "deprecated",
  "readOnly",
  "writeOnly",
  "strict",
  "discriminator",
]);

const SUPPORTED = new Set([
  "description",
  "type",
  "const",
  "enum",
  "oneOf",
  "anyOf",
  "properties",
  "additionalProperties",
  "required",
  "minProperties",
  "maxProperties",
  "items",
  "prefixItems",
  "minItems",
  "maxItems",
  "minLength",
  "maxLength",
  "format",
  "$defs",
  "definitions",
  "$ref",
  "minimum",
  "maximum",
]);

/**
 * The integers the grammar writes have at most 15 digits (see `finiteJsonGrammar` in LlamaEngine.ts): an
 * integer's `minimum`/`maximum` at or beyond that bound constrains nothing it can write (zod's `.int()` sends
 * plus and minus `Number.MAX_SAFE_INTEGER`), so it is accepted; any other bound is refused.
 */
export const GRAMMAR_INTEGER_LIMIT = 10 ** 15 - 1;

const SCALAR_TYPES = new Set(["string", "number", "integer", "boolean", "null"]);
const TYPES = new Set([...SCALAR_TYPES, "object", "array"]);
const FORMATS = new Set(["date-time", "time", "date"]);
/** llama.cpp's grammars repeat an item at most this many times (`{m,n}`). */
const MAX_COUNT = 2000;

function refuse(context: Context, where: string, what: string): never {
  throw new SluiceError(
    "invalid_request",
    `The JSON schema has ${what} at ${where}, which the output grammar cannot enforce; change it or ` +
      "express the constraint with the supported keywords (type, const, enum, anyOf/oneOf, properties, " +
      "additionalProperties, required, items, prefixItems, min/maxItems, min/maxLength, min/maxProperties, " +
      'format "date", "time" or "date-time", $defs and $ref).',
    { param: context.param },
  );
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A literal the grammar can write exactly: a scalar whose strings hold no NUL and no lone surrogate. */
function isWritable(value: unknown): boolean {
  if (typeof value === "string") return value.isWellFormed() && !value.includes("\u0000");
  return value === null || typeof value === "number" || typeof value === "boolean";
}

function convert(schema: unknown, where: string, context: Context): unknown {
  // `true` and `{}` accept anything: the grammar's any-JSON-value.
  if (schema === true) return anyValue();
  if (!isObject(schema)) refuse(context, where, `${JSON.stringify(schema)} (a schema must be an object)`);
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(schema)) {
    const at = `${where}/${key}`;
    if (ANNOTATIONS.has(key)) continue;
    if (!SUPPORTED.has(key)) refuse(context, where, `"${key}"`);
    switch (key) {
      case "description":
        if (typeof value === "string") out.description = value;
        break;
      case "type":
        if (typeof value === "string" ? !TYPES.has(value) : !Array.isArray(value) || value.length === 0) {
          refuse(context, at, `type ${JSON.stringify(value)}`);
        }
        if (Array.isArray(value) && value.some((t) => typeof t !== "string" || !TYPES.has(t))) {
          refuse(context, at, `type ${JSON.stringify(value)}`);
        }
        out.type = value;
        break;
      case "const":
        if (!isWritable(value)) refuse(context, at, "a const that is not a writable scalar");
        out.const = value;
        break;
      case "enum":
        if (!Array.isArray(value) || value.length === 0 || !value.every(isWritable)) {
          refuse(context, at, "an enum that is not a non-empty list of strings, numbers, booleans or null");
        }
        out.enum = value;
        break;
      case "oneOf":
      case "anyOf": {
        if (!Array.isArray(value) || value.length === 0) refuse(context, at, `an empty ${key}`);
        if (out.oneOf !== undefined) refuse(context, at, "both oneOf and anyOf");
        const branches = value.map((s, i) => convert(s, `${at}/${i}`, context) as Record<string, unknown>);
        if (key === "oneOf") checkExclusive(branches, at, context);
        out.oneOf = branches;
        break;
      }
      case "properties":
        if (!isObject(value)) refuse(context, at, "properties that are not an object");
        for (const name of Object.keys(value)) {
          if (!isWritable(name)) refuse(context, at, `the property name ${JSON.stringify(name)}`);
        }
        out.properties = Object.fromEntries(
          Object.entries(value).map(([name, s]) => [name, convert(s, `${at}/${name}`, context)]),
        );
        break;
      case "additionalProperties":
        out.additionalProperties = typeof value === "boolean" ? value : convert(value, at, context);
        break;
      case "required":
        if (!Array.isArray(value) || !value.every((v) => typeof v === "string")) {
          refuse(context, at, "required that is not a list of property names");
        }
        out.required = value;
        break;
      case "items":
        if (value === false) refuse(context, at, "items: false");
        out.items = convert(value, at, context);
        break;
      case "prefixItems":
        if (!Array.isArray(value)) refuse(context, at, "prefixItems that is not a list");
        out.prefixItems = value.map((s, i) => convert(s, `${at}/${i}`, context));
        break;
      case "format":
        if (typeof value !== "string" || !FORMATS.has(value)) {
          refuse(context, at, `format ${JSON.stringify(value)}`);
        }
        out.format = value;
        break;
      case "$defs":
      case "definitions":
        if (!isObject(value)) refuse(context, at, `${key} that is not an object`);
        for (const name of Object.keys(value)) context.defs.add(name);
        out.$defs = {
          ...(out.$defs as object | undefined),
          ...Object.fromEntries(
            Object.entries(value).map(([name, s]) => [name, convert(s, `${at}/${name}`, context)]),
          ),
        };
        break;
      case "minimum":
      case "maximum": {
        const loose = key === "minimum" ? -GRAMMAR_INTEGER_LIMIT : GRAMMAR_INTEGER_LIMIT;
        const integer = schema.type === "integer";
        if (typeof value !== "number" || !integer || (key === "minimum" ? value > loose : value < loose)) {
          refuse(context, where, `"${key}"`);
        }
        break;
      }
      case "$ref": {
        const ref = typeof value === "string" ? value.replace(/^#\/definitions\//, "#/$defs/") : "";
        const name = /^#\/\$defs\/([^/]+)$/.exec(ref)?.[1];
        if (name === undefined) refuse(context, at, `$ref ${JSON.stringify(value)} (only "#/$defs/name")`);
        context.refs.push({ name, where: at });
        out.$ref = ref;
        break;
      }
      default:
        // min/max counts and lengths.
        if (typeof value !== "number" || !Number.isInteger(value) || value < 0) {
          refuse(context, at, `${key} ${JSON.stringify(value)}`);
        }
        if (value > MAX_COUNT) refuse(context, at, `${key} ${value} (grammars count up to ${MAX_COUNT})`);
        out[key] = value;
    }
  }
  if ("$ref" in out && Object.keys(out).some((k) => !["$ref", "$defs", "description"].includes(k))) {
    refuse(
      context,
      where,
      "keywords beside $ref (they would not be enforced; move them into the definition)",
    );
  }
  for (const [min, max] of [
    ["minItems", "maxItems"],
    ["minLength", "maxLength"],
    ["minProperties", "maxProperties"],
  ] as const) {
    if ((out[min] as number | undefined) !== undefined && (out[max] as number | undefined) !== undefined) {
      if ((out[min] as number) > (out[max] as number)) {
        refuse(context, where, `${min} ${out[min]} above ${max} ${out[max]} (no value satisfies it)`);
      }
    }
  }
  if (!["type", "const", "enum", "oneOf", "$ref"].some((key) => key in out)) {
    if (
      ["properties", "additionalProperties", "required", "minProperties", "maxProperties"].some(
        (k) => k in out,
      )
    ) {
      out.type = "object";
    } else if (["items", "prefixItems", "minItems", "maxItems"].some((k) => k in out)) out.type = "array";
    else if (["minLength", "maxLength", "format"].some((k) => k in out)) out.type = "string";
    else Object.assign(out, anyValue());
  }
  if (out.type === "object" || (Array.isArray(out.type) && out.type.includes("object"))) {
    completeObject(out, where, context);
  }
  return splitTypeUnion(out);
}

/** A schema for any value the grammar can write alone: a string, number, boolean or null. */
function anyValue(): Record<string, unknown> {
  return { type: ["string", "number", "boolean", "null"] };
}

/**
 * The grammar writes every listed property, and extra ones only when `additionalProperties` allows them:
 * required properties it does not list are listed, and property counts are checked against that.
 */
function completeObject(out: Record<string, unknown>, where: string, context: Context): void {
  const properties = { ...((out.properties as Record<string, unknown> | undefined) ?? {}) };
  const extra = out.additionalProperties;
  for (const name of (out.required as string[] | undefined) ?? []) {
    if (name in properties) continue;
    if (extra === false) {
      refuse(
        context,
        where,
        `required "${name}", which properties does not list and additionalProperties forbids`,
      );
    }
    if (!isWritable(name)) refuse(context, where, `the property name ${JSON.stringify(name)}`);
    properties[name] = isObject(extra) ? extra : anyValue();
  }
  if (Object.keys(properties).length > 0 || out.properties !== undefined) out.properties = properties;
  const listed = Object.keys(properties).length;
  const max = out.maxProperties as number | undefined;
  const min = out.minProperties as number | undefined;
  if (max !== undefined && max < listed) {
    refuse(context, where, `maxProperties ${max} below the ${listed} properties it lists (all are written)`);
  }
  if (min !== undefined && min > listed) {
    if (extra === false) {
      refuse(
        context,
        where,
        `minProperties ${min} above the ${listed} properties allowed (no value satisfies it)`,
      );
    }
    // JSON Schema allows additional properties unless told otherwise: the grammar then writes them.
    out.additionalProperties ??= true;
  }
}

/**
 * `oneOf` means exactly one branch matches; the grammar writes one branch, which is only enough when no value
 * can match two. Accepted when the branches are told apart by type (integer and number overlap), by
 * literal values, or (objects) by a property whose const values differ, as tagged unions are.
 */
function checkExclusive(branches: Record<string, unknown>[], where: string, context: Context): void {
  for (let i = 0; i < branches.length; i++) {
    for (let j = i + 1; j < branches.length; j++) {
      if (mayOverlap(branches[i]!, branches[j]!)) {
        refuse(
          context,
          `${where}/${j}`,
          `a oneOf branch that a value of branch ${i} may also match (the grammar cannot exclude the other ` +
            "branches; use anyOf, or tell them apart by type, by const values or by a property with a const)",
        );
      }
    }
  }
}

function literals(schema: Record<string, unknown>): unknown[] | undefined {
  if ("const" in schema) return [schema.const];
  if (Array.isArray(schema.enum)) return schema.enum;
  return undefined;
}

function typesOf(schema: Record<string, unknown>): Set<string> | undefined {
  const values = literals(schema);
  if (values !== undefined) {
    return new Set(
      values.map((v) =>
        v === null ? "null" : typeof v === "number" ? "number" : typeof v === "string" ? "string" : "boolean",
      ),
    );
  }
  if (typeof schema.type === "string") return new Set([schema.type === "integer" ? "number" : schema.type]);
  if (Array.isArray(schema.type)) return new Set(schema.type.map((t) => (t === "integer" ? "number" : t)));
  return undefined;
}

function mayOverlap(a: Record<string, unknown>, b: Record<string, unknown>): boolean {
  const ta = typesOf(a);
  const tb = typesOf(b);
  if (ta === undefined || tb === undefined) return true;
  if (![...ta].some((t) => tb.has(t))) return false;
  const la = literals(a);
  const lb = literals(b);
  if (la !== undefined && lb !== undefined) return la.some((v) => lb.some((w) => v === w));
  if (a.type === "object" && b.type === "object") {
    const pa = (a.properties as Record<string, Record<string, unknown>> | undefined) ?? {};
    const pb = (b.properties as Record<string, Record<string, unknown>> | undefined) ?? {};
    for (const name of Object.keys(pa)) {
      const va = literals(pa[name] ?? {});
      const vb = name in pb ? literals(pb[name]!) : undefined;
      if (va !== undefined && vb !== undefined && !va.some((v) => vb.some((w) => v === w))) return false;
    }
  }
  return true;
}

/** `type: ["object", "null"]` and the like: an alternation of one schema per type (the grammar's form). */
function splitTypeUnion(schema: Record<string, unknown>): Record<string, unknown> {
  const { type } = schema;
  if (!Array.isArray(type)) return schema;
  if (
    type.every((t) => SCALAR_TYPES.has(t)) &&
    !("format" in schema) &&
    !("minLength" in schema) &&
    !("maxLength" in schema)
  ) {
    return schema;
  }
  const { description, $defs, ...rest } = schema;
  return {
    ...(description !== undefined ? { description } : {}),
    ...($defs !== undefined ? { $defs } : {}),
    oneOf: type.map((t) => ({ ...rest, type: t })),
  };
}
