/**
 * Time to first token with and without the prompt cache, against llama.cpp's `llama-server`. Three servers
 * run as child processes on loopback with the same GGUF, 4 slots and one llama.cpp thread, greedy, read as
 * SSE by this process:
 *
 * - Sluice, prompt cache on (its default);
 * - Sluice started with `--no-prompt-cache` (every request reads its whole prompt);
 * - llama-server, `cache_prompt: true` (its default).
 *
 * Workloads:
 * - multi-turn chat: 8 turns, each sending the history so far (previous messages, the model's previous
 *   answer, a new user message). The bundled chat model (models/kjv-chat.gguf) goes through
 *   /v1/chat/completions and its chat template; the synthetic edge model through /v1/completions with a text
 *   prompt that grows by the previous answer and a new question. TTFT per turn, and the median of turns 2-8.
 * - shared system prompt: 16 requests with one ~400-token system prompt and different user questions, sent
 *   one at a time and 4 at a time.
 *
 * Turns and runs alternate between the servers (the order rotates each time), and every conversation and run
 * starts with a line no earlier one had, so no side reuses a previous repetition's cache. Ratios come from
 * this one run: cached ÷ uncached TTFT, and Sluice (cached) ÷ llama-server; with the prompt tokens each side
 * reports as cached (`usage.prompt_tokens_details.cached_tokens`, or llama-server's `timings.cache_n`).
 *
 * llama-server is built from the llama.cpp source node-llama-cpp ships (`npm run build:llama-server`);
 * without it, the two Sluice contenders are compared alone.
 *
 *   node --import tsx bench/prefix.ts [--quick] [--model bundled,edge] [--threads N]
 * Both models by default; --quick runs the bundled chat model only, in about two minutes.
 */
import { request } from "node:http";
import { fileURLToPath } from "node:url";
import { KJV } from "./corpus.ts";
import {
  benchArgs,
  describeMachine,
  formatMs,
  machine,
  median,
  printTable,
  type Row,
  ratio,
  writeResults,
} from "./harness.ts";
import {
  BUILD_COMMAND,
  findLlamaBinaries,
  type LlamaBinaries,
  type ServerProcess,
  startLlamaServer,
  startSluiceServer,
} from "./llamaServer.ts";
import { type BenchModelName, benchModel } from "./models.ts";

const SLOTS = 4;
const TURNS = 8;
const SHARED_REQUESTS = 16;
const CONCURRENCY = 4;
const CHAT_MODEL = fileURLToPath(new URL("../models/kjv-chat.gguf", import.meta.url));

interface Plan {
  model: string;
  /** chat: /v1/chat/completions with messages; text: /v1/completions with a growing prompt. */
  api: "chat" | "text";
  /**
   * Tokens per slot on all sides. llama-server caps a slot at the model's training context (1024 for
   * kjv-chat), so the 8-turn history is kept under it: short answers, short questions.
   */
  contextPerSlot: number;
  threads: number;
  /** Tokens generated per request (every answer is this long: EOS is ignored). */
  maxTokens: number;
  /** Characters of KJV text in the multi-turn system message, and in the shared system prompt. */
  chatSystemChars: number;
  sharedSystemChars: number;
  /** Characters per user message. */
  questionChars: number;
  /** Whole 8-turn conversations per server; shared-prompt runs per mode and server. */
  conversations: number;
  sharedRuns: number;
}

function planFor(name: BenchModelName, quick: boolean, threads: number | undefined): Plan {
  if (name === "edge") {
    const spec = benchModel("edge", threads);
    return {
      model: spec.path,
      api: "text",
      contextPerSlot: 1024,
      threads: spec.threads,
      maxTokens: 16,
      chatSystemChars: 300,
      sharedSystemChars: 1200,
      questionChars: 90,
      conversations: quick ? 1 : 2,
      sharedRuns: 1,
    };
  }
  return {
    model: CHAT_MODEL,
    api: "chat",
    contextPerSlot: 1024,
    threads: threads ?? 1,
    maxTokens: 16,
    chatSystemChars: 600,
    sharedSystemChars: 1200,
    questionChars: 120,
    conversations: quick ? 2 : 5,
    sharedRuns: quick ? 1 : 3,
  };
}

/** A run id so even two invocations of this script against long-lived servers would share no prefix. */
const RUN_ID = Math.floor(Math.random() * 1e9).toString(36);
let serial = 0;
/** A first line no earlier conversation or run had. */
function uniqueHead(kind: string): string {
  return `${kind} ${RUN_ID}-${++serial}`;
}

