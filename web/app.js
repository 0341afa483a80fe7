import { apiKey, getJson } from "./api.js";
import { Chat } from "./chat.js";
import { Pane } from "./pane.js";
import { SlotView } from "./slots.js";

const PANES = 4;
const MODE_STORAGE = "sluice.mode";

/** @param {string} id */
const byId = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
/** @param {string} id */
const field = (id) => /** @type {HTMLInputElement} */ (document.getElementById(id));

/** @type {string | undefined} */
let model;

/**
 * The shared controls as request fields. An empty field is left out so that the server's default applies;
 * the server validates every value and its message is shown in the pane.
 */
function settings() {
  /** @type {Record<string, unknown>} */
  // Continuous usage (vLLM's): every chunk says how many tokens so far, and a chunk may hold several.
  const body = { stream: true, stream_options: { include_usage: true, continuous_usage_stats: true } };
  if (model !== undefined) body.model = model;
  const numbers = /** @type {const} */ ([
    ["max_tokens", "max-tokens"],
    ["temperature", "temperature"],
    ["top_p", "top-p"],
    ["top_k", "top-k"],
    ["seed", "seed"],
  ]);
  for (const [name, id] of numbers) {
    const value = field(id).value.trim();
    if (value !== "") body[name] = Number(value);
  }
  const stop = field("stop")
    .value.split("\n")
    .map((line) => line.replaceAll("\\n", "\n").replaceAll("\\t", "\t"))
    .filter((line) => line !== "");
  if (stop.length > 0) body.stop = stop;
  return { body, prompt: field("prompt").value };
}

const template = /** @type {HTMLTemplateElement} */ (byId("pane-template"));
const panes = Array.from({ length: PANES }, (_, i) => new Pane(i + 1, template, settings));
byId("panes").append(...panes.map((pane) => pane.element));

const visible = () => panes.filter((pane) => !pane.element.hidden);

function showPanes() {
  const count = Number(field("pane-count").value);
  for (const pane of panes) {
    const hide = pane.number > count;
    // A hidden pane must not keep a slot busy where nobody can see or stop it.
    if (hide && pane.busy) void pane.stop();
    pane.element.hidden = hide;
  }
}

const chat = new Chat(
  {
    log: byId("chat-log"),
    input: /** @type {HTMLTextAreaElement} */ (byId("chat-input")),
    system: /** @type {HTMLTextAreaElement} */ (byId("system-prompt")),
    send: /** @type {HTMLButtonElement} */ (byId("chat-send")),
    stop: /** @type {HTMLButtonElement} */ (byId("chat-stop")),
    clear: /** @type {HTMLButtonElement} */ (byId("chat-clear")),
    status: byId("chat-status"),
    error: byId("chat-error"),
  },
  settings,
);

/** @returns {"completion" | "chat"} */
function mode() {
  const checked = /** @type {HTMLInputElement | null} */ (
    document.querySelector('input[name="mode"]:checked')
  );
  return checked?.value === "chat" ? "chat" : "completion";
}

/** Shows one mode's parts. What the hidden mode was generating is stopped: nobody could see or stop it. */
function showMode() {
  const shown = mode();
  for (const element of document.querySelectorAll("[data-mode]")) {
    /** @type {HTMLElement} */ (element).hidden = /** @type {HTMLElement} */ (element).dataset.mode !== shown;
  }
  if (shown === "chat") {
    for (const pane of panes) void pane.stop();
  } else {
    void chat.stop();
    showPanes();
  }
  try {
    localStorage.setItem(MODE_STORAGE, shown);
  } catch {
    // Storage can be disabled: the page then starts in completion mode.
  }
}

const slots = new SlotView(
  { strip: byId("slot-strip"), summary: byId("slot-summary"), queued: byId("queued"), steps: byId("steps") },
  (requestId) => {
    if (requestId === chat.requestId) return "chat";
    const pane = panes.find((p) => p.requestId === requestId);
    return pane === undefined ? undefined : `pane ${pane.number}`;
  },
);

async function loadModel() {
  const shown = byId("model");
  try {
    const list = await getJson("/v1/models");
    model = list.data?.[0]?.id;
    shown.textContent = model ?? "none";
  } catch (error) {
    model = undefined;
    shown.textContent = `unavailable (${error instanceof Error ? error.message : String(error)})`;
    // Most likely a key is needed: put the field in front of the user.
    /** @type {HTMLDetailsElement} */ (byId("key-details")).open = true;
  }
}

byId("generate-all").addEventListener("click", () => {
  for (const pane of visible()) void pane.generate();
});
byId("stop-all").addEventListener("click", () => {
  for (const pane of panes) void pane.stop();
});
field("pane-count").addEventListener("change", showPanes);
for (const radio of document.querySelectorAll('input[name="mode"]'))
  radio.addEventListener("change", showMode);

const keyField = field("api-key");
keyField.value = apiKey.get();
keyField.addEventListener("change", () => {
  apiKey.set(keyField.value.trim());
  void loadModel();
  slots.refresh();
});

// Ctrl/Cmd+Enter: generate from wherever the prompt is being edited.
document.addEventListener("keydown", (event) => {
  if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey)) return;
  const target = /** @type {HTMLElement} */ (event.target);
  if (mode() === "chat") {
    if (target.closest(".controls, .chat") === null) return;
    void chat.send();
    event.preventDefault();
    return;
  }
  const pane = panes.find((p) => p.override === target);
  if (pane !== undefined) void pane.generate();
  else if (target.closest(".controls") !== null) for (const p of visible()) void p.generate();
  else return;
  event.preventDefault();
});

try {
  const saved = localStorage.getItem(MODE_STORAGE);
  const radio = /** @type {HTMLInputElement | null} */ (
    document.querySelector(`input[name="mode"][value="${saved}"]`)
  );
  if (radio !== null) radio.checked = true;
} catch {
  // No storage: completion mode.
}
showMode();
void loadModel();
slots.start();
