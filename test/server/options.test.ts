import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { inspect } from "node:util";
import fc from "fast-check";
import { serveCommand } from "../../src/cli/serve.ts";
import { SluiceError } from "../../src/errors.ts";
import type { Runtime } from "../../src/runtime/Runtime.ts";
import { checkServerOptions, createServer, type ServerOptions } from "../../src/server/index.ts";
import { scriptedRuntime } from "../helpers/scripted.ts";

// Every createServer option is checked before anything starts: a wrong value throws `invalid_option`
// naming the option, what it must be and what was given.

let runtime: Runtime;

const MAX_TIMER_MS = 2 ** 31 - 1;

const MILLISECONDS = [
  "requestTimeoutMs",
  "keepAliveMs",
  "headersTimeoutMs",
  "bodyTimeoutMs",
  "idleTimeoutMs",
];
const COUNTS = ["maxBodyBytes", "maxConnections"];
const TEXTS = ["modelName", "chatTemplate", "webRoot", "apiKeyFile"];
const KEYS = ["apiKey", "adminApiKey"];
const LISTS = ["allowedOrigins", "allowedHosts", "corsOrigins", "servedModelNames"];
const OTHERS = ["strictModelName", "logLevel", "logDestination"];
const ALL = [...MILLISECONDS, ...COUNTS, ...TEXTS, ...KEYS, ...LISTS, ...OTHERS];

/** Values of every JavaScript type. */
const anything = fc.oneof(
  fc.double(),
  fc.integer(),
  fc.string(),
  fc.boolean(),
  fc.constantFrom(null, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 0, -0),
  fc.bigInt(),
  fc.array(fc.integer(), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 5 }), fc.integer(), { maxKeys: 2 }),
  fc.constant(() => 1),
);

function assertRefused(options: unknown, param: string, message: RegExp = /must|unknown/): SluiceError {
  let thrown: unknown;
  try {
    createServer(runtime, options as ServerOptions);
  } catch (error) {
    thrown = error;
  }
  assert.ok(thrown instanceof SluiceError, `accepted ${inspect(options)}`);
  assert.equal(thrown.code, "invalid_option");
  // An entry of a list is named by its path: allowedOrigins.1.
  assert.ok(thrown.param === param || thrown.param?.startsWith(`${param}.`), thrown.message);
  const named = thrown.message.startsWith(`createServer: ${param}`);
  const unknown = thrown.message.startsWith(`createServer: unknown option ${param}`);
  assert.ok(named || unknown, thrown.message);
  assert.match(thrown.message, message);
  return thrown;
}

