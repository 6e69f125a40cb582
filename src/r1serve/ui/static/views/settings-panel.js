// The settings side panel (a sheet on phones): this conversation's settings, or my defaults.
//
// Each field shows the value in force and where it comes from: the conversation, my defaults,
// the model (its recommended sampling; the page's reply cap for it), or the server. Empty
// fields are sent as null, so the next source applies; an empty system prompt is sent as ""
// (no system prompt). The browser checks ranges before saving; the server checks them again.
// Fields the server does not know (GET /api/me/reply-defaults lists those it does) are left out.

import { t } from "../i18n.js";
import { h } from "./dom.js";

/** The settings the panel edits, with the ranges the inputs allow. */
export const SAMPLING_FIELDS = [
  { name: "temperature", min: "0", max: "2", step: "0.05" },
  { name: "top_p", min: "0.01", max: "1", step: "0.01" },
  { name: "top_k", min: "0", step: "1", integer: true },
  { name: "min_p", min: "0", max: "1", step: "0.01" },
  { name: "repetition_penalty", min: "0.01", max: "10", step: "0.05" },
  { name: "max_tokens", min: "1", step: "1", integer: true },
  { name: "max_reasoning_tokens", min: "0", step: "1", integer: true },
  { name: "reasoning_effort", choices: ["none", "low", "medium", "high"] },
  { name: "repetition_guard", boolean: true },
  { name: "seed", min: "0", step: "1", integer: true },
];
const NEEDS_SERVER = new Set(["max_reasoning_tokens", "reasoning_effort", "repetition_guard"]);
// None means on for conversations (the API's default is off).
const UNSET_MEANS = { repetition_guard: true };

/** The panel in root; handlers: save({system_prompt, settings}), saveDefaults(settings), close(). */
export class SettingsPanel {
  constructor(root, handlers) {
    this.root = root;
    this.handlers = handlers;
    this.scope = "conversation";
    this.conversation = { system_prompt: "", settings: {} };
    this.defaults = null;
    this.build();
  }

  /** The fields this server takes. */
  fields() {
    const known = this.defaults?.in_force;
    return SAMPLING_FIELDS.filter(({ name }) => (known ? name in known : !NEEDS_SERVER.has(name)));
  }

