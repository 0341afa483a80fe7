/**
 * What Sluice as a gateway costs, measured against a client talking to the upstream directly, in the same
 * run (alternating, same upstream, same requests):
 *
 * - per request: a non-streamed completion of 1 token, end to end;
 * - per token: a 256-token stream (ignore_eos), total time and the median gap between deltas;
 * - cancel to upstream free: a stream cut by its client after the first delta, until the upstream reports
 *   its slot free (Sluice: /metrics sluice_slots_busy 0; llama-server: /slots is_processing false),
 *   polled every 2 ms.
 *
 * The upstreams run as child processes (`sluice serve`, bundled model, 4 slots, 1 thread; llama-server with
 * the same model when built), and so does the gateway (`sluice serve --upstream URL`), so the client here
 * shares its event loop with neither.
 *
 * With `--baseline DIR` (a checkout of an earlier commit, with node_modules), a second gateway from that tree
 * joins the rotation, so a change to the gateway is measured against its predecessor in the same run.
 *
 *   node --import tsx bench/gateway.ts [--quick] [--baseline DIR]
 */
import { createParser } from "eventsource-parser";
import { BUNDLED_MODEL_PATH } from "../src/engine/modelPath.ts";
import {
  describeMachine,
  distribution,
  formatMs,
  machine,
  printTable,
  ratio,
  writeResults,
} from "./harness.ts";
import {
  findLlamaBinaries,
  freePort,
  type ServerProcess,
  spawnServer,
  startLlamaServer,
  startSluiceServer,
} from "./llamaServer.ts";

const REPO = new URL("../", import.meta.url).pathname;
const quick = process.argv.includes("--quick");
const baselineAt = process.argv.indexOf("--baseline");
const BASELINE = baselineAt >= 0 ? process.argv[baselineAt + 1] : undefined;
const ROUNDS = quick ? 3 : 15;
const STREAM_TOKENS = 256;
const PROMPT = "Genesis 1\n1 In the beginning";

async function startGateway(upstream: string, root = REPO): Promise<ServerProcess> {
  const port = await freePort();
  return spawnServer({
    command: process.execPath,
    args: [
      "--import",
      "tsx",
      "src/cli/main.ts",
      "serve",
      "--upstream",
      upstream,
      "--port",
      String(port),
      "--log-level",
      "silent",
    ],
    url: `http://127.0.0.1:${port}`,
    cwd: root,
  });
}

async function oneToken(url: string): Promise<number> {
  const started = performance.now();
  const r = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt: PROMPT, max_tokens: 1, temperature: 0 }),
  });
  await r.json();
  return performance.now() - started;
}

/** Streams `tokens` tokens; optionally cuts the connection after the first delta. */
async function stream(
  url: string,
  tokens: number,
  cut = false,
): Promise<{ totalMs: number; gaps: number[]; deltas: number }> {
  const abort = new AbortController();
  const started = performance.now();
  const r = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      prompt: PROMPT,
      max_tokens: tokens,
      ignore_eos: true,
      temperature: 0,
      stream: true,
    }),
    signal: abort.signal,
  });
  const gaps: number[] = [];
  let last = 0;
  let deltas = 0;
  const parser = createParser({
    onEvent: ({ data }) => {
      if (data === "[DONE]") return;
      const text = (JSON.parse(data) as { choices?: { text?: string }[] }).choices?.[0]?.text;
      if (!text) return;
      const now = performance.now();
      if (deltas > 0) gaps.push(now - last);
      last = now;
      deltas++;
      if (cut) abort.abort();
    },
  });
  const decoder = new TextDecoder();
  try {
    for await (const bytes of r.body as unknown as AsyncIterable<Uint8Array>)
      parser.feed(decoder.decode(bytes, { stream: true }));
  } catch (error) {
    if (!abort.signal.aborted) throw error;
  }
  return { totalMs: performance.now() - started, gaps, deltas };
}

async function sluiceBusy(upstream: string): Promise<boolean> {
  const text = await (await fetch(`${upstream}/metrics`)).text();
  const m = /^sluice_slots_busy (\d+)/m.exec(text);
  return m === null || Number(m[1]) > 0;
}

async function llamaBusy(upstream: string): Promise<boolean> {
  // llama-server closes kept-alive connections on its own schedule: a GET on one it just closed is retried.
  const get = () => fetch(`${upstream}/slots`).then((r) => r.json() as Promise<{ is_processing: boolean }[]>);
  const slots = await get().catch(get);
  return slots.some((s) => s.is_processing);
}

