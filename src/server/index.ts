export { createServer, type ListenAddress, SluiceServer } from "./createServer.ts";
export type { SluiceExtension } from "./openaiShapes.ts";
export type { ReadinessState } from "./Readiness.ts";
export {
  checkServerOptions,
  type LogDestination,
  type LogLevel,
  type ServerOptions,
} from "./ServerOptions.ts";
