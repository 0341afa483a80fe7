import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createServer } from "node:net";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { envName, parseArgs } from "../../src/cli/env.ts";
import { SluiceError } from "../../src/errors.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

const options = {
  port: { type: "string" },
  "max-queue": { type: "string" },
  "allowed-origin": { type: "string", multiple: true },
  "no-prompt-cache": { type: "boolean" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

test("envName: --max-queue is SLUICE_MAX_QUEUE", () => {
  assert.equal(envName("max-queue"), "SLUICE_MAX_QUEUE");
  assert.equal(envName("port"), "SLUICE_PORT");
  assert.equal(envName("no-prompt-cache"), "SLUICE_NO_PROMPT_CACHE");
});

test("parseArgs: options not on the command line come from SLUICE_*", () => {
  const { values } = parseArgs(
    { args: [], options },
    {
      SLUICE_PORT: "9000",
      SLUICE_MAX_QUEUE: "8",
      SLUICE_ALLOWED_ORIGIN: "https://a.example, https://b.example,",
      SLUICE_NO_PROMPT_CACHE: "true",
      SLUICE_JSON: "0",
    },
  );
  assert.deepEqual(
    { ...values },
    {
      port: "9000",
      "max-queue": "8",
      "allowed-origin": ["https://a.example", "https://b.example"],
      "no-prompt-cache": true,
      json: false,
    },
  );
});

test("parseArgs: a flag on the command line wins over its variable, and the others still apply", () => {
  const { values, positionals } = parseArgs(
    {
      args: ["--port", "1234", "--allowed-origin", "https://c.example", "--json", "hello"],
      options,
      allowPositionals: true,
    },
    {
      SLUICE_PORT: "9000",
      SLUICE_ALLOWED_ORIGIN: "https://a.example",
      SLUICE_JSON: "false",
      SLUICE_MAX_QUEUE: "3",
    },
  );
  assert.equal(values.port, "1234");
  assert.deepEqual(values["allowed-origin"], ["https://c.example"]);
  assert.equal(values.json, true);
  assert.equal(values["max-queue"], "3");
  assert.deepEqual(positionals, ["hello"]);
});

test("parseArgs: empty and unrelated variables are ignored, and --help never comes from the environment", () => {
  const { values } = parseArgs(
    { args: [], options },
    { SLUICE_PORT: "", SLUICE_HELP: "1", SLUICE_UNKNOWN: "x", PORT: "80" },
  );
  assert.deepEqual({ ...values }, {});
});

test("parseArgs: a boolean variable that is not 1/true/0/false is refused, naming the variable", () => {
  for (const bad of ["yes", "2", "on"]) {
    assert.throws(
      () => parseArgs({ args: [], options }, { SLUICE_NO_PROMPT_CACHE: bad }),
      (error: unknown) =>
        error instanceof SluiceError &&
        error.code === "invalid_option" &&
        error.message.includes("SLUICE_NO_PROMPT_CACHE") &&
        error.message.includes(bad),
    );
  }
  assert.equal(
    parseArgs({ args: [], options }, { SLUICE_NO_PROMPT_CACHE: " TRUE " }).values["no-prompt-cache"],
    true,
  );
});

test("parseArgs: tokens are returned only when asked for, as node:util's", () => {
  const plain = parseArgs({ args: ["--json"], options }, {});
  assert.equal("tokens" in plain, false);
  const withTokens = parseArgs({ args: ["--json"], options, tokens: true }, {});
  assert.equal(withTokens.tokens?.[0]?.kind, "option");
});

function sluice(args: string[], env: Record<string, string>) {
  const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const output = { stdout: "", stderr: "" };
  child.stdout.setEncoding("utf8").on("data", (data: string) => {
    output.stdout += data;
  });
  child.stderr.setEncoding("utf8").on("data", (data: string) => {
    output.stderr += data;
  });
  return { child, output };
}

test("sluice serve reads its own flags from the environment: a bad SLUICE_MAX_QUEUE is refused as --max-queue", async () => {
  const { child, output } = sluice(["serve"], { SLUICE_MAX_QUEUE: "many" });
  const [code] = await once(child, "exit");
  assert.equal(code, 1, output.stderr);
  assert.match(output.stderr, /--max-queue expects an integer >= 0; got "many"/);
});

test("sluice generate reads its own flags from the environment: a bad SLUICE_JSON is refused", async () => {
  const { child, output } = sluice(["generate"], { SLUICE_JSON: "maybe" });
  const [code] = await once(child, "exit");
  assert.equal(code, 1, output.stderr);
  assert.match(output.stderr, /SLUICE_JSON expects 1, true, 0 or false; got "maybe"/);
});

async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as { port: number };
  server.close();
  await once(server, "close");
  return port;
}

test("sluice serve binds the port given by SLUICE_PORT and answers there", async () => {
  const port = await freePort();
  const { child, output } = sluice(["serve"], {
    SLUICE_PORT: String(port),
    SLUICE_THREADS: "1",
    SLUICE_SLOTS: "1",
  });
  const exited = once(child, "exit");
  try {
    const url = await new Promise<string>((resolve, reject) => {
      child.stdout.on("data", () => {
        const match = /at (http:\/\/\S+)/.exec(output.stdout);
        if (match) resolve(match[1]!);
      });
      child.once("exit", (code) => reject(new Error(`serve exited (${code}):\n${output.stderr}`)));
    });
    assert.equal(new URL(url).port, String(port));
    const health = await fetch(`${url}/health`);
    assert.equal(health.status, 200);
    await health.body?.cancel();
  } finally {
    child.kill("SIGTERM");
    await exited;
  }
  assert.equal(child.exitCode, 0, output.stderr);
});
