import { Histogram } from "../runtime/Histogram.ts";
import type { Runtime } from "../runtime/Runtime.ts";

const SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * What the server measures itself (HTTP traffic, inter-token latency); everything else on /metrics is read
 * from the runtime's stats when scraped.
 */
export class ServerMetrics {
  /** `route status` → count. */
  readonly #http = new Map<string, number>();
  /** Time between two tokens of the same request: the wall time between consecutive steps that decode it. */
  readonly interTokenSeconds = new Histogram(SECONDS);
  /** Prompt tokens fed to the engine, including each prompt's last chunk (the one that samples). */
  promptTokens = 0;
  /** SSE responses currently open. */
  streamsOpen = 0;
  #lastStepAt: number | undefined;
  /** Slots that sampled in the previous step (double-buffered: no allocation per step). */
  #sampled: Uint8Array;
  #sampledNext: Uint8Array;
  readonly #unsubscribe: () => void;

  constructor(runtime: Runtime) {
    this.#sampled = new Uint8Array(runtime.engine.info.slots);
    this.#sampledNext = new Uint8Array(runtime.engine.info.slots);
    this.#unsubscribe = runtime.observe((event) => {
      if (event.type !== "step") return;
      const now = performance.now();
      const last = this.#lastStepAt;
      this.#lastStepAt = now;
      const sampled = this.#sampled;
      const next = this.#sampledNext.fill(0);
      for (const item of event.items) {
        if (item.sample === undefined) {
          this.promptTokens += item.tokens.length;
          continue;
        }
        next[item.slot] = 1;
        // A sampling item that feeds back one token after the slot sampled in the previous step is a decode:
        // the gap since that step is exactly the wait between two tokens of one request. Anything else
        // is the last chunk of a prompt.
        if (item.tokens.length === 1 && sampled[item.slot] === 1) {
          if (last !== undefined) this.interTokenSeconds.observe((now - last) / 1000);
        } else this.promptTokens += item.tokens.length;
      }
      this.#sampled = next;
      this.#sampledNext = sampled;
    });
  }

  countHttp(route: string, status: number): void {
    const key = `${route} ${status}`;
    this.#http.set(key, (this.#http.get(key) ?? 0) + 1);
  }

  close(): void {
    this.#unsubscribe();
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
      "Prompt tokens fed to the engine since the server started.",
      this.promptTokens,
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
      this.interTokenSeconds,
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
