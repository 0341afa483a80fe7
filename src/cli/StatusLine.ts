/**
 * A live status line pinned to the terminal's bottom row while text streams above it: the rows above are a
 * scroll region, so streamed text never overwrites the status and the status never breaks the text. Without
 * a TTY it does nothing.
 */
export class StatusLine {
  readonly #out: NodeJS.WriteStream;
  readonly #enabled: boolean;
  #last = "";
  #active = false;

  constructor(out: NodeJS.WriteStream = process.stderr) {
    this.#out = out;
    this.#enabled = out.isTTY === true && process.stdout.isTTY === true && (out.rows ?? 0) > 2;
  }

  get enabled(): boolean {
    return this.#enabled;
  }

  set(text: string): void {
    if (!this.#enabled || text === this.#last) return;
    this.#last = text;
    const rows = this.#out.rows;
    if (!this.#active) {
      // Make room for the status row, then confine scrolling to the rows above it.
      this.#out.write(`\n\x1b[1A\x1b7\x1b[1;${rows - 1}r\x1b8`);
      this.#active = true;
    }
    const width = this.#out.columns ?? 80;
    this.#out.write(`\x1b7\x1b[${rows};1H\x1b[2K\x1b[7m${text.slice(0, width)}\x1b[0m\x1b8`);
  }

  /** Restore the terminal: whole-screen scrolling, status row cleared. */
  clear(): void {
    if (!this.#active) return;
    this.#active = false;
    const rows = this.#out.rows;
    this.#out.write(`\x1b7\x1b[r\x1b[${rows};1H\x1b[2K\x1b8`);
  }
}
