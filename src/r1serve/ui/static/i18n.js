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
    "header.theme": "Theme",
    "theme.system": "System theme",
    "theme.light": "Light",
    "theme.dark": "Dark",
    "chat.thoughtUntimed": "Thought",
    "chat.incomplete": "The server stopped before this reply finished.",
    "chat.droppedTurns": "{count} earlier turns were left out to fit the context.",
    "chat.failed": "The reply failed.",
    "chat.copyMessage": "Copy",
    "chat.copyFailed": "Could not copy to the clipboard.",
    "chat.edit": "Edit",
    "chat.editSend": "Save and send",
    "chat.cancel": "Cancel",
    "chat.regenerate": "Regenerate",
    "chat.previousVersion": "Previous version",
    "chat.nextVersion": "Next version",
    "chat.modelGone": "{model} (not served)",
    "history.title": "Conversations",
    "history.toggle": "Show or hide the conversations",
    "history.search": "Search conversations",
    "history.group.today": "Today",
    "history.group.yesterday": "Yesterday",
    "history.group.week": "Previous 7 days",
    "history.group.older": "Older",
    "history.none": "No conversations yet.",
    "history.noMatch": "No conversation matches.",
    "history.untitled": "Untitled",
    "history.generating": "Replying…",
    "history.rename": "Rename",
    "history.delete": "Delete",
    "history.confirmDelete": "Really delete?",
    "history.export": "Export",
    "history.exportJson": "This conversation as JSON",
    "history.exportMarkdown": "This conversation as Markdown",
    "history.exportImport": "Export and import",
    "history.exportAllJson": "All conversations as JSON",
    "history.exportAllMarkdown": "All conversations as Markdown",
    "history.import": "Import a JSON export…",
    "history.imported": "Imported {count} conversation(s).",
    "history.importNotJson": "{name} is not a JSON export.",
    "settings.open": "Settings",
    "settings.title": "Conversation settings",
    "settings.systemPrompt": "System prompt",
    "settings.temperature": "Temperature",
    "settings.top_p": "Top p",
    "settings.top_k": "Top k",
    "settings.min_p": "Min p",
    "settings.repetition_penalty": "Repetition penalty",
    "settings.max_tokens": "Max tokens",
    "settings.seed": "Seed",
    "settings.hint": "Empty fields use the server's defaults.",
    "settings.default": "default",
    "settings.save": "Save",
    "settings.saved": "Saved.",
    "settings.savedDraft": "Kept for this new conversation; it is saved with the first message.",
    "image.blocked": "Image from another site not loaded: {url}",
    "status.loadingModels": "Loading models…",
    "status.noModels": "The server lists no model.",
    "status.modelsFailed": "Could not load the model list: {message}",
    "status.error": "Error: {message}",
    "status.networkError": "Network error: {message}",
    "status.badStream": "The server sent a reply the page could not read.",
    "status.httpError": "The server answered {status}.",
    "status.streamCut": "The connection closed before the reply finished.",
    "nav.chat": "Chat",
    "nav.keys": "My keys",
    "nav.usage": "My usage",
    "nav.users": "Users",
    "nav.logout": "Log out",
    "login.title": "Log in",
    "login.username": "User name",
    "login.password": "Password",
    "login.submit": "Log in",
    "login.invalid": "Wrong user name or password.",
    "login.throttled": "Too many attempts. {message}",
    "keys.create": "New API key",
    "keys.name": "Name",
    "keys.models": "Models",
    "keys.modelsHint": "all (or names, comma-separated)",
    "keys.expires": "Expires in days",
    "keys.never": "never",
    "keys.createButton": "Create key",
    "keys.shownOnce": "Copy this key now: it is shown only once and cannot be recovered.",
    "keys.copy": "Copy",
    "keys.done": "Done",
    "keys.revoke": "Revoke",
    "keys.confirmRevoke": "Really revoke?",
    "keys.revoked": "Key {prefix}… revoked.",
    "keys.allModels": "all",
    "keys.prefix": "Key",
    "keys.stateHeader": "State",
    "keys.created": "Created",
    "keys.none": "No API keys yet.",
    "keys.state.active": "active",
    "keys.state.revoked": "revoked",
    "keys.state.expired": "expired",
    "account.password": "Change password",
    "account.current": "Current password",
    "account.new": "New password",
    "account.change": "Change password",
    "account.changed": "Password changed; your other sessions have ended.",
    "usage.today": "Today (UTC)",
    "usage.tokensOfLimit": "{used} of {limit} tokens used",
    "usage.tokensNoLimit": "{used} tokens used (no daily limit)",
    "usage.rpm": "Limit: {limit} requests per minute",
    "usage.rpmNoLimit": "No limit on requests per minute",
    "usage.resets": "The daily quota resets at {time}.",
    "usage.totals": "Last 30 days: {requests} requests, {prompt} prompt + {completion} completion tokens",
    "usage.perDay": "Per day",
    "usage.recent": "Latest requests",
    "usage.day": "Day",
    "usage.model": "Model",
    "usage.requests": "Requests",
    "usage.prompt": "Prompt tokens",
    "usage.completion": "Completion tokens",
    "usage.time": "Time",
    "usage.endpoint": "Endpoint",
    "usage.latency": "Latency",
    "usage.status": "Status",
    "usage.none": "No requests yet.",
    "admin.addUser": "Add a user",
    "admin.generated": "empty: generate one",
    "admin.role": "Role",
    "admin.role.user": "user",
    "admin.role.admin": "admin",
    "admin.add": "Add user",
    "admin.added": "User {name} added.",
    "admin.default": "default",
    "admin.saved": "Saved changes to {name}.",
    "admin.enable": "Enable",
    "admin.disable": "Disable",
    "admin.resetPassword": "New password",
    "admin.confirmReset": "Really reset?",
    "admin.disabled": "disabled",
    "admin.active": "active",
    "admin.state": "State",
    "admin.passwordOnce": "Password of {name}, shown only now:",
    "admin.rpm": "Requests/min",
    "admin.tokensPerDay": "Tokens/day",
    "admin.today": "Today (UTC): {requests} requests, {tokens} tokens in all",
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
    "header.theme": "主题",
    "theme.system": "跟随系统",
    "theme.light": "浅色",
    "theme.dark": "深色",
    "chat.thoughtUntimed": "已思考",
    "chat.incomplete": "服务器在这条回复完成前停止了。",
    "chat.droppedTurns": "为放入上下文，省略了较早的 {count} 轮对话。",
    "chat.failed": "回复失败。",
    "chat.copyMessage": "复制",
    "chat.copyFailed": "无法复制到剪贴板。",
    "chat.edit": "编辑",
    "chat.editSend": "保存并发送",
    "chat.cancel": "取消",
    "chat.regenerate": "重新生成",
    "chat.previousVersion": "上一个版本",
    "chat.nextVersion": "下一个版本",
    "chat.modelGone": "{model}（本服务器未提供）",
    "history.title": "对话列表",
    "history.toggle": "显示或隐藏对话列表",
    "history.search": "搜索对话",
    "history.group.today": "今天",
    "history.group.yesterday": "昨天",
    "history.group.week": "过去 7 天",
    "history.group.older": "更早",
    "history.none": "还没有对话。",
    "history.noMatch": "没有匹配的对话。",
    "history.untitled": "未命名对话",
    "history.generating": "正在回复…",
    "history.rename": "重命名",
    "history.delete": "删除",
    "history.confirmDelete": "确定删除？",
    "history.export": "导出",
    "history.exportJson": "将本对话导出为 JSON",
    "history.exportMarkdown": "将本对话导出为 Markdown",
    "history.exportImport": "导出与导入",
    "history.exportAllJson": "全部对话导出为 JSON",
    "history.exportAllMarkdown": "全部对话导出为 Markdown",
    "history.import": "导入 JSON 导出文件…",
    "history.imported": "已导入 {count} 个对话。",
    "history.importNotJson": "{name} 不是 JSON 格式的导出文件。",
    "settings.open": "设置",
    "settings.title": "对话设置",
    "settings.systemPrompt": "系统提示词",
    "settings.temperature": "温度（temperature）",
    "settings.top_p": "Top p",
    "settings.top_k": "Top k",
    "settings.min_p": "Min p",
    "settings.repetition_penalty": "重复惩罚",
    "settings.max_tokens": "最大生成词元数",
    "settings.seed": "随机种子",
    "settings.hint": "留空的项使用服务器的默认值。",
    "settings.default": "默认",
    "settings.save": "保存",
    "settings.saved": "已保存。",
    "settings.savedDraft": "已记下，发送第一条消息时随新对话一起保存。",
    "image.blocked": "未加载来自其他站点的图片：{url}",
    "status.loadingModels": "正在加载模型列表…",
    "status.noModels": "服务器没有列出任何模型。",
    "status.modelsFailed": "无法加载模型列表：{message}",
    "status.error": "错误：{message}",
    "status.networkError": "网络错误：{message}",
    "status.badStream": "服务器返回的内容无法解析。",
    "status.httpError": "服务器返回 {status}。",
    "status.streamCut": "回复完成前连接已断开。",
    "nav.chat": "对话",
    "nav.keys": "我的密钥",
    "nav.usage": "我的用量",
    "nav.users": "用户",
    "nav.logout": "退出登录",
    "login.title": "登录",
    "login.username": "用户名",
    "login.password": "密码",
    "login.submit": "登录",
    "login.invalid": "用户名或密码错误。",
    "login.throttled": "尝试次数过多。{message}",
    "keys.create": "新建 API 密钥",
    "keys.name": "名称",
    "keys.models": "模型",
    "keys.modelsHint": "全部（或用逗号分隔的模型名）",
    "keys.expires": "有效天数",
    "keys.never": "永不",
    "keys.createButton": "创建密钥",
    "keys.shownOnce": "请立即复制此密钥：它只显示这一次，之后无法找回。",
    "keys.copy": "复制",
    "keys.done": "完成",
    "keys.revoke": "吊销",
    "keys.confirmRevoke": "确定吊销？",
    "keys.revoked": "密钥 {prefix}… 已吊销。",
    "keys.allModels": "全部",
    "keys.prefix": "密钥",
    "keys.stateHeader": "状态",
    "keys.created": "创建时间",
    "keys.none": "还没有 API 密钥。",
    "keys.state.active": "有效",
    "keys.state.revoked": "已吊销",
    "keys.state.expired": "已过期",
    "account.password": "修改密码",
    "account.current": "当前密码",
    "account.new": "新密码",
    "account.change": "修改密码",
    "account.changed": "密码已修改；你的其他会话均已结束。",
    "usage.today": "今天（UTC）",
    "usage.tokensOfLimit": "已用 {used} / {limit} 个词元",
    "usage.tokensNoLimit": "已用 {used} 个词元（无每日上限）",
    "usage.rpm": "上限：每分钟 {limit} 个请求",
    "usage.rpmNoLimit": "每分钟请求数不限",
    "usage.resets": "每日配额在 {time} 重置。",
    "usage.totals": "最近 30 天：{requests} 个请求，提示 {prompt} + 生成 {completion} 个词元",
    "usage.perDay": "按天",
    "usage.recent": "最近的请求",
    "usage.day": "日期",
    "usage.model": "模型",
    "usage.requests": "请求数",
    "usage.prompt": "提示词元",
    "usage.completion": "生成词元",
    "usage.time": "时间",
    "usage.endpoint": "接口",
    "usage.latency": "延迟",
    "usage.status": "状态",
    "usage.none": "还没有请求。",
    "admin.addUser": "添加用户",
    "admin.generated": "留空则自动生成",
    "admin.role": "角色",
    "admin.role.user": "普通用户",
    "admin.role.admin": "管理员",
    "admin.add": "添加用户",
    "admin.added": "已添加用户 {name}。",
    "admin.default": "默认",
    "admin.saved": "已保存对 {name} 的修改。",
    "admin.enable": "启用",
    "admin.disable": "禁用",
    "admin.resetPassword": "重设密码",
    "admin.confirmReset": "确定重设？",
    "admin.disabled": "已禁用",
    "admin.active": "正常",
    "admin.state": "状态",
    "admin.passwordOnce": "{name} 的密码，只显示这一次：",
    "admin.rpm": "每分钟请求",
    "admin.tokensPerDay": "每日词元",
    "admin.today": "今天（UTC）：共 {requests} 个请求，{tokens} 个词元",
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
