// "My keys": create a key (shown once, with a copy button), list and revoke my keys.

import { apiJson } from "../api.js";
import { language, onLanguageChange, t } from "../i18n.js";
import { confirmButton, fill, formatTime, h, keptForm } from "./dom.js";

export function createKeysView() {
  const element = h("section", { class: "account-view keys-view" });
  const state = { keys: [], created: null, message: "", isError: false };
  let unsubscribe = () => {};

  async function refresh() {
    try {
      state.keys = await apiJson("GET", "/api/keys");
    } catch (error) {
      setMessage(error.message, true);
    }
    render();
  }

  function setMessage(message, isError = false) {
    state.message = message;
    state.isError = isError;
  }

  async function create(form) {
    const data = new FormData(form);
    const models = String(data.get("models") || "")
      .split(",")
      .map((name) => name.trim())
      .filter(Boolean);
    const days = String(data.get("expires") || "").trim();
    try {
      state.created = await apiJson("POST", "/api/keys", {
        name: String(data.get("name") || ""),
        models: models.length ? models : null,
        expires_in_days: days ? Number(days) : null,
      });
      form.reset();
      setMessage("");
    } catch (error) {
      setMessage(error.message, true);
    }
    await refresh();
  }

  async function revoke(key) {
    try {
      await apiJson("DELETE", `/api/keys/${encodeURIComponent(key.id)}`);
      setMessage(t("keys.revoked", { prefix: key.prefix }));
    } catch (error) {
      setMessage(error.message, true);
    }
    await refresh();
  }

  function createdBox() {
    const created = state.created;
    if (!created) return null;
    const value = h("code", { class: "new-key-value" }, created.key);
    const copy = h("button", { type: "button", class: "copy-key" }, t("keys.copy"));
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(created.key);
        copy.textContent = t("chat.copied");
      } catch {
        // Clipboard refused (no permission): the key stays selectable on screen.
        window.getSelection()?.selectAllChildren(value);
      }
    });
    const done = h("button", { type: "button", class: "dismiss-key" }, t("keys.done"));
    done.addEventListener("click", () => {
      state.created = null; // gone for good: the server never shows it again
      render();
    });
    return h(
      "div",
      { class: "account-card new-key", role: "status" },
      h("p", { class: "warning" }, t("keys.shownOnce")),
      h("div", { class: "new-key-row" }, value, copy),
      done,
    );
  }

  function createForm() {
    const form = h(
      "form",
      { class: "account-card key-form" },
      h("h2", {}, t("keys.create")),
      h("label", {}, h("span", {}, t("keys.name")), h("input", { name: "name", maxlength: 100 })),
      h(
        "label",
        {},
        h("span", {}, t("keys.models")),
        h("input", { name: "models", placeholder: t("keys.modelsHint") }),
      ),
      h(
        "label",
        {},
        h("span", {}, t("keys.expires")),
        h("input", { name: "expires", type: "number", min: 1, max: 3650, placeholder: t("keys.never") }),
      ),
      h("button", { type: "submit", class: "primary" }, t("keys.createButton")),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      create(form);
    });
    return form;
  }

  const keyForm = keptForm(createForm, language);

  function keyRow(key) {
    const revokeButton =
      key.state === "active"
        ? confirmButton(t("keys.revoke"), t("keys.confirmRevoke"), () => revoke(key), {
            class: "revoke-key",
          })
        : null;
    return h(
      "tr",
      { dataset: { prefix: key.prefix } },
      h("td", {}, key.name || "—"),
      h("td", {}, h("code", {}, `${key.prefix}…`)),
      h("td", {}, key.models ? key.models.join(", ") : t("keys.allModels")),
      h("td", { class: `key-state ${key.state}` }, t(`keys.state.${key.state}`)),
      h("td", {}, formatTime(key.created_at)),
      h("td", {}, key.expires_at ? formatTime(key.expires_at) : t("keys.never")),
      h("td", {}, revokeButton),
    );
  }

  function render() {
    const table = state.keys.length
      ? h(
          "table",
          { class: "account-table keys-table" },
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              ...["keys.name", "keys.prefix", "keys.models", "keys.stateHeader", "keys.created", "keys.expires", ""].map(
                (key) => h("th", {}, key ? t(key) : ""),
              ),
            ),
          ),
          h("tbody", {}, ...state.keys.map(keyRow)),
        )
      : h("p", { class: "empty-hint" }, t("keys.none"));
    fill(
      element,
      h("h1", {}, t("nav.keys")),
      createdBox(),
      h("p", { class: state.isError ? "status error" : "status", role: "status" }, state.message),
      keyForm(),
      table,
    );
  }

  return {
    element,
    mount() {
      render();
      refresh();
      unsubscribe = onLanguageChange(render);
    },
    unmount() {
      state.created = null;
      unsubscribe();
    },
  };
}
