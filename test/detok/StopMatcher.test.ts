import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { StopMatcher } from "../../src/detok/StopMatcher.ts";
import { SluiceError } from "../../src/errors.ts";

describe("StopMatcher", () => {
  it("rejects empty and malformed stop strings as invalid requests", () => {
    for (const stops of [[""], ["amen", ""], ["\uD83D"], ["a\uDE00"]]) {
      assert.throws(
        () => new StopMatcher(stops),
        (error: unknown) =>
          error instanceof SluiceError && error.code === "invalid_request" && error.param === "stop",
      );
    }
  });

  it("releases text that cannot start a stop string at once", () => {
    const matcher = new StopMatcher(["Amen"]);
    assert.deepEqual(matcher.push("and the grace"), { emit: "and the grace" });
    assert.equal(matcher.held, "");
  });

  it("holds only the longest suffix that is a prefix of a stop, then releases it when it cannot match", () => {
    const matcher = new StopMatcher(["world", "wonder"]);
    assert.deepEqual(matcher.push("hello wo"), { emit: "hello " });
    assert.equal(matcher.held, "wo");
    assert.deepEqual(matcher.push("rk"), { emit: "work" });
    assert.equal(matcher.held, "");
  });

  it("keeps holding while the text still follows a stop, and re-holds a later start inside released text", () => {
    const matcher = new StopMatcher(["abab"]);
    assert.deepEqual(matcher.push("xab"), { emit: "x" });
    assert.deepEqual(matcher.push("a"), { emit: "" });
    assert.equal(matcher.held, "aba");
    // Neither "abac" nor any suffix of it starts "abab": all of it is released.
    assert.deepEqual(matcher.push("c"), { emit: "abac" });
    assert.deepEqual(matcher.push("aba"), { emit: "" });
    // "abaa": the suffix "a" may still start "abab".
    assert.deepEqual(matcher.push("a"), { emit: "aba" });
    assert.equal(matcher.held, "a");
  });

  it("matches a stop string spread over several pushes and emits only the text before it", () => {
    const matcher = new StopMatcher(["world"]);
    assert.deepEqual(matcher.push("hel"), { emit: "hel" });
    assert.deepEqual(matcher.push("lo wor"), { emit: "lo " });
    assert.deepEqual(matcher.push("ld!"), { emit: "", match: "world" });
    assert.equal(matcher.match, "world");
    assert.deepEqual(matcher.push("more"), { emit: "" });
    assert.equal(matcher.flush(), "");
  });

  it("picks the earliest match start, and the longest stop on a tie", () => {
    const matcher = new StopMatcher(["bcd", "ab", "abc"]);
    assert.deepEqual(matcher.push("xabcd"), { emit: "x", match: "abc" });
    const later = new StopMatcher(["cd", "abcdef"]);
    assert.deepEqual(later.push("ab"), { emit: "" });
    // "cd" completes now; "abcdef" might have matched earlier but is not complete.
    assert.deepEqual(later.push("cd"), { emit: "ab", match: "cd" });
  });

  it("holds and matches multi-byte text without cutting characters", () => {
    const matcher = new StopMatcher(["日本語", "😀!"]);
    assert.deepEqual(matcher.push("こんにちは日"), { emit: "こんにちは" });
    assert.deepEqual(matcher.push("曜a😀"), { emit: "日曜a" });
    assert.equal(matcher.held, "😀");
    assert.deepEqual(matcher.push("?"), { emit: "😀?" });
    assert.deepEqual(matcher.push("日本"), { emit: "" });
    assert.deepEqual(matcher.push("語です"), { emit: "", match: "日本語" });
  });

  it("releases everything held on flush", () => {
    const matcher = new StopMatcher(["</answer>"]);
    assert.deepEqual(matcher.push("42</ans"), { emit: "42" });
    assert.equal(matcher.flush(), "</ans");
    assert.equal(matcher.held, "");
    assert.equal(matcher.flush(), "");
  });

  it("property: streamed matching equals matching the text seen so far, and holds less than the longest stop", () => {
    const alphabet = fc.constantFrom("a", "b", "c", "é", "😀");
    const text = fc.string({ unit: alphabet, maxLength: 30 });
    const stops = fc.array(fc.string({ unit: alphabet, minLength: 1, maxLength: 4 }), {
      minLength: 1,
      maxLength: 3,
    });
    const pieces = fc.array(text, { maxLength: 8 });
    fc.assert(
      fc.property(stops, pieces, (stopList, parts) => {
        const matcher = new StopMatcher(stopList);
        const maxHeld = Math.max(...stopList.map((s) => s.length)) - 1;
        let emitted = "";
        let seen = "";
        for (const part of parts) {
          seen += part;
          const expected = firstMatch(seen, stopList);
          const result = matcher.push(part);
          emitted += result.emit;
          if (expected !== undefined) {
            assert.equal(result.match, expected.stop);
            assert.equal(emitted, seen.slice(0, expected.start));
            assert.deepEqual(matcher.push(part), { emit: "" });
            return;
          }
          assert.equal(result.match, undefined);
          assert.ok(matcher.held.length <= maxHeld);
          assert.equal(emitted + matcher.held, seen);
          // Held text is exactly the longest suffix that some stop starts with.
          const longest = longestStopPrefixSuffix(seen, stopList);
          assert.equal(matcher.held.length, longest);
        }
        assert.equal(emitted + matcher.flush(), seen);
      }),
      { numRuns: 1000 },
    );
  });
});

/** Reference: the earliest stop occurrence in `text`, the longest on a tie. */
function firstMatch(text: string, stops: readonly string[]): { start: number; stop: string } | undefined {
  let best: { start: number; stop: string } | undefined;
  for (const stop of stops) {
    const start = text.indexOf(stop);
    if (start < 0) continue;
    if (
      best === undefined ||
      start < best.start ||
      (start === best.start && stop.length > best.stop.length)
    ) {
      best = { start, stop };
    }
  }
  return best;
}

function longestStopPrefixSuffix(text: string, stops: readonly string[]): number {
  for (let from = 0; from < text.length; from++) {
    const suffix = text.slice(from);
    if (stops.some((stop) => stop.length > suffix.length && stop.startsWith(suffix))) return suffix.length;
  }
  return 0;
}
