/**
 * Soak: many requests against a real Sluice server over loopback, from several concurrent clients, each
 * streamed (SSE) or not, with a client that goes away at every phase of a request's life: before its body is
 * fully sent, once the headers arrive, while queued, while its prompt is read, mid-decode, right after the
 * terminal chunk; plus explicit `DELETE /v1/requests/:id` and plain completions. It is also a check, and
 * exits 1 if anything leaked:
 * - afterwards every slot is `free`, nothing is queued, and every accepted request had exactly one end record
 *   (runtime.observe); a slot left `freeing` is named with its request and the phase it was cut in;
 * - every 200 read to the end has exactly one chunk with a finish reason (then `[DONE]`); no 5xx;
 * - heap and active handles (process.getActiveResourcesInfo()), sampled after a GC every 1% of the
 *   requests, stay flat: means of the first and last quartile of samples, and their ratio (RSS shown too);
 *   no handle is left once the server and runtime are closed.
 * Cut points are events, not timers: the runtime's step events say when a request is prefilling or decoding
 * and the client acts then. Where the request really was when its cancel landed comes from its end record
 * (`cancel.phase`), so the table shows what was aimed at and what was hit.
 * Engine: the ScriptedEngine with the bundled vocabulary (1 ms steps, 16-token prefill chunks) by default;
 * `--engine llama` runs the bundled model through node-llama-cpp (fewer requests).
 *
 *   node --expose-gc --import tsx bench/soak.ts [--quick] [--engine scripted|llama] [--requests N]
 *     [--clients N] [--threads N] [--seed N]
 */
import { Agent, type IncomingMessage, request } from "node:http";
import { parseArgs } from "node:util";
import { createParser } from "eventsource-parser";
import { Vocabulary } from "../src/detok/index.ts";
import { BUNDLED_MODEL_PATH } from "../src/engine/modelPath.ts";
import { ScriptedEngine } from "../src/engine/ScriptedEngine.ts";
import { Runtime } from "../src/runtime/Runtime.ts";
import { createServer } from "../src/server/index.ts";
import { KJV } from "./corpus.ts";
import {
  describeMachine,
  distribution,
  formatMs,
  formatSpread,
  machine,
  printTable,
  type Row,
  seededRandom,
  writeResults,
} from "./harness.ts";

const { values: flags } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    engine: { type: "string", default: "scripted" },
    requests: { type: "string" },
    clients: { type: "string", default: "16" },
    threads: { type: "string", default: "1" },
    seed: { type: "string", default: "1" },
  },
});
const llama = flags.engine === "llama";
if (!llama && flags.engine !== "scripted")
  throw new Error(`--engine is scripted or llama, not ${flags.engine}`);
const REQUESTS = Number(flags.requests ?? (llama ? (flags.quick ? 200 : 1000) : flags.quick ? 1000 : 10_000));
const CLIENTS = Number(flags.clients);
if (!(Number.isInteger(REQUESTS) && REQUESTS > 0 && Number.isInteger(CLIENTS) && CLIENTS > 0))
  throw new Error("--requests and --clients take a whole number above 0");
const SLOTS = 4;
/** A request that has not ended after this long is cut and counted as timed out: the run never hangs. */
const REQUEST_TIMEOUT_MS = 60_000;

/** What the client does; `at`: the runtime phase at which it cuts or DELETEs. */
type Cut = "complete" | "body" | "headers" | "queued" | "prefill" | "decode" | "terminal" | "delete";
type At = "queued" | "prefill" | "decode";
interface Plan {
  n: number;
  cut: Cut;
  stream: boolean;
  at: At | undefined;
  promptChars: number;
  maxTokens: number;
  /** A decode cut acts once this many tokens are generated. */
  after: number;
}

/** Relative weights: every client action, streamed and not where both exist. */
const MIX: [Cut, boolean, number][] = [
  ["complete", true, 12],
  ["complete", false, 8],
  ["body", false, 5],
  ["headers", true, 8],
  ["queued", true, 6],
  ["queued", false, 6],
  ["prefill", true, 7],
  ["prefill", false, 7],
  ["decode", true, 8],
  ["decode", false, 7],
  ["terminal", true, 6],
  ["terminal", false, 4],
  ["delete", true, 8],
  ["delete", false, 8],
];
const groupOf = (cut: Cut, stream: boolean) => `${cut}${stream ? " (SSE)" : ""}`;

