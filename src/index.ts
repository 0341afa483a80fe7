// "sluice": the library. The HTTP server is "sluice/server", test doubles are "sluice/testing".
export type { ChannelOptions } from "./channel/index.ts";
export { StreamChannel } from "./channel/index.ts";
export { OutputProcessor, StopMatcher, Utf8Decoder, Vocabulary } from "./detok/index.ts";
export type {
  Engine,
  EngineBackend,
  EngineCapabilities,
  EngineInfo,
  SamplerConfig,
  StepItem,
  StepOutcome,
} from "./engine/Engine.ts";
export { LlamaEngine, type LlamaEngineOptions, type LlamaGpu } from "./engine/LlamaEngine.ts";
export { BUNDLED_CHAT_MODEL_PATH, BUNDLED_MODEL_PATH } from "./engine/modelPath.ts";
export { SluiceError, type SluiceErrorCode } from "./errors.ts";
export {
  createGatewayServer,
  GatewayServer,
  type GatewayServerOptions,
  type OpenAIBody,
  type PoolGenerateOptions,
  type RoutingPolicy,
  type StreamFromUpstreamOptions,
  streamFromUpstream,
  type UpstreamConfig,
  type UpstreamErrorCode,
  UpstreamPool,
  type UpstreamPoolOptions,
  type UpstreamSnapshot,
} from "./gateway/index.ts";
export type { Drafter, DraftWanted, RequestDrafter } from "./runtime/Drafter.ts";
export { ModelDrafter, type ModelDrafterStats } from "./runtime/ModelDrafter.ts";
export { PromptLookup, type PromptLookupOptions } from "./runtime/PromptLookup.ts";
export type { CancelRecord, RequestRecord } from "./runtime/RequestState.ts";
export {
  Runtime,
  type RuntimeEvent,
  type RuntimeOptions,
  type RuntimeSnapshot,
  type SlotSnapshot,
} from "./runtime/Runtime.ts";
export { validateStreamingSubmission } from "./runtime/validate.ts";
export type * from "./types.ts";
