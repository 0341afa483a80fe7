import type { RequestRecord } from "../runtime/RequestState.ts";
import type { Runtime } from "../runtime/Runtime.ts";

interface Entry {
  record: RequestRecord | undefined;
  resolve: ((record: RequestRecord | undefined) => void) | undefined;
}

/**
 * The runtime's end records of the requests this server is serving. An end record comes out when the
 * request's slot is free again, which for a cancel is at most one step after its terminal chunk, and
 * carries the measured cancel latency that the final SSE chunk reports.
 */
export class EndRecords {
  readonly #expected = new Map<string, Entry>();
  readonly #unsubscribe: () => void;

  constructor(runtime: Runtime) {
    this.#unsubscribe = runtime.observe((event) => {
      if (event.type !== "end") return;
      const entry = this.#expected.get(event.record.id);
      if (entry === undefined) return;
      entry.record = event.record;
      entry.resolve?.(event.record);
    });
  }

  /** Start keeping the record of `id`. Call before submitting: a cancel while queued reports at once. */
  expect(id: string): void {
    this.#expected.set(id, { record: undefined, resolve: undefined });
  }

  /** The record of `id`, waiting up to `timeoutMs` for it; undefined if it did not come in time. */
  wait(id: string, timeoutMs: number): Promise<RequestRecord | undefined> {
    const entry = this.#expected.get(id);
    if (entry === undefined) return Promise.resolve(undefined);
    if (entry.record !== undefined) return Promise.resolve(entry.record);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        entry.resolve = undefined;
        resolve(undefined);
      }, timeoutMs);
      entry.resolve = (record) => {
        clearTimeout(timer);
        entry.resolve = undefined;
        resolve(record);
      };
    });
  }

  forget(id: string): void {
    this.#expected.delete(id);
  }

  close(): void {
    this.#unsubscribe();
    for (const entry of this.#expected.values()) entry.resolve?.(undefined);
    this.#expected.clear();
  }
}
