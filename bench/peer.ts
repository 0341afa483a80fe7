/**
 * Sluice's server against llama.cpp's own `llama-server`, the server a user would otherwise run. Both are
 * child processes on loopback with the same GGUF, 4 slots, one llama.cpp thread each (Sluice `--threads 1`;
 * llama-server `--threads 1 --threads-batch 1`), greedy sampling and the same token-id prompts, read as SSE
 * from `POST /v1/completions` by this process. Runs alternate between the two servers (A B, then B A), and
 * every figure is printed as a ratio Sluice ÷ llama-server from this one run:
 *
 * - throughput: aggregate tokens/s with 1, 4, 8 and 16 concurrent streams; TTFT and inter-token p50/p99;
 * - a long prompt alone: its time to first token (how fast each side reads a prompt);
 * - abort during a long prefill (the client closes the connection): → the next request's first token, and
 *   → the slot shown free (Sluice `GET /v1/slots`, llama-server `GET /slots`);
 * - stall: stream A decodes while request B's long prompt is read: A's longest gap, and B's TTFT.
 *
 * Every prompt starts with a serial number no earlier request had, so llama-server's per-slot prompt cache
 * (on by default) and any prefix reuse on Sluice's side find nothing to reuse: both read every prompt.
 *
 * llama-server is built from the llama.cpp source node-llama-cpp ships (`npm run build:llama-server`).
 *
 *   node --import tsx bench/peer.ts [--quick] [--model bundled,edge] [--threads N] [--seed N]
 * Both models by default; --quick runs the bundled one only, in a few minutes.
 */
import { execFile } from "node:child_process";
import { request } from "node:http";
import { basename } from "node:path";
import { promisify } from "node:util";
import { KJV, SHORT_PROMPTS } from "./corpus.ts";
import { gaps } from "./drivers.ts";
import {
  benchArgs,
  type Distribution,
  describeMachine,
  distribution,
  formatMs,
  machine,
  median,
  pairedRatio,
  printTable,
  type Row,
  seededRandom,
  writeResults,
} from "./harness.ts";
import {
  findLlamaBinaries,
  type LlamaBinaries,
  type ServerProcess,
  startLlamaServer,
  startSluiceServer,
} from "./llamaServer.ts";
import { type BenchModelName, benchModel, type LoadedModel, loadModel } from "./models.ts";

const SLOTS = 4;
const LEVELS = [1, 4, 8, 16];
/** Stall: A streams this many tokens before B arrives, and this many after B's first token. */
const LEAD_TOKENS = 8;
const TAIL_TOKENS = 4;
/** Tokens the aborted long request asks for: more than either side streams before it sees the abort. */
const VICTIM_TOKENS = 64;

interface Plan {
  /**
   * Tokens per slot on both sides. llama-server caps a slot at the model's training context, 512 for the
   * bundled model, so Sluice gets the same 512 there; the edge model gets the 1024 of the other benchmarks.
   */
  contextPerSlot: number;
  /** Tokens (BOS included) of the long prompt: a prefill of a few hundred ms (bundled) to seconds (edge). */
  longPrompt: number;
  tokensPerStream: number;
  rounds: number;
  /** Abort trials per kind (next request, slot free) and side; stall trials per side. */
  trials: number;
}

function planFor(name: BenchModelName, quick: boolean): Plan {
  if (name === "edge")
    return quick
      ? { contextPerSlot: 1024, longPrompt: 128, tokensPerStream: 16, rounds: 1, trials: 2 }
      : { contextPerSlot: 1024, longPrompt: 256, tokensPerStream: 32, rounds: 2, trials: 4 };
  return quick
    ? { contextPerSlot: 512, longPrompt: 448, tokensPerStream: 32, rounds: 1, trials: 3 }
    : { contextPerSlot: 512, longPrompt: 448, tokensPerStream: 128, rounds: 5, trials: 8 };
}

