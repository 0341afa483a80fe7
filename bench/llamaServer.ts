/**
 * llama.cpp's own `llama-server`, the peer Sluice's server is measured against: where the binary built by
 * scripts/build-llama-server.sh lives, and how to start it on a free loopback port and stop it. The
 * process helpers (free port, health polling, stopping) start Sluice's own server too
 * (`startSluiceServer`), so both servers are started, awaited and stopped the same way.
 *
 *   node --import tsx bench/llamaServer.ts     prints where the binaries are, or how to build them
 */
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, existsSync, openSync, readSync } from "node:fs";
import { get } from "node:http";
import { createServer } from "node:net";
import { homedir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const BUNDLE = fileURLToPath(
  new URL("../node_modules/node-llama-cpp/llama/gitRelease.bundle", import.meta.url),
);
export const BUILD_COMMAND = "npm run build:llama-server";

/**
 * The commit of the llama.cpp source node-llama-cpp ships, read from the bundle's header ("# v2 git
 * bundle", then "<sha> <ref>" lines): the key the build script caches under, found without running git.
 */
export function bundleCommit(bundle: string = BUNDLE): string {
  const fd = openSync(bundle, "r");
  try {
    const head = Buffer.alloc(4096);
    const read = readSync(fd, head, 0, head.length, 0);
    const lines = head.subarray(0, read).toString("latin1").split("\n");
    const refs = lines.slice(1, lines.indexOf("")).map((line) => line.split(" "));
    const commit = (refs.find(([, ref]) => ref === "HEAD") ?? refs[0])?.[0];
    if (!lines[0]?.includes("git bundle") || commit === undefined || !/^[0-9a-f]{40}$/.test(commit))
      throw new Error(`${bundle} does not look like a git bundle`);
    return commit;
  } finally {
    closeSync(fd);
  }
}

export interface LlamaBinaries {
  /** The llama.cpp commit the binaries were built from (the same source node-llama-cpp's engine uses). */
  commit: string;
  dir: string;
  server: string;
  batchedBench: string;
}

/**
 * The cached build for this node-llama-cpp, or an error that names the command which makes it. `llama-server`
 * must be there; `llama-batched-bench` too when `batchedBench` is asked for (CI builds the server only).
 */
export function findLlamaBinaries(options: { batchedBench?: boolean } = {}): LlamaBinaries {
  const commit = bundleCommit();
  const cacheRoot = process.env.SLUICE_CACHE_DIR || join(homedir(), ".cache", "sluice");
  const dir = join(cacheRoot, `llama.cpp-${commit.slice(0, 12)}`, "bin");
  const binaries = {
    commit,
    dir,
    server: join(dir, "llama-server"),
    batchedBench: join(dir, "llama-batched-bench"),
  };
  if (!existsSync(binaries.server) || (options.batchedBench === true && !existsSync(binaries.batchedBench))) {
    throw new Error(
      `llama-server for llama.cpp ${commit.slice(0, 12)} is not built (looked in ${dir}). ` +
        `Build it once with \`${BUILD_COMMAND}\` (offline; about 8 minutes on 2 cores for llama-server).`,
    );
  }
  return binaries;
}

/** A port nobody listens on right now, on loopback (the OS picks it; the race until use is harmless here). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      probe.close(() =>
        typeof address === "object" && address !== null
          ? resolve(address.port)
          : reject(new Error("no port")),
      );
    });
  });
}

/** A server running as a child process, ready to answer. */
export interface ServerProcess {
  /** `http://127.0.0.1:<port>` */
  url: string;
  pid: number;
  /** The last lines the process wrote (stdout and stderr), for error messages. */
  log(): string;
  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`; idempotent. */
  stop(graceMs?: number): Promise<void>;
}

export interface SpawnServerOptions {
  command: string;
  args: readonly string[];
  /** Base URL of the server once it listens. */
  url: string;
  /** Readiness: polled every 50 ms until it answers 200. Defaults to "/health". */
  healthPath?: string;
  /** Gives up (and kills the process) after this long. Defaults to 120 s. */
  timeoutMs?: number;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

/**
 * Spawns a server and resolves once its health route answers 200: llama-server answers 503 while the
 * model loads, Sluice listens only once it has, and both are polled the same way rather than slept on.
 */
export async function spawnServer(options: SpawnServerOptions): Promise<ServerProcess> {
  const child = spawn(options.command, [...options.args], {
    cwd: options.cwd,
    env: options.env ?? process.env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const tail: string[] = [];
  const keep = (data: Buffer) => {
    for (const line of data.toString("utf8").split("\n")) if (line !== "") tail.push(line);
    if (tail.length > 200) tail.splice(0, tail.length - 200);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  let stopping: Promise<void> | undefined;
  const log = () => tail.join("\n");
  const server: ServerProcess = {
    url: options.url,
    pid: child.pid ?? -1,
    log,
    stop(graceMs = 10_000) {
      stopping ??= stopChild(child, exited, graceMs);
      return stopping;
    },
  };
  const deadline = performance.now() + (options.timeoutMs ?? 120_000);
  const health = `${options.url}${options.healthPath ?? "/health"}`;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(
        `${options.command} exited (${child.exitCode ?? child.signalCode}) before ready:\n${log()}`,
      );
    }
    if ((await statusOf(health)) === 200) return server;
    if (performance.now() > deadline) {
      await server.stop(1000);
      throw new Error(`${options.command} not ready after ${options.timeoutMs ?? 120_000} ms:\n${log()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function stopChild(child: ChildProcess, exited: Promise<void>, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
}

/** The HTTP status of a GET, or 0 when nothing answers (not listening yet). */
function statusOf(url: string): Promise<number> {
  return new Promise((resolve) => {
    const request = get(url, { timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    request.once("timeout", () => request.destroy());
    request.once("error", () => resolve(0));
  });
}

export interface LlamaServerOptions {
  model: string;
  /** Concurrent slots (`--parallel`). */
  slots: number;
  /** `--threads` and `--threads-batch`: decode and prompt threads, the same count as the Sluice side. */
  threads: number;
  /**
   * Context per slot. llama-server's `-c` is the total, split evenly across `--parallel` slots (the KV
   * cache is not unified when `--parallel` is given), so `-c` is this times `slots`. llama-server also caps a
   * slot at the model's training context.
   */
  contextPerSlot: number;
  /** More flags, after the ones above (a later flag wins). */
  extraArgs?: readonly string[];
  binaries?: LlamaBinaries;
}

export interface LlamaServer extends ServerProcess {
  binaries: LlamaBinaries;
  /** The full argument list it was started with, for the record. */
  args: string[];
}

/**
 * Starts llama-server on a free loopback port and waits until it is ready. Its defaults are kept (batch
 * sizes, flash attention, prompt cache, no speculation): the peer is measured as its users run it. `--slots`
 * and `--metrics` expose the slot view and the counters the benchmark reads. `SLUICE_BENCH_LLAMA_ARGS` adds
 * arguments to every llama-server a benchmark starts (for example `--flash-attn off`, to match Sluice's CPU
 * default).
 */
export async function startLlamaServer(options: LlamaServerOptions): Promise<LlamaServer> {
  const binaries = options.binaries ?? findLlamaBinaries();
  const port = await freePort();
  const args = [
    "--model",
    options.model,
    "--host",
    "127.0.0.1",
    "--port",
    String(port),
    "--parallel",
    String(options.slots),
    "--ctx-size",
    String(options.contextPerSlot * options.slots),
    "--threads",
    String(options.threads),
    "--threads-batch",
    String(options.threads),
    "--slots",
    "--metrics",
    ...(options.extraArgs ?? []),
    ...(process.env.SLUICE_BENCH_LLAMA_ARGS?.split(/\s+/).filter(Boolean) ?? []),
  ];
  const server = await spawnServer({ command: binaries.server, args, url: `http://127.0.0.1:${port}` });
  return { ...server, binaries, args };
}

const REPO_ROOT = fileURLToPath(new URL("../", import.meta.url));

/** The same slots, threads and context per slot as a llama-server peer, plus Sluice's own flags. */
export type SluiceServerOptions = Omit<LlamaServerOptions, "binaries">;

export interface SluiceServer extends ServerProcess {
  /** `sluice serve` and its flags, for the record. */
  args: string[];
}

/**
 * Starts `sluice serve` from this checkout as a child process on a free loopback port, like llama-server, so
 * neither side shares an event loop or cores with the benchmark's client, and waits until it is ready.
 * `SLUICE_BENCH_ARGS` adds flags to every Sluice server a benchmark starts (for example `--flash-attn on`, to
 * match llama-server's default), as `SLUICE_BENCH_LLAMA_ARGS` does for llama-server.
 */
export async function startSluiceServer(options: SluiceServerOptions): Promise<SluiceServer> {
  const port = await freePort();
  const flags = [
    "--host",
    "127.0.0.1",
    "--port",
    String(port),
    "--model",
    options.model,
    "--slots",
    String(options.slots),
    "--threads",
    String(options.threads),
    "--context-size",
    String(options.contextPerSlot),
    ...(options.extraArgs ?? []),
    ...(process.env.SLUICE_BENCH_ARGS?.split(/\s+/).filter(Boolean) ?? []),
  ];
  const server = await spawnServer({
    command: process.execPath,
    args: ["--import", "tsx", "src/cli/main.ts", "serve", ...flags],
    url: `http://127.0.0.1:${port}`,
    cwd: REPO_ROOT,
  });
  return { ...server, args: ["sluice", "serve", ...flags] };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  try {
    const binaries = findLlamaBinaries({ batchedBench: true });
    console.log(`llama.cpp ${binaries.commit}\n${binaries.server}\n${binaries.batchedBench}`);
  } catch (error) {
    console.error((error as Error).message);
    process.exitCode = 1;
  }
}
