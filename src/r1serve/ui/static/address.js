// The open conversation in the page's address (#/c/<id>), so a reload comes back to it.
// Changed with replaceState: switching conversations adds no history entries to step through.

const HASH_PREFIX = "#/c/";

/** The conversation id in the address, or null. */
export function conversationInAddress() {
  if (!window.location.hash.startsWith(HASH_PREFIX)) return null;
  try {
    return decodeURIComponent(window.location.hash.slice(HASH_PREFIX.length)) || null;
  } catch {
    return null;
  }
}

/** Put a conversation id in the address (null: none, for a new chat). */
export function setConversationInAddress(id) {
  const base = `${window.location.pathname}${window.location.search}`;
  const url = id ? `${base}${HASH_PREFIX}${encodeURIComponent(id)}` : base;
  window.history.replaceState(null, "", url);
}