/** Plans from a seeded generator, so a run can be replayed. */
function planner(seed: number): (n: number) => Plan {
  const random = seededRandom(seed);
  const total = MIX.reduce((sum, [, , weight]) => sum + weight, 0);
  const between = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));
  return (n) => {
    let pick = random() * total;
    const [cut, stream] = MIX.find(([, , weight]) => (pick -= weight) < 0) ?? MIX[0]!;
    const phases = ["queued", "prefill", "decode"] as const;
    const at = cut === "delete" ? phases[between(0, 2)] : phases.find((phase) => phase === cut);
    // Long enough prompts for a prefill cut to land after the first chunk; decode cuts need room to decode.
    const promptChars = at === "prefill" ? between(120, 320) : between(16, 240);
    const maxTokens = at === "decode" ? between(12, 48) : between(4, 48);
    return { n, cut, stream, at, promptChars, maxTokens, after: between(1, Math.max(1, maxTokens - 4)) };
  };
}

interface Outcome {
  plan: Plan;
  id?: string;
  acted: boolean;
  /** The runtime's view when the client acted: a slot state, `queued`, `ended`, or `body` (never sent). */
  phaseAtCut?: string;
  status?: number;
  deleteStatus?: number;
  /** Read to its end with a 200: a stream had exactly one finish chunk then [DONE]; a body a finish_reason. */
  terminalOk?: boolean;
  readToEnd: boolean;
  timedOut: boolean;
  settled: boolean;
  counted: boolean;
  /** From the end record: `cancelled in <phase>` or `finished`. */
  landed?: string;
}

// ---------------------------------------------------------------------------------------------------------
// The server, and what the bench learns from inside the process.

const host = await machine();
console.log(
  `soak: ${describeMachine(host)}; ${REQUESTS} requests, ${CLIENTS} clients, ${SLOTS} slots, ` +
    `${llama ? "bundled model (llama.cpp)" : "ScriptedEngine, 1 ms steps"}${flags.quick ? " (quick)" : ""}`,
);
const handlesBefore = countHandles();
const scripted = llama
  ? undefined
  : new ScriptedEngine(await Vocabulary.fromGgufFile(BUNDLED_MODEL_PATH), {
      slots: SLOTS,
      contextSize: 512,
      stepMs: 1,
      // llama.cpp clears a slot's KV cache off the main thread: freeing a slot takes a macrotask here too, so
      // a client can go away while the loop is freeing another slot.
      onReleaseSlot: () => new Promise<void>((resolve) => setImmediate(resolve)),
    });
const runtime = scripted
  ? await Runtime.create({ engine: scripted, prefillChunkSize: 16 })
  : await Runtime.create({ slots: SLOTS, contextSize: 512, threads: Number(flags.threads) });
const server = createServer(runtime);
const { port } = await server.listen(0, "127.0.0.1");

/**
 * Accepted requests until both their client and their end record are done; then they are counted and
 * dropped, so the bench's own memory does not grow with the run and the trend is the server's.
 */
const live = new Map<string, Outcome>();
let accepted = 0;
let endRecords = 0;
/** End records for an id that had one already: each one is a bug. */
let duplicateEnds = 0;
let allEnded: (() => void) | undefined;
const cancelMsToFree: number[] = [];
let cancelsOverOneStep = 0;
/** Prompts start with "#n.": the bench learns each request's id the moment the runtime takes it. */
const clients = new Map<number, { outcome: Outcome; act: () => void }>();
/** Clients waiting for their request to reach prefill or decode. */
const watching = new Map<string, { outcome: Outcome; act: () => void }>();

// The server tells a non-streaming client its id only at the end: learn it at submission, in process.
const generate = runtime.generate.bind(runtime);
runtime.generate = (submitted) => {
  const channel = generate(submitted);
  accepted++;
  const n = typeof submitted.prompt === "string" ? /^#(\d+)\./.exec(submitted.prompt)?.[1] : undefined;
  const client = n === undefined ? undefined : clients.get(Number(n));
  if (client) {
    client.outcome.id = channel.id;
    live.set(channel.id, client.outcome);
    const { at } = client.outcome.plan;
    // A queued cut acts once generate() has returned: the request is in the queue then.
    if (at === "queued") queueMicrotask(client.act);
    else if (at !== undefined) watching.set(channel.id, client);
  }
  return channel;
};

function phaseOf(id: string | undefined): string {
  if (id === undefined) return "not accepted yet";
  if (live.get(id)?.landed !== undefined) return "ended";
  return runtime.snapshot().slots.find((slot) => slot.requestId === id)?.state ?? "queued";
}

