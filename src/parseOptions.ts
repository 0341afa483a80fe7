import { z } from "zod";
import { SluiceError } from "./errors.ts";

/**
 * Validates an options object against its zod schema, eagerly, before anything is started or loaded.
 * Throws `SluiceError` `invalid_option` naming the first option at fault, the value given and what it
 * must be; `param` is the option's name. Returns the parsed options.
 */
export function parseOptions<S extends z.ZodType>(schema: S, options: unknown, owner: string): z.output<S> {
  const parsed = schema.safeParse(options ?? {});
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const path = issue.path.map(String).join(".");
  if (issue.code === "unrecognized_keys") {
    const keys = issue.keys;
    throw new SluiceError(
      "invalid_option",
      `${owner}: unknown option${keys.length > 1 ? "s" : ""} ${keys.join(", ")}. Known options: ${knownKeys(schema).join(", ")}.`,
      { param: keys[0]! },
    );
  }
  const given = valueAt(options, issue.path);
  // A secret is never repeated back, not even a malformed one (it may be a real key with a typo).
  const secret = /(key|keys|secret)$/i.test(String(issue.path[0] ?? ""));
  const shown = secret
    ? "a value (not shown)"
    : typeof given === "number" || typeof given === "bigint"
      ? String(given)
      : describe(given);
  throw new SluiceError("invalid_option", `${owner}: ${path || "options"} ${issue.message}; got ${shown}.`, {
    param: path || "options",
  });
}

function valueAt(value: unknown, path: readonly PropertyKey[]): unknown {
  let node = value;
  for (const key of path) {
    if (node === null || typeof node !== "object") return undefined;
    node = (node as Record<PropertyKey, unknown>)[key];
  }
  return node;
}

function describe(value: unknown): string {
  if (typeof value === "function") return "a function";
  if (typeof value === "string") return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

function knownKeys(schema: z.ZodType): string[] {
  const shape = (schema as unknown as { shape?: Record<string, unknown> }).shape;
  return shape ? Object.keys(shape) : [];
}

/** An integer option in [min, max]. */
export function integer(min: number, max: number) {
  const rule = `must be an integer from ${min} to ${max}`;
  return z.number({ error: rule }).int({ error: rule }).min(min, { error: rule }).max(max, { error: rule });
}

/** A finite number option in (0, max] (NaN and Infinity refused). */
export function positiveNumber(max: number, unit: string) {
  const rule = `must be a number of ${unit} above 0 and at most ${max}`;
  return z.number({ error: rule }).positive({ error: rule }).max(max, { error: rule });
}

/** A function option. */
export function callback<T extends (...args: never[]) => unknown>() {
  return z.custom<T>((value) => typeof value === "function", { error: "must be a function" });
}

/** An `AbortSignal` option. */
export function abortSignal() {
  return z.instanceof(AbortSignal, { error: "must be an AbortSignal" });
}
