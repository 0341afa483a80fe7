import { fileURLToPath } from "node:url";
import type { Runtime } from "../runtime/Runtime.ts";

export interface ServerOptions {
  /**
   * Required as `Authorization: Bearer <key>` on every route except `/health` and the playground's static
   * files. Defaults to none: the API is open (it binds 127.0.0.1 by default).
   */
  apiKey?: string;
  /** Largest request body accepted; a larger one gets 413. Defaults to 1 MiB. */
  maxBodyBytes?: number;
  /**
   * Server deadline per generation: when it passes, the request is cancelled and ends with
   * `finish_reason: "cancelled"`. Defaults to none.
   */
  requestTimeoutMs?: number;
  /**
   * An SSE comment (`: keep-alive`) is sent whenever a stream has been silent this long, so clients and
   * proxies do not time out while a long prompt is prefilled. Defaults to 1000.
   */
  keepAliveMs?: number;
  /** The model id served (`/v1/models`, the `model` field of requests and responses). Defaults to the engine's model name. */
  modelName?: string;
  /** A Jinja chat template to use instead of the GGUF's `tokenizer.chat_template`. Defaults to the model's own. */
  chatTemplate?: string;
  /** Folder served at `/` and `/web/*` (the playground). Defaults to the package's `web/` folder. */
  webRoot?: string;
}

export interface ResolvedServerOptions {
  apiKey: string | undefined;
  maxBodyBytes: number;
  requestTimeoutMs: number | undefined;
  keepAliveMs: number;
  modelName: string;
  chatTemplate: string | undefined;
  webRoot: string;
}

const DEFAULT_WEB_ROOT = fileURLToPath(new URL("../../web/", import.meta.url));

function positive(name: string, value: number | undefined, fallback: number | undefined): number | undefined {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0) {
    throw new RangeError(
      `${name} must be a positive number of ${name.endsWith("Ms") ? "ms" : "bytes"}; got ${value}.`,
    );
  }
  return value;
}

export function resolveServerOptions(runtime: Runtime, options: ServerOptions): ResolvedServerOptions {
  if (options.apiKey !== undefined && options.apiKey.length === 0) {
    throw new RangeError("apiKey is empty; leave it out to serve without a key.");
  }
  return {
    apiKey: options.apiKey,
    maxBodyBytes: positive("maxBodyBytes", options.maxBodyBytes, 1024 * 1024)!,
    requestTimeoutMs: positive("requestTimeoutMs", options.requestTimeoutMs, undefined),
    keepAliveMs: positive("keepAliveMs", options.keepAliveMs, 1000)!,
    modelName: options.modelName ?? runtime.engine.info.model,
    chatTemplate: options.chatTemplate,
    webRoot: options.webRoot ?? DEFAULT_WEB_ROOT,
  };
}
