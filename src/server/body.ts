import type { IncomingMessage, ServerResponse } from "node:http";
import { badRequest, HttpError } from "./httpErrors.ts";

/**
 * Reads and parses a JSON request body of at most `maxBytes`. Parsed as JSON whatever the Content-Type says
 * (`curl -d` sends form encoding by default). A body over the limit is refused as soon as it is known to be
 * too large, without buffering it; the rest is left to `sendErrorUnread`.
 */
export function readJsonBody(req: IncomingMessage, maxBytes: number): Promise<unknown> {
  const declared = Number(req.headers["content-length"]);
  if (Number.isFinite(declared) && declared > maxBytes) return Promise.reject(tooLarge(maxBytes));
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
      req.pause();
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

/** Whether part of the request's body has not arrived yet. */
export function bodyPending(req: IncomingMessage): boolean {
  if (req.complete) return false;
  const length = req.headers["content-length"];
  return req.headers["transfer-encoding"] !== undefined || (length !== undefined && length !== "0");
}

/**
 * Sends `error` to a client whose body has not been read, and closes the connection only once the client
 * has sent the rest of it (read and dropped, up to `maxDrainBytes`). Closing with unread bytes would make
 * the kernel reset the connection, and a client still writing its body (fetch, for one) would lose the
 * answer before reading it. How long this may take is bounded by `bodyTimeoutMs`.
 */
export function sendErrorUnread(
  req: IncomingMessage,
  res: ServerResponse,
  error: HttpError,
  maxDrainBytes: number,
): Promise<void> {
  const text = JSON.stringify(error.toJSON());
  res.writeHead(error.status, {
    "Content-Type": "application/json; charset=utf-8",
    "Content-Length": Buffer.byteLength(text),
    ...error.headers,
    // The body is not read as a request: the connection cannot carry another one.
    Connection: "close",
  });
  const declared = Number(req.headers["content-length"]);
  if (declared > maxDrainBytes) {
    // Too much to wait for: the client may see a reset, as it would from any server.
    res.end(text);
    return Promise.resolve();
  }
  // The answer goes out now, complete (Content-Length); only its end, which closes the connection, waits.
  res.write(text);
  return new Promise((resolve) => {
    let drained = 0;
    const done = () => {
      req.off("data", onData);
      req.off("end", done);
      req.off("close", done);
      req.off("error", done);
      res.end();
      resolve();
    };
    const onData = (chunk: Buffer) => {
      drained += chunk.length;
      if (drained > maxDrainBytes) done();
    };
    req.on("data", onData);
    req.on("end", done);
    req.on("close", done);
    req.on("error", done);
    req.resume();
  });
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
  );
}
