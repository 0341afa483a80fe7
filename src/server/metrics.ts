import type { Histogram } from "../runtime/Histogram.ts";
import type { Runtime } from "../runtime/Runtime.ts";

/**
 * What the server measures itself (HTTP traffic, open streams); everything else on /metrics, token and
 * latency figures included, is the runtime's stats, read when scraped.
 */
export class ServerMetrics {
  /** `route status` → count. */
  readonly #http = new Map<string, number>();
  /** SSE responses currently open. */
  streamsOpen = 0;

  countHttp(route: string, status: number): void {
    const key = `${route} ${status}`;
    this.#http.set(key, (this.#http.get(key) ?? 0) + 1);
  }

  /** Prometheus text exposition format, version 0.0.4. */
  render(runtime: Runtime): string {
    const { stats } = runtime;
    const load = runtime.load;
    const out: string[] = [];
    const metric = (name: string, type: string, help: string) => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    };
    const single = (name: string, type: string, help: string, value: number) => {
      metric(name, type, help);
      out.push(`${name} ${value}`);
    };
    const histogram = (name: string, help: string, h: Histogram) => {
      metric(name, "histogram", help);
      h.bounds.forEach((bound, i) => {
        out.push(`${name}_bucket{le="${bound}"} ${h.counts[i]}`);
      });
      out.push(`${name}_bucket{le="+Inf"} ${h.count}`, `${name}_sum ${h.sum}`, `${name}_count ${h.count}`);
    };

    metric("sluice_requests_total", "counter", "Finished generations by finish reason.");
    for (const [reason, count] of Object.entries(stats.finishedBy)) {
      out.push(`sluice_requests_total{reason="${reason}"} ${count}`);
    }
    single("sluice_requests_submitted_total", "counter", "Generations accepted.", stats.submitted);
    single("sluice_requests_active", "gauge", "Generations holding a slot.", load.active);
    single("sluice_requests_queued", "gauge", "Generations waiting for a slot.", load.queued);
    single("sluice_slots_total", "gauge", "Engine slots.", load.slots);
    single(
      "sluice_slots_busy",
      "gauge",
      "Slots held by a request, including one finished but not yet freed.",
      load.busySlots,
    );
    single("sluice_tokens_generated_total", "counter", "Completion tokens generated.", stats.tokensGenerated);
    single(
      "sluice_prompt_tokens_total",
      "counter",
      "Prompt tokens evaluated by the engine (cached prefixes not included).",
      stats.promptTokensProcessed,
    );
    single(
      "sluice_prompt_cache_lookups_total",
      "counter",
      "Requests admitted with the prompt cache on (each looks for a slot holding its prefix).",
      stats.promptCacheLookups,
    );
    single(
      "sluice_prompt_cache_hits_total",
      "counter",
      "Requests that reused a cached prompt prefix.",
      stats.promptCacheHits,
    );
    single(
      "sluice_prompt_cache_hit_ratio",
      "gauge",
      "Prompt cache hits over lookups since start (0 before any lookup).",
      stats.promptCacheLookups === 0 ? 0 : stats.promptCacheHits / stats.promptCacheLookups,
    );
    single(
      "sluice_prompt_tokens_cached_total",
      "counter",
      "Prompt tokens reused from the prompt cache instead of evaluated.",
      stats.promptTokensCached,
    );
    single("sluice_engine_steps_total", "counter", "Batched engine steps run.", stats.steps);
    single(
      "sluice_tokens_after_cancel_total",
      "counter",
      "Tokens computed for requests in steps started after they were cancelled (0 by design).",
      stats.tokensAfterCancel,
    );
    histogram(
      "sluice_time_to_first_token_seconds",
      "Submission to first generated token.",
      stats.timeToFirstTokenSeconds,
    );
    histogram(
      "sluice_inter_token_latency_seconds",
      "Time between consecutive tokens of a request.",
      stats.interTokenSeconds,
    );
    histogram("sluice_step_duration_seconds", "Duration of one batched engine step.", stats.stepSeconds);
    histogram("sluice_cancel_latency_seconds", "Cancel to slot free.", stats.cancelSeconds);
    histogram(
      "sluice_cancel_latency_steps",
      "Engine steps completed between cancel and slot free.",
      stats.cancelSteps,
    );
    single("sluice_http_streams_open", "gauge", "Open SSE responses.", this.streamsOpen);
    metric("sluice_http_requests_total", "counter", "HTTP requests by route and status.");
    for (const [key, count] of this.#http) {
      const [route, status] = key.split(" ");
      out.push(`sluice_http_requests_total{route="${escapeLabel(route!)}",status="${status}"} ${count}`);
    }
    return `${out.join("\n")}\n`;
  }
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}
