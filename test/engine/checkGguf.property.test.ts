import assert from "node:assert/strict";
import { readFileSync, truncateSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import fc from "fast-check";
import { readGgufFileInfo } from "node-llama-cpp";
import { GgufWriter, readGgufMetadata, tensorByteSize } from "../../scripts/gguf/GgufWriter.ts";
import { checkGguf } from "../../src/engine/checkGguf.ts";
import { BUNDLED_MODEL_PATH } from "../../src/engine/modelPath.ts";
import { SluiceError } from "../../src/errors.ts";
import { createInChild, howItEnded } from "../helpers/createInChild.ts";

// Random corruptions of the bundled model's header, metadata and tensor table: checkGguf either accepts the
// file or rejects it with model_invalid, quickly; never another error, a hang or unbounded memory. A few of the
// files it accepts are then loaded and decoded by llama.cpp in a child process, which must not crash.

/** A header field the writer placed, to overwrite with an extreme value of its width. */
interface Field {
  what: string;
  at: number;
  bytes: 4 | 8;
}

type Mutation =
  | { kind: "flips"; flips: { at: number; mask: number }[] }
  | { kind: "field"; field: Field; value: bigint }
  | { kind: "truncate"; length: number };

const EXTREMES = [
  0n,
  1n,
  2n,
  3n,
  4n,
  5n,
  8n,
  9n,
  12n,
  31n,
  32n,
  512n,
  513n,
  2n ** 31n,
  2n ** 32n - 1n,
  2n ** 63n,
];
// Float bit patterns: NaN, +-infinity, -1, 1.
const FLOATS = [0x7fc00000n, 0x7f800000n, 0xff800000n, 0xbf800000n, 0x3f800000n];

let dir: string;
/** The rebuilt model, whole; its header (up to the tensor data) is what gets corrupted. */
let model: Buffer;
let dataAt: number;
let fields: Field[];
let mutation: fc.Arbitrary<Mutation>;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-gguf-prop-"));
  const source = readFileSync(BUNDLED_MODEL_PATH);
  const info = await readGgufFileInfo(BUNDLED_MODEL_PATH, { readTensorInfo: true, logWarnings: false });
  const w = new GgufWriter();
  for (const [key, value] of readGgufMetadata(BUNDLED_MODEL_PATH)) w.set(key, value);
  for (const t of info.tensorInfo!) {
    const ne = t.dimensions.map(Number);
    const size = tensorByteSize(
      t.ggmlType as 0 | 1,
      ne.reduce((a, b) => a * b, 1),
      ne[0]!,
    );
    const at = Number(t.fileOffset);
    w.addEncodedTensor(t.name, ne, t.ggmlType, source.subarray(at, at + size));
  }
  const base = join(dir, "base.gguf");
  const { layout } = w.write(base);
  model = readFileSync(base);
  dataAt = layout.dataAt;
  fields = [
    { what: "tensor count", at: layout.tensorCountAt, bytes: 8 },
    { what: "metadata count", at: layout.kvCountAt, bytes: 8 },
  ];
  for (const [key, kv] of layout.kv) {
    fields.push({ what: `${key} key length`, at: kv.at, bytes: 8 });
    fields.push({ what: `${key} type`, at: kv.typeAt, bytes: 4 });
    fields.push({ what: `${key} value`, at: kv.valueAt, bytes: 4 });
    if (key.startsWith("tokenizer.ggml."))
      fields.push({ what: `${key} length`, at: kv.valueAt + 4, bytes: 8 });
  }
  for (const [name, t] of layout.tensors) {
    fields.push({ what: `${name} name length`, at: t.at, bytes: 8 });
    fields.push({ what: `${name} n_dims`, at: t.nDimsAt, bytes: 4 });
    fields.push({ what: `${name} ne[0]`, at: t.nDimsAt + 4, bytes: 8 });
    fields.push({ what: `${name} type`, at: t.typeAt, bytes: 4 });
    fields.push({ what: `${name} offset`, at: t.offsetAt, bytes: 8 });
  }
  const tableAt = layout.tensors.get("token_embd.weight")!.at;
  // Flips land in each part as often: the header, the metadata (mostly vocabulary text), the tensor table.
  const offset = fc.oneof(
    fc.integer({ min: 0, max: 23 }),
    fc.integer({ min: 24, max: tableAt - 1 }),
    fc.integer({ min: tableAt, max: dataAt - 1 }),
  );
  mutation = fc.oneof(
    fc.record({
      kind: fc.constant("flips" as const),
      flips: fc.array(fc.record({ at: offset, mask: fc.integer({ min: 1, max: 255 }) }), {
        minLength: 1,
        maxLength: 4,
      }),
    }),
    fc.record({
      kind: fc.constant("field" as const),
      field: fc.constantFrom(...fields),
      value: fc.oneof(fc.constantFrom(...EXTREMES, ...FLOATS), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })),
    }),
    fc.record({
      kind: fc.constant("truncate" as const),
      length: fc.integer({ min: 0, max: model.length - 1 }),
    }),
  );
});

