// What a user gets from the registry: `npm pack`, installed into an empty project, used from plain Node ESM
// (no tsx, no TypeScript at run time), from TypeScript (the declarations), and through `npx sluice`.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const TSC = join(ROOT, "node_modules/typescript/bin/tsc");
// node-llama-cpp's postinstall must not download or build anything (its prebuilt CPU binaries are enough).
const ENV = { ...process.env, NODE_LLAMA_CPP_SKIP_DOWNLOAD: "true", npm_config_update_notifier: "false" };

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = ENV): Promise<Run> {
  return new Promise((resolve) => {
    execFile(command, args, { cwd, env, maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

function said(result: Run): string {
  return `exit ${result.code}\n--- stdout\n${result.stdout.slice(-4000)}\n--- stderr\n${result.stderr.slice(-4000)}`;
}

let dir = "";
let app = "";

// One pack and one install for every test below (the install is most of the time: 30-90 s).
const INSTALL_TIMEOUT_MS = 600_000;
before(
  async () => {
    dir = await mkdtemp(join(tmpdir(), "sluice-pack-"));
    const packed = await run("npm", ["pack", "--pack-destination", dir], ROOT);
    assert.equal(packed.code, 0, `npm pack (which builds dist/ through "prepare") failed:\n${said(packed)}`);
    const tarball = (await readdir(dir)).find((name) => name.endsWith(".tgz"));
    assert.ok(tarball, `npm pack wrote no tarball:\n${said(packed)}`);

    app = join(dir, "app");
    await mkdir(app);
    await writeFile(
      join(app, "package.json"),
      JSON.stringify({ name: "app", version: "1.0.0", private: true, type: "module" }),
    );
    const installed = await run(
      "npm",
      ["install", "--no-audit", "--no-fund", "--prefer-offline", join(dir, tarball)],
      app,
    );
    if (
      installed.code !== 0 &&
      /E(NOTFOUND|AI_AGAIN|CONNREFUSED|CONNRESET|TIMEDOUT)|network/i.test(installed.stderr)
    ) {
      assert.fail(
        "npm could not reach the registry to install Sluice's dependencies (node-llama-cpp, zod); this test " +
          `needs it (set npm_config_registry to a reachable mirror):\n${said(installed)}`,
      );
    }
    assert.equal(installed.code, 0, `npm install of the packed tarball failed:\n${said(installed)}`);
  },
  { timeout: INSTALL_TIMEOUT_MS },
);

after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

test("the tarball ships compiled JavaScript, declarations, the models and the playground, not the sources", () => {
  const pkg = join(app, "node_modules/sluice");
  for (const file of [
    "dist/index.js",
    "dist/index.d.ts",
    "dist/server/index.js",
    "dist/testing.js",
    "dist/cli/main.js",
    "bin/sluice.js",
    "models/kjv-tiny.gguf",
    "models/kjv-chat.gguf",
    "models/MODEL_CARD.md",
    "web/index.html",
    "README.md",
  ]) {
    assert.ok(existsSync(join(pkg, file)), `${file} is in the installed package`);
  }
  assert.equal(existsSync(join(pkg, "src")), false, "src/ is not shipped");
  assert.equal(existsSync(join(pkg, "test")), false, "test/ is not shipped");
  assert.equal(
    existsSync(join(app, "node_modules/tsx")),
    false,
    "tsx is not installed: nothing needs it at run time",
  );
});

test("plain Node ESM: sluice streams from the bundled model; sluice/server serves the playground; sluice/testing runs a scripted runtime", async () => {
  const script = `
import { Runtime, SluiceError, StreamChannel } from "sluice";
import { createServer } from "sluice/server";
import { BUNDLED_MODEL_PATH, ScriptedEngine, Vocabulary } from "sluice/testing";

const out = { resolved: import.meta.resolve("sluice"), exports: [typeof SluiceError, typeof StreamChannel] };
const runtime = await Runtime.create({ threads: 1, slots: 1 });
const channel = runtime.generate({ prompt: "Genesis 1\\n1 In the beginning", maxTokens: 8, temperature: 0 });
out.chunks = 0;
out.text = "";
for await (const chunk of channel) {
  out.chunks += 1;
  out.text += chunk.text;
}
const result = await channel.result;
out.reason = result.reason;
out.completionTokens = result.usage.completionTokens;

const server = createServer(runtime);
const { url } = await server.listen(0, "127.0.0.1");
const health = await fetch(url + "/health");
out.health = health.status;
await health.body?.cancel();
const page = await fetch(url + "/");
out.playground = page.status;
out.playgroundHtml = (await page.text()).includes("<html");
await server.close();
await runtime.close();

const vocabulary = await Vocabulary.fromGgufFile(BUNDLED_MODEL_PATH);
// The default script echoes the prompt.
const scripted = await Runtime.create({ engine: new ScriptedEngine(vocabulary) });
const echo = await scripted.generate({ prompt: "Hello", maxTokens: 16 }).result;
out.scripted = [echo.reason, echo.text];
await scripted.close();
console.log(JSON.stringify(out));
`;
  await writeFile(join(app, "use.mjs"), script);
  const ran = await run(process.execPath, ["use.mjs"], app);
  assert.equal(ran.code, 0, said(ran));
  const out = JSON.parse(ran.stdout.trim().split("\n").at(-1)!);
  assert.match(
    out.resolved,
    /node_modules\/sluice\/dist\/index\.js$/,
    "the library resolves to compiled JavaScript",
  );
  assert.deepEqual(out.exports, ["function", "function"]);
  assert.ok(out.chunks >= 1 && out.text.length > 0, `streamed text: ${ran.stdout}`);
  assert.ok(out.completionTokens >= 1 && out.completionTokens <= 8, `tokens: ${out.completionTokens}`);
  assert.ok(["length", "eos", "stop"].includes(out.reason), `reason: ${out.reason}`);
  assert.equal(out.health, 200);
  assert.equal(out.playground, 200, "the playground is found inside the installed package");
  assert.equal(out.playgroundHtml, true);
  assert.deepEqual(out.scripted, ["eos", "Hello"]);
});

test("TypeScript: the exports' declarations resolve and type the API", async () => {
  await writeFile(
    join(app, "use.ts"),
    `import { Runtime, type GenerationResult } from "sluice";
import { createServer, type ServerOptions } from "sluice/server";
import { ScriptedEngine } from "sluice/testing";

export async function check(): Promise<number> {
  const runtime = await Runtime.create({ slots: 1 });
  // @ts-expect-error slots is a number: an untyped (any) import would make this line pass
  await Runtime.create({ slots: "1" });
  const options: ServerOptions = { maxBodyBytes: 1024 };
  createServer(runtime, options);
  const result: GenerationResult = await runtime.generate({ prompt: "x" }).result;
  const engine: typeof ScriptedEngine = ScriptedEngine;
  return result.usage.completionTokens + runtime.engine.info.slots + (engine ? 0 : 1);
}
`,
  );
  await writeFile(
    join(app, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: {
        target: "ES2022",
        module: "NodeNext",
        moduleResolution: "NodeNext",
        lib: ["ES2024", "DOM"],
        strict: true,
        noEmit: true,
        skipLibCheck: true,
        typeRoots: [join(ROOT, "node_modules/@types")],
        types: ["node"],
      },
      files: ["use.ts"],
    }),
  );
  const checked = await run(process.execPath, [TSC, "-p", "tsconfig.json"], app);
  assert.equal(checked.code, 0, `tsc on a consumer of the installed package:\n${said(checked)}`);
});

test("npx sluice generate runs the installed bin (configured from the environment)", async () => {
  const ran = await run("npx", ["sluice", "generate", "--max-tokens", "5", "Genesis 1"], app, {
    ...ENV,
    SLUICE_THREADS: "1",
  });
  assert.equal(ran.code, 0, said(ran));
  assert.ok(ran.stdout.startsWith("Genesis 1"), said(ran));
  assert.match(ran.stderr, /-- finished: /);
  assert.match(ran.stderr, /\+ [1-5] generated tokens/);
});
