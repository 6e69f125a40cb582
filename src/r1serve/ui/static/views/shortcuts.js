// Keyboard shortcuts of the chat screen, and the dialog that lists them (user menu or Ctrl+/).
//
// Ctrl works as Cmd on a Mac. Shortcuts with Ctrl work while typing in the composer; Escape
// stops a reply only when nothing else (a dialog, an edit box, a menu) wants the key.

import { t } from "../i18n.js";
import { h } from "./dom.js";

/** Each shortcut: the keys shown, the i18n key of what it does, and the match. */
export const SHORTCUTS = [
  { keys: ["Ctrl", "Shift", "O"], action: "newChat", match: (e) => mod(e) && e.shiftKey && key(e, "o") },
  { keys: ["Esc"], action: "stop", match: (e) => e.key === "Escape" && !e.shiftKey && !mod(e) },
  { keys: ["Shift", "Esc"], action: "focusInput", match: (e) => e.key === "Escape" && e.shiftKey },
  { keys: ["Ctrl", "Shift", "C"], action: "copyLastAnswer", match: (e) => mod(e) && e.shiftKey && key(e, "c") },
  { keys: ["Ctrl", "K"], action: "search", match: (e) => mod(e) && !e.shiftKey && key(e, "k") },
  { keys: ["Ctrl", "/"], action: "help", match: (e) => mod(e) && (e.key === "/" || e.code === "Slash") },
];

function mod(event) {
  return (event.ctrlKey || event.metaKey) && !event.altKey;
}

function key(event, letter) {
  return event.key.toLowerCase() === letter || event.code === `Key${letter.toUpperCase()}`;
}

/** Listen on the document; chat() returns the chat view's shortcut actions, or null. */
export function installShortcuts(chat) {
  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.isComposing) return;
    const shortcut = SHORTCUTS.find((candidate) => candidate.match(event));
    if (!shortcut) return;
    if (shortcut.action === "help") {
      event.preventDefault();
      openShortcutsDialog();
      return;
    }
    const actions = chat()?.shortcuts;
    if (!actions || document.querySelector("dialog[open]")) return;
    if (shortcut.action === "stop") {
      // Escape belongs to whatever is open first: a menu, the edit box, the drawer.
      const open = document.querySelector("details.menu[open]");
      if (open) {
        open.removeAttribute("open");
        return;
      }
      if (event.target.closest?.(".edit-form, .rename-input")) return;
      if (!actions.isStreaming()) return;
    }
    event.preventDefault();
    actions[shortcut.action]();
  });
}

/** The help dialog listing every shortcut in the page's language. */
export function openShortcutsDialog() {
  if (document.querySelector(".shortcuts-dialog")) return null;
  const rows = SHORTCUTS.map(({ keys, action }) =>
    h(
      "tr",
      {},
      h("td", {}, t(`shortcuts.${action}`)),
      h("td", { class: "shortcut-keys" }, keys.flatMap((name, i) => [i ? " + " : null, h("kbd", {}, name)])),
    ),
  );
  const close = h(
    "button",
    { type: "button", class: "dialog-close", onclick: () => dialog.close() },
    t("shortcuts.close"),
  );
  const dialog = h(
    "dialog",
    { class: "dialog shortcuts-dialog", "aria-labelledby": "shortcuts-title" },
    h("h2", { id: "shortcuts-title" }, t("shortcuts.title")),
    h("table", { class: "shortcuts-table" }, h("tbody", {}, rows)),
    h("p", { class: "dialog-hint" }, t("shortcuts.mac")),
    h("div", { class: "dialog-buttons" }, close),
  );
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  close.focus();
  return dialog;
}
