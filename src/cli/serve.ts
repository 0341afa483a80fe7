import { BUNDLED_CHAT_MODEL_PATH } from "../engine/modelPath.ts";
import { SluiceError } from "../errors.ts";
import type { RoutingPolicy } from "../gateway/routingPolicy.ts";
import { runGateway } from "../gateway/runGateway.ts";
import { Runtime } from "../runtime/Runtime.ts";
import {
  checkServerOptions,
  createServer,
  type ListenAddress,
  type ServerOptions,
  type SluiceServer,
} from "../server/index.ts";
import { DRAFT_FLAGS, draftHelp, draftOptions } from "./draftFlags.ts";
import { parseArgs } from "./env.ts";
import { GPU_FLAGS, gpuHelp, gpuOptions } from "./gpuFlags.ts";

export const SERVE_HELP = `Usage: sluice serve [options]

OpenAI-compatible HTTP server (SSE streaming, client disconnect = cancel) with a web playground at /.
It listens at once; /health answers 503 "loading" until the model is loaded (/health/live: 200 meanwhile).

Options:
  --host <addr>           address to bind (default 127.0.0.1; 0.0.0.0 exposes it to the network)
  --port <n>              port (default 8080; 0 picks a free one)
  --model <path>          GGUF model file (default: the bundled kjv-chat model: a chat template with tool
                          calls for /v1/chat/completions; it continues plain KJV text for /v1/completions)
  --upstream <url>        serve as a gateway over an OpenAI-compatible server (llama-server, vLLM, Sluice);
                          repeat for a pool with routing, retries before the first token, health checks and
                          circuit breaking; with --model the local engine is one more member of the pool
                          (tools, n > 1, logprobs and echo then go to the upstreams) (default: none)
  --routing <policy>      with --upstream: prefix_affinity, least_outstanding or round_robin
                          (default prefix_affinity)
  --slots <n>             concurrent generations (default 4)
  --threads <n>           CPU threads (default: half the cores)
  --context-size <n>      tokens per slot (default: the model's, at most 2048)
  --prefill-chunk <n>     fixed prompt tokens a slot reads per step (default: sized by step time)
  --target-step-ms <ms>   the decode-gap budget: a step that reads a prompt while streams decode aims for
                          this (default max(50, 3 decode steps))
  --solo-prefill-step-ms <ms>  how long a prompt step may take when no stream decodes (default 500)
${gpuHelp(26)}  --max-queue <n>         most requests waiting for a slot; beyond it 429 (default 256)
  --no-prompt-cache       start every request on an emptied slot (default: a slot keeps its KV cache and a
                          request sharing its prompt prefix reads only the rest; per request: cache_prompt)
${draftHelp(26, true)}  --api-key <key>         require "Authorization: Bearer <key>" (or "x-api-key: <key>"); repeat for one key
                          per client (a request belongs to its key) (default: env SLUICE_API_KEY, several
                          separated by commas, else none)
  --api-key-file <path>   more keys, one per line; blank lines and "#" comments skipped (default: none)
  --admin-api-key <key>   a key that also sees every request id in /v1/slots and may cancel any request
                          (default: env SLUICE_ADMIN_API_KEY, else none)
  --allowed-origin <url>  a web origin whose pages may call the API from a browser, besides the server's
                          own; repeatable; "*" allows all (default: none)
  --cors-origins <urls>   web origins whose pages may call the API and read its answers (CORS; each is an
                          allowed origin too); comma-separated or repeated; "*" allows all (default: none,
                          only the playground's own origin)
  --allowed-host <name>   a Host name to answer besides localhost and IP addresses (DNS rebinding check);
                          ".example.com" allows subdomains; repeatable; "*" turns the check off (default: none)
  --served-model-name <n> a model id to serve as, listed by /v1/models; repeat for aliases; responses name
                          the requested one (default: the model file's name)
  --strict-model-name     refuse (404) a request whose "model" is not a served name (default: any name
                          is accepted and answered by the one model)
  --strict-finish-reason  send only OpenAI's finish_reason values: "stop" for a cancelled or failed
                          generation (the final chunk's sluice.reason keeps "cancelled" or "error")
                          (default: "cancelled" and "error" are sent)
  --log-level <level>     access log, one JSON line per request on stdout: trace, debug, info, warn, error,
                          fatal or silent (default info)
  --max-body <bytes>      largest request body (default 1048576)
  --request-timeout <ms>  cancel generations running longer than this (default: none)
  --headers-timeout <ms>  most time to send a request's headers; then 408 (default 10000)
  --body-timeout <ms>     most time to send a whole request, headers and body; then 408 (default 30000)
  --idle-timeout <ms>     close a kept-alive connection idle this long (default 5000)
  --max-connections <n>   most open connections; more get 503 (default 1024)
  -h, --help              this help
`;

function integer(value: string | undefined, flag: string, min: number): number | undefined {
  if (value === undefined) return undefined;
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < min) {
    throw new SluiceError("invalid_request", `${flag} expects an integer >= ${min}; got "${value}".`);
  }
  return parsed;
}

