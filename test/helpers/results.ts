import assert from "node:assert/strict";
import type { GenerationResult } from "../../src/types.ts";

/** Two generations ended the same: the same tokens, text, finish reason, stop and token count. */
export function assertSameResult(a: GenerationResult, b: GenerationResult, what: string): void {
  assert.deepEqual(a.tokenIds, b.tokenIds, what);
  assert.equal(a.text, b.text, what);
  assert.equal(a.reason, b.reason, what);
  assert.equal(a.stop, b.stop, what);
  assert.equal(a.usage.completionTokens, b.usage.completionTokens, what);
}
