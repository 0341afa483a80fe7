import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { HttpError } from "./httpErrors.ts";

/** Checks `Authorization: Bearer <key>` in constant time. Throws a 401 in OpenAI's shape otherwise. */
export function checkApiKey(req: IncomingMessage, expected: string): void {
  const header = req.headers.authorization;
  const match = header === undefined ? null : /^Bearer\s+(.+)$/i.exec(header.trim());
  if (match === null) {
    throw unauthorized("Missing API key: send it as the header 'Authorization: Bearer <key>'.");
  }
  // Hashing first makes the comparison length-independent.
  const given = createHash("sha256").update(match[1]!).digest();
  const wanted = createHash("sha256").update(expected).digest();
  if (!timingSafeEqual(given, wanted)) throw unauthorized("Incorrect API key provided.");
}

function unauthorized(message: string): HttpError {
  return new HttpError(401, "authentication_error", "invalid_api_key", message, null, {
    "WWW-Authenticate": "Bearer",
  });
}