// ---------------------------------------------------------------------------------------------------------
// Prompts: token ids with BOS, each beginning with a serial number never used before in this run.

class Prompts {
  #serial = 0;
  readonly #kjv: number[];

  constructor(readonly loaded: LoadedModel) {
    this.#kjv = loaded.tokenize(KJV);
  }

  #head(text: string): number[] {
    const bos = this.loaded.bos;
    const ids = this.loaded.tokenize(`${++this.#serial} ${text}`);
    return bos === undefined ? ids : [bos, ...ids];
  }

  short(index: number): number[] {
    return this.#head(SHORT_PROMPTS[index % SHORT_PROMPTS.length]!);
  }

  /** Exactly `length` ids: a unique head, then KJV text from a point that moves with the serial. */
  long(length: number): number[] {
    const ids = this.#head("Genesis 1\n");
    const offset = this.#serial * 131;
    for (let i = 0; ids.length < length; i++) ids.push(this.#kjv[(offset + i) % this.#kjv.length]!);
    return ids;
  }
}

// ---------------------------------------------------------------------------------------------------------
// An SSE client for POST /v1/completions, the same for both servers.

interface StreamTrace {
  submitAt: number;
  /** Arrival of every event that carried text: one per token unless a character spans tokens. */
  tokenTimes: number[];
  text: string;
  /** From the usage the server reports at the end; undefined when the stream did not get there. */
  completionTokens: number | undefined;
  aborted: boolean;
}

interface StreamHandle {
  trace: StreamTrace;
  done: Promise<StreamTrace>;
  /** Closes the connection: both servers treat a client going away as a cancel. */
  abort(): void;
}

function completionBody(prompt: readonly number[], maxTokens: number) {
  return {
    prompt,
    max_tokens: maxTokens,
    temperature: 0,
    ignore_eos: true,
    stream: true,
    stream_options: { include_usage: true },
  };
}

function openStream(
  base: string,
  body: ReturnType<typeof completionBody>,
  onToken?: (trace: StreamTrace) => void,
): StreamHandle {
  const payload = JSON.stringify(body);
  const trace: StreamTrace = {
    submitAt: 0,
    tokenTimes: [],
    text: "",
    completionTokens: undefined,
    aborted: false,
  };
  // A fresh connection per request (no keep-alive): an idle kept-alive socket would hold one of
  // llama-server's HTTP threads, and a fresh loopback connect costs both sides the same.
  const req = request(`${base}/v1/completions`, {
    method: "POST",
    agent: false,
    headers: { "content-type": "application/json", "content-length": Buffer.byteLength(payload) },
  });
  const done = new Promise<StreamTrace>((resolve, reject) => {
    let settled = false;
    const settle = (error?: Error) => {
      if (settled) return;
      settled = true;
      if (error && !trace.aborted) reject(error);
      else resolve(trace);
    };
    req.on("error", settle);
    req.on("response", (res) => {
      res.setEncoding("utf8");
      if (res.statusCode !== 200) {
        let text = "";
        res.on("data", (part: string) => {
          text += part;
        });
        res.on("end", () => settle(new Error(`HTTP ${res.statusCode} from ${base}: ${text}`)));
        return;
      }
      let buffer = "";
      res.on("data", (part: string) => {
        const now = performance.now();
        buffer += part;
        for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          for (const line of event.split("\n")) {
            if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
            const message = JSON.parse(line.slice(6)) as {
              choices?: { text?: string }[];
              usage?: { completion_tokens?: number } | null;
              error?: unknown;
            };
            if (message.error !== undefined)
              throw new Error(`stream error: ${JSON.stringify(message.error)}`);
            const text = message.choices?.[0]?.text;
            if (typeof text === "string" && text !== "") {
              trace.tokenTimes.push(now);
              trace.text += text;
              onToken?.(trace);
            }
            if (message.usage?.completion_tokens !== undefined)
              trace.completionTokens = message.usage.completion_tokens;
          }
        }
      });
      res.on("error", settle);
      res.on("close", () => settle());
    });
  });
  trace.submitAt = performance.now();
  req.end(payload);
  return {
    trace,
    done,
    abort() {
      trace.aborted = true;
      req.destroy();
    },
  };
}