runtime.observe((event) => {
  if (event.type === "end") {
    const { id, reason, cancel } = event.record;
    endRecords++;
    const outcome = live.get(id);
    if (outcome === undefined || outcome.landed !== undefined) duplicateEnds++;
    else {
      outcome.landed =
        reason === "cancelled" ? `cancelled in ${cancel?.phase}` : reason === "error" ? "error" : "finished";
      watching.delete(id);
      if (outcome.settled) count(outcome);
    }
    if (cancel && cancel.phase !== "queued") {
      cancelMsToFree.push(cancel.msToFree);
      if (cancel.stepsToFree > 1) cancelsOverOneStep++;
    }
    if (endRecords >= accepted) allEnded?.();
    return;
  }
  if (watching.size === 0) return;
  for (const slot of runtime.snapshot().slots) {
    const client = slot.requestId === undefined ? undefined : watching.get(slot.requestId);
    if (!client) continue;
    const { at, after } = client.outcome.plan;
    const prefilling = slot.state === "prefill" && (slot.prefilled ?? 0) > 0;
    const decoding = slot.state === "decode" && (slot.generated ?? 0) >= after;
    if ((at === "prefill" && prefilling) || (at === "decode" && decoding)) {
      watching.delete(slot.requestId!);
      client.act();
    }
  }
});

// A slot that stays `freeing` is the leak this soak exists to find: name it while the run goes on.
const freeingSince = new Map<string, number>();
const leaksSeen: string[] = [];
const monitor = setInterval(() => {
  const now = performance.now();
  for (const slot of runtime.snapshot().slots) {
    if (slot.state !== "freeing") continue;
    const key = `${slot.index}:${slot.requestId}`;
    const since = freeingSince.get(key) ?? now;
    freeingSince.set(key, since);
    if (now - since > 2000 && !leaksSeen.some((line) => line.startsWith(`slot ${slot.index} `))) {
      leaksSeen.push(
        `slot ${slot.index} 'freeing' for ${formatMs(now - since)} ms: ${describe(slot.requestId)}`,
      );
      console.error(`\nLEAK ${leaksSeen.at(-1)}`);
    }
  }
  if (freeingSince.size > 64) freeingSince.clear();
}, 500);
monitor.unref();

function describe(id: string | undefined): string {
  const outcome = id === undefined ? undefined : live.get(id);
  if (!outcome) return `request ${id} (not one the soak is tracking)`;
  const { plan } = outcome;
  const action = `client action "${plan.cut}"${plan.at ? ` aimed at ${plan.at}` : ""}`;
  const taken = outcome.acted ? `taken while the runtime had it ${outcome.phaseAtCut}` : "not taken";
  return `request ${id} (#${plan.n}, ${plan.stream ? "SSE" : "not streamed"}), ${action}, ${taken}, end record: ${outcome.landed ?? "none"}`;
}

// ---------------------------------------------------------------------------------------------------------
// The clients.

const deleteAgent = new Agent({ keepAlive: true });

function deleteRequest(id: string): Promise<number> {
  return new Promise((resolve) => {
    const path = `/v1/requests/${id}`;
    const req = request({ port, host: "127.0.0.1", method: "DELETE", path, agent: deleteAgent });
    req.on("response", (res) => res.resume().on("end", () => resolve(res.statusCode ?? 0)));
    req.on("error", () => resolve(0));
    req.end();
  });
}

