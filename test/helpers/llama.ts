import { getLlama, type Llama, LlamaLogLevel } from "node-llama-cpp";

/**
 * node-llama-cpp on the CPU as the tests load it directly: the installed build only (nothing downloaded or
 * compiled), one thread, errors only in the log.
 */
export function testLlama(): Promise<Llama> {
  return getLlama({
    gpu: false,
    build: "never",
    skipDownload: true,
    maxThreads: 1,
    logLevel: LlamaLogLevel.error,
  });
}
