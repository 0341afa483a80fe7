import assert from "node:assert/strict";
import { type ChildProcessByStdio, spawn } from "node:child_process";
import { once } from "node:events";
import { readdirSync, readFileSync } from "node:fs";
import { connect } from "node:net";
import type { Readable } from "node:stream";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
/** How long a clean shutdown may take after the signal (no stream is open: well under a second). */
const SHUTDOWN_MS = 15_000;

interface ProcessInfo {
  pid: number;
  ppid: number;
  /** One letter from /proc/<pid>/stat: R, S, D, Z (exited, not yet reaped), … */
  state: string;
  command: string;
}

/** A process from /proc, or undefined once it is gone. */
function processInfo(pid: number): ProcessInfo | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name in parentheses may itself hold spaces and parentheses: parse after the last ")".
    const [state, ppid] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const command = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").trim();
    return { pid, ppid: Number(ppid), state: state!, command };
  } catch {
    return undefined;
  }
}

/** `root` and every process below it, in tree order. */
function processTree(root: number): ProcessInfo[] {
  const all = readdirSync("/proc")
    .filter((name) => /^\d+$/.test(name))
    .flatMap((name) => processInfo(Number(name)) ?? []);
  const tree = all.filter((p) => p.pid === root);
  for (let i = 0; i < tree.length; i++) tree.push(...all.filter((p) => p.ppid === tree[i]!.pid));
  return tree;
}

/** Exited: gone from /proc, or a zombie (it has exited; only its parent has not collected the status yet). */
function exited(pid: number): boolean {
  const info = processInfo(pid);
  return info === undefined || info.state === "Z" || info.state === "X";
}

interface Output {
  stdout: string;
  stderr: string;
}

/** Resolves with the server's URL once it says it is listening; rejects if npm exits first. */
function listening(npm: ChildProcessByStdio<null, Readable, Readable>, output: Output): Promise<URL> {
  return new Promise((resolve, reject) => {
    npm.stdout.setEncoding("utf8").on("data", (data: string) => {
      output.stdout += data;
      const match = /^sluice: serving .* at (http:\/\/\S+)$/m.exec(output.stdout);
      if (match) resolve(new URL(match[1]!));
    });
    npm.once("error", reject);
    npm.once("exit", (code, signal) => {
      const said = `${output.stdout}${output.stderr}`;
      reject(new Error(`npm exited (${signal ?? code}) before the server listened:\n${said}`));
    });
  });
}

/** Whether `promise` settles within `ms`. */
function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((resolve) => {
    timer = setTimeout(resolve, ms, false);
  });
  return Promise.race([promise.then(() => true), late]).finally(() => clearTimeout(timer));
}

function connectionRefused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("error", (error: NodeJS.ErrnoException) => resolve(error.code === "ECONNREFUSED"));
  });
}

/**
 * A process that is not our child has no exit event. Both pipes closing says every process that held them
 * has exited; this only covers the instant between a process closing its files and its exit being visible.
 */
async function waitUntil(condition: () => boolean, ms: number): Promise<boolean> {
  const deadline = performance.now() + ms;
  while (!condition()) {
    if (performance.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return true;
}

function list(processes: readonly ProcessInfo[]): string {
  return processes.map((p) => `\n  ${p.pid} ${p.command.slice(0, 100)}`).join("");
}

async function signalNpmRunServe(signal: "SIGTERM" | "SIGINT"): Promise<void> {
  const npm = spawn("npm", ["run", "serve", "--", "--port", "0", "--threads", "1", "--slots", "1"], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const output: Output = { stdout: "", stderr: "" };
  npm.stderr.setEncoding("utf8").on("data", (data: string) => {
    output.stderr += data;
  });
  const npmExit = once(npm, "exit");
  // The server inherits npm's stdout and stderr: both close on our side only once every process holding
  // them has exited, whoever its parent is by then.
  const pipesClosed = Promise.all([once(npm.stdout, "close"), once(npm.stderr, "close")]);
  let chain: ProcessInfo[] = [];
  try {
    const url = await listening(npm, output);
    chain = processTree(npm.pid!);
    assert.ok(
      chain.some((p) => p.command.includes("src/cli/main.ts serve")),
      `the server is among npm's descendants:${list(chain)}`,
    );

    npm.kill(signal);
    const ended = await within(Promise.all([npmExit, pipesClosed]), SHUTDOWN_MS);
    const running = () => chain.filter((p) => !exited(p.pid));
    assert.ok(
      ended && (await waitUntil(() => running().length === 0, 5_000)),
      `every process under npm exits after ${signal} to npm; still running:${list(running())}`,
    );
    assert.match(output.stderr, new RegExp(`sluice: ${signal}: finishing open streams and shutting down`));
    assert.equal(npm.exitCode, 0, `npm exits 0 after the server's clean shutdown; stderr:\n${output.stderr}`);
    assert.equal(await connectionRefused(Number(url.port)), true, `port ${url.port} refuses connections`);
  } finally {
    // Whatever failed above, leave nothing of ours running.
    for (const p of chain) {
      try {
        if (!exited(p.pid)) process.kill(p.pid, "SIGKILL");
      } catch {
        // Gone in between.
      }
    }
    if (npm.exitCode === null && npm.signalCode === null) npm.kill("SIGKILL");
  }
}

const skip = process.platform !== "linux" && "reads the process tree from /proc";

test("npm run serve: SIGTERM to npm's pid stops the server and every process under npm", { skip }, () =>
  signalNpmRunServe("SIGTERM"),
);

test("npm run serve: SIGINT to npm's pid stops the server and every process under npm", { skip }, () =>
  signalNpmRunServe("SIGINT"),
);
