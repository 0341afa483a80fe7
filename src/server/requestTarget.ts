import { badRequest, type HttpError } from "./httpErrors.ts";

/** Longest request-target shown back in an error message. */
const SHOWN = 80;

export interface RequestTarget {
  url: URL;
  /** Absolute-form: the target names the host itself, and `Host` is ignored (RFC 9112, 3.2.2). */
  absolute: boolean;
}

/**
 * The request-target (`req.url`) as a URL. Origin-form (`/path?query`) is read against a fixed origin so
 * that nothing in the path can be taken for a host: `//`, `//:99999/x` and `/\x` are paths. Absolute-form
 * (`http://host/path`, as proxies send it) is read as is. Anything else (`*`, an authority, a malformed
 * URL) is a 400 `invalid_url` that says what was wrong.
 */
export function parseRequestTarget(target: string | undefined): RequestTarget {
  if (target === undefined || target.length === 0) throw invalidTarget("", "it is empty");
  if (target.startsWith("/")) return { url: new URL(`http://origin.invalid${target}`), absolute: false };
  let url: URL;
  try {
    url = new URL(target);
  } catch {
    throw invalidTarget(
      target,
      /^[a-z][a-z0-9+.-]*:/i.test(target)
        ? "it is not a valid absolute URL (check the host and the port)"
        : "it is neither a path starting with / nor an absolute http:// URL",
    );
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw invalidTarget(target, `the scheme ${url.protocol} is not http: or https:`);
  }
  return { url, absolute: true };
}

/**
 * One path segment, percent-decoded. A malformed escape (`%ZZ`, a cut `%E0%A4%A`, bytes that are not
 * UTF-8) is a 400 `invalid_url` naming the segment and `param`.
 */
export function decodeSegment(raw: string, param: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw badRequest(
      "invalid_url",
      `The path segment ${shown(raw)} (${param}) is not valid percent-encoding: every % must start an escape like %2F, and the escapes must spell UTF-8.`,
      param,
    );
  }
}

function invalidTarget(target: string, why: string): HttpError {
  return badRequest("invalid_url", `The request-target ${shown(target)} cannot be read: ${why}.`);
}

function shown(text: string): string {
  return JSON.stringify(text.length > SHOWN ? `${text.slice(0, SHOWN)}…` : text);
}
