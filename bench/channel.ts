/**
 * Push-to-consume cost of a StreamChannel against the usual async-iteration queues, measured in one run.
 *
 * - lockstep: the consumer is already waiting; the producer pushes one chunk and the consumer receives it
 *   before the next push (a consumer that keeps up with the engine). Reported per round trip.
 * - burst: the producer pushes N small chunks back to back, then finishes; the consumer drains (a consumer
 *   lagging behind a fast producer). Reported as the time until the consumer holds every token.
 *
 * Every contender gets the same payload ({ tokenIds: [id], text: "ab" }) with an unbounded buffer, and the
 * bench checks each one delivered every token and character before printing anything.
 *
 * Run: npx tsx bench/channel.ts   (add --expose-gc via NODE_OPTIONS for steadier numbers)
 */
import { Readable } from "node:stream";
import { FixedBuffer, type Push, Repeater } from "@repeaterjs/repeater";
import { pushable } from "it-pushable";
import type { TerminalInfo } from "../src/channel/index.ts";
import { createStreamChannel } from "../src/channel/index.ts";
import { compare, formatCount, formatDuration, perSecond, printTable, type Row, ratio } from "./harness.ts";

const LOCKSTEP_CHUNKS = 50_000;
const BURST_CHUNKS = 100_000;
const RUNS = 7;
const WARMUP = 2;
/** Per contender and mode; the quadratic queues (see the note printed at the end) need one run at most. */
const BUDGET_MS = 3_000;

interface Payload {
  tokenIds: number[];
  text: string;
}

/** What the consumer actually received, to prove every contender did the whole job. */
interface Delivery {
  tokens: number;
  chars: number;
  chunks: number;
}

interface Contender {
  name: string;
  lockstep(count: number): Promise<Delivery>;
  burst(count: number): Promise<Delivery>;
}

const TERMINAL: TerminalInfo = {
  reason: "eos",
  usage: { promptTokens: 0, completionTokens: 0, cachedTokens: 0 },
  timings: { queuedMs: 0, prefillMs: 0, decodeMs: 0, firstTokenMs: 0, tokensPerSecond: 0 },
};

function tally(delivery: Delivery, chunk: Payload): void {
  delivery.tokens += chunk.tokenIds.length;
  delivery.chars += chunk.text.length;
  delivery.chunks++;
}

/** Lockstep over any async iterator whose source is fed by `push`. */
async function lockstepOver(
  iterator: AsyncIterator<Payload>,
  push: (chunk: Payload) => void,
  end: () => void,
  count: number,
): Promise<Delivery> {
  const delivery: Delivery = { tokens: 0, chars: 0, chunks: 0 };
  for (let i = 0; i < count; i++) {
    const next = iterator.next();
    push({ tokenIds: [i], text: "ab" });
    const step = await next;
    if (step.done === true) break;
    tally(delivery, step.value);
  }
  end();
  for (let step = await iterator.next(); step.done !== true; step = await iterator.next()) {
    tally(delivery, step.value);
  }
  return delivery;
}

/** Starts a for-await consumer, then pushes `count` chunks synchronously and ends the source. */
async function burstOver(
  source: AsyncIterable<Payload>,
  push: (chunk: Payload) => void,
  end: () => void,
  count: number,
): Promise<Delivery> {
  const consumer = (async () => {
    const delivery: Delivery = { tokens: 0, chars: 0, chunks: 0 };
    for await (const chunk of source) tally(delivery, chunk);
    return delivery;
  })();
  for (let i = 0; i < count; i++) push({ tokenIds: [i], text: "ab" });
  end();
  return consumer;
}

const sluice: Contender = {
  name: "Sluice StreamChannel",
  lockstep(count) {
    const { channel, producer } = createStreamChannel({ id: "bench" });
    return lockstepOver(
      channel[Symbol.asyncIterator](),
      (chunk) => producer.push(chunk.tokenIds, chunk.text),
      () => producer.finish([], "", TERMINAL),
      count,
    );
  },
  burst(count) {
    const { channel, producer } = createStreamChannel({ id: "bench" });
    return burstOver(
      channel,
      (chunk) => producer.push(chunk.tokenIds, chunk.text),
      () => producer.finish([], "", TERMINAL),
      count,
    );
  },
};

function repeaterSource(): { repeater: Repeater<Payload>; push: Push<Payload>; stop: () => void } {
  let push: Push<Payload> | undefined;
  let stop: (() => void) | undefined;
  const repeater = new Repeater<Payload>((p, s) => {
    push = p;
    stop = () => s();
  }, new FixedBuffer(Number.POSITIVE_INFINITY));
  return {
    repeater,
    push: (value) => push!(value),
    stop: () => stop!(),
  };
}

const repeater: Contender = {
  name: "@repeaterjs/repeater",
  // Both drivers call next() before the first push, which is what runs the executor and hands out `push`.
  lockstep(count) {
    const source = repeaterSource();
    return lockstepOver(source.repeater[Symbol.asyncIterator](), source.push, source.stop, count);
  },
  burst(count) {
    const source = repeaterSource();
    return burstOver(source.repeater, source.push, source.stop, count);
  },
};

const itPushable: Contender = {
  name: "it-pushable",
  lockstep(count) {
    const source = pushable<Payload>({ objectMode: true });
    return lockstepOver(
      source[Symbol.asyncIterator](),
      (chunk) => source.push(chunk),
      () => source.end(),
      count,
    );
  },
  burst(count) {
    const source = pushable<Payload>({ objectMode: true });
    return burstOver(
      source,
      (chunk) => source.push(chunk),
      () => source.end(),
      count,
    );
  },
};

function objectReadable(): Readable {
  // push() past highWaterMark only reports backpressure; the buffer itself is unbounded.
  return new Readable({ objectMode: true, read() {} });
}

