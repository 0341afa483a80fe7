/** The few calls the page makes to the Sluice server, all on the same origin. */

const KEY_STORAGE = "sluice.apiKey";

/** The optional API key, kept in localStorage so a reload does not ask again. */
export const apiKey = {
  get() {
    try {
      return localStorage.getItem(KEY_STORAGE) ?? "";
    } catch {
      return "";
    }
  },
  /** @param {string} key */
  set(key) {
    try {
      if (key === "") localStorage.removeItem(KEY_STORAGE);
      else localStorage.setItem(KEY_STORAGE, key);
    } catch {
      // Storage can be disabled; the key then lasts as long as the field's value.
    }
  },
};

/** @param {Record<string, string>} [extra] */
export function headers(extra = {}) {
  const key = apiKey.get();
  // No key, no header: a server started without one must not see an empty Bearer.
  return key === "" ? extra : { ...extra, Authorization: `Bearer ${key}` };
}

/**
 * The server's own message for a failed response (`{ error: { message } }`), else the status line.
 * @param {Response} response
 */
export async function errorOf(response) {
  const text = await response.text().catch(() => "");
  try {
    const message = JSON.parse(text)?.error?.message;
    if (typeof message === "string" && message !== "") return message;
  } catch {
    // Not JSON (a proxy's page, say): fall through to the status.
  }
  return `HTTP ${response.status} ${response.statusText}`.trim();
}

/** @param {string} path */
export async function getJson(path) {
  const response = await fetch(path, { headers: headers(), cache: "no-store" });
  if (!response.ok) throw new Error(await errorOf(response));
  return response.json();
}

/**
 * Starts a streaming completion. Resolves once the headers are in (the request id comes with them).
 * @param {object} body
 * @param {AbortSignal} signal
 */
export function postCompletion(body, signal) {
  return fetch("/v1/completions", {
    method: "POST",
    headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify(body),
    signal,
  });
}

/**
 * Starts a streaming chat completion (`messages` in the body). Resolves once the headers are in.
 * @param {object} body
 * @param {AbortSignal} signal
 */
export function postChat(body, signal) {
  return fetch("/v1/chat/completions", {
    method: "POST",
    headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify(body),
    signal,
  });
}

/**
 * Asks the server to stop a request. Resolves with the HTTP status (404: it had already finished).
 * @param {string} id
 */
export async function deleteRequest(id) {
  const response = await fetch(`/v1/requests/${encodeURIComponent(id)}`, {
    method: "DELETE",
    headers: headers(),
  });
  await response.body?.cancel();
  return response.status;
}
