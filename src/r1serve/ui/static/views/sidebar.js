// The sidebar: the user's conversations by date, search, rename, delete, more on scroll.
//
// Titles are untrusted (they come from what was typed, or from an import): they are only ever
// set as text. Deleting asks once more in place; the page never opens a native dialog.

import { deleteConversation, listConversations, updateConversation } from "../conversations.js";
import { t } from "../i18n.js";
import { confirmButton, h } from "./dom.js";

const PAGE_SIZE = 30;
const SEARCH_DELAY_MS = 250;
const GROUPS = ["today", "yesterday", "week", "older"];

/** Which date group a conversation updated at `value` falls in, seen at `now` (local time). */
export function dateGroup(value, now = new Date()) {
  const time = new Date(value).getTime();
  const midnight = (daysBack) =>
    new Date(now.getFullYear(), now.getMonth(), now.getDate() - daysBack).getTime();
  if (Number.isNaN(time) || time >= midnight(0)) return "today";
  if (time >= midnight(1)) return "yesterday";
  if (time >= midnight(7)) return "week";
  return "older";
}

function timeOf(value) {
  const time = new Date(value).getTime();
  return Number.isNaN(time) ? 0 : time;
}

/** The conversation list in root; handlers: onOpen(id), onDeleted(id), onError(message). */
export class ConversationList {
  constructor(root, handlers) {
    this.handlers = handlers;
    this.search = root.querySelector(".conversation-search");
    this.scroller = root.querySelector(".conversation-scroller");
    this.groups = root.querySelector(".conversation-groups");
    this.more = root.querySelector(".conversation-more");
    this.items = [];
    this.nextBefore = null;
    this.query = "";
    this.currentId = null;
    this.generating = new Set();
    this.generation = 0; // bumps on every fresh load, so a stale page is dropped
    this.loading = false;
    this.searchTimer = 0;
    this.observer = new IntersectionObserver((entries) => this.onSentinel(entries), {
      root: this.scroller,
      rootMargin: "0px 0px 120px 0px",
    });
    this.search.addEventListener("input", () => {
      window.clearTimeout(this.searchTimer);
      this.searchTimer = window.setTimeout(() => this.reload(), SEARCH_DELAY_MS);
    });
  }

  /** Load the first page (for the current search). */
  async reload() {
    this.generation += 1;
    this.query = this.search.value.trim();
    this.items = [];
    this.nextBefore = null;
    this.loading = false;
    this.groups.dataset.state = "loading";
    await this.loadPage(null);
  }

  async loadMore() {
    if (this.loading || !this.nextBefore) return;
    await this.loadPage(this.nextBefore);
  }

  async loadPage(before) {
    const generation = this.generation;
    this.loading = true;
    try {
      const page = await listConversations({ limit: PAGE_SIZE, before, query: this.query });
      if (generation !== this.generation) return;
      const known = new Set(this.items.map((item) => item.id));
      this.items.push(...page.data.filter((item) => !known.has(item.id)));
      this.nextBefore = page.next_before || null;
      for (const item of page.data) this.noteActivity(item);
    } catch (error) {
      if (generation === this.generation) this.handlers.onError(error.message);
    } finally {
      if (generation === this.generation) {
        this.loading = false;
        this.render();
        this.groups.dataset.state = "loaded";
        // Observing anew reports the sentinel at once: a short page that leaves it in view
        // loads the next one without waiting for a scroll.
        this.observer.unobserve(this.more);
        if (this.nextBefore) this.observer.observe(this.more);
      }
    }
  }

  onSentinel(entries) {
    if (entries.some((entry) => entry.isIntersecting)) this.loadMore();
  }

  /** Put a new or changed conversation where it belongs (newest first). */
  upsert(conversation) {
    this.noteActivity(conversation);
    const index = this.items.findIndex((item) => item.id === conversation.id);
    if (index >= 0) this.items.splice(index, 1);
    else if (this.query) return; // not known to match the search
    this.items.unshift(conversation);
    this.items.sort((a, b) => timeOf(b.updated_at) - timeOf(a.updated_at));
    this.render();
  }

  remove(id) {
    this.items = this.items.filter((item) => item.id !== id);
    this.render();
  }

