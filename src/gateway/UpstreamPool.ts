import { randomUUID } from "node:crypto";
import { createStreamChannel, type StreamChannel } from "../channel/index.ts";
import { SluiceError } from "../errors.ts";
import { GatewayMetrics } from "./GatewayMetrics.ts";
import { type ResolvedPoolOptions, resolvePoolOptions, type UpstreamPoolOptions } from "./PoolOptions.ts";
import { PrefixIndex, promptText } from "./PrefixIndex.ts";
import { pickUpstream } from "./routingPolicy.ts";
import { type AttemptOutcome, runAttempt, type UpstreamFailure } from "./runAttempt.ts";
import {
  type OpenAIBody,
  ROUTE_PATH,
  settle,
  type UpstreamGenerateOptions,
  upstreamBody,
} from "./streamFromUpstream.ts";
import { Upstream, type UpstreamSnapshot } from "./Upstream.ts";
import { UpstreamWriter } from "./UpstreamWriter.ts";

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
  readonly #live = new Set<{ writer: UpstreamWriter; abort: AbortController }>();
  #turn = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  #checking: Promise<void> | undefined;
  #closed = false;

  private constructor(options: ResolvedPoolOptions) {
    this.options = options;
    this.#upstreams = options.upstreams.map((config) => new Upstream(config, options));
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
   * with `stream: true` and usage asked for). Throws `invalid_request` for a body that cannot be sent and
   * `runtime_closed` after `close()`; every other failure is the channel's terminal chunk (`error`, with an
   * `upstream_*` code).
   */
  generate(body: OpenAIBody, options: PoolGenerateOptions = {}): StreamChannel {
    if (this.#closed) throw new SluiceError("runtime_closed", "The upstream pool is closed.");
    const payload = upstreamBody(body);
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
    writer = new UpstreamWriter(producer);
    const live = { writer, abort };
    this.#live.add(live);
    if (producer.cancelled) abort.abort("cancelled");
    const model = typeof body.model === "string" ? body.model : undefined;
    const hashes = this.options.routing === "prefix_affinity" ? this.#index.hashes(promptText(body)) : [];
    void this.#serve(live.writer, abort.signal, payload, model, hashes, options)
      .catch((error) =>
        live.writer.finish("error", { error: { code: "internal_error", message: String(error) } }),
      )
      .finally(() => this.#live.delete(live));
    return channel;
  }

  async #serve(
    writer: UpstreamWriter,
    signal: AbortSignal,
    payload: string,
    model: string | undefined,
    hashes: number[],
    options: PoolGenerateOptions,
  ): Promise<void> {
    const kind = options.kind ?? "chat";
    const tried = new Set<Upstream>();
    let last: UpstreamFailure | undefined;
    for (let attempt = 0; attempt < this.options.maxAttempts; attempt++) {
      if (signal.aborted) break;
      const upstream = this.#pick(model, hashes, tried);
      if (upstream === undefined) break;
      if (attempt > 0) this.metrics.retries.inc();
      tried.add(upstream);
      const outcome = await this.#attempt(upstream, writer, signal, payload, kind, options);
      if (outcome.kind !== "failed") {
        settle(writer, outcome);
        return;
      }
      last = outcome.failure;
      if (!last.retryable || writer.delivered) break;
    }
    if (signal.aborted) {
      writer.finish("cancelled");
      return;
    }
    if (last?.code === "upstream_rejected" && last.status !== undefined)
      options.onRejected?.(last.status, last.body);
    const error = last ?? {
      code: "upstream_unavailable",
      message: this.#noUpstreamMessage(model),
    };
    writer.finish("error", { error: { code: error.code, message: error.message } });
  }

  async #attempt(
    upstream: Upstream,
    writer: UpstreamWriter,
    signal: AbortSignal,
    payload: string,
    kind: "chat" | "completion",
    options: PoolGenerateOptions,
  ): Promise<AttemptOutcome> {
    const started = performance.now();
    upstream.breaker.begin(started);
    upstream.outstanding++;
    upstream.requests++;
    let firstToken = true;
    let outcome: AttemptOutcome;
    try {
      outcome = await runAttempt(
        {
          baseUrl: upstream.id,
          path: ROUTE_PATH[kind],
          ...(upstream.apiKey !== undefined ? { apiKey: upstream.apiKey } : {}),
          body: payload,
          signal,
          headersTimeoutMs: this.options.headersTimeoutMs,
          idleTimeoutMs: this.options.idleTimeoutMs,
        },
        {
          accepted: () => {
            writer.accepted();
            options.onAccepted?.(upstream.id);
          },
          delta: (text, ids) => {
            if (firstToken && (text.length > 0 || ids.length > 0)) {
              firstToken = false;
              this.metrics.ttft.observe({ upstream: upstream.id }, (performance.now() - started) / 1000);
            }
            writer.push(text, ids);
          },
          model: (name) => options.onModel?.(name),
        },
      );
    } finally {
      upstream.outstanding--;
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

  #pick(model: string | undefined, hashes: number[], tried: ReadonlySet<Upstream>): Upstream | undefined {
    const now = performance.now();
    const open = this.#upstreams.filter((u) => !tried.has(u) && u.eligible(now));
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

  #noUpstreamMessage(model: string | undefined): string {
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
        const ok = (await this.#get(u, "/health")) !== undefined;
        if (this.#closed) return;
        const change = u.health(ok, thresholds);
        if (change === "ejected") {
          this.metrics.ejections.inc({ upstream: u.id, cause: "health" });
          // A restarted upstream comes back with an empty cache.
          this.#index.forget(u.id);
        }
        if (change === "returned") this.metrics.returns.inc({ upstream: u.id, cause: "health" });
        if (ok && (initial || change === "returned" || u.models.size === 0)) {
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
    for (const { writer, abort } of this.#live) {
      writer.finish("error", { error: { code: "runtime_closed", message: "The upstream pool closed." } });
      abort.abort("closed");
    }
    await this.#checking;
  }
}
