import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { z } from "zod";
import { SluiceError } from "../errors.ts";
import { parseOptions } from "../parseOptions.ts";

/** pino's levels, quietest last. */
export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Where access-log lines go: anything with `write(line)`, such as a stream. */
export interface LogDestination {
  write(line: string): unknown;
}

/**
 * Options of `createServer`. Every one is checked when the server is created: a wrong type, NaN, a number
 * out of range, an empty string or an unknown key throws `SluiceError` `invalid_option` (param: the
 * option's name, or a list entry's path such as `allowedOrigins.1`) with a message that says what to change.
 */
export interface ServerOptions {
  /**
   * Required as `Authorization: Bearer <key>` (or `x-api-key: <key>`) on every route except `/health*` and
   * the playground's static files: one key, or one per client. A request belongs to the key that created it: only that key (or
   * `adminApiKey`) can cancel it or see its id in `/v1/slots`. Printable ASCII without spaces. Defaults to
   * none: the API is open (it binds 127.0.0.1 by default).
   */
  apiKey?: string | readonly string[];
  /**
   * A file of API keys, read when the server is created: one key per line, blank lines and lines starting
   * with `#` ignored, surrounding spaces trimmed. Its keys count as `apiKey`s (after them, in file order).
   * Defaults to none.
   */
  apiKeyFile?: string;
  /**
   * A key that may do everything an `apiKey` may, and also see every request id in `/v1/slots` and cancel
   * any request. Must differ from every `apiKey`. Defaults to none: nobody sees other clients' ids.
   */
  adminApiKey?: string;
  /** Largest request body accepted, in bytes; a larger one gets 413. Defaults to 1 MiB. */
  maxBodyBytes?: number;
  /**
   * Server deadline per generation, in ms: when it passes, the request is cancelled and ends with
   * `finish_reason: "cancelled"`. Defaults to none.
   */
  requestTimeoutMs?: number;
  /**
   * An SSE comment (`: keep-alive`) is sent whenever a stream has been silent this long (ms), so clients
   * and proxies do not time out while a long prompt is prefilled. Defaults to 1000.
   */
  keepAliveMs?: number;
  /**
   * Most time (ms) a client may take to send a request's headers, counted from its first byte (or from
   * the connection's opening); past it the client gets 408 and the connection is closed. At most
   * `bodyTimeoutMs`. Defaults to 10 000.
   */
  headersTimeoutMs?: number;
  /**
   * Most time (ms) a client may take to send a whole request, headers and body, counted from its first
   * byte; past it the client gets 408 and the connection is closed. Also bounds how long the server keeps
   * reading a body it has already refused. Defaults to 30 000.
   */
  bodyTimeoutMs?: number;
  /** A kept-alive connection with no request in progress is closed after this many ms. Defaults to 5000. */
  idleTimeoutMs?: number;
  /**
   * Most open connections. A connection beyond it gets one 503 (`too_many_connections`, `Retry-After`)
   * and is closed; beyond twice this number new connections are closed before anything is read.
   * Defaults to 1024.
   */
  maxConnections?: number;
  /**
   * Web origins (`https://app.example.com`, scheme, host and port only) whose pages may call this server
   * from a browser, besides the server's own pages. A browser request from any other origin gets 403.
   * `["*"]` allows every origin. Such pages may send requests but cannot read the answers (no CORS headers:
   * see `corsOrigins`). Defaults to none: only the server's own pages (the playground).
   */
  allowedOrigins?: readonly string[];
  /**
   * Web origins whose pages may call this server from a browser and read its answers (CORS): they are
   * allowed origins (see `allowedOrigins`), and get `Access-Control-Allow-Origin` on every response and
   * answers to preflight `OPTIONS` requests (methods, the `Authorization`, `Content-Type` and `x-api-key`
   * headers, cached 10 minutes). `["*"]` allows every origin. Defaults to none: only the server's own
   * pages (the playground), which need no CORS.
   */
  corsOrigins?: readonly string[];
  /**
   * Host names, besides `localhost` and IP literals, that requests may name in their `Host` header (any
   * port); a leading dot (`.example.com`) allows the domain and its subdomains. Requests arriving on a
   * loopback address are always checked (a foreign name there can only come from DNS rebinding); other
   * connections only when this list is not empty. A refused host gets 403. `["*"]` turns the check off.
   * Defaults to none.
   */
  allowedHosts?: readonly string[];
  /**
   * The model ids served: `/v1/models` lists each, and a response names the requested one (or the first,
   * when the request names none). Several names are aliases of the one model. Defaults to the engine's
   * model name.
   */
  servedModelNames?: readonly string[];
  /** One served name: the same as `servedModelNames: [modelName]`; not with `servedModelNames`. */
  modelName?: string;
  /**
   * Refuse (404 `model_not_found`) a request whose `model` is not one of `servedModelNames`. Defaults to
   * false: one model is served, so any `model` is accepted (as llama-server does) and answered by it.
   */
  strictModelName?: boolean;
  /**
   * Access log: one JSON line per request (pino) at `info`; `silent` turns it off. Defaults to `silent`
   * (the library does not write to stdout unless asked; `sluice serve` defaults to `info`).
   */
  logLevel?: LogLevel;
  /** Where log lines are written. Defaults to stdout. */
  logDestination?: LogDestination;
  /** A Jinja chat template to use instead of the GGUF's `tokenizer.chat_template`. Defaults to the model's own. */
  chatTemplate?: string;
  /**
   * Send only OpenAI's `finish_reason` values, for strictly typed clients: a cancelled generation (DELETE,
   * deadline, shutdown) and a failed one (followed by the error event) say `stop`; the `sluice.reason` of
   * the final chunk still says `cancelled` or `error`. Defaults to false: `cancelled` and `error` are sent.
   */
  strictFinishReason?: boolean;
  /** Folder served at `/` and `/web/*` (the playground). Defaults to the package's `web/` folder. */
  webRoot?: string;
}