/** KJV text of about `chars` characters starting at `offset`, cut at a line end. */
function kjvText(offset: number, chars: number): string {
  const start = offset % (KJV.length - chars - 200);
  const from = KJV.indexOf("\n", start) + 1;
  const end = KJV.indexOf("\n", from + chars);
  return KJV.slice(from, end < 0 ? from + chars : end);
}

// ---------------------------------------------------------------------------------------------------------
// One SSE request, the same client for every server.

interface Reply {
  ttftMs: number;
  text: string;
  promptTokens: number | undefined;
  cachedTokens: number | undefined;
}

type Message = { role: "system" | "user" | "assistant"; content: string };

function send(base: string, api: Plan["api"], input: string | Message[], maxTokens: number): Promise<Reply> {
  const body = {
    ...(api === "chat" ? { messages: input } : { prompt: input }),
    max_tokens: maxTokens,
    temperature: 0,
    ignore_eos: true,
    cache_prompt: true,
    stream: true,
    stream_options: { include_usage: true },
  };
  const payload = JSON.stringify(body);
  const path = api === "chat" ? "/v1/chat/completions" : "/v1/completions";
  return new Promise((resolve, reject) => {
    const reply: Reply = { ttftMs: Number.NaN, text: "", promptTokens: undefined, cachedTokens: undefined };
    // A fresh connection per request, as in bench/peer.ts: both sides pay the same loopback connect.
    const req = request(`${base}${path}`, {
      method: "POST",
      agent: false,
      headers: { "content-type": "application/json", "content-length": Buffer.byteLength(payload) },
    });
    req.on("error", reject);
    req.on("response", (res) => {
      res.setEncoding("utf8");
      if (res.statusCode !== 200) {
        let text = "";
        res.on("data", (part: string) => {
          text += part;
        });
        res.on("end", () => reject(new Error(`HTTP ${res.statusCode} from ${base}${path}: ${text}`)));
        return;
      }
      let buffer = "";
      let lastAt = 0;
      res.on("data", (part: string) => {
        lastAt = performance.now();
        buffer += part;
        for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          for (const line of event.split("\n")) {
            if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
            const message = JSON.parse(line.slice(6)) as {
              choices?: { text?: string; delta?: { content?: string | null } }[];
              usage?: { prompt_tokens?: number; prompt_tokens_details?: { cached_tokens?: number } } | null;
              timings?: { cache_n?: number };
              error?: unknown;
            };
            if (message.error !== undefined) {
              reject(new Error(`stream error: ${JSON.stringify(message.error)}`));
              req.destroy();
              return;
            }
            const choice = message.choices?.[0];
            const text = choice?.text ?? choice?.delta?.content ?? "";
            if (text !== "") {
              if (Number.isNaN(reply.ttftMs)) reply.ttftMs = lastAt - submitAt;
              reply.text += text;
            }
            if (message.usage?.prompt_tokens !== undefined) reply.promptTokens = message.usage.prompt_tokens;
            const cached = message.usage?.prompt_tokens_details?.cached_tokens ?? message.timings?.cache_n;
            if (cached !== undefined) reply.cachedTokens = cached;
          }
        }
      });
      res.on("error", reject);
      res.on("end", () => {
        // No text at all (every token a special one): the first event still marks the prompt as read.
        if (Number.isNaN(reply.ttftMs)) reply.ttftMs = lastAt - submitAt;
        resolve(reply);
      });
    });
    const submitAt = performance.now();
    req.end(payload);
  });
}

// ---------------------------------------------------------------------------------------------------------
// The contenders.

type ContenderName = "cached" | "uncached" | "llama";
const LABELS: Record<ContenderName, string> = {
  cached: "Sluice (cache)",
  uncached: "Sluice (--no-prompt-cache)",
  llama: "llama-server",
};

interface Contender {
  name: ContenderName;
  server: ServerProcess;
  args: string[];
}

async function startSluice(plan: Plan, promptCache: boolean): Promise<Contender> {
  const server = await startSluiceServer({
    model: plan.model,
    slots: SLOTS,
    threads: plan.threads,
    contextPerSlot: plan.contextPerSlot,
    extraArgs: promptCache ? [] : ["--no-prompt-cache"],
  });
  return { name: promptCache ? "cached" : "uncached", server, args: server.args };
}

async function startLlama(plan: Plan, binaries: LlamaBinaries): Promise<Contender> {
  const server = await startLlamaServer({
    binaries,
    model: plan.model,
    slots: SLOTS,
    threads: plan.threads,
    contextPerSlot: plan.contextPerSlot,
  });
  return { name: "llama", server, args: ["llama-server", ...server.args] };
}

