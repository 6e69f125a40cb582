// "Change password", from the user menu: a modal <dialog> over whatever view is shown.

import { t } from "../i18n.js";
import { changePassword } from "../session.js";
import { h } from "./dom.js";

/** Open the dialog; it removes itself when closed. */
export function openPasswordDialog() {
  const current = h("input", {
    type: "password",
    class: "current-password",
    autocomplete: "current-password",
    required: true,
  });
  const next = h("input", {
    type: "password",
    class: "new-password",
    autocomplete: "new-password",
    required: true,
    minlength: 8,
  });
  const message = h("p", { class: "dialog-status", role: "status", "aria-live": "polite" });
  const form = h(
    "form",
    { class: "password-form", method: "dialog" },
    h("h2", {}, t("account.password")),
    h("label", {}, h("span", {}, t("account.current")), current),
    h("label", {}, h("span", {}, t("account.new")), next),
    message,
    h(
      "div",
      { class: "dialog-buttons" },
      h("button", { type: "button", class: "dialog-close", onclick: () => dialog.close() }, t("chat.cancel")),
      h("button", { type: "submit", class: "primary" }, t("account.change")),
    ),
  );
  const dialog = h("dialog", { class: "dialog password-dialog", "aria-label": t("account.password") }, form);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await changePassword(current.value, next.value);
      form.reset();
      message.textContent = t("account.changed");
      message.classList.remove("error");
    } catch (error) {
      message.textContent = error.message;
      message.classList.add("error");
    }
  });
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  current.focus();
  return dialog;
}
