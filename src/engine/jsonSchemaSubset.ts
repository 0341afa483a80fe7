import { SluiceError } from "../errors.ts";

/**
 * The JSON Schema subset a grammar can enforce (node-llama-cpp's GBNF JSON schema), and the translation of
 * a client's schema into it. Keywords that only annotate (`title`, `default`, `examples`, ...) are dropped;
 * a keyword that constrains values in a way the grammar cannot (`pattern`, `minimum`, `allOf`, ...) is
 * refused with `invalid_request` naming it and where it is: a schema is never silently weakened.
 *
 * Translations that keep the schema's meaning: `anyOf` becomes an alternation (as `oneOf`), `definitions`
 * becomes `$defs`, and `type: ["object", "null"]`-style unions of structured types become alternations.
 * Narrowings that keep every output valid: every property is generated (`required` or not), an object
 * without `properties` or `additionalProperties` generates `{}`, and a schema that allows any value
 * (`{}`, `true`) generates a string, number, boolean or null.
 */
export function toGrammarSchema(schema: unknown, param = "grammar"): Record<string, unknown> {
  return convert(schema, "#", param) as Record<string, unknown>;
}

const ANNOTATIONS = new Set([
  "title",
  "description",
  "default",
  "examples",
  "$schema",
  "$id",
  "$comment",
  "deprecated",
  "readOnly",
  "writeOnly",
  "strict",
]);

const SUPPORTED = new Set([
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
]);

const SCALAR_TYPES = new Set(["string", "number", "integer", "boolean", "null"]);
const TYPES = new Set([...SCALAR_TYPES, "object", "array"]);
const FORMATS = new Set(["date-time", "time", "date"]);

function refuse(param: string, where: string, what: string): never {
  throw new SluiceError(
    "invalid_request",
    `The JSON schema uses ${what} at ${where}, which the output grammar cannot enforce; remove it or ` +
      "express the constraint with the supported keywords (type, const, enum, oneOf/anyOf, properties, " +
      "additionalProperties, required, items, prefixItems, min/maxItems, min/maxLength, min/maxProperties, " +
      'format "date", "time" or "date-time", $defs and $ref).',
    { param },
  );
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isScalar(value: unknown): boolean {
  return value === null || ["string", "number", "boolean"].includes(typeof value);
}

function nonNegativeInteger(value: unknown): boolean {
  return typeof value === "number" && Number.isInteger(value) && value >= 0;
}

function convert(schema: unknown, where: string, param: string): unknown {
  // `true` and `{}` accept anything: the grammar's any-JSON-value.
  if (schema === true) return {};
  if (!isObject(schema)) refuse(param, where, `${JSON.stringify(schema)} (a schema must be an object)`);
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(schema)) {
    const at = `${where}/${key}`;
    if (key === "description" && typeof value === "string") {
      out.description = value;
      continue;
    }
    if (ANNOTATIONS.has(key)) continue;
    if (!SUPPORTED.has(key)) refuse(param, where, `"${key}"`);
    switch (key) {
      case "type":
        if (typeof value === "string" ? !TYPES.has(value) : !Array.isArray(value) || value.length === 0) {
          refuse(param, at, `type ${JSON.stringify(value)}`);
        }
        if (Array.isArray(value) && value.some((t) => typeof t !== "string" || !TYPES.has(t))) {
          refuse(param, at, `type ${JSON.stringify(value)}`);
        }
        out.type = value;
        break;
      case "const":
        if (!isScalar(value)) refuse(param, at, "a non-scalar const");
        out.const = value;
        break;
      case "enum":
        if (!Array.isArray(value) || value.length === 0 || !value.every(isScalar)) {
          refuse(param, at, "an enum that is not a non-empty list of strings, numbers, booleans or null");
        }
        out.enum = value;
        break;
      case "oneOf":
      case "anyOf":
        if (!Array.isArray(value) || value.length === 0) refuse(param, at, `an empty ${key}`);
        if (out.oneOf !== undefined) refuse(param, at, "both oneOf and anyOf");
        out.oneOf = value.map((s, i) => convert(s, `${at}/${i}`, param));
        break;
      case "properties":
        if (!isObject(value)) refuse(param, at, "properties that are not an object");
        out.properties = Object.fromEntries(
          Object.entries(value).map(([name, s]) => [name, convert(s, `${at}/${name}`, param)]),
        );
        break;
      case "additionalProperties":
        out.additionalProperties = typeof value === "boolean" ? value : convert(value, at, param);
        break;
      case "required":
        if (!Array.isArray(value) || !value.every((v) => typeof v === "string")) {
          refuse(param, at, "required that is not a list of property names");
        }
        out.required = value;
        break;
      case "items":
        if (value === false) refuse(param, at, "items: false");
        out.items = convert(value, at, param);
        break;
      case "prefixItems":
        if (!Array.isArray(value)) refuse(param, at, "prefixItems that is not a list");
        out.prefixItems = value.map((s, i) => convert(s, `${at}/${i}`, param));
        break;
      case "format":
        if (typeof value !== "string" || !FORMATS.has(value))
          refuse(param, at, `format ${JSON.stringify(value)}`);
        out.format = value;
        break;
      case "$defs":
      case "definitions":
        if (!isObject(value)) refuse(param, at, `${key} that is not an object`);
        out.$defs = {
          ...(out.$defs as object | undefined),
          ...Object.fromEntries(
            Object.entries(value).map(([name, s]) => [name, convert(s, `${at}/${name}`, param)]),
          ),
        };
        break;
      case "$ref": {
        const ref = typeof value === "string" ? value.replace(/^#\/definitions\//, "#/$defs/") : "";
        if (!/^#\/\$defs\/[^/]+$/.test(ref))
          refuse(param, at, `$ref ${JSON.stringify(value)} (only "#/$defs/name")`);
        out.$ref = ref;
        break;
      }
      default:
        // min/max counts and lengths.
        if (!nonNegativeInteger(value)) refuse(param, at, `${key} ${JSON.stringify(value)}`);
        out[key] = value;
    }
  }
  if (!["type", "const", "enum", "oneOf", "$ref"].some((key) => key in out)) {
    if ("properties" in out || "additionalProperties" in out) out.type = "object";
    else if ("items" in out || "prefixItems" in out) out.type = "array";
    // Any value: the grammar generates a scalar (valid for the schema, narrower than it).
    else out.type = [...SCALAR_TYPES].filter((t) => t !== "integer");
  }
  return splitTypeUnion(out);
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
