import { createStreamChannel, type StreamChannel } from "../channel/index.ts";
import { OutputProcessor } from "../detok/index.ts";
import { createEngine } from "../engine/createEngine.ts";
import type { Engine, StepItem } from "../engine/Engine.ts";
import type { LlamaEngineOptions } from "../engine/LlamaEngine.ts";
import { SluiceError, toChunkError } from "../errors.ts";
import type { ChunkError, GenerationRequest, Timings, TokenLogprob } from "../types.ts";
import { DraftCost } from "./DraftCost.ts";
import type { Drafter, DraftWanted } from "./Drafter.ts";
import { ModelDrafter } from "./ModelDrafter.ts";
import { PrefillSizer } from "./PrefillSizer.ts";
import { PromptLookup } from "./PromptLookup.ts";
import { pickSlot, type SlotCandidate } from "./pickSlot.ts";
import { type PlannedItem, planStep, type StepBudget } from "./planStep.ts";
import { promptTail } from "./promptTail.ts";
import { type Latch, type RequestRecord, RequestState } from "./RequestState.ts";
import { parseRuntimeOptions, type RuntimeOptions } from "./RuntimeOptions.ts";
import { Speculation } from "./Speculation.ts";

export type { RuntimeOptions } from "./RuntimeOptions.ts";

import { RequestQueue } from "./RequestQueue.ts";
import { RuntimeStats } from "./RuntimeStats.ts";
import { type NormalizedRequest, validateStreamingSubmission } from "./validate.ts";

export interface SlotSnapshot {
  index: number;
  /** `freeing`: finished, waiting for the engine to let go of the slot (at most the step in flight). */
  state: "free" | "prefill" | "decode" | "freeing";
  requestId?: string;
  promptTokens?: number;
  prefilled?: number;
  generated?: number;
}

export interface RuntimeSnapshot {
  slots: SlotSnapshot[];
  queued: number;
  steps: number;
  closing: boolean;
}

export type RuntimeEvent =
  | { type: "step"; step: number; items: readonly StepItem[]; ms: number }
  | { type: "end"; record: RequestRecord };

/**
 * Runs many generations over a fixed set of engine slots. One loop owns the engine; each iteration frees
 * finished slots, admits queued requests, plans one batched step, runs it, and emits what it produced.
 */
export class Runtime {
  readonly engine: Engine;
  readonly stats: RuntimeStats;
  readonly #budget: StepBudget;
  /** Sizes prefill chunks by measured step time; undefined when the chunk size is fixed. */
  readonly #sizer: PrefillSizer | undefined;
  readonly #maxQueue: number;
  readonly #defaultMaxTokens: number;
  readonly #addBos: boolean;
  /** Whether slots keep their prompt cache between requests (option and engine both allow it). */
  readonly #promptCache: boolean;
  /** The drafter of speculative decoding, when on and the engine verifies drafts. */
  readonly #drafter: Drafter | undefined;
  readonly #draftMax: number;
  /** The draft model's engine when `create` loaded it (`draftModel`): closed with the runtime. */
  readonly #draftEngine: Engine | undefined;
  /** What verifying drafts costs on this engine, learned from its steps. */
  readonly #draftCost = new DraftCost();
  /** Per slot, the release counter when it was last given back (least recently used goes first). */
  readonly #lastUsed: number[];
  #releases = 0;
  /** Slot index → the request in it (finished ones stay until the loop frees the slot). */
  readonly #slots: (RequestState | undefined)[];
  /** FIFO of queued requests; cancelled ones are skipped at admission. */
  readonly #queue = new RequestQueue();
  /** Requests whose end record is not out yet (until their slot is free), by id: the per-request promise. */
  readonly #ending = new Map<
    string,
    { promise: Promise<RequestRecord>; resolve: (r: RequestRecord) => void }
  >();
  /** Every request not yet finished: the finalizer closes all of them on any failure of the loop. */
  readonly #live = new Map<string, RequestState>();
  readonly #listeners = new Set<(event: RuntimeEvent) => void>();
  /** Resolves the loop's idle wait. */
  #wake: (() => void) | undefined;
  /**
   * Set by every event that gives the loop work (a submission, a cancel, close) and cleared when an iteration
   * starts looking for work: an event that lands while the loop is busy (mid-step, freeing a slot, between two
   * awaits) is never lost, whatever kind of work it brings.
   */
  #pending = false;
  #closing = false;
  /** Closing, letting live requests finish (`close({ drain: true })`). */
  #draining = false;
  #closed: Promise<void> | undefined;
  #stepsCompleted = 0;
  readonly #loop: Promise<void>;

