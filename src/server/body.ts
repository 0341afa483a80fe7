import type { IncomingMessage } from "node:http";
import { badRequest, HttpError } from "./httpErrors.ts";

/**
 * Reads and parses a JSON request body of at most `maxBytes`. Parsed as JSON whatever the Content-Type says
 * (`curl -d` sends form encoding by default). A body over the limit is refused as soon as it is known to be
 * too large, without buffering it.
 */
export function readJsonBody(req: IncomingMessage, maxBytes: number): Promise<unknown> {
  const declared = Number(req.headers["content-length"]);
  if (Number.isFinite(declared) && declared > maxBytes) {
    discard(req);
    return Promise.reject(tooLarge(maxBytes));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const cleanup = () => {
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
      req.off("close", onClose);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= maxBytes) {
        chunks.push(chunk);
        return;
      }
      cleanup();
      discard(req);
      reject(tooLarge(maxBytes));
    };
    const onEnd = () => {
      cleanup();
      try {
        resolve(parse(Buffer.concat(chunks, size).toString("utf8")));
      } catch (error) {
        reject(error);
      }
    };
    const onError = (error: Error) => {
      cleanup();
      reject(new ClientGone(error.message));
    };
    const onClose = () => {
      if (req.complete) return;
      cleanup();
      reject(new ClientGone("the client closed the connection while sending the body"));
    };
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onError);
    req.on("close", onClose);
  });
}

/** The client went away before its request was read: there is nobody to answer. */
export class ClientGone extends Error {
  override readonly name = "ClientGone";
}

function parse(text: string): unknown {
  if (text.trim().length === 0) {
    throw badRequest("invalid_json", "The request body is empty; send a JSON object.");
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw badRequest("invalid_json", `The request body is not valid JSON: ${(error as Error).message}.`);
  }
}

function tooLarge(maxBytes: number): HttpError {
  return new HttpError(
    413,
    "invalid_request_error",
    "request_too_large",
    `The request body is larger than the limit of ${maxBytes} bytes; send a smaller prompt or raise --max-body.`,
    null,
    // The rest of the body is not read: the connection cannot be reused.
    { Connection: "close" },
  );
}

/** Drain what the client still sends so it can read the error instead of failing on a reset connection. */
function discard(req: IncomingMessage): void {
  req.resume();
}
