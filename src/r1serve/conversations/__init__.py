"""Conversation history: stored trees of messages, prompts built from them, export and import.

No FastAPI here. ``ConversationStore`` reads and writes conversations for one user at a time;
``build_history_prompt`` turns a stored branch into a prompt that fits the context;
``ConversationTransfer`` exports and imports them. Replies that run in the background, and
their events, live beside them in ``conversations.replies`` (``ReplyManager``) and
``conversations.reply_events`` (imported from there: they render server-sent events).
"""

from r1serve.conversations.prompting import HistoryPrompt, build_history_prompt, reply_reserve
from r1serve.conversations.records import (
    ConversationDetail,
    ConversationRecord,
    MessageRecord,
    MessageStatus,
    Siblings,
    auto_title,
    decode_cursor,
    encode_cursor,
    new_id,
)
from r1serve.conversations.settings import ConversationSettings, ReplySettings
from r1serve.conversations.store import (
    ConversationChanges,
    ConversationDraft,
    ConversationStore,
    ReplyContext,
    ReplyPlan,
    ReplyProgress,
    ReplyResult,
    ReplyStart,
    ToolResultDraft,
)
from r1serve.conversations.transfer import ConversationExport, ConversationTransfer
from r1serve.conversations.workers import current_worker, worker_is_gone

__all__ = [
    "ConversationChanges",
    "ConversationDetail",
    "ConversationDraft",
    "ConversationExport",
    "ConversationRecord",
    "ConversationSettings",
    "ConversationStore",
    "ConversationTransfer",
    "HistoryPrompt",
    "MessageRecord",
    "MessageStatus",
    "ReplyContext",
    "ReplyPlan",
    "ReplyProgress",
    "ReplyResult",
    "ReplySettings",
    "ReplyStart",
    "Siblings",
    "ToolResultDraft",
    "auto_title",
    "build_history_prompt",
    "current_worker",
    "decode_cursor",
    "encode_cursor",
    "new_id",
    "reply_reserve",
    "worker_is_gone",
]
