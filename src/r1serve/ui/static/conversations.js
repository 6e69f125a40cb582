// The conversation-history API (/api/conversations) as the page uses it.
//
// Replies come back as SSE streams: an `event: start` naming the stored messages, default events
// carrying chat.completion.chunk objects, then `event: done` or `event: error`, then [DONE].
// Every event has an id, so a reader that left can come back with Last-Event-ID.

import { ApiError, apiFetch, apiJson, errorFromBody, sseEvents } from "./api.js";
import { t } from "./i18n.js";

const BASE = "/api/conversations";
const SSE_HEADERS = { Accept: "text/event-stream" };

function conversationPath(id) {
  return `${BASE}/${encodeURIComponent(id)}`;
}

function messagePath(conversationId, messageId) {
  return `${conversationPath(conversationId)}/messages/${encodeURIComponent(messageId)}`;
}

/** One page of the caller's conversations, newest first: { data, next_before }. */
export function listConversations({ limit = 30, before = null, query = "" } = {}) {
  const params = new URLSearchParams({ limit: String(limit) });
  if (before) params.set("before", before);
  if (query) params.set("q", query);
  return apiJson("GET", `${BASE}?${params}`);
}

/** A conversation with the messages of its current branch (root to leaf). */
export function getConversation(id, { signal } = {}) {
  return apiJson("GET", conversationPath(id), undefined, { signal });
}

/** Create an empty conversation: { title?, system_prompt?, model?, settings? }. */
export function createConversation(fields) {
  return apiJson("POST", BASE, fields);
}

/** Change title, system prompt, model, settings or the current branch (current_leaf_id). */
export function updateConversation(id, changes) {
  return apiJson("PATCH", conversationPath(id), changes);
}

export function deleteConversation(id) {
  return apiJson("DELETE", conversationPath(id));
}

/** Post a user message; resolves to the reply stream's Response. */
export function postMessage(conversationId, { content, parentId = null }, { signal } = {}) {
  const body = { content };
  if (parentId) body.parent_id = parentId;
  return apiFetch("POST", `${conversationPath(conversationId)}/messages`, {
    body,
    headers: SSE_HEADERS,
    signal,
  });
}

/** A new reply to the user message above assistant message messageId. */
export function regenerateReply(conversationId, messageId, { signal } = {}) {
  return apiFetch("POST", `${messagePath(conversationId, messageId)}/regenerate`, {
    headers: SSE_HEADERS,
    signal,
  });
}

/** More of assistant message messageId, which ended at the reply cap (finish_reason "length"). */
export function continueReply(conversationId, messageId, { signal } = {}) {
  return apiFetch("POST", `${messagePath(conversationId, messageId)}/continue`, {
    headers: SSE_HEADERS,
    signal,
  });
}

/** The caller's reply defaults and each setting's value in force, with its source, for a
 * served model (default: the server's default model). */
export function getReplyDefaults(model) {
  const query = model ? `?model=${encodeURIComponent(model)}` : "";
  return apiJson("GET", `/api/me/reply-defaults${query}`);
}

/** Replace the caller's reply defaults. */
export function putReplyDefaults(settings) {
  return apiJson("PUT", "/api/me/reply-defaults", settings);
}

/** A new version of user message messageId, and a reply to it. */
export function editMessage(conversationId, messageId, content, { signal } = {}) {
  return apiFetch("POST", `${messagePath(conversationId, messageId)}/edit`, {
    body: { content },
    headers: SSE_HEADERS,
    signal,
  });
}

/** Read a reply again: the events after lastEventId (all when null), then live ones. */
export function reattachReply(conversationId, messageId, lastEventId, { signal } = {}) {
  const headers = { ...SSE_HEADERS };
  if (lastEventId !== null && lastEventId !== undefined) headers["Last-Event-ID"] = lastEventId;
  return apiFetch("GET", `${messagePath(conversationId, messageId)}/stream`, { headers, signal });
}

/** Stop a generating reply; resolves to the stopped Message. */
export function stopReply(conversationId, messageId) {
  return apiJson("POST", `${messagePath(conversationId, messageId)}/stop`);
}

/** The export URL of one conversation (id) or of all of them (id null). */
export function exportPath(id, format) {
  const base = id ? `${conversationPath(id)}/export` : `${BASE}/export`;
  return `${base}?format=${encodeURIComponent(format)}`;
}

/** Import the text of a JSON export (one conversation or many); resolves to { imported }. */
export async function importConversations(text) {
  const response = await apiFetch("POST", `${BASE}/import`, {
    rawJson: text,
    headers: { Accept: "application/json" },
  });
  return response.json();
}

/**
 * The events of a reply stream, parsed: { type: "start" | "chunk" | "done" | "error", id, data }.
 * Ends at `data: [DONE]`; a stream that closes before it throws "streamCut".
 */
export async function* replyEvents(response) {
  if (!response.body) throw new ApiError(t("status.badStream"));
  for await (const { id, event, data } of sseEvents(response.body)) {
    if (data === "[DONE]") return;
    let parsed;
    try {
      parsed = JSON.parse(data);
    } catch {
      throw new ApiError(t("status.badStream"));
    }
    if (event === "start" || event === "done") {
      yield { type: event, id, data: parsed };
    } else if (event === "error" || (parsed && parsed.error)) {
      const error = errorFromBody(parsed, null);
      error.storedMessage = parsed && parsed.message ? parsed.message : null; // the reply as saved
      yield { type: "error", id, data: error };
    } else {
      yield { type: "chunk", id, data: parsed };
    }
  }
  throw new ApiError(t("status.streamCut"), { code: "stream_cut" });
}
