import { execFile } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

/** Real loads take a second or two; a corrupt count used to make loading read on without end. */
export const CHILD_TIMEOUT_MS = 60_000;

export interface ChildRun {
  code: number | null;
  signal: string | null;
  timedOut: boolean;
  /** One line per model: `{ loaded }` or the error's `{ code, message }`. */
  results: Record<string, unknown>[];
  stderr: string;
}

/**
 * Runs LlamaEngine.create, then one decode, on each model in a child process, where a native abort cannot take
 * the test runner with it. Each model prints one line: `{ loaded }` or the error's `{ code, message }`.
 */
export async function createInChild(dir: string, models: readonly string[]): Promise<ChildRun> {
  const child = join(dir, "create-engine.mjs");
  const engineUrl = pathToFileURL(join(import.meta.dirname, "../../src/engine/LlamaEngine.ts")).href;
  await writeFile(
    child,
    `import { LlamaEngine } from ${JSON.stringify(engineUrl)};
for (const model of JSON.parse(process.env.SLUICE_MODELS)) {
  try {
    const engine = await LlamaEngine.create({ model, slots: 1, threads: 1 });
    const tokens = engine.tokenize("In the beginning", { special: false });
    const sample = { temperature: 0, topK: 1, topP: 1, minP: 0, seed: 1 };
    const [outcome] = await engine.step([{ slot: 0, tokens, sample }]);
    await engine.close();
    console.log(JSON.stringify({ loaded: outcome.ok }));
  } catch (error) {
    console.log(JSON.stringify({ code: error.code, message: error.message }));
  }
}
`,
  );
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ["--import", "tsx", child],
      {
        cwd: join(import.meta.dirname, "../.."),
        env: { ...process.env, SLUICE_MODELS: JSON.stringify(models) },
        timeout: CHILD_TIMEOUT_MS,
      },
      (error, stdout, stderr) => {
        const results = stdout
          .split("\n")
          .filter((line) => line.startsWith("{"))
          .map((line) => JSON.parse(line) as Record<string, unknown>);
        resolve({
          code: error ? (typeof error.code === "number" ? error.code : null) : 0,
          signal: error?.signal ?? null,
          timedOut: error?.killed === true,
          results,
          stderr,
        });
      },
    );
  });
}

/** Why a child did not exit normally, for the assertion message. */
export function howItEnded(run: ChildRun): string {
  if (run.timedOut) return `the child hung: killed after ${CHILD_TIMEOUT_MS / 1000} s`;
  if (run.signal) return `the child died of ${run.signal} (a native abort): ${run.stderr.slice(-400)}`;
  return `the child exited ${run.code}: ${run.stderr.slice(-400)}`;
}
