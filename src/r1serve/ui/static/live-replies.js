// Replies being generated on the server, as this page follows them.
//
// A reply outlives the page's connection: switching conversations (or views) only stops reading
// it. What was read stays here, keyed by the assistant message id, with the id of the last event
// seen, so coming back resumes right after it (Last-Event-ID); a reload starts from the top.
// A stream that breaks while still wanted is picked up again the same way.

import { reattachReply, replyEvents } from "./conversations.js";
import { AssistantReply } from "./views/reply.js";

const RECONNECTS = 3;
const RECONNECT_DELAY_MS = 300;

const followed = new Map(); // assistant message id -> LiveReply

/** The reply being followed for this assistant message, if the page has read some of it. */
export function followedReply(messageId) {
  return followed.get(messageId) ?? null;
}

/** Drop what was kept of a reply that is no longer generating. */
export function forgetReply(messageId) {
  followed.delete(messageId);
}

/** One generating reply: its AssistantReply (DOM and text) and where reading stopped. */
export class LiveReply {
  constructor(conversationId, messageId = null) {
    this.conversationId = conversationId;
    this.messageId = messageId;
    this.lastEventId = null;
    this.reply = new AssistantReply();
    this.controller = null;
    this.detached = false;
    this.finished = false;
    this.startData = null;
    // What the open view wants to hear: onStart(data), onDone(message), onError(error).
    this.hooks = {};
    if (messageId) {
      followed.set(messageId, this);
      this.reply.liveTiming = false; // followed from the middle: no rate from a replay
    }
  }

  /** Whether a stream is being read right now. */
  get reading() {
    return this.controller !== null;
  }

  /**
   * Read the stream open(signal) answers, then reattach if it breaks before the end.
   * Resolves when the reply is finished or detach() was called; throws the first HTTP error.
   */
  async follow(open) {
    let opener = open;
    for (let attempt = 0; ; attempt += 1) {
      try {
        await this.read(opener);
        return;
      } catch (error) {
        const broken = error.code === "stream_cut" || error.name === "TypeError";
        if (!broken || !this.messageId || attempt >= RECONNECTS || this.finished) throw error;
      }
      if (this.detached) return;
      await new Promise((resolve) => window.setTimeout(resolve, RECONNECT_DELAY_MS * (attempt + 1)));
      if (this.detached) return;
      opener = (signal) =>
        reattachReply(this.conversationId, this.messageId, this.lastEventId, { signal });
    }
  }

  /** Resume reading after the last event seen (or from the start when none was). */
  reattach() {
    return this.follow((signal) =>
      reattachReply(this.conversationId, this.messageId, this.lastEventId, { signal }),
    );
  }

  /** Stop reading (the server keeps generating) and stop telling the view. */
  detach() {
    this.hooks = {};
    this.detached = true;
    if (this.controller) this.controller.abort();
  }

  async read(open) {
    const controller = new AbortController();
    this.controller = controller;
    this.detached = false;
    try {
      const response = await open(controller.signal);
      for await (const event of replyEvents(response)) {
        // A read superseded by a newer one (left and came back quickly) stops here.
        if (this.controller !== controller) return;
        if (event.id !== null) this.lastEventId = event.id;
        this.handle(event);
        if (this.finished) return;
      }
    } catch (error) {
      if (controller.signal.aborted) return; // detached on purpose
      throw error;
    } finally {
      if (this.controller === controller) this.controller = null;
    }
  }

  handle({ type, data }) {
    if (type === "start") {
      this.startData = data;
      this.messageId = data.assistant_message.id;
      followed.set(this.messageId, this);
      this.hooks.onStart?.(data);
    } else if (type === "chunk") {
      const choice = data.choices && data.choices[0];
      if (!choice) return;
      const delta = choice.delta || {};
      // The server sends the same text as reasoning_content and reasoning; read one.
      this.reply.addReasoning(delta.reasoning_content ?? delta.reasoning);
      this.reply.addAnswer(delta.content);
    } else if (type === "done") {
      this.end();
      if (data.message) this.reply.finishWith(data.message);
      else this.reply.finish({ outcome: "done" });
      this.hooks.onDone?.(data.message);
    } else if (type === "error") {
      this.end();
      this.reply.finish({ outcome: "error", errorMessage: data.message });
      this.hooks.onError?.(data);
    }
  }

  end() {
    this.finished = true;
    if (this.messageId) followed.delete(this.messageId);
  }
}
