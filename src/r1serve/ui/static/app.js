// Entry point: language, the language picker, who is logged in, and the view shown in <main>.
//
// Each screen is a view module exporting a factory that returns { element, mount, unmount }.
// Logged out, only the login view shows; the user menu in the top bar (views, change password,
// theme, language, shortcuts, log out) switches the others.

import { onUnauthorized } from "./api.js";
import { LANGUAGES, initialLanguage, language, onLanguageChange, setLanguage, t } from "./i18n.js";
import { currentUser, forgetUser, isAdmin, loadCurrentUser, logOut, onUserChange } from "./session.js";
import { installMathCopy } from "./math.js";
import { THEMES, initialTheme, setTheme, theme } from "./theme.js";
import { createAdminUsersView } from "./views/admin-users.js";
import { createChatView } from "./views/chat.js";
import { fill, h } from "./views/dom.js";
import { createKeysView } from "./views/keys.js";
import { createLoginView } from "./views/login.js";
import { openPasswordDialog } from "./views/password-dialog.js";
import { installShortcuts, openShortcutsDialog } from "./views/shortcuts.js";
import { createUsageView } from "./views/usage.js";

const VIEWS = {
  chat: createChatView,
  login: createLoginView,
  keys: createKeysView,
  usage: createUsageView,
  users: createAdminUsersView,
};
const NAV = [
  { view: "chat", label: "nav.chat" },
  { view: "keys", label: "nav.keys" },
  { view: "usage", label: "nav.usage" },
  { view: "users", label: "nav.users", adminOnly: true },
];
let currentName = null;

let currentView = null;

/** Replace the view in <main> with a fresh instance of the named one. */
export function showView(name) {
  const create = VIEWS[name];
  if (!create) throw new Error(`unknown view ${name}`);
  if (currentView) currentView.unmount();
  currentName = name;
  currentView = create();
  document.getElementById("view").replaceChildren(currentView.element);
  currentView.mount();
  renderNav();
}

/** The user menu: views, the user's name, Change password and Log out (not in local mode). */
function renderNav() {
  const nav = document.getElementById("account-nav");
  const name = document.querySelector(".nav-user");
  const user = currentUser();
  nav.hidden = !user;
  name.textContent = user ? user.username : "";
  name.hidden = !user;
  if (!user) {
    nav.replaceChildren();
    return;
  }
  const links = NAV.filter((item) => !item.adminOnly || isAdmin()).map((item) =>
    h(
      "button",
      {
        type: "button",
        class: item.view === currentName ? "nav-link current" : "nav-link",
        dataset: { view: item.view },
        "aria-current": item.view === currentName ? "page" : null,
        onclick: () => {
          closeMenus();
          showView(item.view);
        },
      },
      t(item.label),
    ),
  );
  const session = user.method === "session";
  const password = session
    ? h(
        "button",
        { type: "button", class: "change-password", onclick: () => (closeMenus(), openPasswordDialog()) },
        t("account.password"),
      )
    : null;
  const logout = session
    ? h("button", { type: "button", class: "logout", onclick: () => logOut() }, t("nav.logout"))
    : null;
  fill(nav, links, password, logout);
}

/** Close every open <details> menu, except the one holding keep. */
export function closeMenus(keep = null) {
  for (const menu of document.querySelectorAll("details.menu[open]")) {
    if (!keep || !menu.contains(keep)) menu.removeAttribute("open");
  }
}

function setUpLanguagePicker() {
  const picker = document.getElementById("language-select");
  picker.replaceChildren(...LANGUAGES.map(({ code, label }) => new Option(label, code)));
  picker.value = language();
  picker.addEventListener("change", () => setLanguage(picker.value));
}

function setUpThemePicker() {
  const picker = document.getElementById("theme-select");
  const fillOptions = () => {
    picker.replaceChildren(...THEMES.map((name) => new Option(t(`theme.${name}`), name)));
    picker.value = theme();
  };
  fillOptions();
  onLanguageChange(fillOptions);
  picker.addEventListener("change", () => setTheme(picker.value));
}

async function main() {
  setTheme(initialTheme(), { remember: false });
  // The browser's language is followed until the user picks one, which is then remembered.
  setLanguage(initialLanguage(), { remember: false });
  setUpLanguagePicker();
  setUpThemePicker();
  installMathCopy();
  document.addEventListener("click", (event) => closeMenus(event.target));
  document.querySelector(".show-shortcuts").addEventListener("click", () => {
    closeMenus();
    openShortcutsDialog();
  });
  installShortcuts(() => (currentName === "chat" ? currentView : null));
  onLanguageChange(renderNav);
  onUserChange((user) => showView(user ? "chat" : "login"));
  onUnauthorized(() => forgetUser());
  try {
    const user = await loadCurrentUser();
    if (!user) showView("login"); // a logged-in user got the chat from onUserChange
  } catch {
    showView("login");
  }
}

main();
