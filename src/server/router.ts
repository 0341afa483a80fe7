import type { IncomingMessage, ServerResponse } from "node:http";
import type { AccessRecord } from "./accessLog.ts";
import type { Caller } from "./auth.ts";
import { decodeSegment } from "./requestTarget.ts";

export interface RouteContext {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  /** `:name` segments by name, percent-decoded; a trailing `*` as `params["*"]` (still percent-encoded). */
  params: Record<string, string>;
  /** Who is asking: the key that authenticated the request, if any, and whether it is the admin's. */
  caller: Caller;
  /** Filled by the handler for the access log. */
  access: AccessRecord;
}

export type Handler = (context: RouteContext) => Promise<void> | void;

export interface Route {
  method: string;
  /** The pattern as written, e.g. `/v1/requests/:id`; also the `route` label of the HTTP metrics. */
  pattern: string;
  /** Whether the API key (when one is set) is required. */
  auth: boolean;
  /** Whether the route needs the model: while it loads, a 503 before anything else is done. */
  model: boolean;
  handler: Handler;
}

interface CompiledRoute extends Route {
  segments: readonly string[];
  wildcard: boolean;
}

export type RouteMatch =
  | { kind: "route"; route: Route; params: Record<string, string> }
  /** The path exists with other methods: a 405 with `Allow`. */
  | { kind: "method"; allow: string[] }
  | { kind: "none" };

/** A tiny exact-segment router: `:param` segments and a trailing `*`, nothing else. */
export class Router {
  readonly #routes: CompiledRoute[] = [];

  add(
    method: string,
    pattern: string,
    handler: Handler,
    options: { auth?: boolean; model?: boolean } = {},
  ): this {
    const parts = pattern.split("/").slice(1);
    const wildcard = parts.at(-1) === "*";
    this.#routes.push({
      method,
      pattern,
      auth: options.auth ?? true,
      model: options.model ?? true,
      handler,
      segments: wildcard ? parts.slice(0, -1) : parts,
      wildcard,
    });
    return this;
  }

  /**
   * The route for `method` and `pathname` (still percent-encoded). HEAD is served by the GET route. Throws
   * a 400 `invalid_url` when a `:param` segment of the matching route is not valid percent-encoding.
   */
  match(method: string, pathname: string): RouteMatch {
    const parts = pathname.split("/").slice(1);
    const wanted = method === "HEAD" ? "GET" : method;
    const allow: string[] = [];
    for (const route of this.#routes) {
      const params = matchPath(route, parts);
      if (params === undefined) continue;
      if (route.method === wanted) return { kind: "route", route, params: decodeParams(params) };
      allow.push(route.method);
      if (route.method === "GET") allow.push("HEAD");
    }
    return allow.length > 0 ? { kind: "method", allow } : { kind: "none" };
  }
}

function decodeParams(params: Record<string, string>): Record<string, string> {
  for (const name of Object.keys(params)) {
    if (name !== "*") params[name] = decodeSegment(params[name]!, name);
  }
  return params;
}

function matchPath(route: CompiledRoute, parts: readonly string[]): Record<string, string> | undefined {
  const { segments, wildcard } = route;
  if (wildcard ? parts.length <= segments.length : parts.length !== segments.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i]!;
    const part = parts[i]!;
    if (segment.startsWith(":")) {
      if (part === "") return undefined;
      params[segment.slice(1)] = part;
    } else if (segment !== part) return undefined;
  }
  if (wildcard) params["*"] = parts.slice(segments.length).join("/");
  return params;
}
