// The gateway: generations served by OpenAI-compatible upstreams, through the same StreamChannel.
export { type BreakerState, CircuitBreaker } from "./CircuitBreaker.ts";
export { createGatewayServer, GatewayServer, type GatewayServerOptions } from "./createGatewayServer.ts";
export { GatewayMetrics } from "./GatewayMetrics.ts";
export type { ResolvedPoolOptions, UpstreamConfig, UpstreamPoolOptions } from "./PoolOptions.ts";
export { PrefixIndex, promptText } from "./PrefixIndex.ts";
export { pickUpstream, ROUTING_POLICIES, type RoutingPolicy } from "./routingPolicy.ts";
export type { UpstreamErrorCode } from "./runAttempt.ts";
export { type RunGatewayOptions, runGateway } from "./runGateway.ts";
export {
  type OpenAIBody,
  type StreamFromUpstreamOptions,
  streamFromUpstream,
  type UpstreamGenerateOptions,
} from "./streamFromUpstream.ts";
export type { UpstreamSnapshot } from "./Upstream.ts";
export { type PoolGenerateOptions, UpstreamPool } from "./UpstreamPool.ts";
export type { GenerationKind } from "./upstreamEvent.ts";