/** The contenders in a rotated order: round 0 A B C, round 1 B C A, round 2 C A B, ... */
function rotated<T>(items: readonly T[], round: number): T[] {
  const shift = round % items.length;
  return [...items.slice(shift), ...items.slice(0, shift)];
}

// ---------------------------------------------------------------------------------------------------------
// Workloads.

interface TurnSample {
  ttftMs: number;
  promptTokens: number | undefined;
  cachedTokens: number | undefined;
}

/** A conversation's state on one server: its own answers go into its own history. */
class Conversation {
  readonly #plan: Plan;
  readonly #messages: Message[];
  #text: string;
  readonly #questionOffset: number;

  constructor(plan: Plan, head: string, index: number) {
    this.#plan = plan;
    const system = `${head}\n${kjvText(index * 7919, plan.chatSystemChars)}`;
    this.#messages = [{ role: "system", content: system }];
    this.#text = `${system}\n`;
    this.#questionOffset = 20_000 + index * 3571;
  }

  async turn(base: string, turn: number): Promise<TurnSample> {
    const question = kjvText(this.#questionOffset + turn * 613, this.#plan.questionChars);
    let reply: Reply;
    if (this.#plan.api === "chat") {
      this.#messages.push({ role: "user", content: question });
      reply = await send(base, "chat", this.#messages, this.#plan.maxTokens);
      this.#messages.push({ role: "assistant", content: reply.text });
    } else {
      this.#text += `Q: ${question}\nA:`;
      reply = await send(base, "text", this.#text, this.#plan.maxTokens);
      this.#text += `${reply.text}\n`;
    }
    return { ttftMs: reply.ttftMs, promptTokens: reply.promptTokens, cachedTokens: reply.cachedTokens };
  }
}

async function multiTurn(
  plan: Plan,
  contenders: readonly Contender[],
): Promise<Record<string, TurnSample[][]>> {
  // samples[name][turn] = one sample per conversation
  const samples: Record<string, TurnSample[][]> = {};
  for (const c of contenders) samples[c.name] = Array.from({ length: TURNS }, () => []);
  let round = 0;
  for (let i = 0; i < plan.conversations; i++) {
    // The same conversation (same first line) on every server; each server keeps it on its own slots.
    const head = uniqueHead("Conversation");
    const conversations = new Map(contenders.map((c) => [c.name, new Conversation(plan, head, serial)]));
    for (let turn = 0; turn < TURNS; turn++) {
      for (const c of rotated(contenders, round++)) {
        samples[c.name]![turn]!.push(await conversations.get(c.name)!.turn(c.server.url, turn));
      }
    }
  }
  return samples;
}

interface SharedRun {
  ttft: number[];
  cached: number[];
  promptTokens: number[];
  wallMs: number;
}

async function sharedRun(
  plan: Plan,
  base: string,
  system: string,
  questionBase: number,
  concurrency: number,
): Promise<SharedRun> {
  const inputs = Array.from({ length: SHARED_REQUESTS }, (_, i) => {
    const question = kjvText(questionBase + i * 997, plan.questionChars);
    return plan.api === "chat"
      ? [
          { role: "system", content: system },
          { role: "user", content: question },
        ]
      : `${system}\nQ: ${question}\nA:`;
  }) as (string | Message[])[];
  const run: SharedRun = { ttft: [], cached: [], promptTokens: [], wallMs: 0 };
  const started = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < inputs.length) {
        const input = inputs[next++]!;
        const reply = await send(base, plan.api, input, plan.maxTokens);
        run.ttft.push(reply.ttftMs);
        run.cached.push(reply.cachedTokens ?? Number.NaN);
        run.promptTokens.push(reply.promptTokens ?? Number.NaN);
      }
    }),
  );
  run.wallMs = performance.now() - started;
  return run;
}

async function shared(
  plan: Plan,
  contenders: readonly Contender[],
): Promise<Record<string, Record<string, SharedRun[]>>> {
  const results: Record<string, Record<string, SharedRun[]>> = {};
  let round = 0;
  for (const [mode, concurrency] of [
    ["sequential", 1],
    [`${CONCURRENCY} concurrent`, CONCURRENCY],
  ] as const) {
    const byName: Record<string, SharedRun[]> = {};
    for (const c of contenders) byName[c.name] = [];
    for (let r = 0; r < plan.sharedRuns; r++) {
      // One system prompt per run, the same on every server, never seen by any server before.
      const system = `${uniqueHead("Assistant")}\n${kjvText(50_000 + serial * 4099, plan.sharedSystemChars)}`;
      const questionBase = 90_000 + serial * 211;
      for (const c of rotated(contenders, round++)) {
        byName[c.name]!.push(await sharedRun(plan, c.server.url, system, questionBase, concurrency));
      }
    }
    results[mode] = byName;
  }
  return results;
}

