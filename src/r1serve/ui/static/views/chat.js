// The chat screen: model picker, conversation, composer, Stop and New chat.

import { listModels, streamChat } from "../api.js";
import { applyTranslations, onLanguageChange, t } from "../i18n.js";
import { AssistantReply } from "./reply.js";

const MAX_INPUT_HEIGHT_PX = 240;
const STICK_TO_BOTTOM_PX = 48;

/** Build the chat view from its <template>; returns { element, mount, unmount }. */
export function createChatView() {
  const template = document.getElementById("chat-view-template");
  const element = template.content.firstElementChild.cloneNode(true);
  const ui = {
    modelSelect: element.querySelector(".model-select"),
    newChat: element.querySelector(".new-chat"),
    messages: element.querySelector(".messages"),
    emptyHint: element.querySelector(".empty-hint"),
    form: element.querySelector(".composer"),
    input: element.querySelector(".composer-input"),
    send: element.querySelector(".send"),
    stop: element.querySelector(".stop"),
    status: element.querySelector(".status"),
  };
  const chat = new ChatController(element, ui);
  let unsubscribe = () => {};
  return {
    element,
    mount() {
      applyTranslations(element);
      unsubscribe = onLanguageChange(() => chat.relabel());
      chat.start();
    },
    unmount() {
      unsubscribe();
      chat.stop();
    },
  };
}

class ChatController {
  constructor(element, ui) {
    this.element = element;
    this.ui = ui;
    this.turns = []; // { user, reply: AssistantReply, outcome }
    this.controller = null;
    this.stickToBottom = true;
    this.bind();
    this.setBusy(false);
  }

  bind() {
    const { form, input, stop, newChat, messages } = this.ui;
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
      if (!this.controller) form.requestSubmit();
    });
    input.addEventListener("input", () => {
      this.fitInput();
      this.updateSendButton();
    });
    stop.addEventListener("click", () => this.stop());
    newChat.addEventListener("click", () => this.newChat());
    messages.addEventListener("scroll", () => {
      const gap = messages.scrollHeight - messages.scrollTop - messages.clientHeight;
      this.stickToBottom = gap < STICK_TO_BOTTOM_PX;
    });
    messages.addEventListener("click", (event) => this.copyCode(event));
  }

  async start() {
    this.setStatus(t("status.loadingModels"));
    try {
      const models = await listModels();
      this.ui.modelSelect.replaceChildren(
        ...models.map((id) => new Option(id, id)),
      );
      this.setStatus(models.length ? "" : t("status.noModels"));
    } catch (error) {
      this.setStatus(t("status.modelsFailed", { message: error.message }), true);
    }
    this.element.dataset.models = "loaded";
    this.updateSendButton();
    this.ui.input.focus();
  }

  /** Abort the running generation: the fetch closes, and the server cancels on disconnect. */
  stop() {
    if (this.controller) this.controller.abort();
  }

  newChat() {
    this.stop();
    this.turns = [];
    this.ui.messages.replaceChildren(this.ui.emptyHint);
    this.setStatus("");
    this.ui.input.focus();
  }

  /** What the server gets: user turns and the answers before them, never the reasoning. */
  history() {
    const messages = [];
    for (const turn of this.turns) {
      // A turn that ended without any answer (stopped early, failed) is left out entirely,
      // so the next request does not carry an unanswered question.
      if (!turn.reply.answer) continue;
      messages.push({ role: "user", content: turn.user });
      messages.push({ role: "assistant", content: turn.reply.answer });
    }
    return messages;
  }

  async send() {
    const text = this.ui.input.value;
    const model = this.ui.modelSelect.value;
    if (this.controller || !text.trim()) return;
    if (!model) {
      this.setStatus(t("status.noModels"), true);
      return;
    }
    const messages = [...this.history(), { role: "user", content: text }];
    const reply = new AssistantReply({ onRendered: () => this.followBottom() });
    const turn = { user: text, reply };
    this.turns.push(turn);
    this.showTurn(turn);
    this.ui.input.value = "";
    this.fitInput();
    this.setStatus("");
    const controller = new AbortController();
    this.controller = controller;
    this.setBusy(true);
    try {
      const result = await this.readStream(reply, { model, messages, signal: controller.signal });
      reply.finish({ outcome: "done", ...result });
    } catch (error) {
      if (error.name === "AbortError") {
        reply.finish({ outcome: "stopped" });
      } else {
        const message = error.name === "ApiError" ? error.message : networkMessage(error);
        reply.finish({ outcome: "error", errorMessage: message });
        this.setStatus(t("status.error", { message }), true);
      }
    } finally {
      if (this.controller === controller) this.controller = null;
      this.setBusy(false);
      this.followBottom();
    }
  }

  async readStream(reply, request) {
    let usage = null;
    let finishReason = null;
    for await (const chunk of streamChat(request)) {
      if (chunk.usage) usage = chunk.usage;
      const choice = chunk.choices && chunk.choices[0];
      if (!choice) continue;
      const delta = choice.delta || {};
      // The server sends the same text as reasoning_content and reasoning; read one.
      reply.addReasoning(delta.reasoning_content ?? delta.reasoning);
      reply.addAnswer(delta.content);
      if (choice.finish_reason) finishReason = choice.finish_reason;
    }
    return { usage, finishReason };
  }

  showTurn(turn) {
    this.ui.emptyHint.remove();
    const user = document.createElement("article");
    user.className = "message user";
    const bubble = document.createElement("div");
    bubble.className = "user-text";
    bubble.textContent = turn.user; // the user's own text, shown as typed, never parsed
    user.append(bubble);
    this.ui.messages.append(user, turn.reply.element);
    this.stickToBottom = true;
    this.followBottom();
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
    const ready = !this.controller && this.ui.input.value.trim() !== "";
    this.ui.send.disabled = !ready;
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
    for (const turn of this.turns) turn.reply.relabel();
  }

  async copyCode(event) {
    const button = event.target.closest(".copy-code");
    if (!button) return;
    const code = button.closest(".code-block")?.querySelector("pre");
    if (!code) return;
    try {
      await navigator.clipboard.writeText(code.textContent);
      button.textContent = t("chat.copied");
      window.setTimeout(() => {
        button.textContent = t("chat.copy");
      }, 1500);
    } catch (error) {
      this.setStatus(t("status.error", { message: error.message }), true);
    }
  }
}

function networkMessage(error) {
  return t("status.networkError", { message: error.message || String(error) });
}