function getText(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (part: string) => {
        text += part;
      });
      res.on("end", () =>
        res.statusCode === 200 ? resolve(text) : reject(new Error(`HTTP ${res.statusCode} from ${url}`)),
      );
    });
    req.on("error", reject);
    req.end();
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------------------
// The two servers behind one shape.

type SideName = "sluice" | "llama";

interface Peer {
  side: SideName;
  server: ServerProcess;
  /** Slots serving a request (Sluice counts one that is still being given back). */
  busySlots(): Promise<number>;
  /** Engine time per decode step with one stream, from the server's own counters, and its label. */
  stepCounters(): Promise<{ ms: number; steps: number }>;
}

function prometheus(text: string): Map<string, number> {
  const values = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    values.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return values;
}

async function startSluice(model: string, threads: number, contextPerSlot: number): Promise<Peer> {
  const server = await startSluiceServer({ model, slots: SLOTS, threads, contextPerSlot });
  return {
    side: "sluice",
    server,
    async busySlots() {
      const view = JSON.parse(await getText(`${server.url}/v1/slots`)) as { slots: { state: string }[] };
      return view.slots.filter((slot) => slot.state !== "free").length;
    },
    async stepCounters() {
      const m = prometheus(await getText(`${server.url}/metrics`));
      return {
        ms: (m.get("sluice_step_duration_seconds_sum") ?? Number.NaN) * 1000,
        steps: m.get("sluice_step_duration_seconds_count") ?? Number.NaN,
      };
    },
  };
}

async function startLlama(
  binaries: LlamaBinaries,
  model: string,
  threads: number,
  contextPerSlot: number,
): Promise<Peer & { args: string[] }> {
  const server = await startLlamaServer({ binaries, model, slots: SLOTS, threads, contextPerSlot });
  return {
    side: "llama",
    server,
    args: server.args,
    async busySlots() {
      const slots = JSON.parse(await getText(`${server.url}/slots`)) as { is_processing: boolean }[];
      return slots.filter((slot) => slot.is_processing).length;
    },
    async stepCounters() {
      // Generation time summed over requests, and the tokens generated: per token at one stream.
      const m = prometheus(await getText(`${server.url}/metrics`));
      return {
        ms: (m.get("llamacpp:tokens_predicted_seconds_total") ?? Number.NaN) * 1000,
        steps: m.get("llamacpp:tokens_predicted_total") ?? Number.NaN,
      };
    },
  };
}

/** Polls the slot view until every slot is free; resolves with when the answer saying so arrived. */
async function untilIdle(peer: Peer, timeoutMs = 60_000): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const busy = await peer.busySlots();
    const at = performance.now();
    if (busy === 0) return at;
    if (at > deadline) throw new Error(`${peer.side}: ${busy} slot(s) still busy after ${timeoutMs} ms`);
    await sleep(5);
  }
}

/** Runs `fn` for both sides in the round's order: Sluice first on even rounds, llama-server on odd ones. */
async function alternate<T>(
  round: number,
  peers: Record<SideName, Peer>,
  fn: (peer: Peer) => Promise<T>,
): Promise<Record<SideName, T>> {
  if (round % 2 === 0) {
    const sluice = await fn(peers.sluice);
    return { sluice, llama: await fn(peers.llama) };
  }
  const llama = await fn(peers.llama);
  return { sluice: await fn(peers.sluice), llama };
}

// ---------------------------------------------------------------------------------------------------------
// Scenarios.

interface RunStats {
  wallMs: number;
  tokens: number;
  ttft: number[];
  itl: number[];
  texts: string[];
}