// ---------------------------------------------------------------------------------------------------------
// Reporting.

const sortedMedian = (values: readonly number[]): number =>
  median([...values].filter((v) => Number.isFinite(v)).sort((a, b) => a - b));

function faster(cached: number, uncached: number): string {
  if (!Number.isFinite(cached) || !Number.isFinite(uncached) || cached === 0) return "-";
  return `${ratio(cached, uncached)} (${(uncached / cached).toFixed(1)}x faster)`;
}

function cachedLabel(values: readonly (number | undefined)[]): string {
  const known = values.filter((v): v is number => v !== undefined && Number.isFinite(v));
  if (known.length === 0) return "-";
  return String(Math.round(sortedMedian(known)));
}

interface ModelReport {
  model: string;
  plan: Plan;
  servers: Record<string, string[]>;
  turns: Row[];
  multiTurnSummary: {
    cachedMs: number;
    uncachedMs: number;
    llamaMs: number | undefined;
    cachedOverUncached: number;
    cachedOverLlama: number | undefined;
  };
  sharedRows: Row[];
  shared: Record<string, Record<string, { ttftP50: number; wallMs: number; cachedP50: number }>>;
  raw: { multiTurn: Record<string, TurnSample[][]>; shared: Record<string, Record<string, SharedRun[]>> };
}

async function runModel(
  name: BenchModelName,
  quick: boolean,
  threads: number | undefined,
  binaries?: LlamaBinaries,
) {
  const plan = planFor(name, quick, threads);
  const contenders: Contender[] = [await startSluice(plan, true), await startSluice(plan, false)];
  try {
    if (binaries) contenders.push(await startLlama(plan, binaries));
    const has = (n: ContenderName) => contenders.some((c) => c.name === n);
    // Warm-up: one short request each (first-request costs: graph allocation, JIT).
    for (const c of contenders)
      await send(c.server.url, plan.api, plan.api === "chat" ? [{ role: "user", content: "Hi" }] : "Hi", 4);

    console.log(
      `\n## ${name}: ${plan.model.slice(plan.model.lastIndexOf("/") + 1)}, ${plan.api === "chat" ? "/v1/chat/completions" : "/v1/completions"}`,
    );
    const turns = await multiTurn(plan, contenders);
    const at = (n: ContenderName, turn: number) => turns[n]?.[turn] ?? [];
    const ttft = (n: ContenderName, turn: number) => sortedMedian(at(n, turn).map((s) => s.ttftMs));
    const turnRows: Row[] = [];
    for (let t = 0; t < TURNS; t++) {
      const row: Row = {
        turn: t + 1,
        "prompt tokens": cachedLabel(at("cached", t).map((s) => s.promptTokens)),
        "cache ms": formatMs(ttft("cached", t)),
        "no-cache ms": formatMs(ttft("uncached", t)),
      };
      if (has("llama")) row["llama-server ms"] = formatMs(ttft("llama", t));
      row["cache ÷ no-cache"] = faster(ttft("cached", t), ttft("uncached", t));
      if (has("llama")) row["Sluice ÷ llama-server"] = ratio(ttft("cached", t), ttft("llama", t));
      row["cached tokens Sluice"] = cachedLabel(at("cached", t).map((s) => s.cachedTokens));
      if (has("llama"))
        row["cached tokens llama-server"] = cachedLabel(at("llama", t).map((s) => s.cachedTokens));
      turnRows.push(row);
    }
    const later = (n: ContenderName) =>
      sortedMedian((turns[n] ?? []).slice(1).flatMap((samples) => samples.map((s) => s.ttftMs)));
    const summary = {
      cachedMs: later("cached"),
      uncachedMs: later("uncached"),
      llamaMs: has("llama") ? later("llama") : undefined,
      cachedOverUncached: later("cached") / later("uncached"),
      cachedOverLlama: has("llama") ? later("cached") / later("llama") : undefined,
    };
    const summaryRow: Row = {
      turn: "2-8",
      "prompt tokens": "",
      "cache ms": formatMs(summary.cachedMs),
      "no-cache ms": formatMs(summary.uncachedMs),
    };
    if (has("llama")) summaryRow["llama-server ms"] = formatMs(summary.llamaMs ?? Number.NaN);
    summaryRow["cache ÷ no-cache"] = faster(summary.cachedMs, summary.uncachedMs);
    if (has("llama"))
      summaryRow["Sluice ÷ llama-server"] = ratio(summary.cachedMs, summary.llamaMs ?? Number.NaN);
    summaryRow["cached tokens Sluice"] = "";
    if (has("llama")) summaryRow["cached tokens llama-server"] = "";
    turnRows.push(summaryRow);
    console.log(`\nmulti-turn chat: TTFT per turn, median of ${plan.conversations} conversation(s)`);
    printTable(turnRows);

    const sharedResults = await shared(plan, contenders);
    const sharedRows: Row[] = [];
    const sharedSummary: ModelReport["shared"] = {};
    for (const [mode, byName] of Object.entries(sharedResults)) {
      const stat = (n: ContenderName) => {
        const runs = byName[n] ?? [];
        return {
          ttftP50: sortedMedian(runs.flatMap((r) => r.ttft)),
          wallMs: sortedMedian(runs.map((r) => r.wallMs)),
          cachedP50: sortedMedian(runs.flatMap((r) => r.cached)),
          prompt: sortedMedian(runs.flatMap((r) => r.promptTokens)),
        };
      };
      const cached = stat("cached");
      const uncached = stat("uncached");
      const llama = has("llama") ? stat("llama") : undefined;
      sharedSummary[mode] = { cached, uncached, ...(llama ? { llama } : {}) };
      const row: Row = {
        requests: mode,
        "prompt tokens": Number.isFinite(cached.prompt) ? String(Math.round(cached.prompt)) : "-",
        "cache p50 ms": formatMs(cached.ttftP50),
        "no-cache p50 ms": formatMs(uncached.ttftP50),
      };
      if (llama) row["llama-server p50 ms"] = formatMs(llama.ttftP50);
      row["cache ÷ no-cache"] = faster(cached.ttftP50, uncached.ttftP50);
      if (llama) row["Sluice ÷ llama-server"] = ratio(cached.ttftP50, llama.ttftP50);
      row["cached tokens Sluice"] = cachedLabel([cached.cachedP50]);
      if (llama) row["cached tokens llama-server"] = cachedLabel([llama.cachedP50]);
      row["wall cache / no-cache" + (llama ? " / llama" : "")] = [cached, uncached, ...(llama ? [llama] : [])]
        .map((s) => formatMs(s.wallMs))
        .join(" / ");
      sharedRows.push(row);
    }
    console.log(
      `\nshared system prompt: ${SHARED_REQUESTS} requests, TTFT p50 over ${plan.sharedRuns} run(s) per mode (cached tokens: p50 per request)`,
    );
    printTable(sharedRows);

    const servers: Record<string, string[]> = {};
    for (const c of contenders) servers[LABELS[c.name]] = c.args;
    return {
      model: plan.model,
      plan,
      servers,
      turns: turnRows,
      multiTurnSummary: summary,
      sharedRows,
      shared: sharedSummary,
      raw: { multiTurn: turns, shared: sharedResults },
    } satisfies ModelReport;
  } finally {
    for (const c of contenders) await c.server.stop();
  }
}

