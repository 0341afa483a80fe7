#!/usr/bin/env node
// Runs the TypeScript sources directly (tsx) in this one process, so the CLI needs no build step and a
// signal sent to this process reaches the command's own handlers (there is no child to relay it to).
import { register } from "tsx/esm/api";

register();
stopWhenNpmExecLetsGo();
await import("../src/cli/main.ts");

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