/** Each server option's flag, so that a refused value is reported under the name the user typed. */
const SERVER_FLAGS: Record<string, string> = {
  apiKey: "--api-key",
  adminApiKey: "--admin-api-key",
  apiKeyFile: "--api-key-file",
  allowedOrigins: "--allowed-origin",
  corsOrigins: "--cors-origins",
  servedModelNames: "--served-model-name",
  strictFinishReason: "--strict-finish-reason",
  logLevel: "--log-level",
  allowedHosts: "--allowed-host",
  maxBodyBytes: "--max-body",
  requestTimeoutMs: "--request-timeout",
  headersTimeoutMs: "--headers-timeout",
  bodyTimeoutMs: "--body-timeout",
  idleTimeoutMs: "--idle-timeout",
  maxConnections: "--max-connections",
};

/** Checks the server's options before the model loads, naming the flag at fault. */
function checkFlags(options: ServerOptions): ServerOptions {
  try {
    return checkServerOptions(options);
  } catch (error) {
    // The param of a list's entry is its path (allowedOrigins.1): the flag is the list's.
    const flag =
      error instanceof SluiceError && error.param !== undefined
        ? SERVER_FLAGS[error.param.split(".")[0]!]
        : undefined;
    if (flag === undefined) throw error;
    const message = (error as SluiceError).message.replace(/^createServer: \S+/, flag);
    throw new SluiceError("invalid_option", message, { param: (error as SluiceError).param!, cause: error });
  }
}

function defined<T extends object>(values: T): { [K in keyof T]: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(values).filter(([, v]) => v !== undefined)) as never;
}

/** Values of a repeatable flag that also takes comma-separated lists. */
function list(values: string[] | undefined): string[] | undefined {
  return values?.flatMap((v) => v.split(",")).map((v) => v.trim());
}