const args = benchArgs();
const models = (args.models ?? (args.quick ? ["bundled"] : ["bundled", "edge"])) as BenchModelName[];
const m = await machine();
console.log(describeMachine(m));
let binaries: LlamaBinaries | undefined;
try {
  binaries = findLlamaBinaries();
  console.log(`llama-server: llama.cpp ${binaries.commit.slice(0, 12)}, ${binaries.server}`);
} catch (error) {
  console.log(
    `${(error as Error).message}\nBuild it with:\n  ${BUILD_COMMAND}\nComparing Sluice with and without its prompt cache only.`,
  );
}
console.log(
  `${SLOTS} slots, ${args.threads ?? 1} thread(s), greedy, ${TURNS} turns; TTFT = request sent → first text event over SSE`,
);
const reports: ModelReport[] = [];
for (const name of models) reports.push(await runModel(name, args.quick, args.threads, binaries));

console.log(
  "\nsummary (turns 2-8 median TTFT; goals: cache ≥ 5x faster than no cache, Sluice ≤ 1.0x llama-server)",
);
printTable(
  reports.map((r) => ({
    model: r.model.slice(r.model.lastIndexOf("/") + 1),
    "cache ÷ no-cache": faster(r.multiTurnSummary.cachedMs, r.multiTurnSummary.uncachedMs),
    "Sluice ÷ llama-server":
      r.multiTurnSummary.llamaMs === undefined
        ? "-"
        : ratio(r.multiTurnSummary.cachedMs, r.multiTurnSummary.llamaMs),
  })),
);
await writeResults(
  "prefix",
  { machine: m, quick: args.quick, llamaCpp: binaries?.commit, reports },
  undefined,
  { quick: args.quick },
);