/** Cut a stream after its first delta, then ms until the upstream says its slot is free. */
async function cancelToFree(url: string, busy: () => Promise<boolean>): Promise<number> {
  await stream(url, 400, true);
  const cutAt = performance.now();
  for (let i = 0; i < 5000; i++) {
    if (!(await busy())) return performance.now() - cutAt;
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  throw new Error("the upstream slot was never freed");
}

interface Side {
  oneToken: number[];
  streamMs: number[];
  gaps: number[];
  cancel: number[];
}

async function compareOn(name: string, upstream: ServerProcess, busy: () => Promise<boolean>) {
  const gateway = await startGateway(upstream.url);
  const baseline = BASELINE !== undefined ? await startGateway(upstream.url, BASELINE) : undefined;
  const side = (): Side => ({ oneToken: [], streamMs: [], gaps: [], cancel: [] });
  const sides: [string, Side, string][] = [
    ["direct", side(), upstream.url],
    ["through gateway", side(), gateway.url],
    ...(baseline !== undefined ? [["through baseline", side(), baseline.url] as [string, Side, string]] : []),
  ];
  try {
    // Warm every path (connections, JIT, the upstream's cache of the prompt).
    for (const [, , url] of sides) {
      await oneToken(url);
      await stream(url, 16);
    }
    for (let round = 0; round < ROUNDS; round++) {
      // Each round in another order, so no side always runs first or last.
      const order = sides.map((_, i) => sides[(i + round) % sides.length]!);
      if (round % 2 === 1) order.reverse();
      for (const [, s, url] of order) {
        s.oneToken.push(await oneToken(url));
        const r = await stream(url, STREAM_TOKENS);
        s.streamMs.push(r.totalMs);
        s.gaps.push(...r.gaps);
        s.cancel.push(await cancelToFree(url, busy));
      }
    }
  } finally {
    await gateway.stop();
    await baseline?.stop();
  }
  const d = (values: number[]) => distribution(values);
  const [direct, through, before] = sides.map(([, s]) => s) as [Side, Side, Side | undefined];
  const rows: [string, (s: Side) => number][] = [
    ["1-token request, ms", (s) => d(s.oneToken).p50],
    [`${STREAM_TOKENS}-token stream, ms`, (s) => d(s.streamMs).p50],
    ["gap between deltas p50, ms", (s) => d(s.gaps).p50],
    ["gap between deltas p99, ms", (s) => d(s.gaps).p99],
    ["cancel → upstream slot free, ms", (s) => d(s.cancel).p50],
  ];
  console.log(`## ${name} upstream (${ROUNDS} rounds, medians)`);
  printTable(
    rows.map(([what, f]) => ({
      "": what,
      direct: formatMs(f(direct)),
      "through gateway": formatMs(f(through)),
      "gateway ÷ direct": ratio(f(through), f(direct)),
      "added, ms": formatMs(f(through) - f(direct)),
      ...(before !== undefined
        ? {
            "baseline gateway": formatMs(f(before)),
            "baseline added, ms": formatMs(f(before) - f(direct)),
          }
        : {}),
    })),
  );
  const perToken = (d(through.streamMs).p50 - d(direct.streamMs).p50) / STREAM_TOKENS;
  const perTokenBefore =
    before !== undefined ? (d(before.streamMs).p50 - d(direct.streamMs).p50) / STREAM_TOKENS : undefined;
  console.log(
    `gateway cost per token: ${formatMs(perToken * 1000)} µs (stream time difference / ${STREAM_TOKENS})` +
      (perTokenBefore !== undefined ? `; baseline ${formatMs(perTokenBefore * 1000)} µs` : "") +
      "\n",
  );
  return {
    name,
    rounds: ROUNDS,
    direct,
    through,
    before,
    perTokenMs: perToken,
    perTokenMsBefore: perTokenBefore,
  };
}

async function main(): Promise<void> {
  console.log(describeMachine(await machine()));
  const results: unknown[] = [];
  const sluice = await startSluiceServer({
    model: BUNDLED_MODEL_PATH,
    slots: 4,
    threads: 1,
    contextPerSlot: 512,
    extraArgs: ["--log-level", "silent"],
  });
  try {
    results.push(await compareOn("Sluice", sluice, () => sluiceBusy(sluice.url)));
  } finally {
    await sluice.stop();
  }
  let binaries: ReturnType<typeof findLlamaBinaries> | undefined;
  try {
    binaries = findLlamaBinaries();
  } catch (error) {
    console.log(`llama-server: skipped (${(error as Error).message})`);
  }
  if (binaries !== undefined) {
    const llama = await startLlamaServer({
      model: BUNDLED_MODEL_PATH,
      slots: 4,
      threads: 1,
      contextPerSlot: 512,
      binaries,
    });
    try {
      results.push(await compareOn("llama-server", llama, () => llamaBusy(llama.url)));
    } finally {
      await llama.stop();
    }
  }
  await writeResults("gateway", results, undefined, { quick });
}

await main();
