import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { CircuitBreaker } from "../../src/gateway/CircuitBreaker.ts";
import { PrefixIndex, promptText } from "../../src/gateway/PrefixIndex.ts";
import { pickUpstream } from "../../src/gateway/routingPolicy.ts";

const c = (id: string, outstanding: number) => ({ id, outstanding });

describe("routing policies (pure)", () => {
  test("round robin ignores load; least outstanding takes the least loaded, ties in turn", () => {
    const cs = [c("a", 5), c("b", 0), c("c", 0)];
    assert.deepEqual(
      [0, 1, 2, 3].map((t) => pickUpstream("round_robin", cs, t).upstream.id),
      ["a", "b", "c", "a"],
    );
    assert.deepEqual(
      [0, 1, 2].map((t) => pickUpstream("least_outstanding", cs, t).upstream.id),
      ["b", "b", "c"],
    );
  });

  test("prefix affinity goes to the holder while its load is within the factor, else least loaded", () => {
    const matches = [{ upstream: "a" }];
    assert.deepEqual(pickUpstream("prefix_affinity", [c("a", 1), c("b", 0)], 0, matches, 2), {
      upstream: c("a", 1),
      affinity: "hit",
    });
    const busy = pickUpstream("prefix_affinity", [c("a", 2), c("b", 0)], 0, matches, 2);
    assert.equal(busy.upstream.id, "b");
    assert.equal(busy.affinity, "overloaded");
    const none = pickUpstream("prefix_affinity", [c("a", 0), c("b", 0)], 1, [], 2);
    assert.equal(none.affinity, "miss");
  });

  test("whatever the loads, affinity never picks an upstream beyond the bound, and always one of the candidates", () => {
    fc.assert(
      fc.property(
        fc.array(fc.nat({ max: 20 }), { minLength: 1, maxLength: 8 }),
        fc.nat(),
        fc.array(fc.nat({ max: 7 }), { maxLength: 4 }),
        fc.double({ min: 1, max: 4, noNaN: true }),
        (loads, turn, held, factor) => {
          const cs = loads.map((l, i) => c(`u${i}`, l));
          const matches = held.map((i) => ({ upstream: `u${i}` }));
          const { upstream } = pickUpstream("prefix_affinity", cs, turn, matches, factor);
          const least = Math.min(...loads);
          assert.ok(cs.includes(upstream));
          assert.ok(upstream.outstanding + 1 <= factor * (least + 1) || upstream.outstanding === least);
        },
      ),
    );
  });
});

describe("PrefixIndex", () => {
  test("a prompt that extends another finds its holder; the longest recorded prefix wins", () => {
    const index = new PrefixIndex({ blockChars: 4, maxBlocks: 100, maxEntries: 1000 });
    index.record(index.hashes("system: be brief. user: hi"), "a");
    assert.deepEqual(index.matches(index.hashes("system: be brief. user: hi, and more")), [
      { upstream: "a", blocks: 6 },
    ]);
    index.record(index.hashes("other prompt, same start? no"), "c");
    index.record(index.hashes("system: be brief. user: hello there"), "b");
    // b now holds the shared blocks too (the last to be sent there holds them): the longest match is b's.
    assert.deepEqual(
      index.matches(index.hashes("system: be brief. user: hello there, again")).map((m) => m.upstream),
      ["b"],
    );
    assert.deepEqual(index.matches(index.hashes("another system prompt")), []);
  });

  test("bounded: the least recently used blocks are forgotten first", () => {
    const index = new PrefixIndex({ blockChars: 1, maxBlocks: 100, maxEntries: 10 });
    index.record(index.hashes("abcdefghij"), "a");
    index.record(index.hashes("0123"), "b");
    assert.equal(index.size, 10);
    assert.deepEqual(index.matches(index.hashes("0123")), [{ upstream: "b", blocks: 4 }]);
    assert.equal(index.matches(index.hashes("abcdefghij"))[0]?.blocks, 10);
    assert.equal(index.matches(index.hashes("abcd")).length, 0);
  });

  test("chat turns share the prefix of the turns before them", () => {
    const turn1 = {
      messages: [
        { role: "system", content: "You are terse." },
        { role: "user", content: "hi" },
      ],
    };
    const turn2 = {
      messages: [
        ...turn1.messages,
        { role: "assistant", content: "hello" },
        { role: "user", content: "more" },
      ],
    };
    assert.ok(promptText(turn2).startsWith(promptText(turn1)));
    assert.equal(promptText({ prompt: ["first", "second"] }), "first");
  });
});

describe("CircuitBreaker", () => {
  test("opens after the failures in a row, lets one probe through after openMs, closes on its success", () => {
    const b = new CircuitBreaker({ failures: 3, openMs: 100 });
    assert.equal(b.failure(0), false);
    b.success();
    b.failure(0);
    b.failure(0);
    assert.equal(b.failure(0), true);
    assert.equal(b.allows(50), false);
    assert.equal(b.state(100), "half-open");
    assert.equal(b.allows(100), true);
    b.begin(100);
    assert.equal(b.allows(101), false, "one probe at a time");
    assert.equal(b.failure(101), true, "a failed probe opens it again");
    assert.equal(b.allows(150), false);
    b.begin(201);
    assert.equal(b.success(), true);
    assert.equal(b.state(201), "closed");
  });
});