async function throughputRun(peer: Peer, prompts: number[][], maxTokens: number): Promise<RunStats> {
  const started = performance.now();
  const traces = await Promise.all(
    prompts.map((prompt) => openStream(peer.server.url, completionBody(prompt, maxTokens)).done),
  );
  const wallMs = performance.now() - started;
  await untilIdle(peer);
  return {
    wallMs,
    tokens: traces.reduce((sum, t) => sum + (t.completionTokens ?? t.tokenTimes.length), 0),
    ttft: traces.map((t) => t.tokenTimes[0]! - t.submitAt),
    itl: traces.flatMap((t) => gaps(t.tokenTimes)),
    texts: traces.map((t) => t.text),
  };
}

interface LevelSide {
  tokensPerSecond: number;
  wallMs: number[];
  ttft: Distribution;
  itl: Distribution;
}

interface Level {
  streams: number;
  sluice: LevelSide;
  llama: LevelSide;
  /** Sluice tokens/s ÷ llama-server tokens/s: median of the per-round ratios. */
  ratio: number;
}

function levelSide(runs: RunStats[]): LevelSide {
  const wall = runs.map((r) => r.wallMs);
  const tokens = runs.reduce((sum, r) => sum + r.tokens, 0) / runs.length;
  return {
    tokensPerSecond: (tokens * 1000) / median([...wall].sort((a, b) => a - b)),
    wallMs: wall,
    ttft: distribution(runs.flatMap((r) => r.ttft)),
    itl: distribution(runs.flatMap((r) => r.itl)),
  };
}

interface Probe {
  /** Abort → the next request's first token, or → the slot shown free. */
  ms: number[];
  /** Trials whose long request had already streamed a token when the abort came (left out). */
  late: number;
}

/**
 * Aborts a long request at `atMs` after submitting it. "next": a short request goes in at the abort and
 * its first token is timed; "free": the slot view is polled every 5 ms until no slot is busy.
 */
async function abortTrial(
  peer: Peer,
  long: number[],
  short: number[],
  atMs: number,
  kind: "next" | "free",
): Promise<number | undefined> {
  const victim = openStream(peer.server.url, completionBody(long, VICTIM_TOKENS));
  await sleep(atMs - (performance.now() - victim.trace.submitAt));
  const late = victim.trace.tokenTimes.length > 0;
  const abortAt = performance.now();
  victim.abort();
  let ms: number;
  if (kind === "next") {
    const next = await openStream(peer.server.url, completionBody(short, 1)).done;
    ms = next.tokenTimes[0]! - abortAt;
    await victim.done;
    await untilIdle(peer);
  } else {
    ms = (await untilIdle(peer)) - abortAt;
    await victim.done;
  }
  return late ? undefined : ms;
}

interface StallTrial {
  maxGapMs: number;
  bFirstTokenMs: number;
}

async function stallTrial(peer: Peer, a: number[], b: number[], aMax: number): Promise<StallTrial> {
  let bSubmit = 0;
  let bFirst = 0;
  let bDone: Promise<StreamTrace> | undefined;
  let tail = 0;
  const stream: StreamHandle = openStream(peer.server.url, completionBody(a, aMax), (trace) => {
    if (bFirst > 0 && ++tail >= TAIL_TOKENS) stream.abort();
    if (bDone === undefined && trace.tokenTimes.length >= LEAD_TOKENS) {
      const bStream = openStream(peer.server.url, completionBody(b, 1), (bTrace) => {
        if (bFirst === 0) bFirst = bTrace.tokenTimes[0]!;
      });
      bSubmit = bStream.trace.submitAt;
      bDone = bStream.done;
    }
  });
  const trace = await stream.done;
  await bDone;
  await untilIdle(peer);
  if (bFirst === 0) throw new Error(`${peer.side}: A ended before B's first token; raise A's max_tokens`);
  const times = trace.tokenTimes;
  let maxGapMs = 0;
  for (let i = 1; i < times.length; i++)
    if (times[i]! > bSubmit && times[i - 1]! < bFirst)
      maxGapMs = Math.max(maxGapMs, times[i]! - times[i - 1]!);
  return { maxGapMs, bFirstTokenMs: bFirst - bSubmit };
}

