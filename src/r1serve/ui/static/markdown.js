// Markdown to safe DOM: marked parses, KaTeX renders TeX (math.js), highlight.js colours code,
// DOMPurify sanitizes.
//
// Model output is untrusted. Every render (each animation frame while a reply streams, and the
// final one) goes through sanitize(), and only its result reaches the page. Raw HTML written by
// the model is shown as text, not parsed; the sanitizer still runs on everything marked makes.
// Off-origin images are neutralized inside the sanitizer's inert document, before the nodes are
// adopted into the page, so no request for them is ever made.

import { Marked } from "./vendor/marked/marked.esm.js";
import DOMPurify from "./vendor/dompurify/purify.es.js";
import hljs from "./vendor/highlight.js/highlight.min.js";
import { t } from "./i18n.js";
import { fillFormulas, mathExtension, takeFormulas } from "./math.js";

const HIGHLIGHT_CACHE_SIZE = 64;
const highlightCache = new Map();

const SAFE_LINK_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);
const RESOURCE_ATTRIBUTES = new Set(["src", "xlink:href", "href"]);

const PURIFY_CONFIG = {
  USE_PROFILES: { html: true }, // no SVG or MathML at all
  FORBID_TAGS: [
    "style", "form", "button", "textarea", "select", "option", "audio", "video",
    "source", "track", "picture", "object", "embed", "link", "meta", "base",
  ],
  FORBID_ATTR: ["style", "srcset", "poster", "background", "action", "formaction", "ping"],
  RETURN_DOM_FRAGMENT: true,
};
// KaTeX's formulas only (math.js): its radicals are SVG, its screen-reader copy is MathML.
const MATH_PURIFY_CONFIG = { ...PURIFY_CONFIG, USE_PROFILES: { html: true, svg: true, mathMl: true } };

const purifier = DOMPurify(window);
const blockedImages = new WeakMap();

purifier.addHook("uponSanitizeAttribute", (node, data) => {
  if (!RESOURCE_ATTRIBUTES.has(data.attrName)) return;
  if (node.nodeName === "A" && data.attrName === "href") {
    if (!isSafeLink(data.attrValue)) data.keepAttr = false;
  } else if (!isLocalResource(data.attrValue)) {
    // An <img> (or anything else with a src) pointing elsewhere would leak to that site.
    data.keepAttr = false;
    if (node.nodeName === "IMG" && isWebUrl(data.attrValue)) {
      blockedImages.set(node, data.attrValue);
    }
  }
});

purifier.addHook("afterSanitizeAttributes", (node) => {
  if (node.nodeName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  } else if (node.nodeName === "IMG" && blockedImages.has(node)) {
    node.classList.add("blocked-image");
    node.setAttribute("title", t("image.blocked", { url: blockedImages.get(node) }));
  } else if (node.nodeName === "INPUT") {
    // marked's GFM task lists are the only inputs that belong in a reply.
    node.setAttribute("type", "checkbox");
    node.setAttribute("disabled", "");
  }
});

const marked = new Marked({
  gfm: true,
  renderer: {
    code({ text, lang }) {
      const language = codeLanguage(lang);
      const classes = language ? `hljs language-${language}` : "hljs";
      return `<pre><code class="${classes}">${highlight(text, language)}</code></pre>\n`;
    },
    html({ text, block }) {
      // Shown as the model wrote it; a block keeps its line breaks (see .raw-html).
      return block ? `<p class="raw-html">${escapeHtml(text.trim())}</p>\n` : escapeHtml(text);
    },
  },
});
marked.use(mathExtension);

/** Render markdown text to a sanitized DocumentFragment, ready to insert. */
export function renderMarkdown(text) {
  takeFormulas(); // none left over from a parse that threw
  const html = marked.parse(text);
  const fragment = sanitize(html);
  fillFormulas(fragment, takeFormulas(), (markup) => purifier.sanitize(markup, MATH_PURIFY_CONFIG));
  decorateCodeBlocks(fragment);
  return fragment;
}

/** Sanitize an HTML string into a DocumentFragment (the only way HTML reaches the page). */
export function sanitize(html) {
  return purifier.sanitize(html, PURIFY_CONFIG);
}

function isSafeLink(value) {
  try {
    const url = new URL(value, window.location.href);
    return SAFE_LINK_PROTOCOLS.has(url.protocol);
  } catch {
    return false;
  }
}

function isWebUrl(value) {
  try {
    return ["http:", "https:"].includes(new URL(value, window.location.href).protocol);
  } catch {
    return false;
  }
}

function isLocalResource(value) {
  const trimmed = String(value).trim();
  if (/^data:image\//i.test(trimmed)) return true;
  try {
    return new URL(trimmed, window.location.href).origin === window.location.origin;
  } catch {
    return false;
  }
}

function codeLanguage(lang) {
  // The info string comes from the model: keep a plain language name or nothing.
  const match = /^[\w+#.-]{1,32}/.exec(String(lang || "").trim());
  return match ? match[0].toLowerCase() : "";
}

function highlight(code, language) {
  const key = `${language}\u0000${code}`;
  let html = highlightCache.get(key);
  if (html === undefined) {
    html = hljs.getLanguage(language)
      ? hljs.highlight(code, { language, ignoreIllegals: true }).value
      : escapeHtml(code);
    // While a reply streams only its last code block changes; older ones hit the cache.
    if (highlightCache.size >= HIGHLIGHT_CACHE_SIZE) {
      highlightCache.delete(highlightCache.keys().next().value);
    }
    highlightCache.set(key, html);
  }
  return html;
}

function decorateCodeBlocks(fragment) {
  for (const pre of fragment.querySelectorAll("pre")) {
    const block = document.createElement("div");
    block.className = "code-block";
    const bar = document.createElement("div");
    bar.className = "code-bar";
    const label = document.createElement("span");
    const languageClass = [...(pre.firstElementChild?.classList || [])].find((name) =>
      name.startsWith("language-"),
    );
    label.textContent = languageClass ? languageClass.slice("language-".length) : "";
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "copy-code";
    copy.dataset.i18n = "chat.copy";
    copy.textContent = t("chat.copy");
    bar.append(label, copy);
    pre.replaceWith(block);
    block.append(bar, pre);
  }
}

function escapeHtml(text) {
  return String(text)
    .replaceAll("&", "&amp;")
    .replaceAll("<", "&lt;")
    .replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;")
    .replaceAll("'", "&#39;");
}
