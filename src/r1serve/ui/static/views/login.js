// The login screen. A successful login changes the user; app.js then shows the chat.

import { onLanguageChange, t } from "../i18n.js";
import { logIn } from "../session.js";
import { fill, h } from "./dom.js";

export function createLoginView() {
  const element = h("section", { class: "account-view login-view" });
  let unsubscribe = () => {};
  let message = "";

  function render() {
    const username = h("input", {
      class: "login-username",
      name: "username",
      autocomplete: "username",
      required: true,
      maxlength: 64,
      autocapitalize: "none",
      spellcheck: "false",
    });
    const password = h("input", {
      class: "login-password",
      name: "password",
      type: "password",
      autocomplete: "current-password",
      required: true,
    });
    const status = h("p", { class: "status error", role: "alert" }, message);
    const submit = h("button", { type: "submit", class: "primary" }, t("login.submit"));
    const form = h(
      "form",
      { class: "account-card login-form" },
      h("h1", {}, t("login.title")),
      h("label", {}, h("span", {}, t("login.username")), username),
      h("label", {}, h("span", {}, t("login.password")), password),
      submit,
      status,
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      submit.disabled = true;
      status.textContent = "";
      try {
        await logIn(username.value, password.value);
      } catch (error) {
        password.value = "";
        message = loginError(error);
        status.textContent = message;
        password.focus();
      } finally {
        submit.disabled = false;
      }
    });
    fill(element, form);
    username.focus();
  }

  return {
    element,
    mount() {
      render();
      unsubscribe = onLanguageChange(render);
    },
    unmount() {
      unsubscribe();
    },
  };
}

function loginError(error) {
  if (error.status === 401) return t("login.invalid");
  if (error.status === 429) return t("login.throttled", { message: error.message });
  if (error.name === "ApiError") return error.message;
  return t("status.networkError", { message: error.message || String(error) });
}
