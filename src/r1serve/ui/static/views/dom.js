// A tiny element builder for the account views: text is always set as text, never as HTML.

/**
 * h("button", { class: "x", type: "button", onclick: fn }, "label", child, ...)
 * Attributes starting with "on" become event listeners; "dataset" takes an object.
 */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(element.dataset, value);
    } else if (name === "class") {
      element.className = value;
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  element.append(...children.flat().filter((child) => child !== null && child !== undefined));
  return element;
}

/**
 * Make element's children exactly these (null and undefined left out). Nodes that stay are
 * never detached, so a kept form keeps its focus and whatever is being typed into it while
 * the rest of the view re-renders around it.
 */
export function fill(element, ...children) {
  const wanted = children
    .flat()
    .filter((child) => child !== null && child !== undefined)
    .map((child) => (child instanceof Node ? child : document.createTextNode(String(child))));
  const keep = new Set(wanted);
  for (const node of [...element.childNodes]) {
    if (!keep.has(node)) node.remove();
  }
  let cursor = element.firstChild;
  for (const child of wanted) {
    if (child === cursor) {
      cursor = cursor.nextSibling;
    } else {
      element.insertBefore(child, cursor);
    }
  }
}

/** A date-time from the server (ISO, UTC) in the reader's locale, or "—". */
export function formatTime(value) {
  if (!value) return "—";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? "—" : date.toLocaleString();
}

/** A whole number with the locale's grouping, or "—" for none. */
export function formatNumber(value) {
  return value === null || value === undefined ? "—" : Number(value).toLocaleString();
}

/**
 * A button that asks once more in place ("Really …?") before running action; a second click
 * within a few seconds confirms. Native confirm() dialogs are avoided on purpose.
 */
export function confirmButton(label, confirmLabel, action, attributes = {}) {
  let armed = null;
  const button = h("button", { type: "button", ...attributes }, label);
  button.addEventListener("click", () => {
    if (armed) {
      window.clearTimeout(armed);
      armed = null;
      button.textContent = label;
      action();
      return;
    }
    button.textContent = confirmLabel;
    button.classList.add("armed");
    armed = window.setTimeout(() => {
      armed = null;
      button.textContent = label;
      button.classList.remove("armed");
    }, 4000);
  });
  return button;
}

/**
 * Keeps a form across re-renders (so a data refresh never wipes what the user is typing);
 * it is rebuilt only when the language changes.
 */
export function keptForm(build, language) {
  let kept = null;
  return () => {
    if (!kept || kept.language !== language()) kept = { language: language(), element: build() };
    return kept.element;
  };
}
