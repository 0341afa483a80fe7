import type { StreamChannel } from "../../src/channel/index.ts";
import { Vocabulary } from "../../src/detok/index.ts";
import { BUNDLED_MODEL_PATH } from "../../src/engine/modelPath.ts";
import { ScriptedEngine, type ScriptedEngineOptions } from "../../src/engine/ScriptedEngine.ts";
import { Runtime, type RuntimeOptions } from "../../src/runtime/Runtime.ts";
import type { StreamChunk } from "../../src/types.ts";

let vocabulary: Promise<Vocabulary> | undefined;
export function bundledVocabulary(): Promise<Vocabulary> {
  vocabulary ??= Vocabulary.fromGgufFile(BUNDLED_MODEL_PATH);
  return vocabulary;
}

/** A runtime over a ScriptedEngine with the bundled vocabulary. */
export async function scriptedRuntime(
  engineOptions: Omit<ScriptedEngineOptions, "vocabulary"> = {},
  runtimeOptions: Omit<RuntimeOptions, "engine"> = {},
): Promise<{ runtime: Runtime; engine: ScriptedEngine }> {
  const engine = new ScriptedEngine(await bundledVocabulary(), engineOptions);
  const runtime = await Runtime.create({ ...runtimeOptions, engine });
  return { runtime, engine };
}

/** Reads a channel to its end, checking the terminal-chunk invariant on the way. */
export async function drain(
  channel: StreamChannel,
): Promise<{ chunks: StreamChunk[]; text: string; ids: number[]; terminal: StreamChunk }> {
  const chunks: StreamChunk[] = [];
  for await (const chunk of channel) chunks.push(chunk);
  const terminals = chunks.filter((c) => c.finished);
  if (terminals.length !== 1 || !chunks.at(-1)!.finished) {
    throw new Error(`expected exactly one terminal chunk, last; got ${terminals.length}`);
  }
  return {
    chunks,
    text: chunks.map((c) => c.text).join(""),
    ids: chunks.flatMap((c) => c.tokenIds),
    terminal: chunks.at(-1)!,
  };
}

/** Which slots a step of the scripted engine touched. */
export function slotsOf(step: { items: readonly { slot: number }[] }): number[] {
  return step.items.map((i) => i.slot);
}
