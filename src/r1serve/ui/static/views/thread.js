// The open conversation's current branch: user messages, replies, and the actions under each
// (copy, edit, regenerate, and ‹ 2/3 › arrows between the versions of a message).
//
// An entry is { message, element, reply? }: message is the stored Message (null until the
// server has named it), element what the page shows. User text is only ever set as text.

import { t } from "../i18n.js";
import { h } from "./dom.js";
import { AssistantReply, prettyJson } from "./reply.js";

/** A button showing only an icon; its label is for screen readers and the tooltip. */
export function iconButton(classes, labelKey, onclick) {
  const label = t(labelKey);
  return h("button", {
    type: "button",
    class: `icon-button ${classes}`,
    "aria-label": label,
    title: label,
    dataset: { label: labelKey },
    onclick,
  });
}

/**
 * Renders entries into container; actions: copy, edit, regenerate, continueReply,
 * switchBranch, canChange.
 */
export class Thread {
  constructor(container, emptyHint, actions) {
    this.container = container;
    this.emptyHint = emptyHint;
    this.actions = actions;
    this.entries = [];
  }

  /** An entry for a user message (message may be a pending { content } without an id). */
  userEntry(message) {
    const element = h("article", { class: "message user" });
    const entry = { message, element, editing: false };
    this.fillUser(entry);
    return entry;
  }

  /** An entry for a tool result: a folded block with the call it answers and the result. */
  toolEntry(message) {
    const summary = h("summary");
    const body = h("pre", { class: "tool-output" });
    body.textContent = prettyJson(message.content); // text only, never markup
    const element = h(
      "article",
      { class: "message tool", dataset: { id: message.id ?? "" } },
      h("details", { class: "tool-result" }, summary, body),
    );
    const entry = { message, element, summary };
    this.labelTool(entry);
    return entry;
  }

  labelTool(entry) {
    entry.summary.textContent = t("chat.toolResult", { id: String(entry.message.tool_call_id ?? "") });
  }

  /** An entry for a stored reply that is no longer generating. */
  storedReplyEntry(message) {
    const reply = new AssistantReply();
    reply.showStored(message);
    const entry = { message, element: reply.element, reply };
    this.decorate(entry);
    return entry;
  }

  /** An entry for a reply being streamed by a LiveReply. */
  liveReplyEntry(live, message = null) {
    const entry = { message, element: live.reply.element, reply: live.reply, live };
    this.decorate(entry);
    return entry;
  }

  /** Show these entries, in order, in place of what was shown. */
  show(entries) {
    this.entries = entries;
    if (entries.length) this.container.replaceChildren(...entries.map((entry) => entry.element));
    else this.container.replaceChildren(this.emptyHint);
  }

  /** (Re)build the actions under an entry, after its message changed. */
  decorate(entry) {
    entry.element.querySelector(":scope > .message-actions")?.remove();
    const { message } = entry;
    entry.element.dataset.id = message?.id ?? "";
    // A reply still streaming gets its actions when it ends.
    if (!message || !message.id || (entry.live && !entry.live.finished)) return;
    const isUser = message.role === "user";
    const bar = h("div", { class: "message-actions" });
    const siblings = message.siblings;
    if (siblings && siblings.count > 1 && Array.isArray(siblings.ids)) bar.append(this.branchNav(entry));
    bar.append(
      iconButton("copy-message icon-copy", "chat.copyMessage", (event) => this.copy(entry, event)),
    );
    if (isUser) {
      bar.append(iconButton("edit-message icon-edit needs-idle", "chat.edit", () => this.startEdit(entry)));
    } else {
      bar.append(
        iconButton(
          "regenerate icon-regenerate needs-idle",
          "chat.regenerate",
          () => this.actions.canChange() && this.actions.regenerate(entry),
        ),
      );
      if (message.finish_reason === "length" && message.status === "complete") {
        // Cut at the reply cap: the model may go on from where it stopped.
        bar.append(
          h(
            "button",
            {
              type: "button",
              class: "continue-reply needs-idle",
              onclick: () => this.actions.canChange() && this.actions.continueReply(entry),
            },
            t("chat.continue"),
          ),
        );
      }
    }
    entry.element.append(bar);
  }

  branchNav(entry) {
    const { ids } = entry.message.siblings;
    let index = ids.indexOf(entry.message.id);
    if (index < 0) index = Number(entry.message.siblings.index) || 0;
    const go = (step) => {
      const target = ids[index + step];
      if (target && this.actions.canChange()) this.actions.switchBranch(entry, target);
    };
    return h(
      "span",
      { class: "branch-nav" },
      h(
        "button",
        {
          type: "button",
          class: "branch-prev needs-idle",
          "aria-label": t("chat.previousVersion"),
          title: t("chat.previousVersion"),
          disabled: index <= 0,
          onclick: () => go(-1),
        },
        "‹",
      ),
      h("span", { class: "branch-position" }, `${index + 1}/${ids.length}`),
      h(
        "button",
        {
          type: "button",
          class: "branch-next needs-idle",
          "aria-label": t("chat.nextVersion"),
          title: t("chat.nextVersion"),
          disabled: index >= ids.length - 1,
          onclick: () => go(1),
        },
        "›",
      ),
    );
  }

  fillUser(entry) {
    const text = h("div", { class: "user-text" });
    text.textContent = entry.message.content; // the user's own text, shown as typed, never parsed
    entry.element.replaceChildren(text);
    entry.editing = false;
    this.decorate(entry);
  }

  startEdit(entry) {
    if (entry.editing || !this.actions.canChange()) return;
    entry.editing = true;
    const input = h("textarea", {
      class: "edit-input",
      rows: "3",
      "aria-label": t("chat.edit"),
    });
    input.value = entry.message.content;
    const send = () => {
      const content = input.value;
      if (content.trim() && this.actions.canChange()) this.actions.edit(entry, content);
    };
    // A plain box, not a <form>: nothing in the conversation area is ever a form.
    const box = h(
      "div",
      { class: "edit-form" },
      input,
      h(
        "div",
        { class: "edit-buttons" },
        h("button", { type: "button", class: "edit-cancel", onclick: () => this.fillUser(entry) },
          t("chat.cancel")),
        h("button", { type: "button", class: "edit-send", onclick: send }, t("chat.editSend")),
      ),
    );
    input.addEventListener("keydown", (event) => {
      if (event.key === "Escape") this.fillUser(entry);
      // Enter makes a new line here; Ctrl+Enter (or Cmd+Enter) sends.
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !event.isComposing) send();
    });
    entry.element.replaceChildren(box);
    input.focus();
  }

  copy(entry, event) {
    const text = entry.message.role === "user" ? entry.message.content : entry.reply.answer;
    this.actions.copy(text, event.currentTarget, "chat.copyMessage");
  }

  /** Re-write language-dependent texts of every entry. */
  relabel() {
    for (const entry of this.entries) {
      if (entry.message?.role === "tool") {
        this.labelTool(entry);
        continue;
      }
      entry.reply?.relabel();
      if (!entry.editing) this.decorate(entry);
    }
  }
}
