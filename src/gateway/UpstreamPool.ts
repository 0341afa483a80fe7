import { randomUUID } from "node:crypto";
import { createStreamChannel, type StreamChannel } from "../channel/index.ts";
import { SluiceError } from "../errors.ts";
import type { Runtime } from "../runtime/Runtime.ts";
import { GatewayMetrics } from "./GatewayMetrics.ts";
import type { GenerationTarget } from "./GenerationTarget.ts";
import { LocalMember } from "./LocalMember.ts";
import { type ResolvedPoolOptions, resolvePoolOptions, type UpstreamPoolOptions } from "./PoolOptions.ts";
import { PrefixIndex, promptText } from "./PrefixIndex.ts";
import { pickUpstream } from "./routingPolicy.ts";
import { type AttemptSink, createUpstreamAgents, runAttempt, type UpstreamAgents } from "./runAttempt.ts";
import {
  choicesOf,
  type OpenAIBody,
  oneChoice,
  ROUTE_PATH,
  type UpstreamGenerateOptions,
  upstreamBody,
} from "./streamFromUpstream.ts";
import { Upstream, type UpstreamSnapshot } from "./Upstream.ts";
import { UpstreamWriter } from "./UpstreamWriter.ts";
import type { GenerationKind, UpstreamChoice } from "./upstreamEvent.ts";
import type { AttemptOutcome, UpstreamFailure } from "./upstreamFailure.ts";

/** The id of the local engine among the pool's members. */
export const LOCAL_ID = "local";

/** What the gateway server learns about a request while the pool serves it (all optional). */
export interface PoolGenerateOptions extends UpstreamGenerateOptions {
  /** An upstream accepted the request (answered 200 with an event stream). */
  onAccepted?: (upstream: string) => void;
  /** The upstream refused the request itself (4xx other than 429): its status and error body. */
  onRejected?: (status: number, body: unknown) => void;
  /** The model the upstream named in its chunks. */
  onModel?: (model: string) => void;
}

/**
 * A pool of OpenAI-compatible upstreams behind one `generate()`: each request goes to one upstream picked
 * by the routing policy (prefix affinity bounded by load, least outstanding, or round robin) among those
 * that are healthy, whose breaker is not open, and that serve the requested model (when any lists it), and
 * streams back through a `StreamChannel` with every channel guarantee. A failure before the first token is
 * retried on another upstream (up to `maxAttempts`); after it, the consumer gets an `error` terminal chunk.
 * A cancel aborts the upstream request at once.
 *
 * Health: every `healthIntervalMs` each upstream's `GET /health` is checked; `unhealthyThreshold` failures
 * in a row eject it, `healthyThreshold` passes bring it back (its models are read again then). Requests
 * that fail count toward the upstream's circuit breaker (`breakerFailures` in a row open it for
 * `breakerOpenMs`, then one probe decides).
 */
export class UpstreamPool {
  readonly options: Readonly<ResolvedPoolOptions>;
  readonly metrics: GatewayMetrics;
  readonly #upstreams: Upstream[];
  readonly #index: PrefixIndex;
  readonly #live = new Set<{ target: GenerationTarget; abort: AbortController }>();
  readonly #agents: UpstreamAgents = createUpstreamAgents();
  #turn = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  #checking: Promise<void> | undefined;
  #closed = false;

