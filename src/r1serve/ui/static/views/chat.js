// The chat screen: the conversation sidebar, the open conversation, the composer.
//
// Conversations live on the server. Sending posts to /api/conversations/{id}/messages and reads
// the reply stream; leaving a conversation (or this screen) only stops reading: the reply goes on
// on the server, and opening the conversation again picks it up where the page left it. The open
// conversation's id is in the address (#/c/<id>), so a reload comes back to it, mid-reply too.

import { conversationInAddress, setConversationInAddress } from "../address.js";
import { listModels } from "../api.js";
import {
  continueReply,
  createConversation,
  editMessage,
  getConversation,
  getReplyDefaults,
  postMessage,
  putReplyDefaults,
  regenerateReply,
  stopReply,
  updateConversation,
} from "../conversations.js";
import { applyTranslations, onLanguageChange, t } from "../i18n.js";
import { LiveReply, followedReply, forgetReply } from "../live-replies.js";
import { ChatTools } from "./chat-tools.js";
import { SettingsPanel } from "./settings-panel.js";
import { ConversationList } from "./sidebar.js";
import { Thread } from "./thread.js";

const MAX_INPUT_HEIGHT_PX = 240;

/** "name · engine · 32k context" for the model picker. */
function modelLabel({ id, engine, contextLength }) {
  const parts = [id];
  if (engine) parts.push(engine);
  if (contextLength) parts.push(t("chat.context", { tokens: formatTokens(contextLength) }));
  return parts.join(" · ");
}

function formatTokens(count) {
  return count >= 1024 && count % 1024 === 0 ? `${count / 1024}k` : String(count);
}
const STICK_TO_BOTTOM_PX = 48;

/** Build the chat view from its <template>; returns { element, mount, unmount }. */
export function createChatView() {
  const template = document.getElementById("chat-view-template");
  const element = template.content.firstElementChild.cloneNode(true);
  const chat = new ChatController(element);
  let unsubscribe = () => {};
  const toolbar = element.querySelector(".chat-toolbar");
  return {
    element,
    shortcuts: chat.shortcuts(),
    mount() {
      applyTranslations(element);
      // The toolbar lives in the page header: one row for the whole top of the page.
      document.getElementById("toolbar-slot").replaceChildren(toolbar);
      unsubscribe = onLanguageChange(() => chat.relabel());
      chat.start();
    },
    unmount() {
      unsubscribe();
      toolbar.remove();
      chat.destroy();
    },
  };
}

class ChatController {
  constructor(layout) {
    const find = (selector) => layout.querySelector(selector);
    this.layout = layout;
    this.element = find(".chat");
    this.ui = {
      modelSelect: find(".model-select"),
      heading: find(".conversation-heading"),
      messages: find(".messages"),
      input: find(".composer-input"),
      form: find(".composer"),
      send: find(".send"),
      stop: find(".stop"),
      status: find(".status"),
      panel: find(".settings-panel"),
      exportMenu: find(".export-menu"),
    };
    this.conversation = null; // the open one without its messages; null: a new chat
    this.draft = { system_prompt: "", settings: {} };
    this.live = null; // the reply streaming in the open conversation
    this.sending = false;
    this.openSeq = 0;
    this.stickToBottom = true;
    this.tools = new ChatTools(layout, {
      conversationId: () => this.conversation?.id ?? null,
      onImported: async (ids) => {
        await this.sidebar.reload();
        if (ids.length) await this.open(ids[0]);
      },
      setStatus: (message, isError) => this.setStatus(message, isError),
    });
    this.thread = new Thread(this.ui.messages, find(".empty-hint"), {
      canChange: () => this.canChange(),
      copy: (text, button, labelKey) => this.tools.copyText(text, button, labelKey),
      edit: (entry, content) => this.edit(entry, content),
      regenerate: (entry) => this.regenerate(entry),
      continueReply: (entry) => this.continueReply(entry),
      switchBranch: (entry, siblingId) => this.switchBranch(siblingId),
    });
    this.sidebar = new ConversationList(find(".sidebar"), {
      onOpen: (id) => this.open(id),
      onDeleted: (id) => this.conversation?.id === id && this.newChat(),
      onError: (message) => this.setStatus(t("status.error", { message }), true),
    });
    this.panel = new SettingsPanel(this.ui.panel, {
      save: (values) => this.saveSettings(values),
      saveDefaults: (settings) => this.saveDefaults(settings),
      close: () => this.tools.toggleSettings(false),
    });
    this.onHashChange = () => {
      const id = conversationInAddress();
      if (id !== (this.conversation?.id ?? null)) (id ? this.open(id) : this.newChat());
    };
    this.bind(find);
    this.setBusy(false);
  }