// ---------------------------------------------------------------------------------------------------------

interface ModelResult {
  model: BenchModelName;
  threads: number;
  plan: Plan;
  llamaArgs: string[];
  /**
   * Which node-llama-cpp binary Sluice's engine loads, resolved the way the engine resolves it: "prebuilt"
   * (the npm package's, CPU variant picked at load) or "localBuild" (`node-llama-cpp source download`).
   */
  engineBuild: string;
  /** Engine ms per decode step at one stream, from each server's counters. */
  stepMs: Record<SideName, number>;
  /** Greedy text of the first single-stream run: the same model and prompt should give the same text. */
  sameText: boolean;
  levels: Level[];
  longAlone: Record<SideName, Distribution>;
  abortNext: Record<SideName, Distribution & { late: number }>;
  abortFree: Record<SideName, Distribution & { late: number }>;
  stallGap: Record<SideName, Distribution>;
  stallTtft: Record<SideName, Distribution>;
}

async function runModel(
  name: BenchModelName,
  binaries: LlamaBinaries,
  quick: boolean,
  threadsOverride: number | undefined,
  seed: number,
): Promise<ModelResult> {
  const spec = benchModel(name, threadsOverride);
  const plan = planFor(name, quick);
  const loaded = await loadModel(spec);
  const prompts = new Prompts(loaded);
  const sluice = await startSluice(spec.path, spec.threads, plan.contextPerSlot);
  const llama = await startLlama(binaries, spec.path, spec.threads, plan.contextPerSlot).catch(async (e) => {
    await sluice.server.stop();
    throw e;
  });
  const peers = { sluice, llama };
  const both = <T>(fn: (peer: Peer) => Promise<T>) =>
    Promise.all([fn(sluice), fn(llama)]).then(([s, l]) => ({ sluice: s, llama: l }));
  try {
    // Warm-up: the first requests pay for JIT (Sluice) and first-touch allocations (both).
    for (let i = 0; i < 2; i++)
      await alternate(i, peers, (peer) => throughputRun(peer, [prompts.short(i)], plan.tokensPerStream));

    const levels: Level[] = [];
    const stepMs = { sluice: Number.NaN, llama: Number.NaN };
    let sameText = false;
    for (const streams of LEVELS) {
      const runs: Record<SideName, RunStats[]> = { sluice: [], llama: [] };
      const before = streams === 1 ? await both((peer) => peer.stepCounters()) : undefined;
      for (let round = -1; round < plan.rounds; round++) {
        const set = Array.from({ length: streams }, (_, i) => prompts.short(i));
        const result = await alternate(round + 1, peers, (peer) =>
          throughputRun(peer, set, plan.tokensPerStream),
        );
        if (round < 0) continue; // one warm-up round per level
        runs.sluice.push(result.sluice);
        runs.llama.push(result.llama);
        if (streams === 1 && round === 0) sameText = result.sluice.texts[0] === result.llama.texts[0];
      }
      if (before !== undefined) {
        const after = await both((peer) => peer.stepCounters());
        for (const side of ["sluice", "llama"] as const)
          stepMs[side] = (after[side].ms - before[side].ms) / (after[side].steps - before[side].steps);
      }
      const s = levelSide(runs.sluice);
      const l = levelSide(runs.llama);
      // Paired per round: llama-server's wall time over Sluice's is Sluice's tokens/s over llama-server's.
      levels.push({ streams, sluice: s, llama: l, ratio: pairedRatio(l.wallMs, s.wallMs).median });
      process.stdout.write(".");
    }

    // The long prompt alone: its TTFT, and the basis for when the abort trials abort.
    const alone: Record<SideName, number[]> = { sluice: [], llama: [] };
    for (let round = -1; round < Math.max(3, plan.trials); round++) {
      const long = prompts.long(plan.longPrompt);
      const result = await alternate(round + 1, peers, async (peer) => {
        const trace = await openStream(peer.server.url, completionBody(long, 1)).done;
        await untilIdle(peer);
        return trace.tokenTimes[0]! - trace.submitAt;
      });
      if (round < 0) continue;
      alone.sluice.push(result.sluice);
      alone.llama.push(result.llama);
    }
    const longAlone = { sluice: distribution(alone.sluice), llama: distribution(alone.llama) };
    process.stdout.write(".");

    // Aborts land at the same seeded fraction of each side's own prefill, so both are cut at the same progress.
    const random = seededRandom(seed);
    const probes = {
      next: { sluice: { ms: [], late: 0 }, llama: { ms: [], late: 0 } } as Record<SideName, Probe>,
      free: { sluice: { ms: [], late: 0 }, llama: { ms: [], late: 0 } } as Record<SideName, Probe>,
    };
    for (let trial = 0; trial < plan.trials; trial++) {
      for (const kind of ["next", "free"] as const) {
        const fraction = 0.1 + 0.7 * random();
        const long = prompts.long(plan.longPrompt);
        const short = prompts.short(trial);
        const result = await alternate(trial, peers, (peer) =>
          abortTrial(peer, long, short, fraction * longAlone[peer.side].p50, kind),
        );
        for (const side of ["sluice", "llama"] as const) {
          const ms = result[side];
          if (ms === undefined) probes[kind][side].late++;
          else probes[kind][side].ms.push(ms);
        }
      }
    }
    const probeSummary = (probe: Record<SideName, Probe>) => ({
      sluice: { ...distribution(probe.sluice.ms), late: probe.sluice.late },
      llama: { ...distribution(probe.llama.ms), late: probe.llama.late },
    });
    process.stdout.write(".");

    const stall: Record<SideName, StallTrial[]> = { sluice: [], llama: [] };
    for (let trial = -1; trial < plan.trials; trial++) {
      const a = prompts.short(trial + 1);
      const b = prompts.long(plan.longPrompt);
      const aMax = plan.contextPerSlot - a.length - 1;
      const result = await alternate(trial + 1, peers, (peer) => stallTrial(peer, a, b, aMax));
      if (trial < 0) continue;
      stall.sluice.push(result.sluice);
      stall.llama.push(result.llama);
    }
    process.stdout.write(".");

    return {
      model: name,
      threads: spec.threads,
      plan,
      llamaArgs: llama.args,
      engineBuild: loaded.llama.buildType,
      stepMs,
      sameText,
      levels,
      longAlone,
      abortNext: probeSummary(probes.next),
      abortFree: probeSummary(probes.free),
      stallGap: {
        sluice: distribution(stall.sluice.map((t) => t.maxGapMs)),
        llama: distribution(stall.llama.map((t) => t.maxGapMs)),
      },
      stallTtft: {
        sluice: distribution(stall.sluice.map((t) => t.bFirstTokenMs)),
        llama: distribution(stall.llama.map((t) => t.bFirstTokenMs)),
      },
    };
  } finally {
    await Promise.all([sluice.server.stop(), llama.server.stop()]);
    await loaded.dispose();
  }
}

