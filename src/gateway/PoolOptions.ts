import { z } from "zod";
import { SluiceError } from "../errors.ts";
import { integer, parseOptions, positiveNumber } from "../parseOptions.ts";
import { Runtime } from "../runtime/Runtime.ts";
import { ROUTING_POLICIES, type RoutingPolicy } from "./routingPolicy.ts";

/** One upstream: an OpenAI-compatible server (llama-server, vLLM, Sluice). */
export interface UpstreamConfig {
  /**
   * Base URL, `http://host:port` (a trailing `/v1` is allowed and dropped): requests go to
   * `<url>/v1/chat/completions`, health checks to `<url>/health`, models come from `<url>/v1/models`.
   */
  url: string;
  /** Sent to that upstream as `Authorization: Bearer <key>`. Defaults to none. */
  apiKey?: string;
}

/**
 * Options of `UpstreamPool.create`. Every one is checked eagerly: a wrong one throws `SluiceError`
 * `invalid_option` naming it, the value and the rule.
 */
export interface UpstreamPoolOptions {
  /** The upstreams: URLs or `{ url, apiKey }`; at least one, each once. */
  upstreams: readonly (string | UpstreamConfig)[];
  /**
   * A runtime in this process to serve as one more member of the pool (named `local`), reached without HTTP:
   * same routing, retries and metrics, its load the runtime's. It serves completions and chats (rendered
   * with the server's chat formatter); requests with `tools`, `n` > 1, `logprobs` or `echo` go to the
   * remote upstreams. The runtime stays the caller's to close. Defaults to none.
   */
  local?: Runtime;
  /** How an upstream is picked (see `RoutingPolicy`). Defaults to `"prefix_affinity"`. */
  routing?: RoutingPolicy;
  /**
   * Prefix affinity holds while the prefix holder's `outstanding + 1` is at most this times the least
   * loaded upstream's `outstanding + 1`. Defaults to 2.
   */
  affinityLoadFactor?: number;
  /** Characters per prefix block (prompts are matched on whole blocks). Defaults to 64. */
  prefixBlockChars?: number;
  /** Blocks hashed per prompt. Defaults to 64 (4096 characters with the default block). */
  prefixMaxBlocks?: number;
  /** Prefix blocks remembered, least recently used forgotten first. Defaults to 100 000 (about 10 MB). */
  prefixMaxEntries?: number;
  /**
   * Upstreams tried per request, each a different one; a retry happens only before the first token
   * reached the consumer, and never for a request the upstream refused (4xx other than 429). Defaults to 3.
   */
  maxAttempts?: number;
  /** An upstream must answer with headers within this many ms. Defaults to 30 000. */
  headersTimeoutMs?: number;
  /**
   * Most silence (ms) on a stream before it fails with `upstream_timeout`. Sluice sends a keep-alive every
   * second while it reads a prompt; llama-server sends nothing until the first token. Defaults to 60 000.
   */
  idleTimeoutMs?: number;
  /** How often each upstream's `/health` is checked (ms). Defaults to 5000. */
  healthIntervalMs?: number;
  /** A health check slower than this (ms) fails. Defaults to 2000. */
  healthTimeoutMs?: number;
  /** Failed health checks in a row that eject an upstream. Defaults to 2. */
  unhealthyThreshold?: number;
  /** Passed health checks in a row that bring an ejected upstream back. Defaults to 1. */
  healthyThreshold?: number;
  /** Failed requests in a row (5xx, refused connections, timeouts, broken streams) that open an upstream's breaker. Defaults to 5. */
  breakerFailures?: number;
  /** How long an open breaker keeps requests away before one probe (ms). Defaults to 10 000. */
  breakerOpenMs?: number;
}

export interface ResolvedPoolOptions extends Required<Omit<UpstreamPoolOptions, "upstreams" | "local">> {
  upstreams: { url: string; apiKey: string | undefined }[];
  local: Runtime | undefined;
}

const MAX_TIMER_MS = 2_147_483_647;
const ms = integer(1, MAX_TIMER_MS);

