// What surrounds the conversation on the chat screen: the sidebar drawer (phone width), the
// settings panel toggle, export and import, and copying to the clipboard.

import { t } from "../i18n.js";
import { downloadExport, importFile } from "./transfer.js";

const COPIED_MS = 1500;

/** Wires the tools in layout; host: conversationId(), onImported(ids), setStatus(text, error). */
export class ChatTools {
  constructor(layout, host) {
    this.layout = layout;
    this.host = host;
    const find = (selector) => layout.querySelector(selector);
    this.drawerToggle = find(".drawer-toggle");
    this.settingsToggle = find(".settings-toggle");
    this.panel = find(".settings-panel");
    this.importInput = find(".import-file");

    this.drawerToggle.addEventListener("click", () => this.setDrawer(!this.drawerOpen()));
    find(".drawer-backdrop").addEventListener("click", () => this.setDrawer(false));
    layout.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.drawerOpen()) this.setDrawer(false);
    });
    this.settingsToggle.addEventListener("click", () => this.toggleSettings());
    for (const button of layout.querySelectorAll(".export-one, .export-all")) {
      button.addEventListener("click", () => this.export(button));
    }
    find(".import-button").addEventListener("click", () => this.importInput.click());
    this.importInput.addEventListener("change", () => this.importChosenFile());
    find(".messages").addEventListener("click", (event) => this.copyCode(event));
  }

  drawerOpen() {
    return this.layout.dataset.drawer === "open";
  }

  /** Open or close the conversation drawer (only a drawer at phone width). */
  setDrawer(open) {
    this.layout.dataset.drawer = open ? "open" : "closed";
    this.drawerToggle.setAttribute("aria-expanded", String(open));
  }

  toggleSettings(open = this.panel.hidden) {
    this.panel.hidden = !open;
    this.settingsToggle.setAttribute("aria-expanded", String(open));
  }

  async export(button) {
    button.closest("details")?.removeAttribute("open");
    const one = button.classList.contains("export-one");
    const id = this.host.conversationId();
    if (one && !id) return;
    try {
      await downloadExport(one ? id : null, button.dataset.format);
    } catch (error) {
      this.host.setStatus(t("status.error", { message: error.message }), true);
    }
  }

  async importChosenFile() {
    const input = this.importInput;
    const file = input.files && input.files[0];
    input.value = ""; // choosing the same file again must fire "change" again
    if (!file) return;
    input.closest("details")?.removeAttribute("open");
    try {
      const ids = await importFile(file);
      await this.host.onImported(ids);
      this.host.setStatus(t("history.imported", { count: ids.length }));
    } catch (error) {
      this.host.setStatus(t("status.error", { message: error.message }), true);
    }
  }

  copyCode(event) {
    const button = event.target.closest(".copy-code");
    const code = button?.closest(".code-block")?.querySelector("pre");
    if (code) this.copyText(code.textContent, button, "chat.copy");
  }

  /** Copy text; the button says so for a moment, then shows labelKey's text again. */
  async copyText(text, button, labelKey) {
    try {
      await writeClipboard(text);
      // An icon button says so in its label and with a tick; a text button in its text.
      const icon = button.classList.contains("icon-button");
      const say = (key) => {
        if (icon) {
          button.setAttribute("aria-label", t(key));
          button.title = t(key);
          button.classList.toggle("copied", key === "chat.copied");
        } else {
          button.textContent = t(key);
        }
      };
      if (!button) {
        this.host.setStatus(t("chat.copied")); // a keyboard shortcut: no button to change
        return;
      }
      say("chat.copied");
      window.setTimeout(() => say(labelKey), COPIED_MS);
    } catch (error) {
      this.host.setStatus(t("status.error", { message: error.message }), true);
    }
  }
}

/** Put text on the clipboard; without the async API (plain http off localhost), the old way. */
async function writeClipboard(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const holder = document.createElement("textarea");
  holder.value = text;
  holder.setAttribute("readonly", "");
  holder.className = "clipboard-holder";
  document.body.append(holder);
  holder.select();
  const copied = document.execCommand("copy");
  holder.remove();
  if (!copied) throw new Error(t("chat.copyFailed"));
}