export interface ResolvedServerOptions {
  /** Empty: no key is required. */
  apiKeys: readonly string[];
  adminApiKey: string | undefined;
  maxBodyBytes: number;
  requestTimeoutMs: number | undefined;
  keepAliveMs: number;
  headersTimeoutMs: number;
  bodyTimeoutMs: number;
  idleTimeoutMs: number;
  maxConnections: number;
  /** Normalized origins (`new URL(o).origin`), or `["*"]`; includes `corsOrigins`. */
  allowedOrigins: readonly string[];
  /** Normalized origins, or `["*"]`. */
  corsOrigins: readonly string[];
  /** Lower-cased names, or `["*"]`. */
  allowedHosts: readonly string[];
  /** Empty: the engine's model name, once the model is loaded. */
  servedModelNames: readonly string[];
  strictModelName: boolean;
  chatTemplate: string | undefined;
  strictFinishReason: boolean;
  webRoot: string;
  logLevel: LogLevel;
  logDestination: LogDestination | undefined;
}

const DEFAULT_WEB_ROOT = fileURLToPath(new URL("../../web/", import.meta.url));

const DEFAULTS = {
  maxBodyBytes: 1024 * 1024,
  keepAliveMs: 1000,
  headersTimeoutMs: 10_000,
  bodyTimeoutMs: 30_000,
  idleTimeoutMs: 5000,
  maxConnections: 1024,
} as const;

/** Node's timers overflow past this (and then fire at once). */
const MAX_TIMER_MS = 2_147_483_647;

const milliseconds = z
  .number({ error: "must be a number of milliseconds" })
  .int({ error: "must be a whole number of milliseconds" })
  .min(1, { error: "must be at least 1 ms" })
  .max(MAX_TIMER_MS, { error: `must be at most ${MAX_TIMER_MS} ms (about 24 days)` });

const count = (unit: string) =>
  z
    .number({ error: `must be a number of ${unit}` })
    .int({ error: `must be a whole number of ${unit}` })
    .min(1, { error: `must be at least 1` })
    .max(Number.MAX_SAFE_INTEGER, { error: "is too large" });

const text = z
  .string({ error: "must be a string" })
  .refine((s) => s.trim().length > 0, { error: "must not be empty; leave it out to use the default" });

const key = z
  .string({ error: "must be a string" })
  .min(1, { error: "is empty; leave it out to serve without a key" })
  .regex(/^[\x21-\x7e]+$/, {
    error: "must be printable ASCII without spaces (it travels in an Authorization header)",
  });

