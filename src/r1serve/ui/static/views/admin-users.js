// Admin: users (add, role, disable, reset password, quota) and everyone's usage totals.

import { apiJson } from "../api.js";
import { language, onLanguageChange, t } from "../i18n.js";
import { currentUser } from "../session.js";
import { confirmButton, fill, formatNumber, formatTime, h, keptForm } from "./dom.js";

export function createAdminUsersView() {
  const element = h("section", { class: "account-view admin-users-view" });
  const state = { users: [], totals: null, message: "", isError: false, secret: null };
  let unsubscribe = () => {};

  async function refresh() {
    try {
      const [users, usage] = await Promise.all([
        apiJson("GET", "/api/admin/users"),
        apiJson("GET", "/api/admin/usage?days=1&recent=0"),
      ]);
      state.users = users;
      state.totals = usage.totals;
    } catch (error) {
      say(error.message, true);
    }
    render();
  }

  function say(message, isError = false) {
    state.message = message;
    state.isError = isError;
  }

  async function act(work, success) {
    try {
      const result = await work();
      say(success(result));
    } catch (error) {
      say(error.message, true);
    }
    await refresh();
  }

  function addForm() {
    const form = h(
      "form",
      { class: "account-card user-form" },
      h("h2", {}, t("admin.addUser")),
      h("label", {}, h("span", {}, t("login.username")), h("input", { name: "username", required: true, maxlength: 64 })),
      h(
        "label",
        {},
        h("span", {}, t("login.password")),
        h("input", { name: "password", type: "password", autocomplete: "new-password", placeholder: t("admin.generated") }),
      ),
      h(
        "label",
        {},
        h("span", {}, t("admin.role")),
        h("select", { name: "role" }, new Option(t("admin.role.user"), "user"), new Option(t("admin.role.admin"), "admin")),
      ),
      h("button", { type: "submit", class: "primary" }, t("admin.add")),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const data = new FormData(form);
      act(
        () =>
          apiJson("POST", "/api/admin/users", {
            username: String(data.get("username")),
            password: String(data.get("password") || "") || null,
            role: String(data.get("role")),
          }),
        (created) => {
          state.secret = created.password
            ? { username: created.user.username, password: created.password }
            : null;
          form.reset();
          return t("admin.added", { name: created.user.username });
        },
      );
    });
    return form;
  }

  const userForm = keptForm(addForm, language);

  function quotaInput(user, field) {
    const input = h("input", {
      type: "number",
      min: 1,
      class: `quota-${field}`,
      value: user.quota[field] ?? "",
      placeholder: t("admin.default"),
    });
    input.addEventListener("change", () => {
      const quota = { ...user.quota, [field]: input.value ? Number(input.value) : null };
      act(
        () => apiJson("PUT", `/api/admin/users/${user.id}/quota`, quota),
        () => t("admin.saved", { name: user.username }),
      );
    });
    return input;
  }

  function userRow(user) {
    const me = currentUser();
    const self = me && me.id === user.id;
    const role = h("select", { class: "user-role", disabled: self, "aria-label": t("admin.role") }, new Option(t("admin.role.user"), "user"), new Option(t("admin.role.admin"), "admin"));
    role.value = user.role;
    role.addEventListener("change", () =>
      act(
        () => apiJson("PATCH", `/api/admin/users/${user.id}`, { role: role.value }),
        () => t("admin.saved", { name: user.username }),
      ),
    );
    const toggle = h(
      "button",
      { type: "button", class: "toggle-user", disabled: self },
      user.disabled ? t("admin.enable") : t("admin.disable"),
    );
    toggle.addEventListener("click", () =>
      act(
        () => apiJson("PATCH", `/api/admin/users/${user.id}`, { disabled: !user.disabled }),
        () => t("admin.saved", { name: user.username }),
      ),
    );
    const reset = confirmButton(
      t("admin.resetPassword"),
      t("admin.confirmReset"),
      () =>
        act(
          () => apiJson("POST", `/api/admin/users/${user.id}/password`, {}),
          (result) => {
            state.secret = { username: user.username, password: result.password };
            return t("admin.saved", { name: user.username });
          },
        ),
      { class: "reset-password" },
    );
    return h(
      "tr",
      { dataset: { username: user.username } },
      h("td", {}, user.username),
      h("td", {}, role),
      h("td", {}, user.disabled ? t("admin.disabled") : t("admin.active")),
      h("td", {}, quotaInput(user, "requests_per_minute")),
      h("td", {}, quotaInput(user, "tokens_per_day")),
      h("td", {}, formatTime(user.created_at)),
      h("td", { class: "row-actions" }, toggle, reset),
    );
  }

  function secretBox() {
    if (!state.secret) return null;
    const done = h("button", { type: "button" }, t("keys.done"));
    done.addEventListener("click", () => {
      state.secret = null;
      render();
    });
    return h(
      "div",
      { class: "account-card new-key", role: "status" },
      h("p", { class: "warning" }, t("admin.passwordOnce", { name: state.secret.username })),
      h("div", { class: "new-key-row" }, h("code", { class: "new-password-value" }, state.secret.password)),
      done,
    );
  }

  function render() {
    const headers = ["login.username", "admin.role", "admin.state", "admin.rpm", "admin.tokensPerDay", "keys.created", ""];
    fill(
      element,
      h("h1", {}, t("nav.users")),
      state.totals
        ? h(
            "p",
            { class: "usage-totals" },
            t("admin.today", {
              requests: formatNumber(state.totals.requests),
              tokens: formatNumber(state.totals.total_tokens),
            }),
          )
        : null,
      secretBox(),
      h("p", { class: state.isError ? "status error" : "status", role: "status" }, state.message),
      h(
        "table",
        { class: "account-table users-table" },
        h("thead", {}, h("tr", {}, ...headers.map((key) => h("th", {}, key ? t(key) : "")))),
        h("tbody", {}, ...state.users.map(userRow)),
      ),
      userForm(),
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
      state.secret = null;
      unsubscribe();
    },
  };
}
