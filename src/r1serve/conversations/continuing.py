"""Continue: a reply cut at max_tokens goes on in the same message.

The prompt is the branch up to the user message, the generation prompt, then the reply's text so
far (its reasoning inside the thinking block, then its answer), so the model picks up where it
stopped; no new turn is opened. The message is marked as generating again and keeps its text.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from r1serve.conversations.records import ConversationRecord, MessageRecord, MessageTree
from r1serve.conversations.store import (
    ConversationStore,
    ReplyContext,
    ReplyStart,
    _record,
    _refuse_second_reply,
)
from r1serve.engine.protocol import Prompt, Tokenizer
from r1serve.errors import RequestError
from r1serve.storage.repositories import ConversationRepository


@dataclass(frozen=True, slots=True)
class ContinueContext:
    context: ReplyContext  # the branch above the question, and the question (reply_to)
    partial: MessageRecord  # the reply being continued


def context_for_continue(
    store: ConversationStore, user_id: int, conversation_id: str, message_id: str
) -> ContinueContext:
    """What continuing reply ``message_id`` needs; 400 unless it was cut at max_tokens."""
    with store.database.read() as session:
        row, tree = store._for_reply(session, user_id, conversation_id)
        reply = tree.get(message_id)
        if reply.role != "assistant" or reply.parent_id is None:
            raise RequestError("only a reply (an assistant message) can be continued")
        if reply.finish_reason != "length":
            raise RequestError("only a reply cut at its token limit (finish_reason 'length') "
                               "can be continued")  # fmt: skip
        question = tree.get(reply.parent_id)
        history = [tree.record(m) for m in tree.path_to(question.parent_id)]
        context = ReplyContext(
            ConversationRecord.of(row, None), history, question.parent_id, tree.record(question)
        )
        return ContinueContext(context, tree.record(reply))


def resume_reply(
    store: ConversationStore, user_id: int, conversation_id: str, message_id: str, worker: str
) -> ReplyStart:
    """Mark the reply as generating again (409 if another reply runs), keeping its text."""
    now = store.clock()
    with store.database.write() as session:
        repo = ConversationRepository(session)
        row = store._owned(repo, user_id, conversation_id, lock=True)
        _refuse_second_reply(repo, row.id)
        answer = repo.message(row.id, message_id)
        if answer is None or answer.parent_id is None:
            raise RequestError("the reply is gone")
        question = repo.message(row.id, answer.parent_id)
        assert question is not None
        answer.status = "generating"
        answer.finish_reason = None
        answer.finished_at = None
        answer.worker = worker
        answer.heartbeat_at = now
        row.current_leaf_id = MessageTree.of(repo.messages(row.id)).leaf_under(answer.id)
        row.updated_at = now
        session.flush()
        return ReplyStart(
            ConversationRecord.of(row, answer.id), _record(repo, question), _record(repo, answer)
        )


def continued_prompt(prompt: Prompt, partial: MessageRecord, tokenizer: Tokenizer) -> Prompt:
    """The reply's text so far after the generation prompt; reasoning stays open if the reply
    was cut inside it (the result's ``opens_reasoning`` then says so)."""
    head = "" if prompt.opens_reasoning else "<think>\n"
    if partial.content:
        tags = [head, partial.reasoning, "\n</think>\n\n"] if partial.reasoning else [""]
        pieces = [*tags, partial.content]
        inside = False
    else:
        pieces = [head, partial.reasoning]
        inside = True
    ids: list[int] = []
    for index, piece in enumerate(pieces):
        # Tags are template text; the model's own words never become control tokens.
        ids += tokenizer.encode(piece) if index % 2 == 0 else tokenizer.encode_plain(piece)
    text = prompt.text + "".join(pieces)
    return replace(
        prompt, token_ids=prompt.token_ids + tuple(ids), text=text, opens_reasoning=inside
    )
