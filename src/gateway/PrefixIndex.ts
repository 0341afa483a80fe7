export interface PrefixIndexOptions {
  /** Characters per block: prompts are matched on whole blocks. */
  blockChars: number;
  /** Blocks hashed per prompt: the longest prefix that can be matched is `blockChars * maxBlocks`. */
  maxBlocks: number;
  /** Block hashes remembered (least recently used ones are forgotten first). */
  maxEntries: number;
}

/**
 * Which upstream last served each prompt prefix, at block granularity, the way prefix-aware routers
 * (SGLang's, llm-d's) approximate where a KV cache lives without asking the upstream. A prompt's text is cut
 * into blocks of `blockChars`; block *i*'s hash covers blocks 0..i (chained), so a hash names a whole
 * prefix. Routing a request records all its hashes for the upstream chosen; a later request whose prompt
 * starts the same way finds its longest recorded prefix. Memory is bounded by `maxEntries` (an LRU map).
 */
export class PrefixIndex {
  readonly #options: PrefixIndexOptions;
  readonly #owners = new Map<number, string>();

  constructor(options: PrefixIndexOptions) {
    this.#options = options;
  }

  get size(): number {
    return this.#owners.size;
  }

  /** The chained hashes of `text`'s whole blocks, shortest prefix first (a last partial block counts too). */
  hashes(text: string): number[] {
    const { blockChars, maxBlocks } = this.#options;
    const out: number[] = [];
    let a = 0x811c9dc5;
    let b = 0x01000193;
    const end = Math.min(text.length, blockChars * maxBlocks);
    for (let i = 0; i < end; i++) {
      const c = text.charCodeAt(i);
      a = Math.imul(a ^ c, 0x01000193) >>> 0;
      b = Math.imul(b ^ c, 0x5bd1e995) >>> 0;
      if ((i + 1) % blockChars === 0 || i + 1 === end) out.push(a * 2 ** 21 + (b >>> 11));
    }
    return out;
  }

  /**
   * Upstreams holding a prefix of the prompt, longest prefix first, each once, with the number of blocks
   * matched.
   */
  matches(hashes: readonly number[]): { upstream: string; blocks: number }[] {
    const out: { upstream: string; blocks: number }[] = [];
    for (let i = hashes.length - 1; i >= 0; i--) {
      const owner = this.#owners.get(hashes[i]!);
      if (owner !== undefined && !out.some((m) => m.upstream === owner))
        out.push({ upstream: owner, blocks: i + 1 });
    }
    return out;
  }

  /** `upstream` now holds every prefix of this prompt. */
  record(hashes: readonly number[], upstream: string): void {
    const owners = this.#owners;
    for (const hash of hashes) {
      owners.delete(hash);
      owners.set(hash, upstream);
    }
    while (owners.size > this.#options.maxEntries) owners.delete(owners.keys().next().value!);
  }

  /** Forgets an upstream (it was removed, or restarted with an empty cache). */
  forget(upstream: string): void {
    for (const [hash, owner] of this.#owners) if (owner === upstream) this.#owners.delete(hash);
  }
}

/**
 * The text that decides where a request's prompt is cached: a completion's prompt, or a chat's messages
 * in order (role and content), which is how a chat template lays them out, so a chat's next turn shares
 * its prefix with the last one.
 */
export function promptText(body: Record<string, unknown>): string {
  const { prompt, messages } = body;
  if (typeof prompt === "string") return prompt;
  if (Array.isArray(prompt)) {
    const first = prompt[0];
    if (typeof first === "string") return first;
    if (Array.isArray(first)) return first.join(",");
    return prompt.join(",");
  }
  if (!Array.isArray(messages)) return "";
  let text = "";
  for (const message of messages) {
    if (typeof message !== "object" || message === null) continue;
    const { role, content } = message as { role?: unknown; content?: unknown };
    text += `\u0000${String(role)}\u0001`;
    if (typeof content === "string") text += content;
    else if (Array.isArray(content)) {
      for (const part of content) {
        const t = (part as { text?: unknown } | null)?.text;
        if (typeof t === "string") text += t;
      }
    }
  }
  return text;
}