const origin = z.string({ error: "must be a string" }).refine(isOrigin, {
  error: 'must be an origin: scheme, host and port only, like "https://app.example.com" (or "*" for any)',
});

const hostName = z.string({ error: "must be a string" }).refine(isHostName, {
  error: 'must be a host name without scheme or port, like "sluice.example.com" or ".example.com" (or "*")',
});

const schema = z
  .strictObject(
    {
      // One key is a list of one.
      apiKey: z
        .preprocess(
          (value) => (typeof value === "string" ? [value] : value),
          z
            .array(key, { error: "must be a key (a string) or an array of keys" })
            .min(1, { error: "is an empty list; leave it out to serve without a key" })
            .refine((keys) => new Set(keys).size === keys.length, { error: "lists a key twice" }),
        )
        .optional(),
      adminApiKey: key.optional(),
      apiKeyFile: text.optional(),
      maxBodyBytes: count("bytes").optional(),
      requestTimeoutMs: milliseconds.optional(),
      keepAliveMs: milliseconds.optional(),
      headersTimeoutMs: milliseconds.optional(),
      bodyTimeoutMs: milliseconds.optional(),
      idleTimeoutMs: milliseconds.optional(),
      maxConnections: count("connections").optional(),
      allowedOrigins: z.array(origin, { error: "must be an array of origins" }).optional(),
      corsOrigins: z.array(origin, { error: "must be an array of origins" }).optional(),
      allowedHosts: z.array(hostName, { error: "must be an array of host names" }).optional(),
      servedModelNames: z
        .array(text, { error: "must be an array of model names" })
        .min(1, { error: "is an empty list; leave it out to use the model's own name" })
        .refine((names) => new Set(names).size === names.length, { error: "lists a name twice" })
        .optional(),
      modelName: text.optional(),
      strictModelName: z.boolean({ error: "must be true or false" }).optional(),
      logLevel: z.enum(LOG_LEVELS, { error: `must be one of ${LOG_LEVELS.join(", ")}` }).optional(),
      logDestination: z
        .custom<LogDestination>(
          (value) =>
            typeof value === "object" &&
            value !== null &&
            typeof (value as { write?: unknown }).write === "function",
          { error: "must have a write(line) method, like a stream" },
        )
        .optional(),
      chatTemplate: text.optional(),
      strictFinishReason: z.boolean({ error: "must be true or false" }).optional(),
      webRoot: text.optional(),
    },
    { error: "must be an object" },
  )
  .superRefine((options, context) => {
    if (options.modelName !== undefined && options.servedModelNames !== undefined) {
      context.addIssue({
        code: "custom",
        path: ["modelName"],
        message: "is one served name: give servedModelNames alone (its first entry is the main name)",
      });
    }
    if (options.adminApiKey !== undefined && options.apiKey?.includes(options.adminApiKey)) {
      context.addIssue({
        code: "custom",
        path: ["adminApiKey"],
        message: "must differ from every apiKey, or every client with that key would be an admin",
      });
    }
    const headers = options.headersTimeoutMs ?? DEFAULTS.headersTimeoutMs;
    const body = options.bodyTimeoutMs ?? DEFAULTS.bodyTimeoutMs;
    // The headers are part of the request: their time cannot be longer than the whole request's.
    if (headers > body && options.headersTimeoutMs !== undefined) {
      context.addIssue({
        code: "custom",
        path: ["headersTimeoutMs"],
        message: `must be at most bodyTimeoutMs (${body} ms), the time for the whole request`,
      });
    } else if (headers > body) {
      context.addIssue({
        code: "custom",
        path: ["bodyTimeoutMs"],
        message: `must be at least headersTimeoutMs (${headers} ms by default); lower that too`,
      });
    }
  });

/**
 * Checks every option (see `ServerOptions`) without a runtime, so that a command line can fail before it
 * loads a model (`apiKeyFile` is read too); one `apiKey` comes back as a list of one. Throws `SluiceError` `invalid_option`.
 */
export function checkServerOptions(options: unknown): ServerOptions {
  const checked = parseOptions(schema, options, "createServer");
  if (checked.apiKeyFile !== undefined) readKeyFile(checked.apiKeyFile);
  return checked;
}

/**
 * Checks every option (see `ServerOptions`), reads `apiKeyFile` and applies the defaults. Throws
 * `invalid_option`.
 */
