/** A free slot as admission sees it. */
export interface SlotCandidate {
  slot: number;
  /** The slot's cached tokens (empty when it holds nothing or caching is off for this request). */
  cached: readonly number[];
  /** When the slot was last released (a counter); lower is older. */
  lastUsed: number;
}

/**
 * A slot is chosen for its cache only when the shared prefix covers at least this share of what it holds
 * (llama-server's `--slot-prompt-similarity`, 0.5 by default): a short accidental match (a BOS token, a
 * common first word) must not throw away a long cached prefix that another request may still want.
 */
export const MIN_PREFIX_SHARE = 0.5;

/** Length of the common prefix of two token sequences. */
export function commonPrefix(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

/**
 * Picks the free slot for a prompt, a pure policy: the slot whose cache shares the longest prefix with the
 * prompt, counted only when that prefix is at least `MIN_PREFIX_SHARE` of the slot's cache; ties and misses
 * go to an empty slot, else the least recently used (its cache is the least likely to be wanted again).
 * `reuse` is the prefix kept, at most `prompt.length - minRead`: the last prompt token is always evaluated
 * again so that the step that samples has its logits, and an engine with a minimum prompt chunk
 * (`EngineInfo.minPromptChunk`) reads at least that many. Only that much of a match counts: a slot whose match
 * leaves nothing to reuse is no better than a miss, so it is not emptied for nothing. Without `useCache` (the
 * request opted out) it is 0 and the slot is chosen by age alone. `hit`: the slot was chosen for its cache (a
 * miss may still reuse a token or two of the least recently used slot, a BOS and a common first word: that is
 * reuse, not a hit).
 */
export function pickSlot(
  free: readonly SlotCandidate[],
  prompt: readonly number[],
  useCache = true,
  minRead = 1,
): { slot: number; reuse: number; hit: boolean } {
  // What can be reused: the last `minRead` prompt tokens (at least one) are read whatever the cache holds.
  const reusable = prompt.length - Math.max(1, minRead);
  let best: SlotCandidate | undefined;
  let bestMatch = 0;
  let lru: SlotCandidate | undefined;
  for (const candidate of free) {
    if (lru === undefined || age(candidate) < age(lru)) lru = candidate;
    if (!useCache) continue;
    const match = Math.min(commonPrefix(candidate.cached, prompt), reusable);
    if (match <= 0 || match < MIN_PREFIX_SHARE * candidate.cached.length) continue;
    if (
      match > bestMatch ||
      (match === bestMatch && best !== undefined && candidate.lastUsed < best.lastUsed)
    ) {
      best = candidate;
      bestMatch = match;
    }
  }
  const chosen = best ?? lru;
  if (chosen === undefined) throw new Error("pickSlot needs at least one free slot");
  if (!useCache) return { slot: chosen.slot, reuse: 0, hit: false };
  const reuse = Math.min(chosen === best ? bestMatch : commonPrefix(chosen.cached, prompt), reusable);
  return { slot: chosen.slot, reuse: Math.max(0, reuse), hit: chosen === best };
}

/** An empty slot is the oldest: taking it throws nothing away. */
function age(candidate: SlotCandidate): number {
  return candidate.cached.length === 0 ? -1 : candidate.lastUsed;
}
