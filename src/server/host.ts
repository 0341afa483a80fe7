import type { IncomingMessage } from "node:http";
import { isIP } from "node:net";
import { badRequest, forbidden } from "./httpErrors.ts";

/**
 * The host a request was sent to (`host[:port]`, normalized as a URL's `host`): the authority of an
 * absolute-form target, else the `Host` header (RFC 9112, 3.2.2). Checks it against DNS rebinding: a page
 * on `evil.example` whose name is made to resolve to 127.0.0.1 reaches a loopback server with
 * `Host: evil.example`, so on a loopback connection the name must be `localhost` (or under `.localhost`),
 * an IP literal, or in `allowed`; elsewhere only when `allowed` is not empty; `["*"]` turns the check off.
 * Any port is fine. A refused host is a 403 `host_not_allowed`; a missing (HTTP/1.1) or unreadable one a
 * 400 `invalid_request`.
 */
export function checkHost(
  req: IncomingMessage,
  target: { absolute: boolean; url: URL },
  allowed: readonly string[],
): string | undefined {
  const raw = target.absolute ? target.url.host : req.headers.host;
  if (raw === undefined) {
    if (req.httpVersion === "1.0") return undefined;
    throw badRequest("invalid_request", "The request has no Host header; HTTP/1.1 requires one.");
  }
  const url = parseHost(raw);
  if (url === undefined) {
    throw badRequest("invalid_request", `The Host header ${JSON.stringify(raw)} is not a host[:port].`);
  }
  if (allowed[0] === "*") return url.host;
  if (allowed.length === 0 && !isLoopback(req.socket.localAddress)) return url.host;
  const name = url.hostname.replace(/\.$/, "");
  if (isIP(name.replace(/^\[(.*)\]$/, "$1")) !== 0) return url.host;
  if (name === "localhost" || name.endsWith(".localhost")) return url.host;
  for (const entry of allowed) {
    if (name === entry || (entry.startsWith(".") && (name === entry.slice(1) || name.endsWith(entry)))) {
      return url.host;
    }
  }
  throw forbidden(
    "host_not_allowed",
    `This server does not answer to the host ${JSON.stringify(url.hostname)}: a name that points a browser at it ` +
      "may be a DNS rebinding attack. Use localhost or an IP address, or start the server with --allowed-host <name> (allowedHosts).",
  );
}

function parseHost(raw: string): URL | undefined {
  // Only a host and a port: "/", "?", "#", "@" or "\" would make the URL parser read something else.
  if (/[/?#@\\\s]/.test(raw)) return undefined;
  try {
    return new URL(`http://${raw}`);
  } catch {
    return undefined;
  }
}

/** Whether the connection came in on a loopback address (127.0.0.0/8, ::1, or 127.x mapped into IPv6). */
export function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return false;
  const v4 = address.startsWith("::ffff:") ? address.slice(7) : address;
  return v4.startsWith("127.") || address === "::1";
}