  private constructor(
    engine: Engine,
    options: RuntimeOptions,
    drafter: Drafter | undefined,
    draftEngine: Engine | undefined,
  ) {
    this.engine = engine;
    this.#draftEngine = draftEngine;
    this.#slots = new Array(engine.info.slots).fill(undefined);
    const maxStepTokens = Math.max(engine.info.slots + 1, engine.info.maxStepTokens);
    const fixed =
      typeof options.prefillChunkSize === "number" ? Math.max(1, Math.floor(options.prefillChunkSize)) : 0;
    this.#budget = {
      prefillChunk: fixed,
      prefillBudget: fixed > 0 ? maxStepTokens : 0,
      maxStepTokens,
      draftCost: this.#draftCost,
      // A fixed chunk smaller than the engine's minimum is the caller's choice: it is kept.
      minChunk: Math.max(1, Math.min(fixed || Number.POSITIVE_INFINITY, engine.info.minPromptChunk ?? 1)),
      // Time-sized chunks are a ceiling: a prompt is spread evenly over the steps it needs.
      evenChunks: fixed === 0,
    };
    this.#sizer =
      fixed > 0
        ? undefined
        : new PrefillSizer({
            ...(options.targetStepMs !== undefined ? { targetStepMs: options.targetStepMs } : {}),
            ...(options.soloPrefillStepMs !== undefined ? { soloStepMs: options.soloPrefillStepMs } : {}),
            min: Math.max(8, this.#budget.minChunk),
            max: Math.min(512, maxStepTokens - engine.info.slots),
            // Start small: the first chunk is read before anything is known about the model's speed.
            initial: Math.max(8, this.#budget.minChunk),
          });
    this.#maxQueue = options.maxQueue ?? 256;
    this.#defaultMaxTokens = options.defaultMaxTokens ?? 256;
    this.#addBos = engine.info.addBos;
    this.#promptCache = (options.promptCache ?? true) && engine.info.capabilities.promptCache;
    this.#drafter = drafter;
    this.#draftMax = options.draftMax ?? 8;
    this.#lastUsed = new Array(engine.info.slots).fill(0);
    this.stats = new RuntimeStats(engine.info.slots);
    this.#loop = this.#run();
  }

  /**
   * Loads the model (or takes the given engine) and starts the step loop. Throws `invalid_option` for a bad
   * option before anything is loaded, and what `createEngine` throws.
   */
  static async create(options: RuntimeOptions = {}): Promise<Runtime> {
    const parsed = parseRuntimeOptions(options);
    const engine = parsed.engine ?? (await createEngine(modelOptions(parsed)));
    let draftEngine: Engine | undefined;
    try {
      let drafter: Drafter | undefined;
      if (engine.info.capabilities.speculative) {
        if (parsed.draftModel !== undefined) {
          draftEngine = await createEngine(draftModelOptions(parsed, engine)).catch((error: unknown) => {
            // Said of the draft model, so that a missing file is not taken for the target's.
            if (!(error instanceof SluiceError)) throw error;
            throw new SluiceError(error.code, `draftModel: ${error.message}`, {
              param: "draftModel",
              cause: error,
            });
          });
          drafter = new ModelDrafter(draftEngine);
        } else if (parsed.drafter === "prompt-lookup") drafter = new PromptLookup();
        else if (typeof parsed.drafter === "object") drafter = parsed.drafter;
        drafter?.checkTarget?.(engine.info);
      }
      return new Runtime(engine, parsed, drafter, draftEngine);
    } catch (error) {
      // What this call loaded is this call's to close; a given engine stays the caller's.
      await draftEngine?.close().catch(() => {});
      if (parsed.engine === undefined) await engine.close().catch(() => {});
      throw error;
    }
  }

  /** Steps the engine has completed since start. */
  get steps(): number {
    return this.#stepsCompleted;
  }

  /**
   * The end record of a live request (`generate()` returned its channel and its slot is not yet free): resolves
   * once the request has fully let go of its slot, which for a cancel is at most one step after its terminal
   * chunk, with the measured cancel latency. Undefined for an id that is not live (or already fully ended).
   */
  endRecord(id: string): Promise<RequestRecord> | undefined {
    return this.#ending.get(id)?.promise;
  }

  /** Subscribe to step and request-end events; returns the unsubscribe function. */
  observe(listener: (event: RuntimeEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Submit a generation. Bad requests throw a `SluiceError` synchronously; an accepted request always ends
   * with exactly one terminal chunk on its channel.
   */
  generate(request: GenerationRequest): StreamChannel {
    if (this.#closing) throw new SluiceError("runtime_closed", "The runtime is closed; create a new one.");
    const normalized = validateStreamingSubmission(request, {
      info: this.engine.info,
      tokenize: (text, opts) => this.engine.tokenize(text, opts),
      addBos: this.#addBos,
      defaultMaxTokens: this.#defaultMaxTokens,
      grammarText: this.engine.grammarText?.bind(this.engine),
      speculative: this.#drafter !== undefined,
    });
    // Until its end record is out (its slot free), an id still names its request.
    if (this.#ending.has(normalized.id)) {
      throw new SluiceError(
        "channel_reused",
        `A request with id ${normalized.id} is still running; ids must be unique.`,
        { param: "id" },
      );
    }
    // The bound is on requests that must wait: those a free (or freeing) slot will take at once do not count.
    const waiting = this.#queue.length - this.#openSlots();
    if (waiting >= this.#maxQueue) {
      throw new SluiceError(
        "queue_full",
        `${Math.max(0, waiting)} requests are already waiting for a slot (maxQueue ${this.#maxQueue}); retry later.`,
      );
    }
    return this.#accept(normalized);
  }

  #accept(request: NormalizedRequest): StreamChannel {
    let state: RequestState | undefined;
    const { channel, producer } = createStreamChannel({
      id: request.id,
      rejectOnError: request.rejectOnError,
      onCancel: () => {
        if (state) this.#cancel(state);
      },
      // An already-aborted signal is accepted and finished `cancelled` (the channel calls onCancel one
      // microtask later, before the loop can admit it), so callers have a single path to handle.
      ...(request.signal ? { signal: request.signal } : {}),
    });
    const processor = new OutputProcessor(this.engine.info.vocabulary, {
      skipSpecialTokens: request.skipSpecialTokens,
      stop: request.stop,
      stopTokenIds: request.stopTokenIds,
      streamInterval: request.streamInterval,
      minTokens: request.minTokens,
      promptTail: promptTail(this.engine.info.vocabulary, request.promptTokens),
    });
    const speculation = request.speculative
      ? new Speculation(
          this.#drafter!.start(request.promptTokens),
          this.#draftMax,
          this.#drafter!.prepare !== undefined,
        )
      : undefined;
    state = new RequestState(request, producer, processor, speculation);
    // Armed before the request can be seen by the loop: from here on, any failure finishes it.
    this.#live.set(request.id, state);
    let resolve!: (record: RequestRecord) => void;
    const promise = new Promise<RequestRecord>((r) => (resolve = r));
    this.#ending.set(request.id, { promise, resolve });
    this.stats.submitted++;
    this.#queue.push(state);
    this.#notify();
    return channel;
  }

  /** The consumer stopped. The terminal chunk goes out now; the slot is freed before the next step. */
  #cancel(state: RequestState): void {
    if (state.phase === "finished") return;
    state.cancelledAt = { ms: performance.now(), step: this.#stepsCompleted, phase: state.phase };
    // A queued request never reaches the engine; a running one is evicted at the top of the next iteration.
    this.#finish(state, { reason: "cancelled" });
    this.#notify();
  }

  /** Tell the loop there is work; it looks at everything pending on its next iteration. */
  #notify(): void {
    this.#pending = true;
    this.#wake?.();
  }

  /**
   * The one exit path of every request: latch the reason (first writer wins), emit the terminal chunk with
   * everything not yet emitted, and record. Idempotent.
   */
  #finish(state: RequestState, latch: Latch): void {
    state.latch(latch);
    if (state.phase === "finished") return;
    const wasQueued = state.phase === "queued";
    state.phase = "finished";
    if (wasQueued) this.#queue.drop();
    state.finishedAt = performance.now();
    const final = state.processor.take(true) ?? { tokenIds: [], text: "" };
    const { reason, stop, error } = state.latched!;
    const timings: Timings = state.timings();
    const info = {
      reason,
      ...(stop !== undefined ? { stop } : {}),
      ...(error !== undefined ? { error } : {}),
      usage: {
        promptTokens: state.request.promptTokens.length,
        completionTokens: state.generated,
        cachedTokens: state.cachedTokens,
      },
      timings,
    };
    state.producer.finish(final.tokenIds, final.text, info, state.takeLogprobs(final.tokenIds.length));
    this.#live.delete(state.id);
    this.stats.finished(reason, state.generated);
    // Without a slot there is nothing to free: the request is fully released now.
    if (state.slot < 0) this.#noteFreed(state);
  }

  /** Slot (or queue place) of a finished request given back: completes its cancel record and reports it. */
  #noteFreed(state: RequestState): void {
    // Every path ends here once the request holds no slot: what its drafter held goes back too.
    state.speculation?.release();
    if (state.cancelledAt) {
      const now = performance.now();
      state.cancel = {
        phase: state.cancelledAt.phase,
        msToTerminal: state.finishedAt - state.cancelledAt.ms,
        msToFree: state.slot < 0 ? 0 : now - state.cancelledAt.ms,
        stepsToFree: state.slot < 0 ? 0 : this.#stepsCompleted - state.cancelledAt.step,
        tokensAfterCancel: state.tokensAfterCancel,
      };
      this.stats.cancelled(state.cancel);
    }
    const record = state.record();
    const ending = this.#ending.get(state.id);
    this.#ending.delete(state.id);
    ending?.resolve(record);
    this.#emit({ type: "end", record });
  }

