import type { StreamChannel } from "../channel/index.ts";
import type { RequestRecord } from "../runtime/RequestState.ts";
import type { Runtime } from "../runtime/Runtime.ts";
import type { Caller } from "./auth.ts";
import type { ChatFormatter } from "./chat.ts";
import type { ServerMetrics } from "./metrics.ts";
import type { Readiness } from "./Readiness.ts";
import type { ResolvedServerOptions } from "./ServerOptions.ts";

/** One choice of a response being served (a response with `n` choices has `n` of them). */
export interface ServedGeneration {
  channel: StreamChannel;
  /** The key that created it: who may cancel it and see its id. */
  owner: Caller["key"];
  /** The runtime's promise of its end record (the measured cancel latency). */
  ended: Promise<RequestRecord> | undefined;
  /**
   * Cancels every choice of the response this one belongs to that is still running (a DELETE names the
   * response, which goes on while any choice runs). Returns false when none was.
   */
  cancel(reason: string): boolean;
}

/** What every route of one server shares. */
export interface ServerContext {
  /** The runtime; a 503 (`model_loading`, `model_load_failed`) while there is none to answer with. */
  readonly runtime: Runtime;
  readonly readiness: Readiness;
  readonly options: ResolvedServerOptions;
  readonly metrics: ServerMetrics;
  /** Generations being served, by runtime request id (every choice's): shutdown ends each with a terminal chunk. */
  readonly generations: Map<string, ServedGeneration>;
  /** Created on first use: rendering chats may need the model's template. */
  chat(): ChatFormatter;
  /** The served model names, first the main one (`servedModelNames`, else the engine's model name). */
  modelNames(): readonly string[];
  /** True once close() began: new generations get 503. */
  readonly closing: boolean;
}
