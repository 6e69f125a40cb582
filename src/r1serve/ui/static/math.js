// TeX in replies: $…$, \(…\) inline; $$…$$, \[…\] display. KaTeX renders, DOMPurify sanitizes.
//
// The formulas are taken out by a marked extension before marked's own rules run, so the
// markdown parser never sees (and never eats) the TeX: `\,` stays a thin space, `a_1 * b_2`
// stays a product. Code spans and fenced code keep their dollars: marked tokenizes them first.
// A formula whose closing delimiter has not streamed in yet matches nothing, so it shows as
// text until it closes.
//
// Each formula leaves a slot in marked's HTML. The page's sanitizer (HTML only) runs over that;
// each formula's KaTeX markup goes through the same DOMPurify instance on its own, with SVG and
// MathML allowed (KaTeX's radicals, its screen-reader copy), and fills its slot.
//
// KaTeX writes its layout as style attributes, which the page's CSP (style-src 'self') forbids
// in HTML. Its markup is therefore sanitized with each style attribute renamed to
// data-katex-style; afterwards only known layout properties with plain values are set back
// through CSSOM (which the CSP allows). Nothing else of the model's can reach a style.

const katex = window.katex; // vendor/katex/katex.min.js, a classic script loaded before the modules

const CLOSING = { $$: "$$", "\\[": "\\]" };
const INLINE_RULES = [
  { pattern: /^\$\$((?:\\[\s\S]|[^\\$])+?)\$\$/, display: true },
  { pattern: /^\\\[([\s\S]+?)\\\]/, display: true },
  { pattern: /^\\\(([\s\S]+?)\\\)/, display: false },
  // Pandoc's rule, so prices stay text: no space inside the dollars, no digit right after.
  { pattern: /^\$(?![\s$])((?:\\[\s\S]|[^\\$\n])+?)(?<!\s)\$(?!\d)/, display: false },
];
const BLOCK_START = /(?:^|\n) {0,3}(?:\$\$|\\\[)/;
const BLOCK_RULE = /^ {0,3}(\$\$|\\\[)([\s\S]+?)(\$\$|\\\])[ \t]*(?:\n+|$)/;

const CACHE_SIZE = 256;
const cache = new Map(); // "D"/"I" + TeX -> sanitized fragment, styles not applied yet
let pending = []; // formulas of the markdown being parsed, by slot number

const STYLE_PROPERTIES = new Set([
  "height", "width", "min-width", "max-width", "vertical-align", "top", "bottom", "left", "right",
  "position", "margin-left", "margin-right", "margin-top", "margin-bottom", "padding-left",
  "padding-right", "padding-top", "padding-bottom", "border-style", "border-width",
  "border-top-width", "border-bottom-width", "border-right-width", "border-left-width",
  "border-color", "color", "background-color", "font-size",
]);
const LENGTH = /^-?(?:\d+\.?\d*|\.\d+)(?:em|ex|px|pt|%)?$/;
const KEYWORD = /^(?:solid|dashed|relative|absolute|inherit|none|auto)$/;
const COLOUR = /^(?:#[0-9a-f]{3,8}|[a-z]{3,20}|rgba?\([\d.,\s%]+\))$/i;

/** The marked extension that takes formulas out before markdown parsing. */
export const mathExtension = {
  extensions: [
    {
      name: "mathBlock",
      level: "block",
      start(src) {
        const match = BLOCK_START.exec(src);
        if (!match) return undefined;
        return match.index + (match[0].startsWith("\n") ? 1 : 0);
      },
      tokenizer(src) {
        const match = BLOCK_RULE.exec(src);
        if (!match || CLOSING[match[1]] !== match[3] || !match[2].trim()) return undefined;
        return { type: "mathBlock", raw: match[0], tex: match[2].trim(), display: true };
      },
      renderer: (token) => `${slot(token)}\n`,
    },
    {
      name: "mathInline",
      level: "inline",
      start(src) {
        const index = src.search(/\$|\\[([]/);
        return index < 0 ? undefined : index;
      },
      tokenizer(src) {
        for (const { pattern, display } of INLINE_RULES) {
          const match = pattern.exec(src);
          if (match && match[1].trim()) {
            return { type: "mathInline", raw: match[0], tex: match[1].trim(), display };
          }
        }
        return undefined;
      },
      renderer: (token) => slot(token),
    },
  ],
};

function slot(token) {
  pending.push({ tex: token.tex, display: token.display });
  return `<span class="math-slot" data-math="${pending.length - 1}"></span>`;
}

/** The formulas marked met since the last call, by slot number. */
export function takeFormulas() {
  const formulas = pending;
  pending = [];
  return formulas;
}

/** Put each formula in its slot; sanitize(html) returns a DocumentFragment. */
export function fillFormulas(fragment, formulas, sanitize) {
  for (const element of fragment.querySelectorAll("span.math-slot[data-math]")) {
    const formula = formulas[Number(element.dataset.math)];
    if (!formula) {
      element.remove();
      continue;
    }
    const key = `${formula.display ? "D" : "I"}${formula.tex}`;
    let clean = cache.get(key);
    if (clean === undefined) {
      clean = sanitize(renderTex(formula.tex, formula.display));
      for (const rendered of clean.querySelectorAll(".katex")) rendered.dataset.tex = formula.tex;
      if (cache.size >= CACHE_SIZE) cache.delete(cache.keys().next().value);
      cache.set(key, clean);
    }
    const copy = clean.cloneNode(true);
    applyMathStyles(copy);
    element.replaceWith(copy);
  }
}

/** KaTeX's markup for one formula, its style attributes renamed for the sanitizer. */
export function renderTex(tex, display) {
  return katex
    .renderToString(tex, {
      displayMode: display,
      throwOnError: false,
      output: "htmlAndMathml",
      trust: false, // no \href, \htmlClass, \htmlStyle…: nothing the model writes becomes markup
      strict: "ignore",
      maxSize: 50,
      maxExpand: 1000,
    })
    .replaceAll(' style="', ' data-katex-style="')
    // DOMPurify drops <semantics> and <annotation> but would keep the TeX inside as stray text
    // in the MathML; the TeX is kept on the element instead (data-tex, for Copy).
    .replace(/<annotation encoding="application\/x-tex">[^<]*<\/annotation>/g, "")
    .replaceAll("<semantics>", "")
    .replaceAll("</semantics>", "");
}

/** After sanitizing: give KaTeX's elements their layout back, through CSSOM, checked. */
export function applyMathStyles(fragment) {
  for (const element of fragment.querySelectorAll("[data-katex-style]")) {
    const declarations = element.dataset.katexStyle;
    element.removeAttribute("data-katex-style");
    if (!element.closest(".katex, .katex-error")) continue;
    for (const declaration of declarations.split(";")) {
      const colon = declaration.indexOf(":");
      if (colon < 0) continue;
      const property = declaration.slice(0, colon).trim().toLowerCase();
      const value = declaration.slice(colon + 1).trim();
      if (STYLE_PROPERTIES.has(property) && isPlainValue(property, value)) {
        element.style.setProperty(property, value);
      }
    }
  }
}

function isPlainValue(property, value) {
  if (property.includes("color")) return COLOUR.test(value);
  return LENGTH.test(value) || KEYWORD.test(value);
}

/** The TeX a rendered formula came from, with its delimiters. */
export function texOf(katexElement) {
  const tex = katexElement.dataset.tex;
  if (tex === undefined) return katexElement.textContent;
  return katexElement.closest(".katex-display") ? `$$${tex}$$` : `$${tex}$`;
}

/** Copying a selection with formulas in it copies their TeX, not KaTeX's glyphs. */
export function installMathCopy(root = document) {
  root.addEventListener("copy", (event) => {
    const selection = window.getSelection();
    if (!selection || selection.isCollapsed || !selection.rangeCount) return;
    const fragment = selection.getRangeAt(0).cloneContents();
    const formulas = fragment.querySelectorAll(".katex");
    if (!formulas.length) return;
    for (const formula of formulas) {
      const display = formula.closest(".katex-display");
      (display ?? formula).replaceWith(document.createTextNode(texOf(formula)));
    }
    event.clipboardData.setData("text/plain", fragment.textContent);
    event.preventDefault();
  });
}
