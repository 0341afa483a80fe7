import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { HttpError } from "./httpErrors.ts";

/**
 * Who is asking. `key` names the configured key that authenticated the request (its index among the API
 * keys, or `"admin"`), undefined when none did; a request belongs to the key that created it, so two
 * callers own the same requests exactly when their `key` is equal.
 */
export interface Caller {
  readonly key: number | "admin" | undefined;
  readonly admin: boolean;
}

export const ANONYMOUS: Caller = { key: undefined, admin: false };

/** The configured keys, hashed once so that every comparison takes the same time whatever the input. */
export class ApiKeys {
  readonly #keys: Buffer[];
  readonly #admin: Buffer | undefined;

  constructor(apiKeys: readonly string[], adminApiKey: string | undefined) {
    this.#keys = apiKeys.map(digest);
    this.#admin = adminApiKey === undefined ? undefined : digest(adminApiKey);
  }

  /** Whether a request without a key is refused (API keys are configured, not only an admin key). */
  get required(): boolean {
    return this.#keys.length > 0;
  }

  /**
   * The caller of `req` from `Authorization: Bearer <key>`, or else `x-api-key: <key>` (Anthropic's header,
   * which some clients send). With no key configured at all the headers are ignored. Otherwise a key that is sent must be a configured one, and a missing key is refused when
   * `required` (and `mandatory` for the route): 401 in OpenAI's shape.
   */
  authenticate(req: IncomingMessage, mandatory: boolean): Caller {
    if (this.#keys.length === 0 && this.#admin === undefined) return ANONYMOUS;
    const sent = keyOf(req);
    if (sent === undefined) {
      if (mandatory && this.required) {
        throw unauthorized(
          "Missing API key: send it as the header 'Authorization: Bearer <key>' (or 'x-api-key: <key>').",
        );
      }
      return ANONYMOUS;
    }
    const given = digest(sent);
    // Every key is compared, so the time taken does not tell which one (if any) matched.
    let found: Caller | undefined;
    if (this.#admin !== undefined && timingSafeEqual(given, this.#admin))
      found = { key: "admin", admin: true };
    this.#keys.forEach((key, index) => {
      if (timingSafeEqual(given, key)) found ??= { key: index, admin: false };
    });
    if (found === undefined) throw unauthorized("Incorrect API key provided.");
    return found;
  }
}

/** The key a request sends, if any; Authorization wins over x-api-key. */
function keyOf(req: IncomingMessage): string | undefined {
  const header = req.headers.authorization;
  if (header !== undefined) {
    const match = /^Bearer\s+(.+)$/i.exec(header.trim());
    if (match === null) {
      throw unauthorized("Malformed Authorization header: send the key as 'Authorization: Bearer <key>'.");
    }
    return match[1]!;
  }
  const apiKey = req.headers["x-api-key"];
  // Node joins repeated x-api-key headers with ", ": no key contains a space, so that never matches.
  return typeof apiKey === "string" ? apiKey.trim() : undefined;
}

/** Whether `caller` may act on (cancel, see the id of) a request created by `owner`. */
export function mayControl(caller: Caller, owner: Caller["key"]): boolean {
  return caller.admin || caller.key === owner;
}

// Hashing first makes the comparison length-independent.
function digest(key: string): Buffer {
  return createHash("sha256").update(key).digest();
}

function unauthorized(message: string): HttpError {
  return new HttpError(401, "authentication_error", "invalid_api_key", message, null, {
    "WWW-Authenticate": "Bearer",
  });
}
