import type { ChannelOptions, StreamChannel, TerminalInfo } from "../../src/channel/index.ts";
import { createStreamChannel } from "../../src/channel/index.ts";
import type { FinishReason, StreamChunk } from "../../src/types.ts";

export function info(reason: FinishReason, extra: Partial<TerminalInfo> = {}): TerminalInfo {
  return {
    reason,
    usage: { promptTokens: 3, completionTokens: 5, cachedTokens: 0 },
    timings: { queuedMs: 1, prefillMs: 2, decodeMs: 3, firstTokenMs: 4, tokensPerSecond: 5 },
    ...extra,
  };
}

/** A channel plus a log of every onCancel call, and whether the producer had finished at that moment. */
export function open(options: Partial<ChannelOptions> = {}) {
  const cancels: { reason: string | undefined; finishedAtCall: boolean }[] = [];
  const { channel, producer } = createStreamChannel({
    id: "req-1",
    ...options,
    onCancel: (reason) => {
      cancels.push({ reason, finishedAtCall: producer.finished });
      options.onCancel?.(reason);
    },
  });
  return { channel, producer, cancels };
}

/** Reads with tryPop until nothing is queued. */
export function popAll(channel: StreamChannel): StreamChunk[] {
  const chunks: StreamChunk[] = [];
  for (let chunk = channel.tryPop(); chunk !== undefined; chunk = channel.tryPop()) chunks.push(chunk);
  return chunks;
}

export async function collect(channel: AsyncIterable<StreamChunk>): Promise<StreamChunk[]> {
  const chunks: StreamChunk[] = [];
  for await (const chunk of channel) chunks.push(chunk);
  return chunks;
}

export function joinText(chunks: readonly StreamChunk[]): string {
  return chunks.map((chunk) => chunk.text).join("");
}

export function joinIds(chunks: readonly StreamChunk[]): number[] {
  return chunks.flatMap((chunk) => chunk.tokenIds);
}

/** Live timers, as Node reports them (one "Timeout" entry per active setTimeout). */
export function activeTimeouts(): number {
  return process.getActiveResourcesInfo().filter((kind) => kind === "Timeout").length;
}

/** Lets every queued microtask and one macrotask turn run. */
export function turn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Lone surrogates would mean a chunk cut a character in two. */
export function isWellFormed(text: string): boolean {
  return !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(text);
}
