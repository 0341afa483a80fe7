import assert from "node:assert/strict";
import type { Runtime } from "../../src/runtime/Runtime.ts";
import type { GenerationRequest, GenerationResult } from "../../src/types.ts";

/** Two generations ended the same: the same tokens, text, finish reason, stop and token count. */
export function assertSameResult(a: GenerationResult, b: GenerationResult, what: string): void {
  assert.deepEqual(a.tokenIds, b.tokenIds, what);
  assert.equal(a.text, b.text, what);
  assert.equal(a.reason, b.reason, what);
  assert.equal(a.stop, b.stop, what);
  assert.equal(a.usage.completionTokens, b.usage.completionTokens, what);
}

/**
 * Runs each request twice at once, as it is and with `speculative: false`, all requests concurrently, and
 * asserts each pair ended the same (`assertSameResult`, named by `what`).
 */
export async function assertSpeculativeMatchesPlain(
  runtime: Runtime,
  requests: readonly { request: GenerationRequest; what: string }[],
): Promise<void> {
  const results = await Promise.all(
    requests.map(({ request }) =>
      Promise.all([
        runtime.generate(request).result,
        runtime.generate({ ...request, speculative: false }).result,
      ]),
    ),
  );
  for (const [i, [spec, ref]] of results.entries()) assertSameResult(spec, ref, requests[i]!.what);
}