// ---------------------------------------------------------------------------------------------------------
// Reporting.

/** Sluice ÷ llama-server as "0.57x", and which side it favours (±5 % is even). */
function verdict(sluice: number, llama: number, higherIsBetter: boolean): { ratio: string; better: string } {
  const value = sluice / llama;
  if (!Number.isFinite(value)) return { ratio: "-", better: "-" };
  const better =
    Math.abs(value - 1) <= 0.05 ? "even" : value > 1 === higherIsBetter ? "Sluice" : "llama-server";
  return { ratio: `${value.toFixed(2)}x`, better };
}

function eventRows(r: ModelResult): Row[] {
  const line = (
    what: string,
    d: Record<SideName, Distribution>,
    extra: (side: SideName) => string = () => "",
  ): Row => ({
    measure: what,
    "Sluice ms p50 / p99": `${formatMs(d.sluice.p50)} / ${formatMs(d.sluice.p99)}${extra("sluice")}`,
    "llama-server ms p50 / p99": `${formatMs(d.llama.p50)} / ${formatMs(d.llama.p99)}${extra("llama")}`,
    "p50 S/L": verdict(d.sluice.p50, d.llama.p50, false).ratio,
    better: verdict(d.sluice.p50, d.llama.p50, false).better,
  });
  const late = (probe: Record<SideName, { late: number }>) => (side: SideName) =>
    probe[side].late > 0 ? ` (${probe[side].late} late)` : "";
  return [
    line(`long prompt alone (${r.plan.longPrompt} tok): TTFT`, r.longAlone),
    line("abort in its prefill -> next request's first token", r.abortNext, late(r.abortNext)),
    line("abort in its prefill -> slot shown free", r.abortFree, late(r.abortFree)),
    line("stream A's longest gap while it is read", r.stallGap),
    line("that long prompt's TTFT beside stream A", r.stallTtft),
  ];
}