function runOne(plan: Plan, agent: Agent): Promise<Outcome> {
  const outcome: Outcome = {
    plan,
    acted: false,
    readToEnd: false,
    timedOut: false,
    settled: false,
    counted: false,
  };
  const start = KJV.indexOf("\n", (plan.n * 997) % (KJV.length - 400)) + 1;
  const prompt = `#${plan.n}. ${KJV.slice(start, start + plan.promptChars)}`;
  const body = Buffer.from(
    JSON.stringify({ prompt, max_tokens: plan.maxTokens, stream: plan.stream, temperature: 0 }),
  );
  return new Promise((resolve) => {
    let deleting: Promise<void> | undefined;
    const settle = () => {
      if (outcome.settled) return;
      outcome.settled = true;
      clearTimeout(watchdog);
      clients.delete(plan.n);
      if (outcome.id !== undefined) watching.delete(outcome.id);
      // The DELETE's status belongs to the outcome (it never waits on this response).
      void (deleting ?? Promise.resolve()).then(() => resolve(outcome));
    };
    const req = request({
      port,
      host: "127.0.0.1",
      method: "POST",
      path: "/v1/completions",
      agent,
      headers: { "content-type": "application/json", "content-length": body.length },
    });
    const cut = () => {
      req.destroy();
      settle();
    };
    const watchdog = setTimeout(() => {
      outcome.timedOut = true;
      cut();
    }, REQUEST_TIMEOUT_MS);
    const act = () => {
      if (outcome.settled || outcome.acted) return;
      outcome.acted = true;
      outcome.phaseAtCut = phaseOf(outcome.id);
      if (plan.cut !== "delete") return cut();
      deleting = deleteRequest(outcome.id!).then((status) => {
        outcome.deleteStatus = status;
      });
    };
    clients.set(plan.n, { outcome, act });
    req.on("error", settle);
    req.on("close", settle);
    req.on("response", (res) => onResponse(res, plan, outcome, act, settle));
    if (plan.cut !== "body") {
      req.end(body);
      return;
    }
    // Gone before the body is fully sent: the headers and a part of the body, then the connection is cut.
    req.flushHeaders();
    req.write(body.subarray(0, 1 + Math.floor((body.length - 2) * ((plan.n % 10) / 10))), () => {
      outcome.acted = true;
      outcome.phaseAtCut = "body";
      cut();
    });
  });
}

function onResponse(res: IncomingMessage, plan: Plan, outcome: Outcome, act: () => void, settle: () => void) {
  outcome.status = res.statusCode;
  // Without a stream the response is the terminal chunk: "right after it" is as soon as it arrives.
  if (plan.cut === "headers" || (plan.cut === "terminal" && !plan.stream)) return act();
  let finishes = 0;
  let done = false;
  let afterDone = false;
  let text = "";
  const parser = createParser({
    onEvent: ({ data }) => {
      if (done) afterDone = true;
      if (data === "[DONE]") {
        done = true;
        return;
      }
      const event = JSON.parse(data) as { choices?: { finish_reason: string | null }[] };
      if (event.choices?.[0]?.finish_reason == null) return;
      finishes++;
      if (plan.cut === "terminal") act();
    },
  });
  res.setEncoding("utf8");
  res.on("data", (chunk: string) => {
    if (plan.stream) parser.feed(chunk);
    else text += chunk;
  });
  res.on("end", () => {
    // Data already received may still end the response after the client cut it: no read to the end, that.
    if (outcome.settled) return;
    outcome.readToEnd = true;
    if (outcome.status === 200)
      outcome.terminalOk = plan.stream ? finishes === 1 && done && !afterDone : hasFinish(text);
    settle();
  });
}

