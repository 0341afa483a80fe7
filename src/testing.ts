// "sluice/testing": run a Runtime without a model, deterministically. A ScriptedEngine replays token scripts
// with a real vocabulary (the bundled model's: `await Vocabulary.fromGgufFile(BUNDLED_MODEL_PATH)`) at a set
// step time and injects faults at chosen steps: `Runtime.create({ engine })`.
export { Vocabulary } from "./detok/index.ts";
export type {
  Engine,
  EngineBackend,
  EngineInfo,
  SamplerConfig,
  StepItem,
  StepOutcome,
} from "./engine/Engine.ts";
export { BUNDLED_CHAT_MODEL_PATH, BUNDLED_MODEL_PATH } from "./engine/modelPath.ts";
export {
  ScriptedEngine,
  type ScriptedEngineOptions,
  type ScriptedFault,
  type ScriptedStep,
} from "./engine/ScriptedEngine.ts";
