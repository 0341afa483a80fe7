/**
 * Server-Sent Events over `fetch`: EventSource cannot POST a body, so the page reads the response stream
 * itself. Yields the `data` of each event as a string; comments (`: keep-alive`) and other fields are
 * skipped.
 *
 * @param {ReadableStream<Uint8Array>} body
 * @returns {AsyncGenerator<string>}
 */
export async function* readSse(body) {
  const reader = body.getReader();
  // One decoder for the whole body with `stream: true`: a character split across two network chunks is held
  // back until its last byte arrives, never turned into U+FFFD.
  const decoder = new TextDecoder("utf-8");
  const lines = /\r\n|\r|\n/g;
  let pending = "";
  /** @type {string[] | undefined} */
  let data;
  let finished = false;
  try {
    while (!finished) {
      const { value, done } = await reader.read();
      finished = done;
      pending += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let start = 0;
      lines.lastIndex = 0;
      for (let match = lines.exec(pending); match !== null; match = lines.exec(pending)) {
        // A lone "\r" at the end may be the first half of "\r\n": wait for the next chunk to know.
        if (match[0] === "\r" && match.index === pending.length - 1 && !done) break;
        const line = pending.slice(start, match.index);
        start = lines.lastIndex;
        if (line === "") {
          if (data !== undefined) yield data.join("\n");
          data = undefined;
        } else if (line.startsWith("data:")) {
          (data ??= []).push(line.slice(line.startsWith("data: ") ? 6 : 5));
        }
      }
      pending = pending.slice(start);
    }
    // A stream cut before its blank line still delivers what it said.
    if (pending.startsWith("data:")) (data ??= []).push(pending.slice(pending.startsWith("data: ") ? 6 : 5));
    if (data !== undefined) yield data.join("\n");
  } finally {
    // Leaving early (break, throw) must not leave the response body locked and unread.
    if (!finished) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}