export function resolveServerOptions(options: unknown): ResolvedServerOptions {
  const o = parseOptions(schema, options, "createServer");
  const origins = (list: readonly string[] | undefined) =>
    list?.includes("*") ? ["*"] : (list ?? []).map(normalizeOrigin);
  const corsOrigins = origins(o.corsOrigins);
  const allowedOrigins = origins(o.allowedOrigins);
  const keys = [...(o.apiKey ?? []), ...(o.apiKeyFile === undefined ? [] : readKeyFile(o.apiKeyFile))];
  if (o.adminApiKey !== undefined && keys.includes(o.adminApiKey)) {
    throw new SluiceError(
      "invalid_option",
      "createServer: apiKeyFile holds the adminApiKey; it must differ from every API key.",
      { param: "apiKeyFile" },
    );
  }
  return {
    apiKeys: [...new Set(keys)],
    adminApiKey: o.adminApiKey,
    maxBodyBytes: o.maxBodyBytes ?? DEFAULTS.maxBodyBytes,
    requestTimeoutMs: o.requestTimeoutMs,
    keepAliveMs: o.keepAliveMs ?? DEFAULTS.keepAliveMs,
    headersTimeoutMs: o.headersTimeoutMs ?? DEFAULTS.headersTimeoutMs,
    bodyTimeoutMs: o.bodyTimeoutMs ?? DEFAULTS.bodyTimeoutMs,
    idleTimeoutMs: o.idleTimeoutMs ?? DEFAULTS.idleTimeoutMs,
    maxConnections: o.maxConnections ?? DEFAULTS.maxConnections,
    // A page that may read the answers may send the requests.
    allowedOrigins:
      allowedOrigins[0] === "*" || corsOrigins[0] === "*"
        ? ["*"]
        : [...new Set([...allowedOrigins, ...corsOrigins])],
    corsOrigins,
    allowedHosts: o.allowedHosts?.includes("*") ? ["*"] : (o.allowedHosts ?? []).map((h) => h.toLowerCase()),
    servedModelNames: o.servedModelNames ?? (o.modelName === undefined ? [] : [o.modelName]),
    strictModelName: o.strictModelName ?? false,
    chatTemplate: o.chatTemplate,
    strictFinishReason: o.strictFinishReason ?? false,
    webRoot: o.webRoot ?? DEFAULT_WEB_ROOT,
    logLevel: o.logLevel ?? "silent",
    logDestination: o.logDestination,
  };
}

/** The keys of a key file: one per line; blank lines and `#` comments skipped. */
export function readKeyFile(path: string): string[] {
  let content: string;
  try {
    content = readFileSync(path, "utf8");
  } catch (error) {
    throw new SluiceError(
      "invalid_option",
      `createServer: apiKeyFile cannot be read (${(error as Error).message}); give a readable file of keys, one per line.`,
      { param: "apiKeyFile", cause: error },
    );
  }
  const keys: string[] = [];
  content.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    if (!key.safeParse(line).success) {
      // The key itself is never shown: it may be a real one with a typo.
      throw new SluiceError(
        "invalid_option",
        `createServer: apiKeyFile line ${index + 1} is not a key: keys are printable ASCII without spaces.`,
        { param: "apiKeyFile" },
      );
    }
    keys.push(line);
  });
  if (keys.length === 0) {
    throw new SluiceError(
      "invalid_option",
      `createServer: apiKeyFile ${JSON.stringify(path)} holds no key; put one key per line.`,
      { param: "apiKeyFile" },
    );
  }
  return keys;
}

function isOrigin(value: string): boolean {
  if (value === "*") return true;
  try {
    const url = new URL(value);
    // Nothing beyond the origin: a path, query or credentials would never match a browser's Origin.
    return (
      (url.protocol === "http:" || url.protocol === "https:") &&
      url.pathname === "/" &&
      !/[?#]/.test(value) &&
      url.username === "" &&
      url.password === ""
    );
  } catch {
    return false;
  }
}

function normalizeOrigin(value: string): string {
  return new URL(value).origin;
}

function isHostName(value: string): boolean {
  return (
    value === "*" || /^\.?[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_](?:[a-z0-9_-]{0,62}))*\.?$/i.test(value)
  );
}