function hasFinish(text: string): boolean {
  try {
    return (
      typeof (JSON.parse(text) as { choices: { finish_reason?: unknown }[] }).choices[0]?.finish_reason ===
      "string"
    );
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------------------
// The run: counts per client action, samples every 1% of the requests.

const COLUMNS = [
  "cancelled in queued",
  "cancelled in prefill",
  "cancelled in decode",
  "finished",
  "error",
  "not accepted",
  "no end record",
  "status 2xx",
  "status 4xx",
  "status 5xx",
  "no response",
  "read to end",
  "terminal ok",
  "terminal bad",
  "DELETE 200",
  "DELETE 404",
  "DELETE other",
  "timed out",
] as const;
type Column = (typeof COLUMNS)[number];
const counts = new Map<string, Record<Column | "requests", number>>();
for (const [cut, stream] of MIX) {
  counts.set(groupOf(cut, stream), Object.fromEntries(["requests", ...COLUMNS].map((c) => [c, 0])) as never);
}

/** Counts a request whose client is done and whose end record (if it was accepted) has come. */
function count(outcome: Outcome): void {
  if (outcome.counted) return;
  outcome.counted = true;
  if (outcome.id !== undefined) live.delete(outcome.id);
  const row = counts.get(groupOf(outcome.plan.cut, outcome.plan.stream))!;
  const add = (column: Column) => row[column]++;
  row.requests++;
  add((outcome.landed ?? (outcome.id === undefined ? "not accepted" : "no end record")) as Column);
  const status = outcome.status ?? 0;
  add(
    status === 0 ? "no response" : status >= 500 ? "status 5xx" : status >= 400 ? "status 4xx" : "status 2xx",
  );
  if (outcome.readToEnd) add("read to end");
  if (outcome.terminalOk !== undefined) add(outcome.terminalOk ? "terminal ok" : "terminal bad");
  const deleted = outcome.deleteStatus;
  if (deleted !== undefined)
    add(deleted === 200 ? "DELETE 200" : deleted === 404 ? "DELETE 404" : "DELETE other");
  if (outcome.timedOut) add("timed out");
}

interface Sample {
  done: number;
  rssMb: number;
  heapMb: number;
  handles: number;
}
const samples: Sample[] = [];
const sampleEvery = Math.max(1, Math.floor(REQUESTS / 100));
const nextPlan = planner(Number(flags.seed));
let started = 0;
let finished = 0;

async function client(): Promise<void> {
  // Keep-alive, one socket at a time: completed requests reuse their connection, cut ones lose it.
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  while (started < REQUESTS) {
    const outcome = await runOne(nextPlan(started++), agent);
    // Counted now unless its end record is still to come (a cancelled slot is freed at the next step).
    if (outcome.id === undefined || outcome.landed !== undefined) count(outcome);
    if (++finished % sampleEvery === 0) sample();
    if (finished % Math.max(1, Math.floor(REQUESTS / 20)) === 0) process.stdout.write(".");
  }
  agent.destroy();
}

function sample(): void {
  // The scripted engine keeps every step for tests to inspect: emptied, so the trend is the server's memory.
  if (scripted) scripted.steps.length = 0;
  globalThis.gc?.();
  const memory = process.memoryUsage();
  const handles = process.getActiveResourcesInfo().length;
  samples.push({ done: finished, rssMb: memory.rss / 2 ** 20, heapMb: memory.heapUsed / 2 ** 20, handles });
}

const startedAt = performance.now();
await Promise.all(Array.from({ length: CLIENTS }, client));
const seconds = (performance.now() - startedAt) / 1000;
// No request comes any more: the runtime must free the last cancelled slots on its own (bounded wait).
if (endRecords < accepted) {
  await new Promise<void>((resolve) => {
    allEnded = resolve;
    setTimeout(resolve, 5000).unref();
  });
}
clearInterval(monitor);
const snapshot = runtime.snapshot();
const submitted = runtime.stats.submitted;
const slotsLeaked = snapshot.slots.filter((slot) => slot.state !== "free");
const leaks = [
  ...slotsLeaked.map((slot) => `slot ${slot.index} left '${slot.state}': ${describe(slot.requestId)}`),
  ...[...live.keys()].map((id) => `no end record: ${describe(id)}`),
  ...leaksSeen.map((line) => `seen during the run: ${line}`),
];
const endRecordsMissing = live.size;
for (const outcome of [...live.values()]) count(outcome);
deleteAgent.destroy();
await server.close();
await runtime.close();
// Closed handles leave the list in the event loop's close phase: a few turns, then what is left leaked.
let handlesLeft = leftOver(handlesBefore, countHandles());
for (let turn = 0; turn < 20 && handlesLeft.length > 0; turn++) {
  await new Promise((resolve) => setImmediate(resolve));
  handlesLeft = leftOver(handlesBefore, countHandles());
}

function countHandles(): Map<string, number> {
  const byType = new Map<string, number>();
  for (const type of process.getActiveResourcesInfo()) byType.set(type, (byType.get(type) ?? 0) + 1);
  return byType;
}

function leftOver(before: Map<string, number>, after: Map<string, number>): string[] {
  return [...after].flatMap(([type, n]) =>
    n > (before.get(type) ?? 0) ? [`${type} +${n - (before.get(type) ?? 0)}`] : [],
  );
}

// ---------------------------------------------------------------------------------------------------------
// The report.

const total = (column: Column) => [...counts.values()].reduce((n, row) => n + row[column], 0);
const rows: Row[] = [...counts].map(([group, c]) => ({
  "client action": group,
  requests: c.requests,
  "cancelled queued": c["cancelled in queued"],
  "cancelled prefill": c["cancelled in prefill"],
  "cancelled decode": c["cancelled in decode"],
  finished: c.finished,
  "not accepted": c["not accepted"],
  "2xx/4xx/5xx/none": `${c["status 2xx"]}/${c["status 4xx"]}/${c["status 5xx"]}/${c["no response"]}`,
  "read to end / terminal ok": `${c["read to end"]} / ${c["terminal ok"]}`,
  "DELETE 200/404": group.startsWith("delete") ? `${c["DELETE 200"]}/${c["DELETE 404"]}` : "",
}));

const quartileMean = (values: number[], which: "first" | "last") => {
  const q = Math.max(1, Math.floor(values.length / 4));
  const part = which === "first" ? values.slice(0, q) : values.slice(-q);
  return part.reduce((sum, v) => sum + v, 0) / part.length;
};
const trends = (["rssMb", "heapMb", "handles"] as const).map((metric) => {
  const values = samples.map((s) => s[metric]);
  const first = quartileMean(values, "first");
  const last = quartileMean(values, "last");
  return { metric, first, last, ratio: last / first };
});
const cancelFree = distribution(cancelMsToFree);

const checks: { check: string; value: string | number; ok: boolean }[] = [
  { check: "slots not free after the run", value: slotsLeaked.length, ok: slotsLeaked.length === 0 },
  { check: "requests queued after the run", value: snapshot.queued, ok: snapshot.queued === 0 },
  {
    check: "accepted (bench / runtime.stats.submitted)",
    value: `${accepted} / ${submitted}`,
    ok: accepted === submitted,
  },
  { check: "accepted without an end record", value: endRecordsMissing, ok: endRecordsMissing === 0 },
  { check: "end records beyond one per request", value: duplicateEnds, ok: duplicateEnds === 0 },
  {
    check: "5xx responses (requests and DELETEs)",
    value: total("status 5xx") + total("DELETE other"),
    ok: total("status 5xx") + total("DELETE other") === 0,
  },
  {
    check: "200s read to the end without one terminal chunk",
    value: total("terminal bad"),
    ok: total("terminal bad") === 0,
  },
  { check: "requests that ended with an error", value: total("error"), ok: total("error") === 0 },
  { check: "requests timed out", value: total("timed out"), ok: total("timed out") === 0 },
  {
    check: "cancels that took over one step to free the slot",
    value: cancelsOverOneStep,
    ok: cancelsOverOneStep === 0,
  },
  // Sampled after a GC. The runtime's queue array keeps up to ~1,000 finished requests reachable between
  // compactions, a sawtooth of a few MB; a leak per request grows past it.
  ...trends
    .filter((t) => t.metric !== "rssMb")
    .map((t) => ({
      check: `${t.metric}: last / first quartile at most 1.5x`,
      value: `${t.ratio.toFixed(2)}x`,
      ok: t.ratio <= 1.5,
    })),
  { check: "handles left after close", value: handlesLeft.join(", ") || 0, ok: handlesLeft.length === 0 },
];

console.log(
  `\n\n${REQUESTS} requests in ${seconds.toFixed(1)} s (${(REQUESTS / seconds).toFixed(0)}/s), ${runtime.steps} ` +
    `engine steps. Where the runtime had each request when it ended (its end record), by client action:\n`,
);
printTable(rows);
console.log("");
printTable(
  trends.map(
    (t): Row => ({
      "sampled every 1% of requests, after GC": t.metric,
      "first quartile mean": t.first.toFixed(t.metric === "handles" ? 1 : 2),
      "last quartile mean": t.last.toFixed(t.metric === "handles" ? 1 : 2),
      "last / first": `${t.ratio.toFixed(2)}x`,
    }),
  ),
);
console.log(
  `\ncancel → slot free, prefill and decode cancels (ms p50 / p99 / max, the soak's own GCs included): ` +
    `${formatSpread(cancelFree)}\n`,
);
printTable(checks.map((c): Row => ({ check: c.check, value: c.value, "": c.ok ? "ok" : "LEAK" })));
for (const line of leaks.slice(0, 40)) console.log(line);

// A shorter real-model run must not replace the scripted run's figures.
await writeResults(
  llama ? "soak-llama" : "soak",
  {
    benchmark: "soak",
    quick: flags.quick,
    engine: llama ? "llama" : "scripted",
    seed: Number(flags.seed),
    requests: REQUESTS,
    clients: CLIENTS,
    slots: SLOTS,
    machine: host,
    seconds,
    steps: runtime.steps,
    outcomes: Object.fromEntries(counts),
    cancelMsToFree: cancelFree,
    trends,
    checks,
    leaks,
    samples,
  },
  undefined,
  { quick: flags.quick },
);
const failed = checks.filter((c) => !c.ok);
if (failed.length > 0) {
  console.error(`soak: FAILED: ${failed.map((c) => c.check).join("; ")}`);
  process.exitCode = 1;
}
