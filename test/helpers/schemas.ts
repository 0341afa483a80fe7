import fc from "fast-check";

/**
 * Leaves of the JSON-schema subset a grammar can enforce: booleans, `scalar` (a type with no bounds to
 * check), bounded strings, enums and consts.
 */
export function schemaLeaf(scalar: "null" | "integer"): fc.Arbitrary<Record<string, unknown>> {
  return fc.oneof(
    fc.constant({ type: "boolean" }),
    fc.constant({ type: scalar }),
    fc.integer({ min: 1, max: 8 }).map((maxLength) => ({ type: "string", maxLength })),
    fc
      .uniqueArray(fc.constantFrom("Moses", "Aaron", "Miriam"), { minLength: 1, maxLength: 3 })
      .map((e) => ({ enum: e })),
    fc.constantFrom("Genesis", 7, false).map((value) => ({ const: value })),
  );
}

/** A leaf, an array of leaves (0-2 to 1-3 items), or `anyOf` two leaves. */
export function schemaNode(
  leaf: fc.Arbitrary<Record<string, unknown>>,
): fc.Arbitrary<Record<string, unknown>> {
  return fc.oneof(
    leaf,
    fc.tuple(leaf, fc.integer({ min: 0, max: 2 })).map(([items, min]) => ({
      type: "array",
      items,
      minItems: min,
      maxItems: min + 1,
    })),
    fc.tuple(leaf, leaf).map((options) => ({ anyOf: options })),
  );
}

/** `[name, schema]` pairs with distinct names from `names`: an object's properties. */
export function propertyEntries<T>(
  names: readonly string[],
  value: fc.Arbitrary<T>,
  { minLength, maxLength }: { minLength: number; maxLength: number },
): fc.Arbitrary<[string, T][]> {
  return fc.uniqueArray(fc.tuple(fc.constantFrom(...names), value), {
    minLength,
    maxLength,
    selector: ([name]) => name,
  });
}

/** A closed object schema over `entries`; every property required unless `required` says otherwise. */
export function objectSchema(
  entries: readonly (readonly [string, unknown])[],
  required: string[] = entries.map(([name]) => name),
) {
  return {
    type: "object",
    properties: Object.fromEntries(entries),
    required,
    additionalProperties: false,
  };
}
