/**
 * Routing policies of the gateway at scale, by simulation: 100 scripted upstreams and thousands of streams
 * with a realistic prefix mix, routed by the pool's own code (`pickUpstream` and `PrefixIndex` from
 * src/gateway, unchanged), compared on time to first token and prompt-cache hit rate.
 *
 * The model (discrete events, simulated time, nothing sleeps):
 * - An upstream has `slots` slots (4) and a prompt cache that holds the KV of its `cacheEntries` (8) most
 *   recently used prefixes. A request reads its prompt at `prefillTps` (4000 tokens/s) minus the part
 *   whose prefix the upstream has cached, then decodes at `decodeTps` (40 tokens/s per stream). A request
 *   that finds no free slot waits in the upstream's queue (FIFO). Slots are independent (no batching
 *   interference): the figures compare policies, they do not predict a particular server.
 * - Workload: Poisson arrivals; each request belongs to one of 400 prefix groups (system prompts, few-shot
 *   templates, long conversations) drawn with Zipf popularity (s = 1.1); the shared prefix is 500-3000
 *   tokens, the request's own part 50-300, the output 50-400 tokens.
 * - Policies: round robin, least outstanding, prefix affinity bounded by load (factors 1.25, 2, 4). The
 *   router sees each upstream's outstanding count (in flight + queued) exactly, as the pool does.
 *
 * Then a sizing sweep: for a number of concurrent streams, how many upstreams keep p99 TTFT under 1 s with
 * each policy.
 *
 *   node --import tsx bench/gatewaySim.ts [--quick]
 */
import { PrefixIndex } from "../src/gateway/PrefixIndex.ts";
import { pickUpstream, type RoutingPolicy } from "../src/gateway/routingPolicy.ts";
import { distribution, formatMs, printTable, ratio, seededRandom, writeResults } from "./harness.ts";

interface Params {
  upstreams: number;
  slots: number;
  cacheEntries: number;
  prefillTps: number;
  decodeTps: number;
  requests: number;
  /** Mean concurrent streams in the system (Little's law sets the arrival rate from it). */
  concurrency: number;
  groups: number;
  seed: number;
}

interface Policy {
  name: string;
  routing: RoutingPolicy;
  factor?: number;
}

interface Request {
  arrival: number;
  group: number;
  prefixTokens: number;
  ownTokens: number;
  outputTokens: number;
  /** Text whose leading characters identify the group: what the router hashes. */
  text: string;
}

interface SimUpstream {
  id: string;
  outstanding: number;
  busy: number;
  queue: Request[];
  queueHead: number;
  /** Cached prefix groups, least recently used first. */
  cache: number[];
}

/** A binary min-heap of timed events. */
class Events<T> {
  readonly #heap: { t: number; v: T }[] = [];
  get size(): number {
    return this.#heap.length;
  }
  push(t: number, v: T): void {
    const h = this.#heap;
    h.push({ t, v });
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p]!.t <= h[i]!.t) break;
      [h[p], h[i]] = [h[i]!, h[p]!];
      i = p;
    }
  }
  pop(): { t: number; v: T } {
    const h = this.#heap;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && h[l]!.t < h[m]!.t) m = l;
        if (r < h.length && h[r]!.t < h[m]!.t) m = r;
        if (m === i) break;
        [h[m], h[i]] = [h[i]!, h[m]!];
        i = m;
      }
    }
    return top;
  }
}

function workload(p: Params): Request[] {
  const random = seededRandom(p.seed);
  const between = (lo: number, hi: number) => Math.round(lo + random() * (hi - lo));
  // Zipf(1.1) over the groups, by inverse CDF.
  const weights = Array.from({ length: p.groups }, (_, k) => 1 / (k + 1) ** 1.1);
  const total = weights.reduce((a, b) => a + b, 0);
  const cdf: number[] = [];
  weights.reduce((acc, w, k) => (cdf[k] = acc + w / total), 0);
  const prefixOf = Array.from({ length: p.groups }, () => between(500, 3000));
  const meanService = 1750 / p.prefillTps + 225 / p.decodeTps;
  const rate = p.concurrency / meanService;
  const requests: Request[] = [];
  let t = 0;
  for (let i = 0; i < p.requests; i++) {
    t += -Math.log(1 - random()) / rate;
    const u = random();
    let group = cdf.findIndex((c) => c >= u);
    if (group < 0) group = p.groups - 1;
    requests.push({
      arrival: t,
      group,
      prefixTokens: prefixOf[group]!,
      ownTokens: between(50, 300),
      outputTokens: between(50, 400),
      text: `group ${group} system prompt `.padEnd(256, "·") + `request ${i}`,
    });
  }
  return requests;
}

