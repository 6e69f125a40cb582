// The server's API as the page uses it: JSON calls, raw fetches for streams and downloads, SSE.
//
// The login cookie is HttpOnly; changes made with it carry the CSRF token the server gave at
// login (or from /api/auth/me). A 401 from any call tells the listeners (app.js shows login).

import { t } from "./i18n.js";

let csrfToken = null;
const unauthorizedListeners = new Set();

/** The CSRF token of the current web session (null when logged out or in local mode). */
export function setCsrfToken(token) {
  csrfToken = token || null;
}

/** Call listener() whenever the server answers 401; returns an unsubscribe function. */
export function onUnauthorized(listener) {
  unauthorizedListeners.add(listener);
  return () => unauthorizedListeners.delete(listener);
}

function changeHeaders(method) {
  return method !== "GET" && csrfToken ? { "X-CSRF-Token": csrfToken } : {};
}

/** A JSON call to the server; the parsed reply (null for 204), or an ApiError. */
export async function apiJson(method, path, body = undefined, { signal } = {}) {
  const headers = { Accept: "application/json", ...changeHeaders(method) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    signal,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw await errorFromResponse(response);
  return response.status === 204 ? null : response.json();
}

/** An error the server reported (HTTP status + OpenAI error body, or an error event). */
export class ApiError extends Error {
  constructor(message, { status = null, type = null, code = null, param = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.type = type;
    this.code = code;
    this.param = param;
  }
}

/** The models the server serves, in its order: { id, engine, contextLength }. */
export async function listModels({ signal } = {}) {
  const response = await fetch("/v1/models", { signal, headers: { Accept: "application/json" } });
  if (!response.ok) throw await errorFromResponse(response);
  const body = await response.json();
  return (body.data || []).map((model) => ({
    id: String(model.id),
    engine: model.engine ? String(model.engine) : "",
    contextLength: Number(model.max_model_len) || null,
  }));
}

/**
 * A fetch with the session's CSRF header on changes; the Response when it is 2xx, else an
 * ApiError. For streams and downloads, which apiJson does not read.
 */
export async function apiFetch(method, path, { body, rawJson, headers = {}, signal } = {}) {
  const allHeaders = { ...changeHeaders(method), ...headers };
  if (body !== undefined || rawJson !== undefined) allHeaders["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    signal,
    headers: allHeaders,
    // rawJson: JSON text sent as it is (a file the user chose), never re-encoded.
    body: rawJson !== undefined ? rawJson : body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw await errorFromResponse(response);
  return response;
}

/**
 * Each server-sent event in body as { id, event, data } (multi-line data joined with "\n";
 * event is "message" when the server names none, id null when it gives none).
 */
export async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let fields = { id: null, event: "message", data: [] };
  const dispatch = () => {
    const ready = fields.data.length ? { ...fields, data: fields.data.join("\n") } : null;
    fields = { id: null, event: "message", data: [] };
    return ready;
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        let line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        if (line.endsWith("\r")) line = line.slice(0, -1);
        if (line === "") {
          const ready = dispatch();
          if (ready) yield ready;
          continue;
        }
        const colon = line.indexOf(":");
        if (colon === 0) continue; // a comment: the server's keep-alive
        const name = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (name === "data") fields.data.push(value);
        else if (name === "event") fields.event = value || "message";
        else if (name === "id") fields.id = value;
      }
    }
    const ready = dispatch();
    if (ready) yield ready;
  } finally {
    // Leaving early (the consumer stopped) must close the connection, not leave it draining.
    reader.cancel().catch(() => {});
  }
}

/** The error a JSON body describes ({"error": {...}}), as an ApiError. */
export function errorFromBody(body, status = null) {
  const error = body && typeof body.error === "object" && body.error ? body.error : null;
  const message =
    error && error.message ? String(error.message) : t("status.httpError", { status });
  return new ApiError(message, {
    status,
    type: error ? error.type : null,
    code: error ? error.code : null,
    param: error ? error.param : null,
  });
}

async function errorFromResponse(response) {
  // Not for the login call itself: a wrong password is not a lost session.
  if (response.status === 401 && !response.url.endsWith("/api/auth/login")) {
    for (const listener of unauthorizedListeners) listener();
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON (a proxy's HTML page, say): fall back to the status line.
  }
  return errorFromBody(body, response.status);
}
