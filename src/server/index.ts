export { createServer, type ListenAddress, SluiceServer } from "./createServer.ts";
export type { SluiceExtension } from "./openaiShapes.ts";
export type { ServerOptions } from "./ServerOptions.ts";