export async function serveCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      host: { type: "string" },
      port: { type: "string" },
      model: { type: "string" },
      upstream: { type: "string", multiple: true },
      routing: { type: "string" },
      slots: { type: "string" },
      threads: { type: "string" },
      "context-size": { type: "string" },
      "prefill-chunk": { type: "string" },
      "target-step-ms": { type: "string" },
      "max-queue": { type: "string" },
      "api-key": { type: "string", multiple: true },
      "api-key-file": { type: "string" },
      "admin-api-key": { type: "string" },
      "allowed-origin": { type: "string", multiple: true },
      "cors-origins": { type: "string", multiple: true },
      "allowed-host": { type: "string", multiple: true },
      "served-model-name": { type: "string", multiple: true },
      "strict-model-name": { type: "boolean" },
      "strict-finish-reason": { type: "boolean" },
      "log-level": { type: "string" },
      "max-body": { type: "string" },
      "request-timeout": { type: "string" },
      "headers-timeout": { type: "string" },
      "body-timeout": { type: "string" },
      "idle-timeout": { type: "string" },
      "max-connections": { type: "string" },
      "solo-prefill-step-ms": { type: "string" },
      ...GPU_FLAGS,
      "no-prompt-cache": { type: "boolean" },
      ...DRAFT_FLAGS,
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    process.stdout.write(SERVE_HELP);
    return 0;
  }
  const host = values.host ?? "127.0.0.1";
  const port = integer(values.port, "--port", 0) ?? 8080;
  // SLUICE_API_KEY may hold several keys: "sk-a,sk-b".
  const envKeys = list(process.env.SLUICE_API_KEY ? [process.env.SLUICE_API_KEY] : undefined)?.filter(
    (k) => k !== "",
  );
  const apiKey = values["api-key"] ?? (envKeys?.length ? envKeys : undefined);
  const serverOptions = checkFlags(
    defined({
      apiKey,
      apiKeyFile: values["api-key-file"],
      adminApiKey: values["admin-api-key"] ?? (process.env.SLUICE_ADMIN_API_KEY || undefined),
      allowedOrigins: values["allowed-origin"],
      corsOrigins: list(values["cors-origins"]),
      allowedHosts: values["allowed-host"],
      servedModelNames: values["served-model-name"],
      strictModelName: values["strict-model-name"],
      strictFinishReason: values["strict-finish-reason"],
      logLevel: (values["log-level"] ?? "info") as ServerOptions["logLevel"],
      maxBodyBytes: integer(values["max-body"], "--max-body", 1),
      requestTimeoutMs: integer(values["request-timeout"], "--request-timeout", 1),
      headersTimeoutMs: integer(values["headers-timeout"], "--headers-timeout", 1),
      bodyTimeoutMs: integer(values["body-timeout"], "--body-timeout", 1),
      idleTimeoutMs: integer(values["idle-timeout"], "--idle-timeout", 1),
      maxConnections: integer(values["max-connections"], "--max-connections", 1),
    }),
  );
  if (values.routing !== undefined && values.upstream === undefined) {
    throw new SluiceError("invalid_request", "--routing chooses among upstreams: give --upstream too.");
  }
  const runtimeOptions = defined({
    // The chat fine-tune, so that /v1/chat/completions and the playground's chat mode have a real template.
    model: values.model ?? BUNDLED_CHAT_MODEL_PATH,
    slots: integer(values.slots, "--slots", 1),
    threads: integer(values.threads, "--threads", 1),
    contextSize: integer(values["context-size"], "--context-size", 16),
    prefillChunkSize: integer(values["prefill-chunk"], "--prefill-chunk", 1),
    targetStepMs: integer(values["target-step-ms"], "--target-step-ms", 1),
    soloPrefillStepMs: integer(values["solo-prefill-step-ms"], "--solo-prefill-step-ms", 1),
    maxQueue: integer(values["max-queue"], "--max-queue", 0),
    promptCache: values["no-prompt-cache"] === true ? false : undefined,
    ...draftOptions(values),
    ...gpuOptions(values),
  });

  if (values.upstream !== undefined) {
    const routing = values.routing as RoutingPolicy | undefined;
    const upstreams = list(values.upstream)!;
    // With --model the local engine is one more member of the pool, loaded before the gateway listens.
    const local =
      values.model !== undefined
        ? await Runtime.create({
            ...runtimeOptions,
            onLoadProgress: (p: number) => process.stderr.write(`loading model ${Math.floor(p * 100)}%\n`),
          })
        : undefined;
    return runGateway({ upstreams, routing, host, port, server: serverOptions, ...(local ? { local } : {}) });
  }

  // The server listens before the model is loaded: health checks and clients get 503 "loading" meanwhile.
  const loading = new AbortController();
  let lastShown = -1;
  let server: SluiceServer | undefined;
  const runtimePromise = Runtime.create({
    ...runtimeOptions,
    signal: loading.signal,
    onLoadProgress: (p: number) => {
      server?.loadProgress(p);
      const percent = Math.floor(p * 10) * 10;
      if (percent === lastShown) return;
      lastShown = percent;
      process.stderr.write(`loading model ${percent}%\n`);
    },
  });
  // Awaited below; this only keeps a failure from counting as unhandled before then.
  runtimePromise.catch(() => {});
  server = createServer(runtimePromise, serverOptions);
  let address: ListenAddress;
  try {
    address = await server.listen(port, host);
  } catch (error) {
    loading.abort();
    await runtimePromise.then(
      (runtime) => runtime.close(),
      () => {},
    );
    throw new SluiceError("invalid_request", `cannot listen on ${host}:${port}: ${(error as Error).message}`);
  }
  process.stderr.write(
    `sluice: listening at ${address.url} (/health answers "loading" until the model is ready)\n`,
  );

  // One way out, whichever comes first: a signal, or the model failing to load.
  let stopped: Promise<number> | undefined;
  let finish!: (code: Promise<number>) => void;
  const done = new Promise<number>((resolve) => {
    finish = resolve;
  });
  const stop = (): Promise<number> => {
    stopped ??= (async () => {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
      process.on("SIGINT", exitNow);
      process.on("SIGTERM", exitNow);
      loading.abort();
      try {
        await server.close({ graceful: true });
        await runtimePromise.then(
          (runtime) => runtime.close(),
          () => {},
        );
        return 0;
      } catch (error) {
        process.stderr.write(`sluice: shutdown failed: ${(error as Error).message}\n`);
        return 1;
      } finally {
        process.off("SIGINT", exitNow);
        process.off("SIGTERM", exitNow);
      }
    })();
    finish(stopped);
    return stopped;
  };
  const exitNow = () => process.exit(130);
  const onSignal = (signal: NodeJS.Signals) => {
    process.stderr.write(`sluice: ${signal}: finishing open streams and shutting down\n`);
    void stop();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  let runtime: Runtime;
  try {
    runtime = await runtimePromise;
  } catch (error) {
    if (stopped !== undefined) return stopped;
    // /health reports the failure until the server is closed; the command fails with the load error.
    process.stderr.write(`sluice: the model failed to load: ${(error as Error).message}\n`);
    await stop();
    throw error;
  }
  if (stopped !== undefined) return stopped;
  const { info } = runtime.engine;
  const model = server.modelNames[0]!;
  const auth = apiKey || serverOptions.apiKeyFile ? ` -H 'authorization: Bearer <key>'` : "";
  process.stdout.write(
    `sluice: serving ${model} (${info.slots} slots, context ${info.contextSize}) at ${address.url}\n` +
      `  playground  ${address.url}/\n` +
      `  try         curl -N ${address.url}/v1/completions -H 'content-type: application/json'${auth} \\\n` +
      `                -d '{"model":"${model}","prompt":"Genesis 1\\n1 In the beginning","max_tokens":40,"stream":true}'\n` +
      `  chat        curl -N ${address.url}/v1/chat/completions -H 'content-type: application/json'${auth} \\\n` +
      `                -d '{"model":"${model}","messages":[{"role":"user","content":"Hello"}],"stream":true}'\n` +
      `  Ctrl-C stops (open streams get a final chunk); a second Ctrl-C exits at once.\n`,
  );
  return done;
}