  #emit(event: RuntimeEvent): void {
    for (const listener of this.#listeners) {
      try {
        listener(event);
      } catch {
        // An observer's bug must not break the loop.
      }
    }
  }

  async #run(): Promise<void> {
    for (;;) {
      try {
        // Cleared before looking at the state: whatever happens from here on sets it again.
        this.#pending = false;
        await this.#freeFinishedSlots();
        if (this.#closing && this.#live.size === 0) return;
        await this.#admit();
        const running = this.#slots.filter(
          (s): s is RequestState => s !== undefined && s.phase !== "finished",
        );
        if (this.#sizer) {
          let decoding = false;
          let reading = 0;
          for (const s of running) {
            if (s.phase === "decode") decoding = true;
            else reading = Math.max(reading, s.request.promptTokens.length - s.cachedTokens);
          }
          this.#budget.prefillChunk = this.#budget.prefillBudget = this.#sizer.chunk(decoding, reading);
        }
        const draftMs = await this.#prepareDrafts(running);
        const planned = planStep(running, this.#budget);
        if (planned.length === 0) {
          if (!this.#pending) await new Promise<void>((resolve) => (this.#wake = resolve));
          this.#wake = undefined;
          continue;
        }
        await this.#step(planned, draftMs);
      } catch (error) {
        // A bug in the loop itself: the finalizer ends every request rather than leave any hanging.
        this.#failAll("internal_error", error);
        // Yield to timers and I/O before going on, so a fault that repeats can never starve the process.
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    }
  }

  /**
   * A drafter that computes its guesses (a draft model) does so here, for every decoding request that will
   * ask for a draft in the step about to be planned, batched by the drafter. Its failure only costs drafts.
   * Returns how long it took, in ms: part of what the step's drafts cost (`DraftCost`).
   */
  async #prepareDrafts(running: readonly RequestState[]): Promise<number> {
    const drafter = this.#drafter;
    if (drafter?.prepare === undefined) return 0;
    const wanted: DraftWanted[] = [];
    for (const state of running) {
      const speculation = state.speculation;
      if (state.phase !== "decode" || speculation === undefined) continue;
      const room = Math.min(this.#budget.maxStepTokens - 1, state.request.maxTokens - state.generated - 1);
      const max = speculation.wanted(room, this.#draftCost);
      if (max > 0) wanted.push({ drafter: speculation.drafter, max });
    }
    const started = performance.now();
    try {
      await drafter.prepare(wanted);
    } catch {
      // A drafter's own bug: this step goes without what it did not prepare, the requests go on.
    }
    return performance.now() - started;
  }

  /** `draftMs`: what computing this step's drafts took before it (a draft model's steps), in ms. */
  async #step(planned: PlannedItem[], draftMs = 0): Promise<void> {
    const items = planned.map((p) => p.item);
    // Structurally impossible (finished slots are evicted before planning); counted so a regression shows.
    let promptTokens = 0;
    let decodes = 0;
    let drafting = 0;
    let draftTokens = 0;
    for (const p of planned) {
      const drafted = p.item.draft?.length ?? 0;
      if (drafted > 0) drafting++;
      if (p.state.cancelledAt) p.state.tokensAfterCancel += p.item.tokens.length + drafted;
      if (p.state.phase === "prefill") promptTokens += p.item.tokens.length;
      else decodes++;
      draftTokens += drafted;
    }
    this.stats.draftTokens += draftTokens;
    const started = performance.now();
    let outcomes: Awaited<ReturnType<Engine["step"]>>;
    try {
      outcomes = await this.engine.step(items);
    } catch (error) {
      this.#stepsCompleted++;
      this.#failAll("engine_failed", error);
      return;
    }
    this.#stepsCompleted++;
    const now = performance.now();
    this.stats.step(now - started, items);
    this.#sizer?.observe(now - started, promptTokens);
    if (this.#drafter !== undefined)
      // Drafts cost their verification and what computing them took; a step without drafts is a plain decode
      // (a draft model's one-token probe at length 0 is left out: it is throttled, see Speculation).
      this.#draftCost.observe(
        now - started + (draftTokens > 0 ? draftMs : 0),
        decodes,
        drafting,
        draftTokens,
        promptTokens,
      );
    for (let i = 0; i < planned.length; i++) {
      const { state, item } = planned[i]!;
      // Cancelled while the step was in flight: its terminal chunk is already out; the result is dropped.
      if (state.phase === "finished") continue;
      const outcome = outcomes[i];
      if (outcome === undefined || !outcome.ok) {
        this.#finish(state, {
          reason: "error",
          error: toChunkError(outcome?.error ?? "missing outcome", "engine_error"),
        });
        continue;
      }
      if (item.sample === undefined) {
        state.prefilled += item.tokens.length;
        continue;
      }
      if (state.phase === "prefill") {
        // The chunk that ends a prompt also samples; its tokens are prompt tokens all the same.
        this.stats.promptTokensProcessed += item.tokens.length;
        state.prefilled = state.request.promptTokens.length;
        state.phase = "decode";
        state.firstTokenAt = now;
        this.stats.firstToken(now - state.submittedAt);
      } else this.stats.interTokenSeconds.observe((now - state.lastTokenAt) / 1000);
      state.lastTokenAt = now;
      if (outcome.token === undefined) {
        this.#finish(state, {
          reason: "error",
          error: { code: "engine_error", message: "The engine sampled no token." },
        });
        continue;
      }
      const { draft } = item;
      if (draft === undefined) {
        if (!this.#take(state, outcome.token, outcome.logprob)) this.#emitDelta(state);
        continue;
      }
      // A verified draft: its accepted prefix, then the engine's own token; the first finish cause among
      // them ends the request at that token, and the tokens after it are neither emitted nor counted.
      const accepted = Math.max(0, Math.min(draft.length, Math.floor(outcome.accepted ?? 0)));
      state.speculation?.verified(accepted, outcome.token);
      this.stats.draftTokensAccepted += accepted;
      let finished = false;
      for (let j = 0; j < accepted && !finished; j++) finished = this.#take(state, draft[j]!, undefined);
      if (!finished && !this.#take(state, outcome.token, undefined)) this.#emitDelta(state);
    }
    this.#emit({ type: "step", step: this.#stepsCompleted, items, ms: now - started });
  }

  /** Emit what the request's processor has ready (every token taken in this step, the interval allowing). */
  #emitDelta(state: RequestState): void {
    const delta = state.processor.take(false);
    if (delta) state.producer.push(delta.tokenIds, delta.text, state.takeLogprobs(delta.tokenIds.length));
  }

  /**
   * Take one generated token: count it, detokenize it and latch any finish cause it brings, finishing the
   * request then (its terminal chunk carries everything not yet emitted). Returns whether it finished.
   */
  #take(state: RequestState, token: number, logprob: TokenLogprob | undefined): boolean {
    const { request, processor } = state;
    state.lastToken = token;
    state.generated++;
    state.speculation?.push(token);
    const held = processor.tokenCount;
    const hit = processor.push(token);
    // Aligned with the processor's ids: an entry per id it took.
    if (state.logprobs !== undefined && processor.tokenCount > held) {
      state.logprobs.push(logprob ?? { token, logprob: Number.NaN, top: [] });
    }
    if (hit) state.latch({ reason: "stop", stop: hit.stop });
    else if (
      !request.ignoreEos &&
      state.generated > request.minTokens &&
      this.engine.info.vocabulary.isEog(token)
    ) {
      state.latch({ reason: "eos" });
    } else if (state.generated >= request.maxTokens) state.latch({ reason: "length" });
    if (state.latched) {
      this.#finish(state, state.latched);
      return true;
    }
    return false;
  }

  /**
   * Queued requests into free slots, in queue order. Each takes the slot whose prompt cache serves it best
   * (`pickSlot`); the slot is trimmed to the reused prefix before the request's first step. A request never
   * waits for a busy slot with a better cache: it takes the best free one now.
   */
  async #admit(): Promise<void> {
    let free: SlotCandidate[] | undefined;
    const trims: Promise<void>[] = [];
    while (this.#queue.length > 0) {
      free ??= this.#freeSlots();
      if (free.length === 0) break;
      const state = this.#queue.shift();
      if (!state) break;
      const useCache = this.#promptCache && state.request.cachePrompt;
      const prompt = state.request.promptTokens;
      // The suffix left to read is at least the engine's efficient chunk where the prompt has it.
      const { slot, hit, reuse } = pickSlot(free, prompt, useCache, this.#budget.minChunk);
      free = free.filter((c) => c.slot !== slot);
      state.phase = "prefill";
      state.slot = slot;
      state.admittedAt = performance.now();
      this.#slots[slot] = state;
      trims.push(this.#trim(state, reuse, useCache, hit));
    }
    if (trims.length > 0) await Promise.all(trims);
  }

  #freeSlots(): SlotCandidate[] {
    const free: SlotCandidate[] = [];
    for (let slot = 0; slot < this.#slots.length; slot++) {
      if (this.#slots[slot] !== undefined) continue;
      const cached = this.#promptCache ? this.engine.cachedTokens(slot) : [];
      free.push({ slot, cached, lastUsed: this.#lastUsed[slot]! });
    }
    return free;
  }

  /** Keep the reused prefix of the slot's cache; the request reads its prompt from there. */
  async #trim(state: RequestState, reuse: number, lookedUp: boolean, hit: boolean): Promise<void> {
    try {
      const kept = await this.engine.trimSlot(state.slot, reuse);
      // Never more than asked: an engine that keeps more than the prompt's prefix would desynchronise it.
      state.prefilled = state.cachedTokens = Math.min(kept, reuse);
      this.stats.admitted(state.cachedTokens, lookedUp, hit);
    } catch (error) {
      this.#finish(state, { reason: "error", error: toChunkError(error, "engine_error") });
    }
  }

  /** Evict before the step: a finished slot costs no compute after the step in flight. */
  async #freeFinishedSlots(): Promise<void> {
    const resets: Promise<void>[] = [];
    for (let slot = 0; slot < this.#slots.length; slot++) {
      const state = this.#slots[slot];
      if (state === undefined || state.phase !== "finished") continue;
      resets.push(this.#releaseSlot(slot, state));
    }
    if (resets.length > 0) await Promise.all(resets);
  }

  async #releaseSlot(slot: number, state: RequestState): Promise<void> {
    try {
      await this.engine.releaseSlot(slot);
      // After an error the cache may hold a step that half happened: the next request starts from empty.
      // A cancel leaves it exact (the loop never cuts a step short), so it stays reusable.
      if (state.latched?.reason === "error") await this.engine.trimSlot(slot, 0);
      else if (state.speculation !== undefined && state.speculation.drafted > 0) {
        // Accepted draft tokens after the request's last token (a stop inside the run, or a step whose result
        // a cancel dropped) stay out of the cache: it keeps the prompt and the output but its last token,
        // what a request that drafted nothing leaves.
        const keep = state.request.promptTokens.length + Math.max(0, state.generated - 1);
        await this.engine.trimSlot(slot, keep);
      }
    } catch {
      // A slot that cannot be released is still handed out: the next request on it fails with an engine
      // error rather than the runtime shrinking silently.
    }
    this.#lastUsed[slot] = ++this.#releases;
    this.#slots[slot] = undefined;
    this.#noteFreed(state);
  }

  /** The finalizer: ends every live request with an error (engine failure or a bug in the loop). */
  #failAll(code: "engine_failed" | "internal_error", cause: unknown): void {
    const error: ChunkError = { code, message: toChunkError(cause, code).message };
    for (const state of [...this.#live.values()]) this.#finish(state, { reason: "error", error });
  }

  /** Slots that the next admission can hand out: free, or finished and freed before it. */
  #openSlots(): number {
    let open = 0;
    for (const state of this.#slots) if (state === undefined || state.phase === "finished") open++;
    return open;
  }

  /** Requests running or waiting, for health and metrics. */
  get load(): { active: number; queued: number; slots: number; busySlots: number } {
    const busy = this.#slots.filter((s) => s !== undefined).length;
    const active = this.#slots.filter((s) => s !== undefined && s.phase !== "finished").length;
    return { active, queued: this.#queue.length, slots: this.#slots.length, busySlots: busy };
  }

  /** Slot by slot view of the runtime, for health pages and the playground. */
  snapshot(): RuntimeSnapshot {
    return {
      slots: this.#slots.map((state, index) => {
        if (state === undefined) return { index, state: "free" as const };
        const phase =
          state.phase === "finished" ? "freeing" : state.phase === "queued" ? "prefill" : state.phase;
        return {
          index,
          state: phase,
          requestId: state.id,
          promptTokens: state.request.promptTokens.length,
          prefilled: state.prefilled,
          generated: state.generated,
        };
      }),
      queued: this.#queue.length,
      steps: this.#stepsCompleted,
      closing: this.#closing,
    };
  }

  /** Cancel a running or queued request by id. Returns false when no such request is live. */
  cancel(id: string): boolean {
    const state = this.#live.get(id);
    if (!state) return false;
    this.#cancel(state);
    return true;
  }

  /**
   * Stop accepting requests, end every live one with a terminal `cancelled` chunk (or let them finish when
   * `drain` is true), wait for the loop to exit and release the engine.
   */
  close(options: { drain?: boolean } = {}): Promise<void> {
    const drain = options.drain === true;
    // A plain close() after close({ drain: true }) stops the drain: it does not wait for it.
    if (!this.#closing || (this.#draining && !drain)) {
      this.#closing = true;
      this.#draining = drain;
      if (!drain) for (const state of [...this.#live.values()]) this.#cancel(state);
      this.#notify();
    }
    this.#closed ??= this.#loop.then(async () => {
      // Both engines are closed whatever either does; the target's failure is the one reported.
      const [target] = await Promise.allSettled([this.engine.close(), this.#draftEngine?.close()]);
      if (target.status === "rejected") throw target.reason;
    });
    return this.#closed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** The options of `Runtime.create` that are `LlamaEngine.create`'s. */
function modelOptions(options: RuntimeOptions): LlamaEngineOptions {
  const {
    engine,
    prefillChunkSize,
    targetStepMs,
    soloPrefillStepMs,
    maxQueue,
    defaultMaxTokens,
    promptCache,
    drafter,
    draftMax,
    draftModel,
    ...model
  } = options;
  return model;
}

/** The draft model's engine options: the target's slots, threads, context size and GPU options. */
function draftModelOptions(options: RuntimeOptions, target: Engine): LlamaEngineOptions {
  const { model: _, onLoadProgress: __, batchSize: ___, ...shared } = modelOptions(options);
  return {
    ...shared,
    model: options.draftModel!,
    slots: target.info.slots,
    contextSize: target.info.contextSize,
  };
}
