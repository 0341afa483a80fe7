export { createServer, type ListenAddress, SluiceServer } from "./createServer.ts";
export type { SluiceExtension } from "./openaiShapes.ts";
export { checkServerOptions, type ServerOptions } from "./ServerOptions.ts";
