// Injected before any page script in the browser tests (Playwright add_init_script).
//
// A trap a successful payload would spring (window.__pwned), a record of CSP violations (the
// page itself must cause none), and a watch on the conversation that notes every unsafe node
// or attribute the moment it appears, however briefly: the live half of reliability case 19.
// The sidebar and the heading are watched too: titles are untrusted (case 20).
(() => {
  window.__pwned = undefined;
  window.__cspViolations = [];
  window.__unsafeNodes = [];
  document.addEventListener("securitypolicyviolation", (event) => {
    window.__cspViolations.push(event.violatedDirective + " " + event.blockedURI);
  });
  const BAD_TAGS = new Set(["SCRIPT", "IFRAME", "FRAME", "OBJECT", "EMBED", "STYLE", "FORM",
                            "BASE", "LINK", "META", "svg", "math"]);
  const URL_ATTRS = ["href", "src", "xlink:href", "action", "formaction", "srcdoc", "data"];
  const squash = (value) => String(value).replace(/[\s\u0000-\u001f]+/g, "").toLowerCase();
  // KaTeX's formulas (class "katex", made by the page, never by the model) hold SVG and
  // MathML, and their layout is set through CSSOM: inside one, only those are allowed, and only
  // SVG shapes and MathML elements, with style limited to lengths, keywords and colours.
  const MATH_NAMESPACES = new Set(["http://www.w3.org/2000/svg", "http://www.w3.org/1998/Math/MathML"]);
  const SVG_SHAPES = new Set(["svg", "path", "line", "rect", "g"]);
  const PLAIN_STYLE = /^([a-z-]+:\s*(-?[\d.]+(em|ex|px|pt|%)?|solid|dashed|relative|absolute|inherit|none|auto|#[0-9a-f]{3,8}|[a-z]+|rgba?\([\d.,\s%]+\));\s*)*$/i;
  const problems = (el) => {
    const found = [];
    const inMath = el.closest && el.closest(".katex") !== null;
    const mathNode = inMath && MATH_NAMESPACES.has(el.namespaceURI) &&
      (el.namespaceURI !== "http://www.w3.org/2000/svg" || SVG_SHAPES.has(el.tagName));
    if (!mathNode && (BAD_TAGS.has(el.tagName) || el.namespaceURI !== "http://www.w3.org/1999/xhtml")) {
      found.push("tag " + el.tagName);
    }
    for (const attr of el.attributes) {
      const name = attr.name.toLowerCase();
      const mathStyle = inMath && name === "style" && PLAIN_STYLE.test(attr.value);
      if (name.startsWith("on") || (["style", "srcset", "poster", "background"].includes(name) && !mathStyle)) {
        found.push("attr " + name + (name === "style" ? " " + attr.value : ""));
      }
      if (!URL_ATTRS.includes(name)) continue;
      const value = squash(attr.value);
      if (value.startsWith("javascript:") || value.startsWith("vbscript:")) {
        found.push(name + " " + attr.value);
      } else if (value.startsWith("data:") && !(name === "src" && value.startsWith("data:image/"))) {
        found.push(name + " " + attr.value);
      }
      if (name === "src") {
        const url = new URL(attr.value, location.href);
        if (url.protocol !== "data:" && url.origin !== location.origin) found.push("src " + attr.value);
      }
    }
    return found;
  };
  window.__unsafeIn = (root) => {
    const found = [];
    for (const el of root.querySelectorAll("*")) found.push(...problems(el));
    return found;
  };
  const inConversation = (node) =>
    node.nodeType === 1 && node.closest &&
    node.closest(".messages, .sidebar, .conversation-heading") !== null;
  new MutationObserver((records) => {
    for (const record of records) {
      const nodes = record.type === "attributes" ? [record.target] : [...record.addedNodes];
      for (const node of nodes) {
        if (!inConversation(node)) continue;
        window.__unsafeNodes.push(...problems(node));
        window.__unsafeNodes.push(...window.__unsafeIn(node));
      }
    }
  }).observe(document, { childList: true, subtree: true, attributes: true });
})();
