// One assistant reply, streaming or stored: a folding "thinking" block and the markdown answer.

import { renderMarkdown } from "../markdown.js";
import { t } from "../i18n.js";

const CLOCK_INTERVAL_MS = 100;

// How a stored message's status shows: the outcome finish() takes.
const OUTCOME_OF_STATUS = {
  complete: "done",
  stopped: "stopped",
  incomplete: "incomplete",
  error: "error",
};

/** The DOM and state of one assistant message; feed it deltas, then finish() it. */
export class AssistantReply {
  constructor({ onRendered = () => {} } = {}) {
    this.reasoning = "";
    this.answer = "";
    this.onRendered = onRendered;
    this.frame = 0;
    this.dirty = { reasoning: false, answer: false };
    this.thinkingStartedAt = null;
    this.thinkingEndedAt = null;
    this.clock = 0;
    this.firstTokenAt = null;
    this.lastTokenAt = null;
    this.outcome = null;
    this.storedThinkingSeconds = null;
    // False for a reply first seen mid-way (a reload): its replayed start says nothing of speed.
    this.liveTiming = true;

    this.element = document.createElement("article");
    this.element.className = "message assistant";
    this.element.dataset.state = "streaming";

    this.thinking = document.createElement("details");
    this.thinking.className = "thinking";
    this.thinking.hidden = true;
    this.thinkingLabel = document.createElement("summary");
    this.thinkingBody = document.createElement("div");
    this.thinkingBody.className = "thinking-body markdown";
    this.thinking.append(this.thinkingLabel, this.thinkingBody);

    this.answerElement = document.createElement("div");
    this.answerElement.className = "answer markdown";

    this.calls = document.createElement("div");
    this.calls.className = "tool-calls";
    this.calls.hidden = true;
    this.toolCalls = [];

    this.meta = document.createElement("p");
    this.meta.className = "message-meta";

    this.element.append(this.thinking, this.answerElement, this.calls, this.meta);
  }

  /** Show a stored reply's tool calls: one folded block each, its name and arguments. */
  showToolCalls(calls) {
    this.toolCalls = Array.isArray(calls) ? calls : [];
    this.calls.replaceChildren(
      ...this.toolCalls.map((call) => {
        const block = document.createElement("details");
        block.className = "tool-call";
        const summary = document.createElement("summary");
        const body = document.createElement("pre");
        body.className = "tool-arguments";
        body.textContent = prettyJson(call?.function?.arguments); // text only, never markup
        block.append(summary, body);
        return block;
      }),
    );
    this.calls.hidden = this.toolCalls.length === 0;
    this.relabel();
  }

  /** Add reasoning text; the thinking block opens and its clock starts on the first piece. */
  addReasoning(text) {
    if (!text) return;
    this.noteToken();
    if (this.thinkingStartedAt === null) {
      this.thinkingStartedAt = performance.now();
      this.thinking.hidden = false;
      this.thinking.open = true;
      this.clock = window.setInterval(() => this.relabel(), CLOCK_INTERVAL_MS);
      this.relabel();
    }
    this.reasoning += text;
    this.dirty.reasoning = true;
    this.scheduleRender();
  }

  /** Add answer text; the first piece ends the thinking and folds its block. */
  addAnswer(text) {
    if (!text) return;
    this.noteToken();
    if (!this.answer) {
      this.stopThinkingClock();
      this.thinking.open = false;
    }
    this.answer += text;
    this.dirty.answer = true;
    this.scheduleRender();
  }

  /**
   * Final render and the line under the reply.
   * outcome: "done" | "stopped" | "incomplete" | "error"; usage: the OpenAI usage object or null.
   */
  finish({ outcome, usage = null, finishReason = null, errorMessage = "", droppedTurns = 0 }) {
    this.stopThinkingClock();
    if (this.frame) window.cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.render();
    this.outcome = { outcome, usage, finishReason, errorMessage, droppedTurns };
    this.element.dataset.state = outcome;
    this.relabel();
  }

  /** Finish with the final stored message of a reply (the stream's `done` event). */
  finishWith(message) {
    if (message.reasoning_seconds !== null && message.reasoning_seconds !== undefined) {
      // The server timed the thinking from its start, which a reattached reader missed.
      this.storedThinkingSeconds = Number(message.reasoning_seconds);
    }
    // The stored text is the whole reply, the last word on what the stream showed.
    this.replaceText(message.reasoning ?? this.reasoning, message.content ?? this.answer);
    this.showToolCalls(message.tool_calls);
    const outcome = OUTCOME_OF_STATUS[message.status] ?? "done";
    const hasUsage = message.completion_tokens !== null && message.completion_tokens !== undefined;
    this.finish({
      outcome,
      usage: hasUsage
        ? { prompt_tokens: message.prompt_tokens, completion_tokens: message.completion_tokens }
        : null,
      finishReason: message.finish_reason,
      errorMessage: outcome === "error" ? errorText(message.error) : "",
      droppedTurns: message.dropped_turns || 0,
    });
  }

