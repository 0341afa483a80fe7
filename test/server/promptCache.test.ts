import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Runtime } from "../../src/runtime/Runtime.ts";
import { scriptedRuntime } from "../helpers/scripted.ts";
import { post, type Served, scrape, serve } from "./client.ts";

// The prompt cache over HTTP: OpenAI's usage.prompt_tokens_details.cached_tokens, llama-server's cache_prompt,
// and the cache figures on /metrics.
describe("prompt cache over the OpenAI API (scripted engine)", () => {
  let runtime: Runtime;
  let served: Served;
  before(async () => {
    ({ runtime } = await scriptedRuntime({ slots: 1 }));
    served = await serve(runtime);
  });
  after(async () => {
    await served.server.close();
    await runtime.close();
  });

  const complete = async (body: Record<string, unknown>) => {
    const response = await fetch(`${served.url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ max_tokens: 3, temperature: 0, ...body }),
    });
    assert.equal(response.status, 200);
    return (await response.json()) as { usage: Record<string, unknown> };
  };

  test("cached_tokens reports the reused prefix, streamed and not; cache_prompt: false reads it all", async () => {
    const prompt = "In the beginning God created the heaven";
    const first = await complete({ prompt });
    assert.deepEqual(first.usage.prompt_tokens_details, { cached_tokens: 0 });
    const second = await complete({ prompt: `${prompt} and the earth` });
    const promptTokens = second.usage.prompt_tokens as number;
    assert.deepEqual(second.usage.prompt_tokens_details, { cached_tokens: prompt.length + 1 });
    assert.ok(promptTokens > prompt.length + 1);

    const stream = post(served.url, "/v1/completions", {
      prompt: `${prompt} and the earth`,
      max_tokens: 3,
      stream: true,
      stream_options: { include_usage: true },
    });
    await stream.done;
    const usage = stream.events.find((e) => e !== "[DONE]" && e.usage)?.usage;
    assert.equal(usage.prompt_tokens_details.cached_tokens, promptTokens - 1);

    const off = await complete({ prompt: `${prompt} and the earth`, cache_prompt: false });
    assert.deepEqual(off.usage.prompt_tokens_details, { cached_tokens: 0 });
  });

  test("/metrics reports lookups, hits, the hit ratio and the tokens reused", async () => {
    const m = await scrape(served.url);
    assert.equal(m.get("sluice_prompt_cache_lookups_total"), runtime.stats.promptCacheLookups);
    assert.equal(m.get("sluice_prompt_cache_hits_total"), runtime.stats.promptCacheHits);
    assert.ok(runtime.stats.promptCacheHits >= 2);
    assert.equal(m.get("sluice_prompt_tokens_cached_total"), runtime.stats.promptTokensCached);
    const ratio = m.get("sluice_prompt_cache_hit_ratio")!;
    assert.ok(Math.abs(ratio - runtime.stats.promptCacheHits / runtime.stats.promptCacheLookups) < 1e-9);
  });
});
