import { SluiceError } from "../errors.ts";
import type { Runtime } from "../runtime/Runtime.ts";
import type { ServerOptions } from "../server/ServerOptions.ts";
import { createGatewayServer, type GatewayServerOptions } from "./createGatewayServer.ts";
import type { RoutingPolicy } from "./routingPolicy.ts";
import { UpstreamPool } from "./UpstreamPool.ts";

export interface RunGatewayOptions {
  upstreams: string[];
  routing?: RoutingPolicy;
  host: string;
  port: number;
  server: ServerOptions;
  /** A loaded local engine to serve as one more member of the pool; closed with the gateway. */
  local?: Runtime;
}

/**
 * `sluice serve --upstream URL ...`: the API served by the upstreams through a pool, and by the local engine
 * too when `local` is given (`--model`).
 * Resolves with the exit code once a signal (SIGINT/SIGTERM) has closed the server (open streams get their
 * finish chunk) and the pool. Throws `invalid_option` for a wrong upstream or option.
 */
export async function runGateway(options: RunGatewayOptions): Promise<number> {
  const { servedModelNames, modelName, strictModelName, chatTemplate, webRoot, ...http } = options.server;
  if (servedModelNames !== undefined || modelName !== undefined || strictModelName !== undefined) {
    throw new SluiceError(
      "invalid_option",
      "--served-model-name and --strict-model-name are about a local model; with --upstream the models are the upstreams'.",
      { param: "servedModelNames" },
    );
  }
  void chatTemplate;
  void webRoot;
  const local = options.local;
  const pool = await UpstreamPool.create({
    upstreams: options.upstreams,
    ...(local !== undefined ? { local } : {}),
    ...(options.routing !== undefined ? { routing: options.routing } : {}),
  });
  const server = createGatewayServer(pool, http as GatewayServerOptions);
  let address: { url: string };
  try {
    address = await server.listen(options.port, options.host);
  } catch (error) {
    await pool.close();
    await local?.close();
    throw new SluiceError(
      "invalid_request",
      `cannot listen on ${options.host}:${options.port}: ${(error as Error).message}`,
    );
  }
  const snapshot = pool.snapshot();
  process.stdout.write(
    `sluice: gateway at ${address.url} over ${snapshot.length} upstream${snapshot.length === 1 ? "" : "s"} ` +
      `(${pool.options.routing} routing)\n` +
      snapshot
        .map(
          (u) =>
            `  ${u.local ? "local (this process)" : u.url}  ${u.healthy ? "up" : "down"}  ${u.models.join(", ") || "(no models listed)"}\n`,
        )
        .join("") +
      `  try  curl -N ${address.url}/v1/completions -H 'content-type: application/json' \\\n` +
      `         -d '{"prompt":"Genesis 1\\n1 In the beginning","max_tokens":40,"stream":true}'\n` +
      "  Ctrl-C stops (open streams get a final chunk); a second Ctrl-C exits at once.\n",
  );
  return new Promise<number>((resolve) => {
    const exitNow = () => process.exit(130);
    const onSignal = (signal: NodeJS.Signals) => {
      process.stderr.write(`sluice: ${signal}: finishing open streams and shutting down\n`);
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
      process.on("SIGINT", exitNow);
      process.on("SIGTERM", exitNow);
      void (async () => {
        try {
          await server.close({ graceful: true });
          await pool.close();
          await local?.close();
          resolve(0);
        } catch (error) {
          process.stderr.write(`sluice: shutdown failed: ${(error as Error).message}\n`);
          resolve(1);
        } finally {
          process.off("SIGINT", exitNow);
          process.off("SIGTERM", exitNow);
        }
      })();
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
  });
}