function simulate(p: Params, policy: Policy, requests: readonly Request[]) {
  const ups: SimUpstream[] = Array.from({ length: p.upstreams }, (_, i) => ({
    id: `u${i}`,
    outstanding: 0,
    busy: 0,
    queue: [],
    queueHead: 0,
    cache: [],
  }));
  const byId = new Map(ups.map((u) => [u.id, u]));
  const index = new PrefixIndex({ blockChars: 64, maxBlocks: 8, maxEntries: 1_000_000 });
  const events = new Events<{ kind: "arrive"; r: Request } | { kind: "done"; u: SimUpstream }>();
  for (const r of requests) events.push(r.arrival, { kind: "arrive", r });
  const ttft: number[] = [];
  let hits = 0;
  let turn = 0;
  const start = (now: number, u: SimUpstream, r: Request) => {
    u.busy++;
    const at = u.cache.indexOf(r.group);
    const hit = at >= 0;
    if (hit) u.cache.splice(at, 1);
    u.cache.push(r.group);
    if (u.cache.length > p.cacheEntries) u.cache.shift();
    if (hit) hits++;
    const prompt = (hit ? 0 : r.prefixTokens) + r.ownTokens;
    const first = now + prompt / p.prefillTps;
    ttft.push((first - r.arrival) * 1000);
    events.push(first + r.outputTokens / p.decodeTps, { kind: "done", u });
  };
  while (events.size > 0) {
    const { t, v } = events.pop();
    if (v.kind === "arrive") {
      const hashes = policy.routing === "prefix_affinity" ? index.hashes(v.r.text) : [];
      const matches = hashes.length > 0 ? index.matches(hashes) : [];
      const { upstream } = pickUpstream(policy.routing, ups, turn++, matches, policy.factor ?? 2);
      if (policy.routing === "prefix_affinity") index.record(hashes, upstream.id);
      const u = byId.get(upstream.id)!;
      u.outstanding++;
      if (u.busy < p.slots) start(t, u, v.r);
      else u.queue.push(v.r);
    } else {
      const u = v.u;
      u.busy--;
      u.outstanding--;
      if (u.queueHead < u.queue.length) {
        start(t, u, u.queue[u.queueHead++]!);
        if (u.queueHead > 1024) {
          u.queue.splice(0, u.queueHead);
          u.queueHead = 0;
        }
      }
    }
  }
  return { ttft: distribution(ttft), hitRate: hits / requests.length };
}

const POLICIES: Policy[] = [
  { name: "round robin", routing: "round_robin" },
  { name: "least outstanding", routing: "least_outstanding" },
  { name: "prefix affinity x1.25", routing: "prefix_affinity", factor: 1.25 },
  { name: "prefix affinity x2", routing: "prefix_affinity", factor: 2 },
  { name: "prefix affinity x4", routing: "prefix_affinity", factor: 4 },
];

async function main(): Promise<void> {
  const quick = process.argv.includes("--quick");
  const base: Params = {
    upstreams: 100,
    slots: 4,
    cacheEntries: 8,
    prefillTps: 4000,
    decodeTps: 40,
    requests: quick ? 5000 : 40_000,
    concurrency: 280,
    groups: 400,
    seed: 1,
  };
  console.log(
    `# ${base.upstreams} upstreams x ${base.slots} slots (prefill ${base.prefillTps} tok/s, decode ${base.decodeTps} tok/s ` +
      `per stream, cache of ${base.cacheEntries} prefixes each); ${base.requests} requests, ${base.groups} prefix groups (Zipf 1.1)\n`,
  );
  const results: Record<string, unknown>[] = [];
  for (const concurrency of quick ? [280] : [200, 280, 360]) {
    const params = { ...base, concurrency };
    const requests = workload(params);
    const runs = POLICIES.map((policy) => ({ policy, ...simulate(params, policy, requests) }));
    const rr = runs[0]!;
    console.log(
      `## ${concurrency} concurrent streams on average (${((concurrency / (base.upstreams * base.slots)) * 100).toFixed(0)}% of the slots)`,
    );
    printTable(
      runs.map((r) => ({
        policy: r.policy.name,
        "TTFT p50 ms": formatMs(r.ttft.p50),
        "TTFT p99 ms": formatMs(r.ttft.p99),
        "TTFT mean ms": formatMs(r.ttft.mean),
        "cache hits": `${(r.hitRate * 100).toFixed(1)}%`,
        "p50 ÷ round robin": ratio(r.ttft.p50, rr.ttft.p50),
        "p99 ÷ round robin": ratio(r.ttft.p99, rr.ttft.p99),
      })),
    );
    console.log("");
    results.push({
      concurrency,
      runs: runs.map((r) => ({ policy: r.policy.name, ttftMs: r.ttft, cacheHitRate: r.hitRate })),
    });
  }
  // Sizing: the fewest upstreams that keep p99 TTFT under 1 s for a given number of concurrent streams.
  const sizing: Record<string, unknown>[] = [];
  const targets = quick ? [400] : [400, 1000];
  for (const streams of targets) {
    const row: Record<string, string | number> = { "concurrent streams": streams };
    for (const policy of [POLICIES[1]!, POLICIES[3]!]) {
      let found = Number.NaN;
      for (
        let n = Math.ceil(streams / base.slots / 1.0);
        n <= Math.ceil(streams / base.slots) * 3;
        n += Math.max(1, Math.round(streams / 200))
      ) {
        const params = { ...base, upstreams: n, concurrency: streams, requests: quick ? 5000 : 20_000 };
        const { ttft } = simulate(params, policy, workload(params));
        if (ttft.p99 < 1000) {
          found = n;
          break;
        }
      }
      row[`upstreams, ${policy.name}`] = found;
    }
    sizing.push(row);
  }
  console.log("## Upstreams needed for p99 TTFT under 1 s (4 slots each)");
  printTable(sizing as never);
  await writeResults("gatewaySim", { params: base, results, sizing }, undefined, { quick });
}

await main();