/** llama-batched-bench's decode speed at 1 and 4 sequences: llama.cpp alone, no HTTP, for scale. */
async function batchedBench(binaries: LlamaBinaries, model: string, threads: number, tokens: number) {
  // The model path may hold spaces; the other flags do not.
  const flags = `-c 2048 -t ${threads} -tb ${threads} -npp 16 -ntg ${tokens} -npl 1,4 --output-format jsonl`;
  const { stdout } = await promisify(execFile)(binaries.batchedBench, ["-m", model, ...flags.split(" ")], {
    maxBuffer: 1 << 24,
  });
  return stdout
    .split("\n")
    .filter((line) => line.startsWith("{"))
    .map((line) => JSON.parse(line) as { pl: number; tg: number; t_tg: number; speed_tg: number });
}

const args = benchArgs();
const host = await machine();
const names = (args.models ?? (args.quick ? ["bundled"] : ["bundled", "edge"])) as BenchModelName[];
const binaries = findLlamaBinaries({ batchedBench: true });
const started = performance.now();
console.log(`peer: ${describeMachine(host)}${args.quick ? " (quick)" : ""}`);
console.log(
  `llama-server and llama-batched-bench from llama.cpp ${binaries.commit.slice(0, 12)} (the source node-llama-cpp ` +
    `ships), built with GGML_NATIVE=ON.`,
);
const results: ModelResult[] = [];
const raw: Record<string, unknown> = {};
for (const name of names) {
  const result = await runModel(name, binaries, args.quick, args.threads, args.seed);
  results.push(result);
  raw[name] = await batchedBench(
    binaries,
    benchModel(name).path,
    result.threads,
    result.plan.tokensPerStream,
  ).catch((error: Error) => ({ error: error.message }));
}
const seconds = (performance.now() - started) / 1000;
console.log("\n");

