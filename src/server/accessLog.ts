import { type Logger, pino } from "pino";
import type { LogDestination, LogLevel } from "./ServerOptions.ts";

/**
 * What a route learned about its request, for the access log line. Generation routes fill it from the
 * request's result; other routes leave it empty.
 */
export interface AccessRecord {
  id?: string;
  promptTokens?: number;
  completionTokens?: number;
  cachedTokens?: number;
  /** Submission to the first generated token. */
  ttftMs?: number;
  finishReason?: string;
  /** Cancel to slot free, for a cancelled request. */
  cancelMs?: number;
}

/** The server's logger: JSON lines (pino) to `destination`, or stdout. */
export function createLogger(level: LogLevel, destination: LogDestination | undefined): Logger {
  const options = { level, base: { name: "sluice" }, timestamp: pino.stdTimeFunctions.isoTime };
  return destination === undefined ? pino(options) : pino(options, destination as never);
}

/** One access-log line: the request, its answer and, for a generation, its figures. */
export function logAccess(
  logger: Logger,
  entry: { method: string; route: string; status: number; durationMs: number; aborted: boolean },
  record: AccessRecord,
): void {
  logger.info({ id: record.id, ...entry, ...record }, "request");
}
