import { type ParseArgsConfig, parseArgs as parseCommandLine } from "node:util";
import { SluiceError } from "../errors.ts";

/** The environment variable that sets a flag: `--max-queue` → `SLUICE_MAX_QUEUE`. */
export function envName(flag: string): string {
  return `SLUICE_${flag.replaceAll("-", "_").toUpperCase()}`;
}

/** Flags that only make sense typed (none of them configures a deployment). */
const NOT_FROM_ENV = new Set(["help"]);

/**
 * `parseArgs` from node:util, and then every option the command line did not give is taken from its
 * `SLUICE_<FLAG>` environment variable: a deployment configures `sluice serve` without a wrapper script, and
 * a flag still wins. Generic over the command's own option table, so a new flag gets its variable with no
 * code here. A string is taken as it is, a repeatable flag is a comma-separated list, a boolean is 1/true or
 * 0/false; an empty variable counts as unset.
 */
export function parseArgs<T extends ParseArgsConfig>(
  config: T,
  env: NodeJS.ProcessEnv = process.env,
): ReturnType<typeof parseCommandLine<T>> {
  const parsed = parseCommandLine({ ...config, tokens: true });
  const given = new Set(
    (parsed.tokens ?? []).flatMap((token) => (token.kind === "option" ? [token.name] : [])),
  );
  const values = parsed.values as Record<string, string | boolean | (string | boolean)[] | undefined>;
  for (const [name, option] of Object.entries(config.options ?? {})) {
    if (given.has(name) || NOT_FROM_ENV.has(name)) continue;
    const variable = envName(name);
    const raw = env[variable];
    if (raw === undefined || raw === "") continue;
    const value = option.type === "boolean" ? envBoolean(variable, raw) : raw;
    values[name] = option.multiple
      ? typeof value === "string"
        ? value
            .split(",")
            .map((part) => part.trim())
            .filter((part) => part !== "")
        : [value]
      : value;
  }
  if (config.tokens) return parsed as never;
  const { tokens: _, ...rest } = parsed;
  return rest as never;
}

function envBoolean(variable: string, raw: string): boolean {
  const value = raw.trim().toLowerCase();
  if (value === "1" || value === "true") return true;
  if (value === "0" || value === "false") return false;
  throw new SluiceError("invalid_option", `${variable} expects 1, true, 0 or false; got "${raw}".`, {
    param: variable,
  });
}