  /** Show a stored message that is no longer generating (no live timing, so no rate). */
  showStored(message) {
    this.finishWith(message);
    this.thinking.open = false;
  }

  replaceText(reasoning, answer) {
    if (reasoning !== this.reasoning) {
      this.reasoning = String(reasoning);
      this.dirty.reasoning = true;
    }
    if (answer !== this.answer) {
      this.answer = String(answer);
      this.dirty.answer = true;
    }
    if (this.reasoning) this.thinking.hidden = false;
  }

  /** Re-write the texts that depend on the language (after a switch, and as the clock runs). */
  relabel() {
    const thinkingOver = this.thinkingStartedAt === null || this.thinkingEndedAt !== null;
    if (this.storedThinkingSeconds !== null && thinkingOver) {
      const seconds = this.storedThinkingSeconds.toFixed(1);
      this.thinkingLabel.textContent = t("chat.thought", { seconds });
    } else if (this.thinkingStartedAt !== null) {
      const end = this.thinkingEndedAt ?? performance.now();
      const seconds = ((end - this.thinkingStartedAt) / 1000).toFixed(1);
      const key = this.thinkingEndedAt === null ? "chat.thinking" : "chat.thought";
      this.thinkingLabel.textContent = t(key, { seconds });
    } else if (this.reasoning) {
      this.thinkingLabel.textContent = t("chat.thoughtUntimed");
    }
    this.calls.querySelectorAll(":scope > .tool-call > summary").forEach((summary, index) => {
      const name = this.toolCalls[index]?.function?.name;
      summary.textContent = t("chat.toolCall", { name: String(name ?? "?") });
    });
    if (this.outcome) this.meta.textContent = this.metaText();
    this.meta.classList.toggle("error", this.outcome?.outcome === "error");
  }

  metaText() {
    const { outcome, usage, finishReason, errorMessage, droppedTurns } = this.outcome;
    if (outcome === "error") return errorMessage;
    const parts = [];
    if (outcome === "stopped") parts.push(t("chat.stopped"));
    if (outcome === "incomplete") parts.push(t("chat.incomplete"));
    if (usage && outcome === "done") parts.push(this.usageText(usage));
    if (finishReason === "length") parts.push(t("chat.finishLength"));
    if (finishReason === "repetition") parts.push(t("chat.finishRepetition"));
    if (finishReason === "tool_calls") parts.push(t("chat.finishToolCalls"));
    if (droppedTurns > 0) parts.push(t("chat.droppedTurns", { count: droppedTurns }));
    return parts.join(" · ");
  }

  usageText(usage) {
    const prompt = usage.prompt_tokens ?? 0;
    const completion = usage.completion_tokens ?? 0;
    // Decode speed: tokens after the first over the time between first and last token.
    const seconds = (this.lastTokenAt - this.firstTokenAt) / 1000;
    if (this.liveTiming && this.firstTokenAt !== null && completion > 1 && seconds > 0) {
      const rate = ((completion - 1) / seconds).toFixed(1);
      return t("chat.usage", { prompt, completion, rate });
    }
    return t("chat.usageNoRate", { prompt, completion });
  }

  noteToken() {
    const now = performance.now();
    if (this.firstTokenAt === null) this.firstTokenAt = now;
    this.lastTokenAt = now;
  }

  stopThinkingClock() {
    if (this.thinkingStartedAt !== null && this.thinkingEndedAt === null) {
      this.thinkingEndedAt = performance.now();
    }
    if (this.clock) window.clearInterval(this.clock);
    this.clock = 0;
    this.relabel();
  }

  scheduleRender() {
    // At most one markdown render per frame, however fast the deltas come.
    if (this.frame) return;
    this.frame = window.requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  render() {
    if (this.dirty.reasoning) {
      this.thinkingBody.replaceChildren(renderMarkdown(this.reasoning));
      this.dirty.reasoning = false;
    }
    if (this.dirty.answer) {
      this.answerElement.replaceChildren(renderMarkdown(this.answer));
      this.dirty.answer = false;
    }
    this.onRendered();
  }
}

/** JSON text indented for reading; anything else as it is. */
export function prettyJson(text) {
  const raw = typeof text === "string" ? text : JSON.stringify(text ?? "");
  try {
    return JSON.stringify(JSON.parse(raw), null, 2);
  } catch {
    return raw;
  }
}

function errorText(error) {
  if (error && typeof error === "object" && error.message) return String(error.message);
  if (typeof error === "string" && error) return error;
  return t("chat.failed");
}
