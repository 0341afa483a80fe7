#!/usr/bin/env node
// The CLI in this one process, so that a signal sent to this process reaches the command's own handlers (there
// is no child to relay it to). An installed package runs the compiled JavaScript in dist/; a clone, which has
// the sources and tsx, runs the sources directly so that an edit needs no rebuild.
import { existsSync } from "node:fs";

stopWhenNpmExecLetsGo();
const source = new URL("../src/cli/main.ts", import.meta.url);
if (existsSync(source) && (await registerTsx())) await import(source.href);
else await import("../dist/cli/main.js");

/** Registers tsx's loader; false where it is not installed (a production install of a clone). */
async function registerTsx() {
  try {
    const { register } = await import("tsx/esm/api");
    register();
    return true;
  } catch {
    return false;
  }
}

/**
 * `npx sluice …` runs this file through `sh -c`, and npm forwards SIGINT/SIGTERM only to that shell, which
 * exits without passing them on: the server would be left orphaned, still serving. So when npm exec started
 * us and our parent goes away, take it as the SIGTERM that was meant for us. (Node has no event for a
 * parent's exit; the check is one cheap syscall, and the timer never keeps the process alive.)
 */
function stopWhenNpmExecLetsGo() {
  if (process.env.npm_command !== "exec") return;
  const parent = process.ppid;
  const timer = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(timer);
    process.kill(process.pid, "SIGTERM");
  }, 200);
  timer.unref();
}
