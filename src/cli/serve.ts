import { SluiceError } from "../errors.ts";
import { Runtime } from "../runtime/Runtime.ts";
import { checkServerOptions, createServer, type ServerOptions } from "../server/index.ts";
import { parseArgs } from "./env.ts";

export const SERVE_HELP = `Usage: sluice serve [options]

OpenAI-compatible HTTP server (SSE streaming, client disconnect = cancel) with a web playground at /.

Options:
  --host <addr>           address to bind (default 127.0.0.1; 0.0.0.0 exposes it to the network)
  --port <n>              port (default 8080; 0 picks a free one)
  --model <path>          GGUF model file (default: the bundled kjv-tiny model)
  --slots <n>             concurrent generations (default 4)
  --threads <n>           CPU threads (default: half the cores)
  --context-size <n>      tokens per slot (default: the model's, at most 2048)
  --prefill-chunk <n>     fixed prompt tokens a slot reads per step (default: sized by step time)
  --target-step-ms <ms>   step time automatic prefill chunks aim for (default max(50, 3 decode steps))
  --max-queue <n>         most requests waiting for a slot; beyond it 429 (default 256)
  --no-prompt-cache       start every request on an emptied slot (default: a slot keeps its KV cache and a
                          request sharing its prompt prefix reads only the rest; per request: cache_prompt)
  --api-key <key>         require "Authorization: Bearer <key>"; repeat for one key per client (a request
                          belongs to its key) (default: env SLUICE_API_KEY, else none)
  --admin-api-key <key>   a key that also sees every request id in /v1/slots and may cancel any request
                          (default: env SLUICE_ADMIN_API_KEY, else none)
  --allowed-origin <url>  a web origin whose pages may call the API from a browser, besides the server's
                          own; repeatable; "*" allows all (default: none)
  --allowed-host <name>   a Host name to answer besides localhost and IP addresses (DNS rebinding check);
                          ".example.com" allows subdomains; repeatable; "*" turns the check off (default: none)
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
  allowedOrigins: "--allowed-origin",
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

export async function serveCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      host: { type: "string" },
      port: { type: "string" },
      model: { type: "string" },
      slots: { type: "string" },
      threads: { type: "string" },
      "context-size": { type: "string" },
      "prefill-chunk": { type: "string" },
      "target-step-ms": { type: "string" },
      "max-queue": { type: "string" },
      "api-key": { type: "string", multiple: true },
      "admin-api-key": { type: "string" },
      "allowed-origin": { type: "string", multiple: true },
      "allowed-host": { type: "string", multiple: true },
      "max-body": { type: "string" },
      "request-timeout": { type: "string" },
      "headers-timeout": { type: "string" },
      "body-timeout": { type: "string" },
      "idle-timeout": { type: "string" },
      "max-connections": { type: "string" },
      "no-prompt-cache": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    process.stdout.write(SERVE_HELP);
    return 0;
  }
  const host = values.host ?? "127.0.0.1";
  const port = integer(values.port, "--port", 0) ?? 8080;
  const apiKey = values["api-key"] ?? (process.env.SLUICE_API_KEY || undefined);
  const serverOptions = checkFlags(
    defined({
      apiKey,
      adminApiKey: values["admin-api-key"] ?? (process.env.SLUICE_ADMIN_API_KEY || undefined),
      allowedOrigins: values["allowed-origin"],
      allowedHosts: values["allowed-host"],
      maxBodyBytes: integer(values["max-body"], "--max-body", 1),
      requestTimeoutMs: integer(values["request-timeout"], "--request-timeout", 1),
      headersTimeoutMs: integer(values["headers-timeout"], "--headers-timeout", 1),
      bodyTimeoutMs: integer(values["body-timeout"], "--body-timeout", 1),
      idleTimeoutMs: integer(values["idle-timeout"], "--idle-timeout", 1),
      maxConnections: integer(values["max-connections"], "--max-connections", 1),
    }),
  );

  let lastShown = -1;
  const runtime = await Runtime.create(
    defined({
      model: values.model,
      slots: integer(values.slots, "--slots", 1),
      threads: integer(values.threads, "--threads", 1),
      contextSize: integer(values["context-size"], "--context-size", 16),
      prefillChunkSize: integer(values["prefill-chunk"], "--prefill-chunk", 1),
      targetStepMs: integer(values["target-step-ms"], "--target-step-ms", 1),
      maxQueue: integer(values["max-queue"], "--max-queue", 0),
      promptCache: values["no-prompt-cache"] === true ? false : undefined,
      onLoadProgress: (p: number) => {
        const percent = Math.floor(p * 10) * 10;
        if (percent === lastShown) return;
        lastShown = percent;
        process.stderr.write(`loading model ${percent}%\n`);
      },
    }),
  );
  const server = createServer(runtime, serverOptions);
  let address: Awaited<ReturnType<typeof server.listen>>;
  try {
    address = await server.listen(port, host);
  } catch (error) {
    await runtime.close();
    throw new SluiceError("invalid_request", `cannot listen on ${host}:${port}: ${(error as Error).message}`);
  }
  const { info } = runtime.engine;
  const auth = apiKey ? ` -H 'authorization: Bearer <key>'` : "";
  process.stdout.write(
    `sluice: serving ${server.options.modelName} (${info.slots} slots, context ${info.contextSize}) at ${address.url}\n` +
      `  playground  ${address.url}/\n` +
      `  try         curl -N ${address.url}/v1/completions -H 'content-type: application/json'${auth} \\\n` +
      `                -d '{"model":"${server.options.modelName}","prompt":"Genesis 1\\n1 In the beginning","max_tokens":40,"stream":true}'\n` +
      `  Ctrl-C stops (open streams get a final chunk); a second Ctrl-C exits at once.\n`,
  );

  return new Promise<number>((resolve) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) process.exit(130);
      stopping = true;
      process.stderr.write(`sluice: ${signal}: finishing open streams and shutting down\n`);
      server
        .close({ graceful: true })
        .then(() => runtime.close())
        .then(
          () => resolve(0),
          (error: unknown) => {
            process.stderr.write(`sluice: shutdown failed: ${(error as Error).message}\n`);
            resolve(1);
          },
        )
        .finally(() => {
          process.off("SIGINT", onSignal);
          process.off("SIGTERM", onSignal);
        });
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
  });
}