  private constructor(options: ResolvedPoolOptions) {
    this.options = options;
    this.#upstreams = options.upstreams.map((config) => new Upstream(config, options));
    if (options.local !== undefined) {
      const local = new LocalMember(options.local);
      this.#upstreams.push(new Upstream({ url: LOCAL_ID, apiKey: undefined, local }, options));
    }
    this.#index = new PrefixIndex({
      blockChars: options.prefixBlockChars,
      maxBlocks: options.prefixMaxBlocks,
      maxEntries: options.prefixMaxEntries,
    });
    this.metrics = new GatewayMetrics(() => this.#upstreams);
  }

  /**
   * Checks the options (`invalid_option`), runs the first round of health checks and model listings (an
   * upstream that is down is ejected, not an error: it comes back when its health checks pass), and starts
   * the periodic checks. Call `close()` to stop them.
   */
  static async create(options: UpstreamPoolOptions): Promise<UpstreamPool> {
    const pool = new UpstreamPool(resolvePoolOptions(options));
    await pool.checkHealth({ initial: true });
    pool.#timer = setInterval(() => void pool.checkHealth(), pool.options.healthIntervalMs);
    pool.#timer.unref();
    return pool;
  }

  /** The local engine's runtime, when the pool has one (`local` option). */
  get local(): Runtime | undefined {
    return this.options.local;
  }

  /** Every upstream's state. */
  snapshot(): UpstreamSnapshot[] {
    const now = performance.now();
    return this.#upstreams.map((u) => u.snapshot(now));
  }

  /** Model ids served by at least one healthy upstream, sorted. */
  models(): string[] {
    const ids = new Set<string>();
    for (const u of this.#upstreams) if (u.healthy) for (const id of u.models) ids.add(id);
    return [...ids].sort();
  }

  /** Whether at least one upstream may take a request now. */
  get available(): boolean {
    const now = performance.now();
    return !this.#closed && this.#upstreams.some((u) => u.eligible(now));
  }

  /**
   * Streams one generation for an OpenAI-style body (`kind` picks the route; the body is sent as given,
   * with `stream: true` and usage asked for). Throws `invalid_request` for a body that cannot be sent (not an
   * object, `n` above 1: a channel carries one choice) and `runtime_closed` after `close()`; every other
   * failure is the channel's terminal chunk (`error`, with an `upstream_*` code).
   */
  generate(body: OpenAIBody, options: PoolGenerateOptions = {}): StreamChannel {
    if (this.#closed) throw new SluiceError("runtime_closed", "The upstream pool is closed.");
    upstreamBody(body);
    oneChoice(body);
    const abort = new AbortController();
    let writer: UpstreamWriter | undefined;
    const { channel, producer } = createStreamChannel({
      id: options.id ?? randomUUID(),
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.rejectOnError ? { rejectOnError: true } : {}),
      // The consumer's terminal chunk goes out now; the upstream request is aborted in the same tick.
      onCancel: () => {
        writer?.finish("cancelled");
        abort.abort("cancelled");
      },
    });
    const w = new UpstreamWriter(producer);
    writer = w;
    if (producer.cancelled) abort.abort("cancelled");
    const target: GenerationTarget = {
      get delivered() {
        return w.delivered;
      },
      accepted: (upstream) => {
        w.accepted();
        options.onAccepted?.(upstream);
      },
      chunk: (choices) => w.chunk(choices),
      model: (name) => options.onModel?.(name),
      end: (how) => {
        if (how.kind === "error" && how.rejected !== undefined)
          options.onRejected?.(how.rejected.status, how.rejected.body);
        w.end(how);
      },
    };
    this.dispatch(body, target, { kind: options.kind ?? "chat", signal: abort.signal, abort });
    return channel;
  }

  /**
   * Serves one request into `target`, whatever it renders (the gateway server passes every field of the
   * upstream's chunks through; `generate` keeps text and ids): picks an upstream, attempts, retries before
   * anything was delivered, and ends the target exactly once. `signal` is the consumer's cancel: it aborts
   * the attempt in flight. Throws `invalid_request` for a body that is not an object and `runtime_closed`
   * after `close()`.
   */
  dispatch(
    body: OpenAIBody,
    target: GenerationTarget,
    options: { kind: GenerationKind; signal: AbortSignal; abort?: AbortController },
  ): void {
    if (this.#closed) throw new SluiceError("runtime_closed", "The upstream pool is closed.");
    const payload = upstreamBody(body);
    const abort = options.abort ?? new AbortController();
    if (options.abort === undefined) {
      if (options.signal.aborted) abort.abort("cancelled");
      else options.signal.addEventListener("abort", () => abort.abort("cancelled"), { once: true });
    }
    const live = { target, abort };
    this.#live.add(live);
    const hashes = this.options.routing === "prefix_affinity" ? this.#index.hashes(promptText(body)) : [];
    const request: PooledRequest = {
      body,
      payload,
      kind: options.kind,
      model: typeof body.model === "string" ? body.model : undefined,
      choices: choicesOf(body),
      hashes,
      signal: abort.signal,
    };
    void this.#serve(target, request)
      .catch((error) =>
        target.end({ kind: "error", error: { code: "internal_error", message: String(error) } }),
      )
      .finally(() => this.#live.delete(live));
  }

  async #serve(target: GenerationTarget, request: PooledRequest): Promise<void> {
    const { signal } = request;
    const tried = new Set<Upstream>();
    let last: UpstreamFailure | undefined;
    for (let attempt = 0; attempt < this.options.maxAttempts; attempt++) {
      if (signal.aborted) break;
      const upstream = this.#pick(request, tried);
      if (upstream === undefined) break;
      if (attempt > 0) this.metrics.retries.inc();
      tried.add(upstream);
      const outcome = await this.#attempt(upstream, target, request);
      if (outcome.kind !== "failed") {
        target.end(outcome);
        return;
      }
      last = outcome.failure;
      if (!last.retryable || target.delivered) break;
    }
    if (signal.aborted) {
      target.end({ kind: "aborted" });
      return;
    }
    const error = last ?? {
      code: "upstream_unavailable",
      message: this.#noUpstreamMessage(request),
    };
    target.end({
      kind: "error",
      error: { code: error.code, message: error.message },
      ...(last?.code === "upstream_rejected" && last.status !== undefined
        ? { rejected: { status: last.status, body: last.body } }
        : {}),
    });
  }

  async #attempt(
    upstream: Upstream,
    target: GenerationTarget,
    request: PooledRequest,
  ): Promise<AttemptOutcome> {
    const started = performance.now();
    upstream.breaker.begin(started);
    upstream.inflight++;
    upstream.requests++;
    let firstToken = true;
    const sink: AttemptSink = {
      accepted: () => target.accepted(upstream.id),
      chunk: (choices: readonly UpstreamChoice[]) => {
        if (firstToken) {
          firstToken = false;
          this.metrics.ttft.observe({ upstream: upstream.id }, (performance.now() - started) / 1000);
        }
        target.chunk(choices);
      },
      model: (name) => target.model(name),
    };
    let outcome: AttemptOutcome;
    try {
      outcome =
        upstream.local !== undefined
          ? await upstream.local.attempt(request.body, request.kind, sink, request.signal)
          : await runAttempt(
              {
                baseUrl: upstream.id,
                path: ROUTE_PATH[request.kind],
                ...(upstream.apiKey !== undefined ? { apiKey: upstream.apiKey } : {}),
                body: request.payload,
                signal: request.signal,
                headersTimeoutMs: this.options.headersTimeoutMs,
                idleTimeoutMs: this.options.idleTimeoutMs,
                choices: request.choices,
                agents: this.#agents,
              },
              sink,
            );
    } finally {
      upstream.inflight--;
    }
    this.#account(upstream, outcome);
    return outcome;
  }

  /** Breaker, counters and metrics for one attempt's outcome. */
  #account(upstream: Upstream, outcome: AttemptOutcome): void {
    const id = upstream.id;
    if (outcome.kind === "aborted") {
      upstream.breaker.neutral();
      this.metrics.requests.inc({ upstream: id, result: "cancelled" });
      return;
    }
    if (outcome.kind === "finished") {
      if (upstream.breaker.success()) this.metrics.returns.inc({ upstream: id, cause: "breaker" });
      this.metrics.requests.inc({ upstream: id, result: outcome.finish.reason === "error" ? "error" : "ok" });
      return;
    }
    const { failure } = outcome;
    upstream.failures++;
    this.metrics.requests.inc({ upstream: id, result: "failed" });
    this.metrics.errors.inc({ upstream: id, code: failure.code });
    if (!failure.countsAgainstUpstream) {
      upstream.breaker.neutral();
      return;
    }
    if (upstream.breaker.failure(performance.now()))
      this.metrics.ejections.inc({ upstream: id, cause: "breaker" });
  }

  #pick(request: PooledRequest, tried: ReadonlySet<Upstream>): Upstream | undefined {
    const { model, hashes } = request;
    const now = performance.now();
    // The local engine takes what it serves as a Sluice server would; the rest goes to the remote ones.
    const open = this.#upstreams.filter(
      (u) =>
        !tried.has(u) &&
        u.eligible(now) &&
        (u.local === undefined || u.local.refuses(request.body) === undefined),
    );
    if (open.length === 0) return undefined;
    // Upstreams that list the model, when any does; otherwise the model is the upstream's to judge
    // (llama-server and Sluice answer any name with their one model).
    const serving = model === undefined ? open : open.filter((u) => u.models.has(model));
    const candidates = serving.length > 0 ? serving : open;
    const turn = this.#turn++;
    const matches = hashes.length > 0 ? this.#index.matches(hashes) : [];
    const choice = pickUpstream(
      this.options.routing,
      candidates,
      turn,
      matches,
      this.options.affinityLoadFactor,
    );
    if (this.options.routing === "prefix_affinity") {
      this.metrics.affinity.inc({ result: choice.affinity });
      this.#index.record(hashes, choice.upstream.id);
    }
    return choice.upstream;
  }

  #noUpstreamMessage(request: PooledRequest): string {
    const { model } = request;
    const now = performance.now();
    const down = this.#upstreams.filter((u) => !u.eligible(now)).length;
    return (
      `No upstream can take the request${model !== undefined ? ` (model ${JSON.stringify(model)})` : ""}: ` +
      `${down} of ${this.#upstreams.length} are ejected (failed health checks or an open circuit breaker). Retry shortly.`
    );
  }

  /**
   * One round of health checks on every upstream (`GET /health`, 200 passes), reading `/v1/models` of
   * those that came back (or, on the first round, of all that pass). Resolves when the round is done.
   */
  checkHealth(options: { initial?: boolean } = {}): Promise<void> {
    this.#checking ??= this.#check(options.initial === true).finally(() => {
      this.#checking = undefined;
    });
    return this.#checking;
  }

  async #check(initial: boolean): Promise<void> {
    const thresholds = {
      unhealthy: initial ? 1 : this.options.unhealthyThreshold,
      healthy: initial ? 1 : this.options.healthyThreshold,
    };
    await Promise.all(
      this.#upstreams.map(async (u) => {
        const ok = u.local !== undefined ? u.local.open : (await this.#get(u, "/health")) !== undefined;
        if (this.#closed) return;
        const change = u.health(ok, thresholds);
        if (change === "ejected") {
          this.metrics.ejections.inc({ upstream: u.id, cause: "health" });
          // A restarted upstream comes back with an empty cache.
          this.#index.forget(u.id);
        }
        if (change === "returned") this.metrics.returns.inc({ upstream: u.id, cause: "health" });
        if (ok && u.local === undefined && (initial || change === "returned" || u.models.size === 0)) {
          const list = (await this.#get(u, "/v1/models")) as { data?: { id?: unknown }[] } | undefined;
          const ids = (list?.data ?? [])
            .map((m) => m.id)
            .filter((id): id is string => typeof id === "string");
          if (ids.length > 0) u.models = new Set(ids);
        }
      }),
    );
  }

  /** A GET's JSON on 200 (or `{}` when not JSON), undefined on anything else. */
  async #get(u: Upstream, path: string): Promise<unknown> {
    try {
      const response = await fetch(`${u.id}${path}`, {
        headers: u.apiKey !== undefined ? { authorization: `Bearer ${u.apiKey}` } : {},
        signal: AbortSignal.timeout(this.options.healthTimeoutMs),
      });
      const text = await response.text();
      if (response.status !== 200) return undefined;
      try {
        return JSON.parse(text);
      } catch {
        return {};
      }
    } catch {
      return undefined;
    }
  }

  /**
   * Stops the health checks and ends every generation in flight (`error`, `runtime_closed`), aborting its
   * upstream request. Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    for (const { target, abort } of this.#live) {
      target.end({ kind: "error", error: { code: "runtime_closed", message: "The upstream pool closed." } });
      abort.abort("closed");
    }
    await this.#checking;
    this.#agents.http.destroy();
    this.#agents.https.destroy();
  }
}

/** One request as the pool serves it. */
interface PooledRequest {
  body: OpenAIBody;
  /** The body as sent upstream. */
  payload: string;
  kind: GenerationKind;
  model: string | undefined;
  /** Choices asked for (`n`). */
  choices: number;
  /** Prefix hashes of the prompt (prefix affinity only). */
  hashes: number[];
  signal: AbortSignal;
}