  /** Mark the open conversation (null: a new chat not yet sent). */
  select(id) {
    this.currentId = id;
    for (const item of this.groups.querySelectorAll(".conversation-item")) {
      const current = item.dataset.id === id;
      item.classList.toggle("current", current);
      if (current) item.setAttribute("aria-current", "page");
      else item.removeAttribute("aria-current");
    }
  }

  /** Show or clear the "generating" mark of a conversation. */
  setGenerating(id, generating) {
    if (generating) this.generating.add(id);
    else this.generating.delete(id);
    const item = this.itemElement(id);
    if (item) item.classList.toggle("generating", generating);
  }

  noteActivity(conversation) {
    const active = conversation.active_reply;
    if (active && active.status === "generating") this.generating.add(conversation.id);
    else if (active === null) this.generating.delete(conversation.id);
  }

  itemElement(id) {
    return [...this.groups.querySelectorAll(".conversation-item")].find(
      (item) => item.dataset.id === id,
    );
  }

  render() {
    const now = new Date();
    const byGroup = new Map(GROUPS.map((group) => [group, []]));
    for (const item of this.items) byGroup.get(dateGroup(item.updated_at, now)).push(item);
    const sections = GROUPS.filter((group) => byGroup.get(group).length).map((group) =>
      h(
        "section",
        { class: "conversation-group", dataset: { group } },
        h("h2", { class: "conversation-group-title" }, t(`history.group.${group}`)),
        h("ul", { class: "conversation-items" }, byGroup.get(group).map((c) => this.renderItem(c))),
      ),
    );
    const empty = this.items.length
      ? null
      : h("p", { class: "conversation-empty" }, t(this.query ? "history.noMatch" : "history.none"));
    this.groups.replaceChildren(...sections, ...(empty ? [empty] : []));
    this.select(this.currentId);
  }

  renderItem(conversation) {
    const title = conversation.title || t("history.untitled");
    const item = h(
      "li",
      {
        class: this.generating.has(conversation.id) ? "conversation-item generating" : "conversation-item",
        dataset: { id: conversation.id },
      },
      h(
        "button",
        {
          type: "button",
          class: "conversation-open",
          title,
          onclick: () => this.handlers.onOpen(conversation.id),
        },
        h("span", { class: "conversation-title" }, title),
        h("span", { class: "generating-mark", title: t("history.generating") }),
      ),
    );
    const rename = h(
      "button",
      { type: "button", class: "rename-conversation", onclick: () => this.startRename(conversation, item) },
      t("history.rename"),
    );
    const remove = confirmButton(
      t("history.delete"),
      t("history.confirmDelete"),
      () => this.delete(conversation),
      { class: "delete-conversation" },
    );
    const menu = h(
      "details",
      { class: "menu item-menu conversation-actions" },
      h("summary", {
        class: "icon-button icon-more",
        "aria-label": t("history.itemActions"),
        title: t("history.itemActions"),
      }),
      h("div", { class: "menu-items" }, rename, remove),
    );
    item.append(menu);
    return item;
  }

  startRename(conversation, item) {
    const input = h("input", {
      type: "text",
      class: "rename-input",
      maxlength: "200",
      "aria-label": t("history.rename"),
    });
    input.value = conversation.title || "";
    let done = false;
    const finish = async (save) => {
      if (done) return;
      done = true;
      const title = input.value.trim();
      if (save && title && title !== conversation.title) {
        try {
          this.upsert(await updateConversation(conversation.id, { title }));
          return;
        } catch (error) {
          this.handlers.onError(error.message);
        }
      }
      this.render();
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.isComposing) {
        event.preventDefault();
        finish(true);
      } else if (event.key === "Escape") {
        finish(false);
      }
    });
    input.addEventListener("blur", () => finish(true));
    item.replaceChildren(input);
    input.focus();
    input.select();
  }

  async delete(conversation) {
    try {
      await deleteConversation(conversation.id);
    } catch (error) {
      this.handlers.onError(error.message);
      return;
    }
    this.remove(conversation.id);
    this.handlers.onDeleted(conversation.id);
  }

  relabel() {
    this.render();
  }

  destroy() {
    this.generation += 1;
    window.clearTimeout(this.searchTimer);
    this.observer.disconnect();
  }
}
