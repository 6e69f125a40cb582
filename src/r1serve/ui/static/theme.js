// Light or dark: follows the system until the user picks one, which is then remembered.
//
// The choice lands on <html data-theme>; style.css keys its colour variables on it and on
// prefers-color-scheme. The highlight.js theme links are switched by their media attribute.

export const THEMES = ["system", "light", "dark"];
const STORAGE_KEY = "r1serve.theme";
const systemDark = window.matchMedia("(prefers-color-scheme: dark)");

let current = "system";

/** The remembered choice, or "system". */
export function initialTheme() {
  try {
    const saved = window.localStorage.getItem(STORAGE_KEY);
    if (THEMES.includes(saved)) return saved;
  } catch {
    // Storage can be disabled; the system's choice still applies.
  }
  return "system";
}

export function theme() {
  return current;
}

/** Apply a theme ("system", "light" or "dark") and remember it unless told not to. */
export function setTheme(name, { remember = true } = {}) {
  if (!THEMES.includes(name)) throw new Error(`unknown theme ${name}`);
  current = name;
  const root = document.documentElement;
  if (name === "system") delete root.dataset.theme;
  else root.dataset.theme = name;
  const dark = name === "dark" || (name === "system" && systemDark.matches);
  for (const link of document.querySelectorAll("link[data-code-theme]")) {
    link.media = link.dataset.codeTheme === (dark ? "dark" : "light") ? "all" : "not all";
  }
  if (remember) {
    try {
      window.localStorage.setItem(STORAGE_KEY, name);
    } catch {
      // Not remembered, but applied.
    }
  }
}

// A system switch matters only while following the system.
systemDark.addEventListener("change", () => {
  if (current === "system") setTheme("system", { remember: false });
});