  build() {
    this.systemPrompt = h("textarea", { class: "system-prompt", name: "system_prompt", rows: "3" });
    this.inputs = {};
    this.sources = {};
    const rows = this.fields().map((field) => {
      this.inputs[field.name] = fieldInput(field);
      this.sources[field.name] = h("span", { class: "setting-source", dataset: { field: field.name } });
      return h(
        "label",
        { class: `settings-field field-${field.name}` },
        h("span", { class: "setting-label" }, t(`settings.${field.name}`)),
        this.inputs[field.name],
        this.sources[field.name],
      );
    });
    const scopeButton = (scope) =>
      h(
        "button",
        {
          type: "button",
          class: `scope-${scope}`,
          "aria-pressed": String(this.scope === scope),
          onclick: () => this.setScope(scope),
        },
        t(`settings.scope.${scope}`),
      );
    this.status = h("p", { class: "settings-status", role: "status", "aria-live": "polite" });
    this.promptField = h(
      "label",
      { class: "settings-field wide" },
      h("span", { class: "setting-label" }, t("settings.systemPrompt")),
      this.systemPrompt,
    );
    this.form = h(
      "form",
      { class: "settings-form" },
      h(
        "div",
        { class: "settings-head" },
        h("h2", { class: "settings-title" }, t("settings.title")),
        h("button", {
          type: "button",
          class: "icon-button icon-close settings-close",
          "aria-label": t("settings.close"),
          title: t("settings.close"),
          onclick: () => this.handlers.close(),
        }),
      ),
      h("div", { class: "settings-scope", role: "group", "aria-label": t("settings.scope.label") },
        scopeButton("conversation"), scopeButton("user")),
      h("p", { class: "settings-hint" }, t(`settings.hint.${this.scope}`)),
      this.promptField,
      h("div", { class: "settings-grid" }, rows),
      h("div", { class: "settings-buttons" }, h("button", { type: "submit", class: "settings-save" }, t("settings.save"))),
      this.status,
    );
    this.promptField.hidden = this.scope !== "conversation";
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.save();
    });
    this.form.addEventListener("input", () => this.showSources());
    this.root.replaceChildren(this.form);
  }

  /** Fill the form from a conversation (or a draft): { system_prompt, settings }. */
  load({ system_prompt: systemPrompt = null, settings = {} } = {}) {
    this.conversation = { system_prompt: systemPrompt ?? "", settings: { ...(settings || {}) } };
    if (this.scope === "conversation") this.fill();
    this.setStatus("");
  }

  /** The server's answer from /api/me/reply-defaults. */
  setDefaults(defaults) {
    const rebuild = !this.defaults || Object.keys(defaults.in_force).join() !== Object.keys(this.defaults.in_force).join();
    const typed = this.values();
    this.defaults = defaults;
    if (rebuild) {
      this.build();
      if (this.scope === "conversation") this.fillWith(typed.system_prompt, typed.settings);
      else this.fill();
    }
    if (this.scope === "user") this.fill();
    this.showSources();
  }

  setScope(scope) {
    if (scope === this.scope) return;
    this.scope = scope;
    this.build();
    this.fill();
    this.setStatus("");
  }

  fill() {
    if (this.scope === "conversation") {
      this.fillWith(this.conversation.system_prompt, this.conversation.settings);
    } else {
      this.fillWith("", this.defaults?.user ?? {});
    }
  }

  fillWith(systemPrompt, settings) {
    this.systemPrompt.value = systemPrompt ?? "";
    for (const field of this.fields()) {
      const value = settings ? settings[field.name] : null;
      const input = this.inputs[field.name];
      if (field.boolean) input.value = value === true ? "on" : value === false ? "off" : "";
      else input.value = value === null || value === undefined ? "" : String(value);
    }
    this.showSources();
  }

  /** Under each field: the value that applies if the field is left as it is, and its source. */
  showSources() {
    const typed = this.values().settings;
    for (const field of this.fields()) {
      const { value, source } = this.inForce(field.name, typed[field.name]);
      const shown = formatValue(field.name, value);
      const element = this.sources[field.name];
      element.textContent = t("settings.inForce", { value: shown, source: t(`settings.source.${source}`) });
      element.dataset.source = source;
      const input = this.inputs[field.name];
      if (input.tagName === "INPUT") input.placeholder = shown;
    }
  }

  inForce(name, typed) {
    const own = this.scope === "conversation" ? "conversation" : "user";
    if (typed !== null && typed !== undefined) return { value: typed, source: own };
    const d = this.defaults;
    if (!d) return { value: UNSET_MEANS[name] ?? null, source: "server" };
    if (this.scope === "conversation") {
      const forced = d.in_force[name] ?? { value: null, source: "server" };
      return forced.value === null && name in UNSET_MEANS ? { ...forced, value: UNSET_MEANS[name] } : forced;
    }
    if (d.model_defaults[name] !== undefined && d.model_defaults[name] !== null) {
      return { value: d.model_defaults[name], source: "model" };
    }
    return { value: d.server_defaults[name] ?? UNSET_MEANS[name] ?? null, source: "server" };
  }

  /** What the form holds, as the API takes it. */
  values() {
    const settings = {};
    for (const field of this.fields()) {
      const raw = (this.inputs?.[field.name]?.value ?? "").trim();
      if (field.boolean) settings[field.name] = raw === "" ? null : raw === "on";
      else if (field.choices) settings[field.name] = raw === "" ? null : raw;
      else settings[field.name] = raw === "" ? null : field.integer ? Number.parseInt(raw, 10) : Number(raw);
    }
    const prompt = this.systemPrompt?.value ?? "";
    return { system_prompt: prompt.trim() ? prompt : "", settings };
  }

  async save() {
    if (!this.form.reportValidity()) return;
    const values = this.values();
    try {
      if (this.scope === "conversation") {
        const message = await this.handlers.save(values);
        this.conversation = { system_prompt: values.system_prompt, settings: { ...this.conversation.settings, ...values.settings } };
        this.setStatus(message);
      } else {
        const stored = Object.fromEntries(Object.entries(values.settings).filter(([, v]) => v !== null));
        this.setStatus(await this.handlers.saveDefaults(stored));
      }
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
    this.fillWith(typed.system_prompt, typed.settings);
  }
}

function fieldInput(field) {
  const { name } = field;
  if (field.boolean || field.choices) {
    const options = field.boolean ? ["on", "off"] : field.choices;
    const labels = options.map((option) => new Option(t(`settings.choice.${option}`), option));
    return h("select", { name, class: `setting-${name}` }, new Option(t("settings.choice.default"), ""), labels);
  }
  const { min, max, step } = field;
  return h("input", { type: "number", name, class: `setting-${name}`, min, max, step });
}

function formatValue(name, value) {
  if (value === null || value === undefined) return name === "seed" ? t("settings.random") : "—";
  if (value === true) return t("settings.choice.on");
  if (value === false) return t("settings.choice.off");
  if (typeof value === "string") return t(`settings.choice.${value}`);
  return String(value);
}
