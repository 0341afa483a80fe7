import { SluiceError } from "../errors.ts";
import { GENERATE_HELP, generateCommand } from "./generate.ts";

const HELP = `Usage: sluice <command> [options]

Commands:
  generate [prompt]   stream a generation to the terminal (Ctrl-C stops it)
  chat                chat in the terminal with the bundled chat model (Ctrl-C stops a reply)
  serve               OpenAI-compatible HTTP server with a web playground
  bench <name>        run a benchmark (cancel, overhead, concurrency, stall, memory, channel, detok)

Run "sluice <command> --help" for the options of a command. Every option can also come from the
environment as SLUICE_<OPTION> (--max-queue 8 is SLUICE_MAX_QUEUE=8; a repeatable option takes a
comma-separated list, a switch 1/true or 0/false); an option on the command line wins.
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "generate":
      return generateCommand(rest);
    case "chat": {
      const { chatCommand } = await import("./chat.ts");
      return chatCommand(rest);
    }
    case "serve": {
      const { serveCommand } = await import("./serve.ts");
      return serveCommand(rest);
    }
    case "bench": {
      const { benchCommand } = await import("./bench.ts");
      return benchCommand(rest);
    }
    case undefined:
    case "-h":
    case "--help":
    case "help":
      process.stdout.write(`${HELP}\n${GENERATE_HELP}`);
      return 0;
    default:
      process.stderr.write(`Unknown command "${command}".\n\n${HELP}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    if (error instanceof SluiceError) process.stderr.write(`sluice: ${error.message} [${error.code}]\n`);
    else if (String((error as { code?: unknown }).code).startsWith("ERR_PARSE_ARGS")) {
      process.stderr.write(`sluice: ${(error as Error).message}. See "sluice --help".\n`);
      process.exitCode = 2;
      return;
    } else
      process.stderr.write(
        `sluice: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
      );
    process.exitCode = 1;
  },
);
