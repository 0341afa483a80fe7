/**
 * Detokenizer cost per generated token: OutputProcessor push + take, against the alternatives measured in
 * the same run — re-decoding the whole history every token (what a naive streamer does) and a streaming
 * TextDecoder per token (exact, but with no stop strings, filtering or interval).
 *
 *   npx tsx bench/detok.ts [tokens]
 */
import { fileURLToPath } from "node:url";
import { OutputProcessor, type OutputProcessorOptions } from "../src/detok/OutputProcessor.ts";
import { Vocabulary } from "../src/detok/Vocabulary.ts";
import { KJV as CORPUS_KJV, greedyTokenize } from "./corpus.ts";

const TOKENS = Number(process.argv[2] ?? 1_000_000);
const NAIVE_TOKENS = 5_000;
const REPEATS = 7;
const MODEL = fileURLToPath(new URL("../models/kjv-tiny.gguf", import.meta.url));

// The header and first 8 verses of the shared passage.
const KJV = `${CORPUS_KJV.split("\n").slice(0, 9).join("\n")}\n`;
const MULTIBYTE =
  "日本語の聖書 🎉 創世記 第一章 😀 はじめに神は天と地とを創造された。 café naïve 中文 한국어 🙏✨ ";
const STOPS = ["\n\n", "<|user|>", "And God rested"];

const vocabulary = await Vocabulary.fromGgufFile(MODEL);
let sink = 0;

/** Greedy longest-match over the real vocabulary: a stream of real ids whose text is the passage. */
function tokenizeGreedy(text: string): number[] {
  return greedyTokenize(vocabulary, text);
}

/** Every byte as its own byte token: what a byte-level model emits for text outside its merges. */
function byteTokens(text: string): number[] {
  const byteId = new Map<number, number>();
  for (let id = 0; id < vocabulary.size; id++) {
    const bytes = vocabulary.bytesOf(id);
    if (bytes.length === 1 && !byteId.has(bytes[0]!)) byteId.set(bytes[0]!, id);
  }
  return Array.from(new TextEncoder().encode(text), (b) => byteId.get(b)!);
}

function repeatTo(ids: readonly number[], count: number): Int32Array {
  const out = new Int32Array(count);
  for (let i = 0; i < count; i++) out[i] = ids[i % ids.length]!;
  return out;
}

/**
 * Best ns/token of each measurement over REPEATS rounds. Rounds interleave all measurements, so a burst of
 * load from elsewhere on the machine hits every one of them alike rather than skewing one ratio.
 */
function bestOfRounds(runs: Record<string, () => number>): Record<string, number> {
  const best: Record<string, number> = {};
  for (const [name, run] of Object.entries(runs)) {
    run(); // warm-up: let the JIT settle before timing
    best[name] = Number.POSITIVE_INFINITY;
  }
  for (let round = 0; round < REPEATS; round++) {
    for (const [name, run] of Object.entries(runs)) best[name] = Math.min(best[name]!, run());
  }
  return best;
}

/** ns per token of push + take over the stream, as the runtime drives it. */
function processorCost(stream: Int32Array, options: OutputProcessorOptions): () => number {
  return () => {
    const start = process.hrtime.bigint();
    const processor = new OutputProcessor(vocabulary, options);
    let chars = 0;
    for (let i = 0; i < stream.length; i++) {
      if (processor.push(stream[i]!) !== undefined) throw new Error("a stop string matched the bench stream");
      const delta = processor.take(false);
      if (delta !== undefined) chars += delta.text.length;
    }
    chars += processor.take(true)!.text.length;
    const elapsed = Number(process.hrtime.bigint() - start);
    sink += chars;
    return elapsed / stream.length;
  };
}

/** A streaming TextDecoder per token: exact bytes to text, nothing else. */
function textDecoderCost(stream: Int32Array): () => number {
  return () => {
    const start = process.hrtime.bigint();
    const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
    let chars = 0;
    for (let i = 0; i < stream.length; i++) {
      chars += decoder.decode(vocabulary.bytesOf(stream[i]!), { stream: true }).length;
    }
    chars += decoder.decode().length;
    const elapsed = Number(process.hrtime.bigint() - start);
    sink += chars;
    return elapsed / stream.length;
  };
}

/** Re-decode the whole history every token and emit the difference, holding back a trailing U+FFFD. */
function naiveCost(stream: Int32Array): () => number {
  const ids = stream.subarray(0, NAIVE_TOKENS);
  return () => {
    const start = process.hrtime.bigint();
    const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
    const history = new Uint8Array(ids.length * 32);
    let length = 0;
    let emitted = 0;
    let chars = 0;
    for (let i = 0; i < ids.length; i++) {
      const bytes = vocabulary.bytesOf(ids[i]!);
      history.set(bytes, length);
      length += bytes.length;
      const text = decoder.decode(history.subarray(0, length));
      const stable = text.endsWith("\uFFFD") ? text.length - 1 : text.length;
      if (stable > emitted) {
        chars += text.slice(emitted, stable).length;
        emitted = stable;
      }
    }
    const elapsed = Number(process.hrtime.bigint() - start);
    sink += chars;
    return elapsed / ids.length;
  };
}

const english = repeatTo(tokenizeGreedy(KJV), TOKENS);
const multibyte = repeatTo(byteTokens(MULTIBYTE), TOKENS);

const cases: [string, Int32Array, OutputProcessorOptions, "english" | "multibyte"][] = [
  ["KJV English, no stops, interval 1", english, {}, "english"],
  ["KJV English, 3 stop strings, interval 1", english, { stop: STOPS }, "english"],
  ["KJV English, no stops, interval 4", english, { streamInterval: 4 }, "english"],
  ["byte tokens (CJK, emoji), no stops, interval 1", multibyte, {}, "multibyte"],
  ["byte tokens (CJK, emoji), 3 stop strings, interval 1", multibyte, { stop: STOPS }, "multibyte"],
];
const best = bestOfRounds({
  "naive english": naiveCost(english),
  "naive multibyte": naiveCost(multibyte),
  "decoder english": textDecoderCost(english),
  "decoder multibyte": textDecoderCost(multibyte),
  ...Object.fromEntries(cases.map(([name, stream, options]) => [name, processorCost(stream, options)])),
});

const rows = cases.map(([name, , , kind]) => {
  const ns = best[name]!;
  const naive = best[`naive ${kind}`]!;
  const decoder = best[`decoder ${kind}`]!;
  return {
    case: name,
    "ns/token": ns.toFixed(1),
    "naive re-decode ns/token": naive.toFixed(0),
    "x faster than naive": (naive / ns).toFixed(0),
    "TextDecoder stream ns/token": decoder.toFixed(1),
    "x vs TextDecoder": (decoder / ns).toFixed(2),
  };
});

console.log(
  `OutputProcessor push+take(false) per token, best of ${REPEATS} interleaved rounds; ${TOKENS.toLocaleString("en")} tokens per case ` +
    `(naive re-decode over the first ${NAIVE_TOKENS.toLocaleString("en")}); Node ${process.version}`,
);
console.table(rows);
if (sink < 0) console.log(sink);