const url = z.string({ error: "must be a URL string" }).refine(
  (value) => {
    try {
      const u = new URL(value);
      return (u.protocol === "http:" || u.protocol === "https:") && u.search === "" && u.hash === "";
    } catch {
      return false;
    }
  },
  { error: 'must be an http(s) base URL like "http://10.0.0.5:8080"' },
);

const upstream = z.union(
  [
    url,
    z.strictObject({
      url,
      apiKey: z
        .string()
        .regex(/^[\x21-\x7e]+$/, { error: "must be printable ASCII without spaces" })
        .optional(),
    }),
  ],
  { error: "must be a URL or { url, apiKey }" },
);

const schema = z.strictObject(
  {
    upstreams: z
      .array(upstream, { error: "must be an array of upstream URLs" })
      .min(1, { error: "must list at least one upstream" }),
    local: z.custom<Runtime>((v) => v instanceof Runtime, { error: "must be a Runtime" }).optional(),
    routing: z.enum(ROUTING_POLICIES, { error: `must be one of ${ROUTING_POLICIES.join(", ")}` }).optional(),
    affinityLoadFactor: positiveNumber(1000, "times").optional(),
    prefixBlockChars: integer(1, 1_000_000).optional(),
    prefixMaxBlocks: integer(1, 10_000).optional(),
    prefixMaxEntries: integer(1, 100_000_000).optional(),
    maxAttempts: integer(1, 100).optional(),
    headersTimeoutMs: ms.optional(),
    idleTimeoutMs: ms.optional(),
    healthIntervalMs: ms.optional(),
    healthTimeoutMs: ms.optional(),
    unhealthyThreshold: integer(1, 1000).optional(),
    healthyThreshold: integer(1, 1000).optional(),
    breakerFailures: integer(1, 1000).optional(),
    breakerOpenMs: ms.optional(),
  },
  { error: "must be an object" },
);

/** The base URL as requests are built on it: no trailing slash, no trailing `/v1`. */
export function normalizeBaseUrl(value: string): string {
  const u = new URL(value);
  const path = u.pathname.replace(/\/+$/, "").replace(/\/v1$/, "");
  return `${u.protocol}//${u.host}${path}`;
}

/** Checks every option and applies the defaults; throws `invalid_option`. */
export function resolvePoolOptions(options: unknown): ResolvedPoolOptions {
  const o = parseOptions(schema, options, "UpstreamPool");
  const upstreams = o.upstreams.map((u) =>
    typeof u === "string"
      ? { url: normalizeBaseUrl(u), apiKey: undefined }
      : { url: normalizeBaseUrl(u.url), apiKey: u.apiKey },
  );
  const seen = new Set<string>();
  upstreams.forEach((u, i) => {
    if (seen.has(u.url)) {
      throw new SluiceError(
        "invalid_option",
        `UpstreamPool: upstreams.${i} is ${u.url} again; list each upstream once.`,
        { param: `upstreams.${i}` },
      );
    }
    seen.add(u.url);
  });
  return {
    upstreams,
    local: o.local,
    routing: o.routing ?? "prefix_affinity",
    affinityLoadFactor: o.affinityLoadFactor ?? 2,
    prefixBlockChars: o.prefixBlockChars ?? 64,
    prefixMaxBlocks: o.prefixMaxBlocks ?? 64,
    prefixMaxEntries: o.prefixMaxEntries ?? 100_000,
    maxAttempts: o.maxAttempts ?? 3,
    headersTimeoutMs: o.headersTimeoutMs ?? 30_000,
    idleTimeoutMs: o.idleTimeoutMs ?? 60_000,
    healthIntervalMs: o.healthIntervalMs ?? 5000,
    healthTimeoutMs: o.healthTimeoutMs ?? 2000,
    unhealthyThreshold: o.unhealthyThreshold ?? 2,
    healthyThreshold: o.healthyThreshold ?? 1,
    breakerFailures: o.breakerFailures ?? 5,
    breakerOpenMs: o.breakerOpenMs ?? 10_000,
  };
}