after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

/**
 * Writes the corrupted file. Only the header is written; the file is extended (sparsely) to its full length,
 * since checkGguf never reads tensor data. `withData` writes the model's real tensor data instead.
 */
function writeMutant(path: string, m: Mutation, withData = false): void {
  const header = Buffer.from(model.subarray(0, dataAt));
  let length = model.length;
  if (m.kind === "flips") for (const { at, mask } of m.flips) header[at]! ^= mask;
  if (m.kind === "field") {
    if (m.field.bytes === 4) header.writeUInt32LE(Number(m.value & 0xffffffffn), m.field.at);
    else header.writeBigUInt64LE(m.value, m.field.at);
  }
  if (m.kind === "truncate") length = m.length;
  writeFileSync(
    path,
    withData ? Buffer.concat([header, model.subarray(dataAt)]) : header.subarray(0, length),
  );
  truncateSync(path, length);
}

/** Resolves true when checkGguf accepts the file, false for model_invalid; fails the test for anything else. */
async function check(path: string): Promise<boolean> {
  const started = performance.now();
  try {
    await checkGguf(path);
    return true;
  } catch (error) {
    assert.ok(error instanceof SluiceError, `not a SluiceError: ${(error as Error)?.stack ?? error}`);
    assert.equal(error.code, "model_invalid");
    assert.ok(error.message.startsWith(`${path}: `), error.message);
    return false;
  } finally {
    const ms = performance.now() - started;
    // The header is 135 KB: anything near a second means the check is reading or allocating far too much.
    assert.ok(ms < 2000, `checkGguf took ${ms} ms`);
  }
}

describe("checkGguf on random corruptions", () => {
  test("accepts or rejects with model_invalid, never anything else", async () => {
    const path = join(dir, "mutant.gguf");
    const outcomes = { accepted: 0, rejected: 0 };
    const started = performance.now();
    await fc.assert(
      fc.asyncProperty(mutation, async (m) => {
        writeMutant(path, m);
        outcomes[(await check(path)) ? "accepted" : "rejected"]++;
      }),
      { numRuns: 400 },
    );
    const ms = performance.now() - started;
    console.log(
      `400 corruptions: ${outcomes.accepted} accepted, ${outcomes.rejected} rejected in ${ms.toFixed(0)} ms`,
    );
    // Most corruptions of counts, types and shapes must be caught, not waved through.
    assert.ok(outcomes.rejected > outcomes.accepted, JSON.stringify(outcomes));
  });

  test("what it accepts, llama.cpp loads and decodes without crashing", async () => {
    // A fixed seed: the same three files on every run.
    const accepted: string[] = [];
    for (const m of fc.sample(mutation, { seed: 20240607, numRuns: 300 })) {
      if (accepted.length === 3) break;
      if (m.kind === "truncate") continue;
      const path = join(dir, `accepted-${accepted.length}.gguf`);
      writeMutant(path, m);
      if (!(await check(path))) continue;
      writeMutant(path, m, true);
      accepted.push(path);
    }
    assert.equal(accepted.length, 3);
    const run = await createInChild(dir, accepted);
    assert.equal(run.code, 0, howItEnded(run));
    assert.equal(run.results.length, 3, run.stderr.slice(-500));
    for (const result of run.results) {
      // An error (llama.cpp refusing a file) is fine; only a crash is not.
      assert.ok(result.loaded !== undefined || typeof result.code === "string", JSON.stringify(result));
    }
  });
});
