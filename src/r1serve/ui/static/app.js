// Entry point: language, the language picker, and the view shown in <main>.
//
// Each screen is a view module exporting a factory that returns { element, mount, unmount }.
// Only the chat exists now; login, keys, usage and admin screens register here later.

import { LANGUAGES, initialLanguage, language, setLanguage } from "./i18n.js";
import { createChatView } from "./views/chat.js";

const VIEWS = {
  chat: createChatView,
};

let currentView = null;

/** Replace the view in <main> with a fresh instance of the named one. */
export function showView(name) {
  const create = VIEWS[name];
  if (!create) throw new Error(`unknown view ${name}`);
  if (currentView) currentView.unmount();
  currentView = create();
  document.getElementById("view").replaceChildren(currentView.element);
  currentView.mount();
}

function setUpLanguagePicker() {
  const picker = document.getElementById("language-select");
  picker.replaceChildren(...LANGUAGES.map(({ code, label }) => new Option(label, code)));
  picker.value = language();
  picker.addEventListener("change", () => setLanguage(picker.value));
}

function main() {
  // The browser's language is followed until the user picks one, which is then remembered.
  setLanguage(initialLanguage(), { remember: false });
  setUpLanguagePicker();
  showView("chat");
}

main();
