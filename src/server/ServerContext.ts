import type { StreamChannel } from "../channel/index.ts";
import type { RequestRecord } from "../runtime/RequestState.ts";
import type { Runtime } from "../runtime/Runtime.ts";
import type { Caller } from "./auth.ts";
import type { ChatFormatter } from "./chat.ts";
import type { ServerMetrics } from "./metrics.ts";
import type { Readiness } from "./Readiness.ts";
import type { ResolvedServerOptions } from "./ServerOptions.ts";

/** What every route of one server shares. */
export interface ServerContext {
  /** The runtime; a 503 (`model_loading`, `model_load_failed`) while there is none to answer with. */
  readonly runtime: Runtime;
  readonly readiness: Readiness;
  readonly options: ResolvedServerOptions;
  readonly metrics: ServerMetrics;
  /**
   * Generations being served, by request id, with the key that created each (who may cancel it and see
   * its id) and the runtime's promise of its end record (the measured cancel latency): shutdown ends each
   * with a terminal chunk.
   */
  readonly generations: Map<
    string,
    { channel: StreamChannel; owner: Caller["key"]; ended: Promise<RequestRecord> | undefined }
  >;
  /** Created on first use: rendering chats may need the model's template. */
  chat(): ChatFormatter;
  /** The served model names, first the main one (`servedModelNames`, else the engine's model name). */
  modelNames(): readonly string[];
  /** True once close() began: new generations get 503. */
  readonly closing: boolean;
}
