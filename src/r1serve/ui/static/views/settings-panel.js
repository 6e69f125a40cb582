// The per-conversation panel: system prompt and sampling settings.
//
// Empty sampling fields are sent as null, so the server's defaults apply; an empty system
// prompt is sent as "" (no system prompt). The browser checks ranges
// (min/max on the inputs) before saving; the server checks them again and says what is wrong.

import { t } from "../i18n.js";
import { h } from "./dom.js";

/** The sampling settings the panel edits, with the ranges the inputs allow. */
export const SAMPLING_FIELDS = [
  { name: "temperature", min: "0", max: "2", step: "0.05" },
  { name: "top_p", min: "0.01", max: "1", step: "0.01" },
  { name: "top_k", min: "0", step: "1", integer: true },
  { name: "min_p", min: "0", max: "1", step: "0.01" },
  { name: "repetition_penalty", min: "0.01", max: "10", step: "0.05" },
  { name: "max_tokens", min: "1", step: "1", integer: true },
  { name: "seed", min: "0", step: "1", integer: true },
];

/** The panel in root; onSave({ system_prompt, settings }) resolves to a status message. */
export class SettingsPanel {
  constructor(root, onSave) {
    this.root = root;
    this.onSave = onSave;
    this.build();
  }

  build() {
    this.systemPrompt = h("textarea", { class: "system-prompt", name: "system_prompt", rows: "3" });
    this.inputs = Object.fromEntries(
      SAMPLING_FIELDS.map(({ name, min, max, step }) => [
        name,
        h("input", { type: "number", name, class: `setting-${name}`, min, max, step }),
      ]),
    );
    this.status = h("p", { class: "settings-status", role: "status", "aria-live": "polite" });
    this.form = h(
      "form",
      { class: "settings-form" },
      h("h2", { class: "settings-title" }, t("settings.title")),
      h("label", { class: "settings-field wide" }, h("span", {}, t("settings.systemPrompt")), this.systemPrompt),
      h(
        "div",
        { class: "settings-grid" },
        SAMPLING_FIELDS.map(({ name }) =>
          h(
            "label",
            { class: "settings-field" },
            h("span", {}, t(`settings.${name}`)),
            this.inputs[name],
          ),
        ),
      ),
      h(
        "div",
        { class: "settings-buttons" },
        h("p", { class: "settings-hint" }, t("settings.hint")),
        h("button", { type: "submit", class: "settings-save" }, t("settings.save")),
      ),
      this.status,
    );
    for (const input of Object.values(this.inputs)) input.placeholder = t("settings.default");
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.save();
    });
    this.root.replaceChildren(this.form);
  }

  /** Fill the form from a conversation (or a draft): { system_prompt, settings }. */
  load({ system_prompt: systemPrompt = null, settings = {} } = {}) {
    this.systemPrompt.value = systemPrompt ?? "";
    for (const { name } of SAMPLING_FIELDS) {
      const value = settings ? settings[name] : null;
      this.inputs[name].value = value === null || value === undefined ? "" : String(value);
    }
    this.setStatus("");
  }

  /** What the form holds, as the API takes it. */
  values() {
    const settings = {};
    for (const { name, integer } of SAMPLING_FIELDS) {
      const raw = this.inputs[name].value.trim();
      settings[name] = raw === "" ? null : integer ? Number.parseInt(raw, 10) : Number(raw);
    }
    const prompt = this.systemPrompt.value;
    return { system_prompt: prompt.trim() ? prompt : "", settings };
  }

  async save() {
    if (!this.form.reportValidity()) return;
    try {
      this.setStatus(await this.onSave(this.values()));
    } catch (error) {
      this.setStatus(t("status.error", { message: error.message }), true);
    }
  }

  setStatus(message, isError = false) {
    this.status.textContent = message;
    this.status.classList.toggle("error", isError);
  }

  /** Rebuild in the current language, keeping what is typed. */
  relabel() {
    const typed = this.values();
    this.build();
    this.load(typed);
  }
}