const nodeReadable: Contender = {
  name: "node:stream Readable",
  lockstep(count) {
    const source = objectReadable();
    return lockstepOver(
      source[Symbol.asyncIterator](),
      (chunk) => source.push(chunk),
      () => source.push(null),
      count,
    );
  },
  burst(count) {
    const source = objectReadable();
    return burstOver(
      source,
      (chunk) => source.push(chunk),
      () => source.push(null),
      count,
    );
  },
};

function whatwgSource(): {
  stream: ReadableStream<Payload>;
  controller: ReadableStreamDefaultController<Payload>;
} {
  let controller: ReadableStreamDefaultController<Payload> | undefined;
  const stream = new ReadableStream<Payload>(
    {
      start(c) {
        controller = c;
      },
    },
    { highWaterMark: Number.POSITIVE_INFINITY },
  );
  return { stream, controller: controller! };
}

async function readAll(reader: ReadableStreamDefaultReader<Payload>, delivery: Delivery): Promise<Delivery> {
  for (let step = await reader.read(); step.done !== true; step = await reader.read())
    tally(delivery, step.value);
  return delivery;
}

const whatwgStream: Contender = {
  name: "WHATWG ReadableStream",
  async lockstep(count) {
    const { stream, controller } = whatwgSource();
    const reader = stream.getReader();
    const delivery: Delivery = { tokens: 0, chars: 0, chunks: 0 };
    for (let i = 0; i < count; i++) {
      const next = reader.read();
      controller.enqueue({ tokenIds: [i], text: "ab" });
      const step = await next;
      if (step.done === true) break;
      tally(delivery, step.value);
    }
    controller.close();
    return readAll(reader, delivery);
  },
  burst(count) {
    const { stream, controller } = whatwgSource();
    const reader = stream.getReader();
    const consumer = readAll(reader, { tokens: 0, chars: 0, chunks: 0 });
    for (let i = 0; i < count; i++) controller.enqueue({ tokenIds: [i], text: "ab" });
    controller.close();
    return consumer;
  },
};

const contenders = [sluice, repeater, itPushable, nodeReadable, whatwgStream];

interface Outcome {
  contender: Contender;
  medianMs: number;
  minMs: number;
  maxMs: number;
  runs: number;
  delivery: Delivery;
}

async function run(mode: "lockstep" | "burst", count: number): Promise<Outcome[]> {
  const deliveries = new Map<Contender, Delivery>();
  const cases = contenders.map((contender) => ({
    name: contender.name,
    fn: async () => {
      const delivery = await contender[mode](count);
      if (delivery.tokens !== count || delivery.chars !== 2 * count) {
        throw new Error(
          `${contender.name} (${mode}) delivered ${delivery.tokens} tokens / ${delivery.chars} chars, ` +
            `expected ${count} / ${2 * count}`,
        );
      }
      deliveries.set(contender, delivery);
    },
  }));
  const measurements = await compare(cases, { warmup: WARMUP, runs: RUNS, budgetMs: BUDGET_MS });
  return measurements.map((measurement, i) => {
    const contender = contenders[i]!;
    return {
      contender,
      ...measurement,
      runs: measurement.samples.length,
      delivery: deliveries.get(contender)!,
    };
  });
}

function rows(mode: string, count: number, outcomes: readonly Outcome[]): Row[] {
  const ours = outcomes[0]!;
  return outcomes.map((outcome) => ({
    mode,
    implementation: outcome.contender.name,
    "chunks seen": formatCount(outcome.delivery.chunks),
    "tokens/s": formatCount(perSecond(count, outcome.medianMs)),
    [mode === "lockstep" ? "per chunk" : "total"]: formatDuration(
      mode === "lockstep" ? outcome.medianMs / count : outcome.medianMs,
    ),
    "min..max": `${formatDuration(outcome.minMs)}..${formatDuration(outcome.maxMs)}`,
    runs: outcome.runs,
    "throughput Sluice/alt": ratio(perSecond(count, ours.medianMs), perSecond(count, outcome.medianMs)),
    "time Sluice/alt": ratio(ours.medianMs, outcome.medianMs),
  }));
}

const lockstep = await run("lockstep", LOCKSTEP_CHUNKS);
const burst = await run("burst", BURST_CHUNKS);

console.log(
  `Node ${process.version}, ${RUNS} timed runs after ${WARMUP} warm-ups, median reported; ` +
    `gc between runs: ${typeof globalThis.gc === "function" ? "yes" : "no"}.`,
);
console.log(
  `Every contender delivered all tokens and characters (checked on every run). Throughput counts tokens ` +
    `delivered per second. Sluice coalesces pending deltas when the consumer lags, so in burst mode it ` +
    `delivers fewer, larger chunks by design ("chunks seen").`,
);
console.log("");
console.log(`lockstep: ${formatCount(LOCKSTEP_CHUNKS)} round trips of one chunk (time = per round trip)`);
printTable(rows("lockstep", LOCKSTEP_CHUNKS, lockstep));
console.log("");
console.log(
  `burst: ${formatCount(BURST_CHUNKS)} chunks pushed back to back, then finish (time = until drained)`,
);
printTable(rows("burst", BURST_CHUNKS, burst));
console.log("");
console.log("Ratios: throughput > 1.00x and time < 1.00x mean Sluice is faster.");
console.log(
  "Note: @repeaterjs/repeater (FixedBuffer) and Node's WHATWG ReadableStream dequeue with Array.prototype.shift, " +
    "which copies the whole backlog once it is large, so draining a 100k backlog is quadratic; " +
    `in burst mode they overrun the ${BUDGET_MS / 1000} s per-contender budget and get one timed run.`,
);