for (const r of results) {
  const p = r.plan;
  console.log(
    `${r.model} model: ${SLOTS} slots, ${r.threads} llama.cpp thread each, ${p.contextPerSlot} tokens per slot, ` +
      `${p.tokensPerStream} tokens per stream, ${p.rounds} alternated round(s) per level after one warm-up; ms`,
  );
  const shown = r.llamaArgs.map((arg, i) => (r.llamaArgs[i - 1] === "--model" ? basename(arg) : arg));
  console.log(`llama-server ${shown.join(" ")}`);
  const build =
    r.engineBuild === "localBuild" ? "a local build (source download)" : "the npm package's prebuilt binary";
  console.log(
    `Sluice: sluice serve --slots ${SLOTS} --threads ${r.threads} --context-size ${p.contextPerSlot}; ` +
      `node-llama-cpp on ${build}`,
  );
  const bench = raw[r.model] as { pl: number; tg: number; t_tg: number }[] | { error: string };
  const rawStep = Array.isArray(bench)
    ? bench.map((b) => `${formatMs((b.t_tg * 1000) / b.tg)} ms/step at ${b.pl}`).join(", ")
    : `not run (${bench.error})`;
  console.log(
    `per decode step at 1 stream: Sluice engine step ${formatMs(r.stepMs.sluice)} ms (its /metrics), ` +
      `llama-server ${formatMs(r.stepMs.llama)} ms per token (its /metrics); llama-batched-bench ${rawStep}; ` +
      `same greedy text: ${r.sameText ? "yes" : "no"}`,
  );
  printTable(
    r.levels.map((l): Row => {
      const tps = verdict(l.ratio, 1, true);
      return {
        streams: l.streams,
        "Sluice tok/s": l.sluice.tokensPerSecond.toFixed(0),
        "llama-server tok/s": l.llama.tokensPerSecond.toFixed(0),
        "tok/s S/L": tps.ratio,
        better: tps.better,
        "TTFT p50 S / L": `${formatMs(l.sluice.ttft.p50)} / ${formatMs(l.llama.ttft.p50)}`,
        "ITL p50 S / L": `${formatMs(l.sluice.itl.p50)} / ${formatMs(l.llama.itl.p50)}`,
        "ITL p99 S / L": `${formatMs(l.sluice.itl.p99)} / ${formatMs(l.llama.itl.p99)}`,
        "TTFT p50 S/L": verdict(l.sluice.ttft.p50, l.llama.ttft.p50, false).ratio,
        "ITL p50 S/L": verdict(l.sluice.itl.p50, l.llama.itl.p50, false).ratio,
        "ITL p99 S/L": verdict(l.sluice.itl.p99, l.llama.itl.p99, false).ratio,
      };
    }),
  );
  console.log("");
  printTable(eventRows(r));
  console.log(
    `(${p.trials} trial(s) per side; aborts at U(10%, 80%) of each side's own prefill p50, by closing the ` +
      `connection; "late": the long request had streamed a token already, left out)\n`,
  );
}

if (results.length > 1) {
  const byModel = (pick: (r: ModelResult) => string): Row =>
    Object.fromEntries(results.map((r) => [r.model, pick(r)]));
  const p50 = (d: Record<SideName, Distribution>) => verdict(d.sluice.p50, d.llama.p50, false).ratio;
  printTable([
    {
      "Sluice ÷ llama-server": "tok/s at 1 / 4 / 8 / 16 streams (higher: Sluice better)",
      ...byModel((r) => r.levels.map((l) => l.ratio.toFixed(2)).join(" / ")),
    },
    { "Sluice ÷ llama-server": "long prompt alone, TTFT", ...byModel((r) => p50(r.longAlone)) },
    { "Sluice ÷ llama-server": "abort in prefill -> next first token", ...byModel((r) => p50(r.abortNext)) },
    { "Sluice ÷ llama-server": "abort in prefill -> slot free", ...byModel((r) => p50(r.abortFree)) },
    { "Sluice ÷ llama-server": "decoding stream's longest gap", ...byModel((r) => p50(r.stallGap)) },
    { "Sluice ÷ llama-server": "that long prompt's TTFT", ...byModel((r) => p50(r.stallTtft)) },
  ]);
  console.log("");
}
console.log(
  `S/L = Sluice ÷ llama-server from this run; below 1.00x is better for times, above 1.00x for tok/s; ` +
    `"better" treats ±5 % as even. ${seconds.toFixed(0)} s in all.`,
);

await writeResults(
  "peer",
  {
    benchmark: "peer",
    quick: args.quick,
    machine: host,
    llamaCpp: binaries.commit,
    seconds,
    results,
    batchedBench: raw,
  },
  undefined,
  { quick: args.quick },
);
