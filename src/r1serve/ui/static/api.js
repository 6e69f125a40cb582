// The server's API as the page uses it: the OpenAI-compatible routes and the account routes.
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

/** Ids of the models the server serves, in its order. */
export async function listModels({ signal } = {}) {
  const response = await fetch("/v1/models", { signal, headers: { Accept: "application/json" } });
  if (!response.ok) throw await errorFromResponse(response);
  const body = await response.json();
  return (body.data || []).map((model) => String(model.id));
}

/**
 * Stream a chat completion: yields each parsed chunk of the SSE stream until `data: [DONE]`.
 * Aborting `signal` cancels the request, which makes the server stop generating.
 */
export async function* streamChat({ model, messages, signal }) {
  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    signal,
    headers: {
      "Content-Type": "application/json",
      Accept: "text/event-stream",
      ...changeHeaders("POST"),
    },
    body: JSON.stringify({
      model,
      messages,
      stream: true,
      stream_options: { include_usage: true },
    }),
  });
  if (!response.ok) throw await errorFromResponse(response);
  if (!response.body) throw new ApiError(t("status.badStream"));
  for await (const data of sseData(response.body)) {
    if (data === "[DONE]") return;
    let chunk;
    try {
      chunk = JSON.parse(data);
    } catch {
      throw new ApiError(t("status.badStream"));
    }
    if (chunk && chunk.error) throw errorFromBody(chunk, null);
    yield chunk;
  }
  throw new ApiError(t("status.streamCut"));
}

/** The data of each server-sent event in body (multi-line data joined with "\n"). */
export async function* sseData(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let dataLines = [];
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
          if (dataLines.length) yield dataLines.join("\n");
          dataLines = [];
        } else if (line.startsWith("data:")) {
          const rest = line.slice(5);
          dataLines.push(rest.startsWith(" ") ? rest.slice(1) : rest);
        }
        // Comments (":" keep-alives) and event/id/retry fields carry nothing the page uses.
      }
    }
    if (dataLines.length) yield dataLines.join("\n");
  } finally {
    // Leaving early (the consumer stopped) must close the connection, not leave it draining.
    reader.cancel().catch(() => {});
  }
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

function errorFromBody(body, status) {
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
