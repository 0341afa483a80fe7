/**
 * How the pool picks an upstream for a request:
 * - `round_robin`: in turn, whatever their load.
 * - `least_outstanding`: the one with the fewest requests in flight (ties in turn).
 * - `prefix_affinity`: the one that last served the longest prefix of the prompt, if its load is within
 *   `affinityLoadFactor` of the least loaded one's (`outstanding + 1 <= factor * (least + 1)`); otherwise
 *   least outstanding. A cached prefix saves its prefill, but not a wait behind a queue.
 */
export type RoutingPolicy = "round_robin" | "least_outstanding" | "prefix_affinity";

export const ROUTING_POLICIES: readonly RoutingPolicy[] = [
  "round_robin",
  "least_outstanding",
  "prefix_affinity",
];

export interface RoutingCandidate {
  readonly id: string;
  readonly outstanding: number;
}

export interface RoutingChoice<C extends RoutingCandidate> {
  upstream: C;
  /** `hit`: sent where its prefix is; `overloaded`: a prefix holder was skipped for load; `miss`: none held it. */
  affinity: "hit" | "overloaded" | "miss" | "none";
}

/**
 * Picks among `candidates` (non-empty; eligible upstreams, in a fixed order). `turn` is a counter the caller
 * increments per request, for round robin and for breaking ties. `matches` are the upstreams holding a
 * prefix, longest first (see `PrefixIndex.matches`). Pure, and shared with the simulation in bench/.
 */
export function pickUpstream<C extends RoutingCandidate>(
  policy: RoutingPolicy,
  candidates: readonly C[],
  turn: number,
  matches: readonly { upstream: string }[] = [],
  affinityLoadFactor = 2,
): RoutingChoice<C> {
  const n = candidates.length;
  if (policy === "round_robin") return { upstream: candidates[turn % n]!, affinity: "none" };
  let least = candidates[turn % n]!;
  for (let k = 1; k < n; k++) {
    const c = candidates[(turn + k) % n]!;
    if (c.outstanding < least.outstanding) least = c;
  }
  if (policy === "least_outstanding") return { upstream: least, affinity: "none" };
  let skipped = false;
  const bound = affinityLoadFactor * (least.outstanding + 1);
  for (const match of matches) {
    const holder = candidates.find((c) => c.id === match.upstream);
    if (holder === undefined) continue;
    if (holder.outstanding + 1 <= bound) return { upstream: holder, affinity: "hit" };
    skipped = true;
  }
  return { upstream: least, affinity: skipped ? "overloaded" : "miss" };
}
