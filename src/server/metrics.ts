import { Counter, collectDefaultMetrics, Gauge, type Metric, Registry } from "prom-client";
import type { Histogram } from "../runtime/Histogram.ts";
import type { Runtime } from "../runtime/Runtime.ts";
import type { RuntimeStats } from "../runtime/RuntimeStats.ts";

let processRegistry: Registry | undefined;

/**
 * Process metrics (CPU, memory, event-loop lag, GC, handles) collected once per process: the collectors
 * watch the process, not a server, and start observers that are never stopped, so every server shares
 * them rather than adding a set each.
 */
function processMetrics(): Metric[] {
  if (processRegistry === undefined) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry.getMetricsAsArray() as unknown as Metric[];
}

/**
 * /metrics through prom-client: the process's default metrics, the runtime's stats read at scrape time
 * (nothing is counted twice: the runtime owns its figures), and what the server measures itself (HTTP
 * traffic, open streams). Before the runtime is ready its metrics are absent.
 */
export class ServerMetrics {
  /** The process's and the server's own metrics. */
  readonly registry = new Registry();
  /** The runtime's, scraped only once there is a runtime (before that they would all read 0). */
  readonly #runtimeRegistry = new Registry();
  readonly #runtime: () => Runtime | undefined;
  readonly #http: Counter<"route" | "status">;
  readonly #streams: Gauge;

  constructor(runtime: () => Runtime | undefined) {
    for (const metric of processMetrics()) this.registry.registerMetric(metric);
    this.#runtime = runtime;
    const registers = [this.#runtimeRegistry];
    const stats = () => runtime()?.stats;
    const counter = (name: string, help: string, read: (s: RuntimeStats) => number) =>
      new Counter({
        name,
        help,
        registers,
        collect() {
          this.reset();
          const s = stats();
          if (s !== undefined) this.inc(read(s));
        },
      });
    const gauge = (name: string, help: string, read: (r: Runtime) => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          const r = runtime();
          if (r !== undefined) this.set(read(r));
          else this.reset();
        },
      });
    const histogram = (name: string, help: string, read: (s: RuntimeStats) => Histogram) =>
      this.#runtimeRegistry.registerMetric(
        new StatsHistogram(name, help, () => {
          const s = stats();
          return s === undefined ? undefined : read(s);
        }) as unknown as Metric,
      );

    new Counter({
      name: "sluice_requests_total",
      help: "Finished generations by finish reason.",
      labelNames: ["reason"],
      registers,
      collect() {
        this.reset();
        for (const [reason, count] of Object.entries(stats()?.finishedBy ?? {})) this.inc({ reason }, count);
      },
    });
    counter("sluice_requests_submitted_total", "Generations accepted.", (s) => s.submitted);
    gauge("sluice_requests_active", "Generations holding a slot.", (r) => r.load.active);
    gauge("sluice_requests_queued", "Generations waiting for a slot.", (r) => r.load.queued);
    gauge("sluice_slots_total", "Engine slots.", (r) => r.load.slots);
    gauge(
      "sluice_slots_busy",
      "Slots held by a request, including one finished but not yet freed.",
      (r) => r.load.busySlots,
    );
    counter("sluice_tokens_generated_total", "Completion tokens generated.", (s) => s.tokensGenerated);
    counter(
      "sluice_prompt_tokens_total",
      "Prompt tokens evaluated by the engine (cached prefixes not included).",
      (s) => s.promptTokensProcessed,
    );
    counter(
      "sluice_prompt_cache_lookups_total",
      "Requests admitted with the prompt cache on (each looks for a slot holding its prefix).",
      (s) => s.promptCacheLookups,
    );
    counter(
      "sluice_prompt_cache_hits_total",
      "Requests placed on a slot for the prompt prefix it had cached (a match of at least half of that cache).",
      (s) => s.promptCacheHits,
    );
    gauge(
      "sluice_prompt_cache_hit_ratio",
      "Prompt cache hits over lookups since start (0 before any lookup).",
      ({ stats: s }) => (s.promptCacheLookups === 0 ? 0 : s.promptCacheHits / s.promptCacheLookups),
    );
    counter(
      "sluice_prompt_tokens_cached_total",
      "Prompt tokens reused from the prompt cache instead of evaluated.",
      (s) => s.promptTokensCached,
    );
    counter("sluice_engine_steps_total", "Batched engine steps run.", (s) => s.steps);
    counter(
      "sluice_draft_tokens_total",
      "Speculative decoding: draft tokens sent to the engine for verification.",
      (s) => s.draftTokens,
    );
    counter(
      "sluice_draft_tokens_accepted_total",
      "Speculative decoding: draft tokens the target accepted (it sampled the same token there).",
      (s) => s.draftTokensAccepted,
    );
    gauge(
      "sluice_draft_acceptance_ratio",
      "Accepted over drafted tokens since start (0 before any draft).",
      ({ stats: s }) => s.draftAcceptanceRate,
    );
    counter(
      "sluice_tokens_after_cancel_total",
      "Tokens computed for requests in steps started after they were cancelled (0 by design).",
      (s) => s.tokensAfterCancel,
    );
    histogram(
      "sluice_time_to_first_token_seconds",
      "Submission to first generated token.",
      (s) => s.timeToFirstTokenSeconds,
    );
    histogram(
      "sluice_inter_token_latency_seconds",
      "Time between consecutive tokens of a request.",
      (s) => s.interTokenSeconds,
    );
    histogram("sluice_step_duration_seconds", "Duration of one batched engine step.", (s) => s.stepSeconds);
    histogram("sluice_cancel_latency_seconds", "Cancel to slot free.", (s) => s.cancelSeconds);
    histogram(
      "sluice_cancel_latency_steps",
      "Engine steps completed between cancel and slot free.",
      (s) => s.cancelSteps,
    );
    this.#streams = new Gauge({
      name: "sluice_http_streams_open",
      help: "Open SSE responses.",
      registers: [this.registry],
    });
    this.#http = new Counter({
      name: "sluice_http_requests_total",
      help: "HTTP requests by route and status.",
      labelNames: ["route", "status"],
      registers: [this.registry],
    });
  }

  countHttp(route: string, status: number): void {
    this.#http.inc({ route, status: String(status) });
  }

  streamOpened(): void {
    this.#streams.inc();
  }

  streamClosed(): void {
    this.#streams.dec();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** Prometheus text exposition format, version 0.0.4. */
  render(): Promise<string> {
    const registry =
      this.#runtime() === undefined ? this.registry : Registry.merge([this.registry, this.#runtimeRegistry]);
    return registry.metrics();
  }
}

/**
 * A histogram the runtime already keeps in fixed buckets, exposed as it stands at scrape time: prom-client's
 * own Histogram can only observe values, so this is a collector with prom-client's `get()` contract.
 */
class StatsHistogram {
  readonly type = "histogram";
  readonly aggregator = "sum";

  constructor(
    readonly name: string,
    readonly help: string,
    readonly read: () => Histogram | undefined,
  ) {}

  get() {
    const h = this.read();
    const values =
      h === undefined
        ? []
        : [
            ...h.bounds.map((bound, i) => ({
              metricName: `${this.name}_bucket`,
              labels: { le: bound },
              value: h.counts[i]!,
            })),
            { metricName: `${this.name}_bucket`, labels: { le: "+Inf" }, value: h.count },
            { metricName: `${this.name}_sum`, labels: {}, value: h.sum },
            { metricName: `${this.name}_count`, labels: {}, value: h.count },
          ];
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  reset(): void {}
}
