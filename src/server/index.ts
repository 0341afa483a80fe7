// Chat rendering and tool calls, for a chat (with tools) over a Runtime without the HTTP server.
export { type ChatFormatter, type ChatPrompt, createChatFormatter, type FormatOptions } from "./chat.ts";
export { createServer, type ListenAddress, SluiceServer } from "./createServer.ts";
export type { SluiceExtension } from "./openaiShapes.ts";
export type { ReadinessState } from "./Readiness.ts";
export {
  checkServerOptions,
  type LogDestination,
  type LogLevel,
  type ServerOptions,
} from "./ServerOptions.ts";
export type { ChatMessage } from "./schemas.ts";
export { type ToolCallOutput, ToolCallParser, type ToolCallParserOptions } from "./ToolCallParser.ts";
export {
  HERMES_TOOL_CALLS,
  type ToolCall,
  type ToolCallDelta,
  type ToolCallFormat,
  type ToolChoice,
  toolCallGrammar,
} from "./toolCalls.ts";
