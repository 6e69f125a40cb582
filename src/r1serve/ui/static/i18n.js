// All text the page shows, in every language it speaks, and the current language.
//
// Views never hard-code UI text: static markup carries data-i18n* attributes (filled by
// applyTranslations) and code calls t(key, params). New screens add their keys to STRINGS
// for every language; a test checks that each language has the same keys.

export const LANGUAGES = [
  { code: "en", label: "English" },
  { code: "zh-CN", label: "简体中文" },
];

const STORAGE_KEY = "r1serve.language";

export const STRINGS = {
  en: {
    "app.title": "r1serve chat",
    "header.model": "Model",
    "header.language": "Language",
    "header.newChat": "New chat",
    "chat.empty": "Ask anything. Enter sends, Shift+Enter adds a line.",
    "chat.placeholder": "Message the model…",
    "chat.send": "Send",
    "chat.stop": "Stop",
    "chat.you": "You",
    "chat.assistant": "Assistant",
    "chat.stopped": "Stopped.",
    "chat.thinking": "Thinking… {seconds} s",
    "chat.thought": "Thought for {seconds} s",
    "chat.usage": "{prompt} prompt + {completion} completion tokens · {rate} tok/s",
    "chat.usageNoRate": "{prompt} prompt + {completion} completion tokens",
    "chat.finishLength": "The reply hit the length limit.",
    "chat.copy": "Copy",
    "chat.copied": "Copied",
    "image.blocked": "Image from another site not loaded: {url}",
    "status.loadingModels": "Loading models…",
    "status.noModels": "The server lists no model.",
    "status.modelsFailed": "Could not load the model list: {message}",
    "status.error": "Error: {message}",
    "status.networkError": "Network error: {message}",
    "status.badStream": "The server sent a reply the page could not read.",
    "status.httpError": "The server answered {status}.",
    "status.streamCut": "The connection closed before the reply finished.",
  },
  "zh-CN": {
    "app.title": "r1serve 对话",
    "header.model": "模型",
    "header.language": "语言",
    "header.newChat": "新对话",
    "chat.empty": "随便问点什么。Enter 发送，Shift+Enter 换行。",
    "chat.placeholder": "给模型发消息…",
    "chat.send": "发送",
    "chat.stop": "停止",
    "chat.you": "你",
    "chat.assistant": "助手",
    "chat.stopped": "已停止。",
    "chat.thinking": "思考中… {seconds} 秒",
    "chat.thought": "已思考 {seconds} 秒",
    "chat.usage": "提示 {prompt} + 生成 {completion} 个词元 · {rate} 词元/秒",
    "chat.usageNoRate": "提示 {prompt} + 生成 {completion} 个词元",
    "chat.finishLength": "回复达到了长度上限。",
    "chat.copy": "复制",
    "chat.copied": "已复制",
    "image.blocked": "未加载来自其他站点的图片：{url}",
    "status.loadingModels": "正在加载模型列表…",
    "status.noModels": "服务器没有列出任何模型。",
    "status.modelsFailed": "无法加载模型列表：{message}",
    "status.error": "错误：{message}",
    "status.networkError": "网络错误：{message}",
    "status.badStream": "服务器返回的内容无法解析。",
    "status.httpError": "服务器返回 {status}。",
    "status.streamCut": "回复完成前连接已断开。",
  },
};

let current = "en";
const listeners = new Set();

/** The language to start with: the saved choice, else the browser's, else English. */
export function initialLanguage() {
  let saved = null;
  try {
    saved = window.localStorage.getItem(STORAGE_KEY);
  } catch {
    // Storage can be disabled (privacy modes); the browser language still applies.
  }
  if (saved && saved in STRINGS) return saved;
  for (const wanted of navigator.languages || [navigator.language]) {
    const lower = String(wanted).toLowerCase();
    if (lower.startsWith("zh")) return "zh-CN";
    if (lower.startsWith("en")) return "en";
  }
  return "en";
}

export function language() {
  return current;
}

/** Switch the UI language, remember the choice, and tell every listener. */
export function setLanguage(code, { remember = true } = {}) {
  if (!(code in STRINGS)) throw new Error(`unknown language ${code}`);
  current = code;
  document.documentElement.lang = code;
  if (remember) {
    try {
      window.localStorage.setItem(STORAGE_KEY, code);
    } catch {
      // Not remembered, but the switch still happens.
    }
  }
  applyTranslations(document);
  document.title = t("app.title");
  for (const listener of listeners) listener(code);
}

/** Call listener(code) after every language switch; returns a function that unsubscribes. */
export function onLanguageChange(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** The text for key in the current language, with {name} placeholders filled from params. */
export function t(key, params = {}) {
  const text = STRINGS[current][key] ?? STRINGS.en[key];
  if (text === undefined) throw new Error(`missing UI string ${key}`);
  return text.replace(/\{(\w+)\}/g, (whole, name) =>
    name in params ? String(params[name]) : whole,
  );
}

/** Fill data-i18n (text), data-i18n-placeholder, -title and -aria-label under root. */
export function applyTranslations(root) {
  for (const el of root.querySelectorAll("[data-i18n]")) {
    el.textContent = t(el.dataset.i18n);
  }
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
  for (const el of root.querySelectorAll("[data-i18n-title]")) {
    el.title = t(el.dataset.i18nTitle);
  }
  for (const el of root.querySelectorAll("[data-i18n-aria-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nAriaLabel));
  }
}