describe("createServer options: every wrong value refused with a message that says what to change", () => {
  before(async () => {
    ({ runtime } = await scriptedRuntime({ slots: 1 }));
  });
  after(async () => {
    await runtime.close();
  });

  test("milliseconds: whole numbers from 1 to 2^31 - 1; NaN, infinities, fractions, 0, negatives, other types refused", () => {
    fc.assert(
      fc.property(fc.constantFrom(...MILLISECONDS), anything, (name, value) => {
        fc.pre(!(Number.isInteger(value) && (value as number) >= 1 && (value as number) <= MAX_TIMER_MS));
        const error = assertRefused({ [name]: value }, name, /must be/);
        assert.match(error.message, /; got /);
      }),
      { numRuns: 400 },
    );
    // Past node's timer range a timeout would fire at once.
    assertRefused({ requestTimeoutMs: 2 ** 31 }, "requestTimeoutMs", /at most 2147483647 ms/);
    assertRefused({ keepAliveMs: 0.5 }, "keepAliveMs", /whole number of milliseconds; got 0.5/);
    assertRefused({ idleTimeoutMs: Number.NaN }, "idleTimeoutMs", /number of milliseconds; got NaN/);
  });

  test("counts (maxBodyBytes, maxConnections): whole numbers >= 1", () => {
    fc.assert(
      fc.property(fc.constantFrom(...COUNTS), anything, (name, value) => {
        fc.pre(!(Number.isSafeInteger(value) && (value as number) >= 1));
        assertRefused({ [name]: value }, name, /must be/);
      }),
      { numRuns: 200 },
    );
    assertRefused({ maxConnections: -3 }, "maxConnections", /at least 1; got -3/);
  });

  test("strings (modelName, chatTemplate, webRoot): not empty, not blank, not another type", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...TEXTS),
        fc.oneof(anything, fc.stringMatching(/^\s*$/)),
        (name, value) => {
          fc.pre(!(typeof value === "string" && value.trim().length > 0));
          assertRefused({ [name]: value }, name, /must/);
        },
      ),
      { numRuns: 200 },
    );
    assertRefused({ modelName: "" }, "modelName", /must not be empty; leave it out to use the default/);
  });

  test("keys: printable ASCII without spaces; apiKey a key or a non-empty list of distinct keys", () => {
    const badKey = fc.oneof(
      fc.constant(""),
      fc.string({ minLength: 1 }).map((s) => `${s} x`),
      fc.constantFrom("a\nb", "ключ", "\t", "k\u0000"),
      anything.filter((v) => typeof v !== "string"),
    );
    fc.assert(
      fc.property(fc.constantFrom(...KEYS), badKey, (name, value) => {
        assertRefused({ [name]: value }, name, /must|empty/);
      }),
      { numRuns: 200 },
    );
    assertRefused({ apiKey: [] }, "apiKey", /empty list/);
    assertRefused({ apiKey: ["sk-a", "sk a"] }, "apiKey", /apiKey\.1 must be printable ASCII/);
    // Keys are secrets: even a malformed one is never repeated back in the message.
    assertRefused(
      { apiKey: 5 },
      "apiKey",
      /must be a key \(a string\) or an array of keys; got a value \(not shown\)/,
    );
    const leaked = assertRefused({ adminApiKey: "sk-real secret" }, "adminApiKey");
    assert.ok(!leaked.message.includes("sk-real"), leaked.message);
    assertRefused({ apiKey: ["sk-a", "sk-a"] }, "apiKey", /lists a key twice/);
    assertRefused({ apiKey: "sk-a", adminApiKey: "sk-a" }, "adminApiKey", /must differ from every apiKey/);
  });

  test("allowedOrigins: origins only (scheme, host, port); allowedHosts: names only (no scheme, no port)", () => {
    const badOrigin = fc.oneof(
      fc.constantFrom(
        "null",
        "",
        "example.com",
        "ftp://x.example",
        "https://x.example/app",
        "https://x.example?q",
      ),
      fc.constantFrom("https://u:p@x.example", "file:///tmp", "http://", "http://[::1"),
      fc
        .webUrl({ withQueryParameters: true })
        .filter((u) => /[?#]|\/[^/]/.test(u.replace(/^https?:\/\//, ""))),
    );
    const badHost = fc.oneof(
      fc.constantFrom("", "x.example:80", "http://x.example", "a b", "x/y", "-", "..", "x..y", "[::1]"),
      fc.domain().map((d) => `${d}:${8000}`),
    );
    fc.assert(
      fc.property(fc.array(badOrigin, { minLength: 1, maxLength: 3 }), (list) => {
        assertRefused(
          { allowedOrigins: ["https://ok.example", ...list] },
          "allowedOrigins",
          /must be an origin/,
        );
      }),
      { numRuns: 150 },
    );
    fc.assert(
      fc.property(fc.array(badHost, { minLength: 1, maxLength: 3 }), (list) => {
        assertRefused({ allowedHosts: ["ok.example", ...list] }, "allowedHosts", /must be a host name/);
      }),
      { numRuns: 150 },
    );
    for (const name of LISTS) {
      fc.assert(
        fc.property(
          anything.filter((v) => !Array.isArray(v)),
          (value) => void assertRefused({ [name]: value }, name, /must be an array/),
        ),
        { numRuns: 50 },
      );
    }
  });

  test("unknown keys are named (a typo is not silently ignored); options must be an object", () => {
    fc.assert(
      fc.property(
        fc.string({ minLength: 1, maxLength: 16 }).filter((k) => !ALL.includes(k) && k !== "__proto__"),
        anything,
        (key, value) => {
          const error = assertRefused({ [key]: value }, key, /unknown option/);
          assert.match(error.message, /Known options: apiKey, adminApiKey, /);
        },
      ),
      { numRuns: 200 },
    );
    assertRefused({ apikey: "k" }, "apikey", /unknown option apikey\. Known options: apiKey,/);
    assertRefused({ maxBody: 1 }, "maxBody", /unknown option maxBody\./);
    fc.assert(
      fc.property(
        anything.filter((v) => v !== null && (typeof v !== "object" || Array.isArray(v))),
        (value) => void assertRefused(value, "options", /must be an object/),
      ),
      { numRuns: 100 },
    );
  });

  test("headersTimeoutMs may not exceed bodyTimeoutMs (node would throw a RangeError of its own)", () => {
    assertRefused(
      { headersTimeoutMs: 40_000 },
      "headersTimeoutMs",
      /must be at most bodyTimeoutMs \(30000 ms/,
    );
    assertRefused(
      { bodyTimeoutMs: 5000 },
      "bodyTimeoutMs",
      /must be at least headersTimeoutMs \(10000 ms by default\)/,
    );
    assertRefused({ headersTimeoutMs: 200, bodyTimeoutMs: 100 }, "headersTimeoutMs");
  });

  test("valid options are accepted and resolved: defaults filled, lists normalized", async () => {
    const valid = fc.record(
      {
        apiKey: fc.oneof(
          fc.stringMatching(/^[\x21-\x7e]{1,20}$/),
          fc.uniqueArray(fc.stringMatching(/^[\x21-\x7e]{1,20}$/), { minLength: 1, maxLength: 3 }),
        ),
        maxBodyBytes: fc.integer({ min: 1, max: 2 ** 40 }),
        requestTimeoutMs: fc.integer({ min: 1, max: MAX_TIMER_MS }),
        keepAliveMs: fc.integer({ min: 1, max: MAX_TIMER_MS }),
        idleTimeoutMs: fc.integer({ min: 1, max: MAX_TIMER_MS }),
        maxConnections: fc.integer({ min: 1, max: 100_000 }),
        allowedOrigins: fc.array(fc.webUrl().map((u) => new URL(u).origin)),
        allowedHosts: fc.array(fc.domain()),
        modelName: fc.string({ minLength: 1 }).filter((s) => s.trim() !== ""),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(valid, (options) => {
        const expected =
          typeof options.apiKey === "string" ? { ...options, apiKey: [options.apiKey] } : options;
        assert.deepEqual({ ...checkServerOptions(options) }, { ...expected });
      }),
      { numRuns: 200 },
    );
    const server = createServer(runtime, {
      apiKey: "sk-a",
      allowedOrigins: ["HTTPS://App.Example:443"],
      allowedHosts: ["Sluice.Example"],
    });
    assert.deepEqual(server.options.apiKeys, ["sk-a"]);
    assert.deepEqual(server.options.allowedOrigins, ["https://app.example"]);
    assert.deepEqual(server.options.allowedHosts, ["sluice.example"]);
    assert.equal(server.options.headersTimeoutMs, 10_000);
    assert.equal(server.options.bodyTimeoutMs, 30_000);
    assert.equal(server.options.idleTimeoutMs, 5000);
    assert.equal(server.options.maxConnections, 1024);
    assert.equal(server.http.headersTimeout, 10_000);
    assert.equal(server.http.requestTimeout, 30_000);
    assert.equal(server.http.keepAliveTimeout, 5000);
    assert.equal(server.http.maxConnections, 2048);
    await server.close();
  });

  test("servedModelNames, strictModelName, corsOrigins, logLevel, logDestination", () => {
    assertRefused({ servedModelNames: [] }, "servedModelNames", /empty list/);
    assertRefused(
      { servedModelNames: ["a", " "] },
      "servedModelNames",
      /servedModelNames\.1 must not be empty/,
    );
    assertRefused({ servedModelNames: ["a", "a"] }, "servedModelNames", /lists a name twice/);
    assertRefused({ servedModelNames: ["a"], modelName: "b" }, "modelName", /give servedModelNames alone/);
    assertRefused({ strictModelName: "yes" }, "strictModelName", /must be true or false/);
    assertRefused(
      { corsOrigins: ["https://ok.example", "https://x.example/app"] },
      "corsOrigins",
      /must be an origin/,
    );
    assertRefused(
      { logLevel: "verbose" },
      "logLevel",
      /must be one of trace, debug, info, warn, error, fatal, silent/,
    );
    assertRefused({ logDestination: {} }, "logDestination", /write\(line\) method/);
    const server = createServer(runtime, {
      servedModelNames: ["gpt-4o-mini", "local"],
      allowedOrigins: ["https://a.example"],
      corsOrigins: ["HTTPS://B.example:443"],
    });
    assert.deepEqual(server.options.servedModelNames, ["gpt-4o-mini", "local"]);
    assert.deepEqual(server.modelNames, ["gpt-4o-mini", "local"]);
    assert.equal(server.options.strictModelName, false);
    assert.equal(server.options.logLevel, "silent");
    assert.deepEqual(server.options.corsOrigins, ["https://b.example"]);
    // A page that may read the answers may send the requests.
    assert.deepEqual(server.options.allowedOrigins, ["https://a.example", "https://b.example"]);
    assert.deepEqual(createServer(runtime, { corsOrigins: ["*"] }).options.allowedOrigins, ["*"]);
    // Without names the model's own is served.
    assert.deepEqual(createServer(runtime).modelNames, [runtime.engine.info.model]);
  });

  test("apiKeyFile: one key per line, comments and blank lines skipped; unreadable, empty or bad files refused", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sluice-keys-"));
    try {
      const file = join(dir, "keys");
      await writeFile(file, "# clients\nsk-a\n\n  sk-b  \r\n# old: sk-c\nsk-a\n");
      const server = createServer(runtime, { apiKey: "sk-x", apiKeyFile: file });
      assert.deepEqual(server.options.apiKeys, ["sk-x", "sk-a", "sk-b"]);
      assertRefused({ apiKeyFile: join(dir, "missing") }, "apiKeyFile", /cannot be read/);
      await writeFile(file, "# nothing\n\n");
      assertRefused({ apiKeyFile: file }, "apiKeyFile", /holds no key/);
      await writeFile(file, "sk-a\nsk-secret with space\n");
      const bad = assertRefused({ apiKeyFile: file }, "apiKeyFile", /line 2 is not a key/);
      assert.ok(!bad.message.includes("sk-secret"), bad.message);
      await writeFile(file, "sk-admin\n");
      assertRefused({ apiKeyFile: file, adminApiKey: "sk-admin" }, "apiKeyFile", /must differ/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("sluice serve: a wrong flag is named as the flag, before any model is loaded", async () => {
    for (const [argv, message] of [
      [
        ["--cors-origins", "https://ok.example,https://x.example/app"],
        /^--cors-origins\.1 must be an origin|^--cors-origins must be an origin/,
      ],
      [["--log-level", "loud"], /^--log-level must be one of/],
      [["--served-model-name", " "], /^--served-model-name/],
      [["--api-key-file", "/nonexistent/keys"], /^--api-key-file cannot be read/],
      [["--allowed-origin", "https://x.example/app"], /^--allowed-origin must be an origin/],
      [["--allowed-host", "x.example:80"], /^--allowed-host must be a host name/],
      [["--api-key", "a b"], /^--api-key must be printable ASCII/],
      [["--headers-timeout", "40000"], /^--headers-timeout must be at most/],
      [["--max-connections", "0"], /expects an integer >= 1/],
    ] as const) {
      await assert.rejects(serveCommand([...argv]), (error: unknown) => {
        assert.ok(error instanceof SluiceError);
        assert.match(error.message, message);
        return true;
      });
    }
  });
});
