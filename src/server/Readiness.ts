import type { Runtime } from "../runtime/Runtime.ts";
import { HttpError } from "./httpErrors.ts";

/**
 * Where the server's runtime is: `loading` (the model is being read; `progress` 0..1) → `ready` or
 * `failed`. One-way: once ready or failed it stays so, and late progress reports are dropped.
 */
export type ReadinessState =
  | { readonly status: "loading"; readonly progress: number }
  | { readonly status: "ready"; readonly runtime: Runtime }
  | { readonly status: "failed"; readonly error: Error };

/** How long a client is told to wait before retrying while the model loads (seconds). */
const RETRY_AFTER_S = "1";

/** The runtime a server answers with, which may still be loading when the server starts listening. */
export class Readiness {
  #state: ReadinessState;

  constructor(source: Runtime | Promise<Runtime>) {
    if (!isPromise(source)) {
      this.#state = { status: "ready", runtime: source };
      return;
    }
    this.#state = { status: "loading", progress: 0 };
    source.then(
      (runtime) => {
        if (this.#state.status === "loading") this.#state = { status: "ready", runtime };
      },
      (error: unknown) => {
        if (this.#state.status !== "loading") return;
        this.#state = { status: "failed", error: error instanceof Error ? error : new Error(String(error)) };
      },
    );
  }

  get state(): ReadinessState {
    return this.#state;
  }

  /** Records load progress (0..1); ignored once loading is over. */
  progress(fraction: number): void {
    if (this.#state.status !== "loading" || !Number.isFinite(fraction)) return;
    this.#state = { status: "loading", progress: Math.min(1, Math.max(0, fraction)) };
  }

  /** The runtime when ready, else undefined. */
  get current(): Runtime | undefined {
    return this.#state.status === "ready" ? this.#state.runtime : undefined;
  }

  /** The runtime, or a 503 in OpenAI's shape saying why there is none yet. */
  get runtime(): Runtime {
    const state = this.#state;
    if (state.status === "ready") return state.runtime;
    if (state.status === "loading") {
      throw new HttpError(
        503,
        "server_error",
        "model_loading",
        `The model is loading (${Math.floor(state.progress * 100)}%); retry shortly.`,
        null,
        { "Retry-After": RETRY_AFTER_S },
      );
    }
    throw new HttpError(
      503,
      "server_error",
      "model_load_failed",
      `The model failed to load: ${state.error.message}`,
    );
  }
}

function isPromise(value: Runtime | Promise<Runtime>): value is Promise<Runtime> {
  return typeof (value as { then?: unknown }).then === "function";
}
