import type { IncomingMessage, Server, ServerResponse } from "node:http";
import { maxHeaderSize } from "node:http";
import type { Duplex } from "node:stream";
import { badRequest, HttpError, rawResponse, requestTimeout } from "./httpErrors.ts";

/**
 * How long a connection whose request could not be parsed is kept open after its 400, reading and
 * dropping what the client still sends, so that closing it does not reset the connection (which would
 * make the client lose the answer) while the client is still writing.
 */
const LINGER_MS = 2000;

export interface ConnectionLimits {
  maxConnections: number;
  headersTimeoutMs: number;
  bodyTimeoutMs: number;
}

/**
 * What happens on a connection before (or outside) a request handler: the connection cap, and an answer
 * in OpenAI's shape to everything node refuses on its own (a request it cannot parse, headers or body
 * that do not arrive in time, CONNECT), where node would otherwise send an empty 400 or reset.
 */
export class ConnectionGuard {
  readonly #limits: ConnectionLimits;
  readonly #onAnswer: (status: number) => void;
  #open = 0;
  /** Connections past the cap: they get one 503 and are closed. */
  readonly #excess = new WeakSet<Duplex>();
  /** The response being written on each connection, so that a timeout knows whether anything was sent. */
  readonly #responses = new WeakMap<Duplex, ServerResponse>();
  /** Connections already answered here: node reports every later chunk of a broken request again. */
  readonly #answered = new WeakSet<Duplex>();

  constructor(http: Server, limits: ConnectionLimits, onAnswer: (status: number) => void) {
    this.#limits = limits;
    this.#onAnswer = onAnswer;
    // Past twice the cap even a 503 costs too much: node closes new connections before reading them.
    http.maxConnections = limits.maxConnections * 2;
    http.on("connection", (socket: Duplex) => {
      this.#open++;
      if (this.#open > limits.maxConnections) this.#excess.add(socket);
      socket.once("close", () => this.#open--);
    });
    http.on("clientError", (error: NodeJS.ErrnoException, socket: Duplex) =>
      this.#clientError(error, socket),
    );
    http.on("connect", (_req: IncomingMessage, socket: Duplex) =>
      this.#answer(
        socket,
        new HttpError(
          405,
          "invalid_request_error",
          "method_not_allowed",
          "CONNECT is not supported: this is an API server, not a proxy.",
        ),
      ),
    );
  }

  /** Whether `socket` is past the connection cap: its request gets a 503 and the connection closes. */
  isExcess(socket: Duplex): boolean {
    return this.#excess.has(socket);
  }

  /** Remembers `res` as the response in flight on its connection until it is done. */
  track(req: IncomingMessage, res: ServerResponse): void {
    const socket = req.socket;
    this.#responses.set(socket, res);
    res.once("close", () => {
      if (this.#responses.get(socket) === res) this.#responses.delete(socket);
    });
  }

  #clientError(error: NodeJS.ErrnoException, socket: Duplex): void {
    if (this.#answered.has(socket)) return;
    const res = this.#responses.get(socket);
    // Nothing more can be said on a connection that is gone or already carries a response.
    if (!socket.writable || res?.headersSent === true || !isRequestError(error)) {
      socket.destroy();
      return;
    }
    if (error.code !== "ERR_HTTP_REQUEST_TIMEOUT") {
      this.#answer(socket, parseError(error), res);
      return;
    }
    const { headersTimeoutMs, bodyTimeoutMs } = this.#limits;
    const timeout = requestTimeout(
      res === undefined
        ? `The request headers did not arrive within ${headersTimeoutMs} ms (headersTimeoutMs).`
        : `The request did not arrive within ${bodyTimeoutMs} ms (bodyTimeoutMs); send the body at once.`,
    );
    this.#answered.add(socket);
    this.#count(timeout.status, res);
    // The parser still works: the rest of the body must not start a handler now. Cut at once, as node does.
    socket.write(rawResponse(timeout));
    socket.destroy();
  }

  /** Sends `error` as the last response on `socket`, then lets the client finish and close (bounded). */
  #answer(socket: Duplex, error: HttpError, res?: ServerResponse): void {
    if (this.#answered.has(socket)) return;
    this.#answered.add(socket);
    this.#count(error.status, res);
    socket.end(rawResponse(error));
    const cut = setTimeout(() => socket.destroy(), LINGER_MS);
    cut.unref();
    socket.once("close", () => clearTimeout(cut));
    socket.once("end", () => socket.destroy());
  }

  /** A request being handled is counted by its handler (with this status) when its response closes. */
  #count(status: number, res: ServerResponse | undefined): void {
    if (res === undefined) this.#onAnswer(status);
    else res.statusCode = status;
  }
}

function isRequestError(error: NodeJS.ErrnoException): boolean {
  return error.code === "ERR_HTTP_REQUEST_TIMEOUT" || error.code?.startsWith("HPE_") === true;
}

/** A request node's parser refused, as the answer it gets. */
function parseError(error: NodeJS.ErrnoException & { reason?: string }): HttpError {
  switch (error.code) {
    case "HPE_HEADER_OVERFLOW":
      return new HttpError(
        431,
        "invalid_request_error",
        "headers_too_large",
        `The request line and headers are larger than ${maxHeaderSize} bytes; send a shorter URL or fewer headers.`,
      );
    case "HPE_CHUNK_EXTENSIONS_OVERFLOW":
      return new HttpError(
        413,
        "invalid_request_error",
        "request_too_large",
        "The chunk extensions of the request body are too large.",
      );
    case "HPE_PAUSED_H2_UPGRADE":
      return badRequest("invalid_request", "HTTP/2 is not supported here; send HTTP/1.1.");
    case "HPE_INVALID_METHOD":
      return badRequest("invalid_request", "The request method is not one HTTP/1.1 defines.");
    default:
      return badRequest(
        "invalid_request",
        `The request is not valid HTTP/1.1: ${error.reason ?? error.message} (${error.code}).`,
      );
  }
}
