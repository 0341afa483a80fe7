import { SluiceError } from "../../errors.ts";

/** The error for a model file llama.cpp must not be given: `problem` names the field, its value and the fault. */
export function modelInvalid(path: string, problem: string): SluiceError {
  return new SluiceError("model_invalid", `${path}: ${problem}`);
}
