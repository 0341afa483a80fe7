/**
 * The reason each implicit cancellation path passes to `onCancel`. An explicit `cancel(reason)` passes its
 * own argument (possibly undefined); an abort whose `signal.reason` is a string passes that string.
 */
export const CancelReason = {
  /** The signal was aborted with a non-string reason (the usual DOMException), or was already aborted. */
  aborted: "aborted",
  /** `break`, `return` or a throw left a for-await loop (the iterator's `return()`/`throw()`). */
  iteratorClosed: "iterator_closed",
  /** `toReadableStream().cancel()` (or a reader's cancel) without a string reason. */
  streamCancelled: "stream_cancelled",
  /** `[Symbol.asyncDispose]`, i.e. leaving an `await using` scope. */
  disposed: "disposed",
  /** The handler given to `consume()` threw or rejected. */
  handlerError: "handler_error",
  /** The handle was garbage collected before anything committed to reading it. */
  gc: "gc",
} as const;