  bind(find) {
    const { form, input, stop, messages, modelSelect } = this.ui;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.send();
    });
    input.addEventListener("keydown", (event) => {
      // Enter sends; Shift+Enter falls through to the textarea's own newline.
      // An IME composing Chinese also uses Enter to pick characters: leave that alone.
      if (event.key !== "Enter" || event.shiftKey || event.isComposing || event.keyCode === 229) {
        return;
      }
      event.preventDefault();
      if (this.canChange()) form.requestSubmit();
    });
    input.addEventListener("input", () => {
      this.fitInput();
      this.updateSendButton();
    });
    stop.addEventListener("click", () => this.stop());
    find(".new-chat").addEventListener("click", () => this.newChat());
    messages.addEventListener("scroll", () => {
      const gap = messages.scrollHeight - messages.scrollTop - messages.clientHeight;
      this.stickToBottom = gap < STICK_TO_BOTTOM_PX;
    });
    modelSelect.addEventListener("change", () => this.changeModel());
  }

  async start() {
    window.addEventListener("hashchange", this.onHashChange);
    const id = conversationInAddress();
    const models = this.loadModels();
    const defaults = this.loadDefaults();
    this.sidebar.reload();
    await models;
    await defaults;
    if (id) await this.open(id);
    else this.newChat();
  }

  async loadModels() {
    this.setStatus(t("status.loadingModels"));
    try {
      const models = await listModels();
      this.models = models;
      this.fillModels();
      this.setStatus(models.length ? "" : t("status.noModels"));
    } catch (error) {
      this.setStatus(t("status.modelsFailed", { message: error.message }), true);
    }
    this.element.dataset.models = "loaded";
    this.updateSendButton();
  }

  /** The picker: every served model, with its engine and context; the chosen one kept. */
  fillModels() {
    const select = this.ui.modelSelect;
    const chosen = select.value;
    select.replaceChildren(...(this.models ?? []).map((model) => new Option(modelLabel(model), model.id)));
    if (chosen) this.selectModel(chosen);
  }

  /** With several models served, the settings panel shows the defaults of the chosen one. */
  defaultsFor(model) {
    if ((this.models?.length ?? 0) < 2 || !this.models.some((m) => m.id === model)) return;
    if (model !== this.defaultsModel) this.loadDefaults(model);
  }

  /** The reply defaults in force for a model (the model's own sampling and reply cap). */
  async loadDefaults(model = this.ui.modelSelect.value) {
    this.defaultsModel = model || "";
    try {
      const defaults = await getReplyDefaults(model || undefined);
      if (this.defaultsModel === (model || "")) this.panel.setDefaults(defaults);
    } catch (error) {
      this.setStatus(t("status.error", { message: error.message }), true);
    }
  }

  async saveDefaults(settings) {
    this.panel.setDefaults(await putReplyDefaults(settings));
    return t("settings.savedDefaults");
  }

  /** What the keyboard shortcuts do on this screen (views/shortcuts.js). */
  shortcuts() {
    return {
      newChat: () => this.newChat(),
      stop: () => this.stop(),
      isStreaming: () => this.live !== null,
      focusInput: () => this.ui.input.focus(),
      copyLastAnswer: () => {
        const last = [...this.thread.entries].reverse().find((entry) => entry.reply);
        if (last) this.tools.copyText(last.reply.answer, null, "chat.copyMessage");
      },
      search: () => {
        this.tools.setDrawer(true);
        this.layout.querySelector(".conversation-search").focus();
      },
    };
  }

  destroy() {
    window.removeEventListener("hashchange", this.onHashChange);
    this.openSeq += 1;
    this.leave();
    this.sidebar.destroy();
  }

  /** Stop following the open conversation's reply; it keeps generating on the server. */
  leave() {
    if (this.live) {
      this.sidebar.setGenerating(this.live.conversationId, true);
      this.live.detach();
      this.live = null;
    }
    this.setBusy(false);
  }

  newChat() {
    this.leave();
    this.openSeq += 1;
    this.conversation = null;
    this.draft = { system_prompt: "", settings: {} };
    this.panel.load(this.draft);
    this.thread.show([]);
    setConversationInAddress(null);
    this.sidebar.select(null);
    this.showHeading();
    this.setStatus("");
    this.tools.setDrawer(false);
    this.element.dataset.conversation = "";
    this.ui.input.focus();
  }

  /** Open a stored conversation; a reply still generating in it is followed again. */
  async open(id) {
    this.leave();
    const seq = ++this.openSeq;
    this.tools.setDrawer(false);
    this.sidebar.select(id);
    setConversationInAddress(id);
    let conversation;
    try {
      conversation = await getConversation(id);
    } catch (error) {
      if (seq !== this.openSeq) return;
      if (error.status === 404) this.sidebar.remove(id);
      this.newChat();
      this.setStatus(t("status.error", { message: error.message }), true);
      return;
    }
    if (seq === this.openSeq) {
      this.show(conversation);
      this.defaultsFor(conversation.model);
    }
  }

  /** Show a conversation from the server; keepStatus leaves the status line as it is. */
  show(conversation, { keepStatus = false } = {}) {
    const { messages = [], ...fields } = conversation;
    this.conversation = fields;
    this.selectModel(fields.model);
    this.panel.load(fields);
    this.showHeading();
    const entries = [];
    let generating = null;
    for (const message of messages) {
      if (message.role === "user") {
        entries.push(this.thread.userEntry(message));
      } else if (message.role === "assistant" && message.status === "generating") {
        generating = followedReply(message.id) ?? new LiveReply(fields.id, message.id);
        entries.push(this.thread.liveReplyEntry(generating, message));
      } else if (message.role === "assistant") {
        forgetReply(message.id); // it ended while the page was away
        entries.push(this.thread.storedReplyEntry(message));
      } else if (message.role === "tool") {
        entries.push(this.thread.toolEntry(message));
      }
    }
    this.thread.show(entries);
    this.stickToBottom = true;
    this.followBottom();
    if (!keepStatus) this.setStatus("");
    this.element.dataset.conversation = fields.id;
    this.sidebar.select(fields.id);
    this.sidebar.setGenerating(fields.id, generating !== null);
    if (generating) this.follow(generating, () => generating.reattach());
  }

  async reloadShown() {
    if (!this.conversation) return;
    const seq = this.openSeq;
    try {
      const conversation = await getConversation(this.conversation.id);
      if (seq === this.openSeq && !this.live) this.show(conversation, { keepStatus: true });
    } catch (error) {
      if (seq === this.openSeq) this.setStatus(t("status.error", { message: error.message }), true);
    }
  }

  async send() {
    const text = this.ui.input.value;
    if (!this.canChange() || !text.trim()) return;
    const model = this.ui.modelSelect.value;
    if (!model) {
      this.setStatus(t("status.noModels"), true);
      return;
    }
    this.sending = true;
    this.updateSendButton();
    try {
      if (!this.conversation) {
        const created = await createConversation({ model, ...this.draft });
        this.conversation = created;
        setConversationInAddress(created.id);
        this.element.dataset.conversation = created.id;
        this.sidebar.upsert(created);
        this.sidebar.select(created.id);
      }
    } catch (error) {
      this.setStatus(t("status.error", { message: error.message }), true);
      return;
    } finally {
      this.sending = false;
      this.updateSendButton();
    }
    const { id } = this.conversation;
    const parentId = this.thread.entries.at(-1)?.message?.id ?? null;
    this.ui.input.value = "";
    this.fitInput();
    await this.startReply({
      open: (signal) => postMessage(id, { content: text, parentId }, { signal }),
      keep: this.thread.entries.length,
      userText: text,
      // Refused before anything was stored: the text goes back where it was typed.
      onRefused: () => {
        if (!this.ui.input.value) this.ui.input.value = text;
        this.fitInput();
        this.updateSendButton();
      },
    });
  }

  edit(entry, content) {
    const { id } = this.conversation;
    return this.startReply({
      open: (signal) => editMessage(id, entry.message.id, content, { signal }),
      keep: this.thread.entries.indexOf(entry),
      userText: content,
    });
  }

  regenerate(entry) {
    const { id } = this.conversation;
    return this.startReply({
      open: (signal) => regenerateReply(id, entry.message.id, { signal }),
      keep: this.thread.entries.indexOf(entry),
    });
  }

  /** Go on with a reply cut at the reply cap; what the server then holds is shown. */
  async continueReply(entry) {
    const { id } = this.conversation;
    await this.startReply({
      open: (signal) => continueReply(id, entry.message.id, { signal }),
      keep: this.thread.entries.indexOf(entry),
    });
    await this.reloadShown();
  }

  /** Show a new reply (under a new user message when userText is given) as it streams. */
  async startReply({ open, keep, userText = null, onRefused = () => {} }) {
    const live = new LiveReply(this.conversation.id);
    const entries = this.thread.entries.slice(0, keep);
    if (userText !== null) entries.push(this.thread.userEntry({ role: "user", content: userText }));
    entries.push(this.thread.liveReplyEntry(live));
    this.thread.show(entries);
    this.stickToBottom = true;
    this.followBottom();
    this.setStatus("");
    await this.follow(live, async () => {
      try {
        await live.follow(open);
      } catch (error) {
        if (!live.messageId) onRefused();
        throw error;
      }
    });
  }

  /** Follow a reply of the open conversation until it ends or the page leaves it. */
  async follow(live, run) {
    this.live = live;
    live.reply.onRendered = () => this.followBottom();
    live.hooks = {
      onStart: (data) => this.onReplyStart(live, data),
      onDone: (message) => this.onReplyEnd(live, message),
      onError: (error) => {
        this.setStatus(t("status.error", { message: error.message }), true);
        const entry = this.entryOf(live);
        const stored = error.storedMessage ?? (entry?.message && { ...entry.message, status: "error" });
        this.onReplyEnd(live, stored);
      },
    };
    this.setBusy(true);
    let failure = null;
    try {
      await run();
    } catch (error) {
      failure = error;
    }
    if (this.live !== live) return; // the page left this conversation meanwhile
    this.live = null;
    this.setBusy(false);
    if (failure && !live.messageId) {
      // Refused before it started (a reply already running, a prompt too long): show why,
      // and what the server holds now instead of the lines shown in hope.
      this.setStatus(t("status.error", { message: failure.message }), true);
      await this.reloadShown();
    } else if (!live.finished) {
      const message = failure ? failure.message : t("status.streamCut");
      live.reply.finish({ outcome: "error", errorMessage: message });
      this.setStatus(t("status.error", { message }), true);
    }
    this.followBottom();
  }

  entryOf(live) {
    return this.thread.entries.find((entry) => entry.live === live) ?? null;
  }

  onReplyStart(live, data) {
    const entries = this.thread.entries;
    const entry = this.entryOf(live);
    if (!entry) return;
    entry.message = data.assistant_message;
    this.thread.decorate(entry);
    const above = entries[entries.indexOf(entry) - 1];
    if (above && above.message.role === "user" && data.user_message && !above.editing) {
      above.message = data.user_message;
      this.thread.fillUser(above);
    }
    this.sidebar.setGenerating(live.conversationId, true);
    if (live.stopWanted) this.stop();
    this.refreshSidebarItem(live.conversationId);
  }

  onReplyEnd(live, message) {
    const entry = this.entryOf(live);
    if (entry && message) {
      entry.message = message;
      this.thread.decorate(entry);
    }
    this.sidebar.setGenerating(live.conversationId, false);
    this.refreshSidebarItem(live.conversationId);
  }

  /** Stop the reply streaming in the open conversation (on the server: it stops for good). */
  async stop() {
    const live = this.live;
    if (!live) return;
    if (!live.messageId) {
      live.stopWanted = true; // asked before the server named the reply: stop it once it does
      return;
    }
    try {
      await stopReply(live.conversationId, live.messageId);
    } catch (error) {
      this.setStatus(t("status.error", { message: error.message }), true);
    }
  }

  async switchBranch(siblingId) {
    const { id } = this.conversation;
    try {
      await updateConversation(id, { current_leaf_id: siblingId });
    } catch (error) {
      this.setStatus(t("status.error", { message: error.message }), true);
      return;
    }
    await this.reloadShown();
  }

  async refreshSidebarItem(id) {
    try {
      const { messages, ...conversation } = await getConversation(id);
      this.sidebar.upsert(conversation);
      if (this.conversation?.id === id) {
        this.conversation = { ...this.conversation, title: conversation.title };
        this.showHeading();
      }
    } catch {
      // The list is only a view; the next reload corrects it.
    }
  }

  async saveSettings(values) {
    if (!this.conversation) {
      this.draft = values;
      return t("settings.savedDraft");
    }
    // Settings are replaced whole: keep those the panel does not show (ignore_eos, say).
    const settings = { ...this.conversation.settings, ...values.settings };
    const updated = await updateConversation(this.conversation.id, { ...values, settings });
    this.conversation = { ...this.conversation, ...updated };
    return t("settings.saved");
  }

  async changeModel() {
    const model = this.ui.modelSelect.value;
    this.defaultsFor(model);
    if (!this.conversation || !model) return;
    try {
      const updated = await updateConversation(this.conversation.id, { model });
      this.conversation = { ...this.conversation, ...updated };
    } catch (error) {
      this.setStatus(t("status.error", { message: error.message }), true);
    }
  }

  selectModel(model) {
    const select = this.ui.modelSelect;
    if (!model) return;
    if (![...select.options].some((option) => option.value === model)) {
      // A model this server no longer serves: shown, so the user sees why sending fails.
      select.append(new Option(t("chat.modelGone", { model }), model));
    }
    select.value = model;
  }

  showHeading() {
    const title = this.conversation ? this.conversation.title || t("history.untitled") : "";
    this.ui.heading.textContent = title || t("header.newChat"); // a title is text, never HTML
    this.ui.exportMenu.hidden = !this.conversation;
  }

  canChange() {
    return !this.live && !this.sending;
  }

  followBottom() {
    const { messages } = this.ui;
    if (this.stickToBottom) messages.scrollTop = messages.scrollHeight;
  }

  setBusy(busy) {
    this.element.dataset.state = busy ? "streaming" : "idle";
    this.ui.stop.hidden = !busy;
    this.ui.send.hidden = busy;
    this.updateSendButton();
  }

  updateSendButton() {
    this.ui.send.disabled = !this.canChange() || this.ui.input.value.trim() === "";
  }

  fitInput() {
    // Set through CSSOM, which the page's CSP allows (style attributes in HTML it does not).
    const { input } = this.ui;
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight, MAX_INPUT_HEIGHT_PX)}px`;
  }

  setStatus(message, isError = false) {
    this.ui.status.textContent = message;
    this.ui.status.classList.toggle("error", isError);
  }

  relabel() {
    this.fillModels();
    this.thread.relabel();
    this.sidebar.relabel();
    this.panel.relabel();
    this.showHeading();
  }
}
