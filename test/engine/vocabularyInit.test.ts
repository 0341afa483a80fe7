import assert from "node:assert/strict";
import { test } from "node:test";
import { Vocabulary } from "../../src/detok/Vocabulary.ts";
import { checkGguf } from "../../src/engine/checkGguf.ts";
import { BUNDLED_CHAT_MODEL_PATH, BUNDLED_MODEL_PATH } from "../../src/engine/modelPath.ts";

// The engine builds its vocabulary from the same read that checked the file: it must be the vocabulary that
// node-llama-cpp's own GGUF reader gives, token for token.
for (const path of [BUNDLED_MODEL_PATH, BUNDLED_CHAT_MODEL_PATH]) {
  test(`the checked header's vocabulary equals the GGUF reader's: ${path.split("/").at(-1)}`, async () => {
    const fromCheck = Vocabulary.fromGguf((await checkGguf(path)).vocabulary);
    const fromFile = await Vocabulary.fromGgufFile(path);
    assert.equal(fromCheck.size, fromFile.size);
    assert.deepEqual(
      [fromCheck.bos, fromCheck.eos, fromCheck.addBos, fromCheck.eogIds, fromCheck.maxTokenBytes],
      [fromFile.bos, fromFile.eos, fromFile.addBos, fromFile.eogIds, fromFile.maxTokenBytes],
    );
    for (let id = 0; id < fromFile.size; id++) {
      assert.deepEqual(fromCheck.bytesOf(id), fromFile.bytesOf(id), `token ${id}`);
      assert.equal(fromCheck.isSpecial(id), fromFile.isSpecial(id), `token ${id}`);
      assert.equal(fromCheck.tokenString(id), fromFile.tokenString(id), `token ${id}`);
    }
  });
}
