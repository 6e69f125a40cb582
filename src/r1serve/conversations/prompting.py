"""The prompt of a reply, built from the stored branch of its conversation.

The system prompt comes first; earlier answers go in without their reasoning (DeepSeek's advice
for R1: reasoning is not fed back). When the branch no longer fits the context less the room
kept for the reply, whole turns (a user message and its replies) are dropped, oldest first;
the system prompt and the message being answered are never dropped. Tool calls and tool results
belong to the turn of the user message above them and are rendered by the model's template; when
a reply answers tool results, that whole turn (the question, the calls, the results) is kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from r1serve.conversations.records import MessageRecord
from r1serve.engine.protocol import Engine, Prompt
from r1serve.errors import ContextLengthError

DEFAULT_REPLY_RESERVE = 1024

ChatTurn = list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class HistoryPrompt:
    """A rendered prompt, how many old turns it leaves out, and the reply's token budget."""

    prompt: Prompt
    dropped_turns: int
    max_tokens: int


def reply_reserve(context_length: int, max_tokens: int | None) -> int:
    """Tokens kept free for the reply when old turns are dropped."""
    return max(1, min(max_tokens or DEFAULT_REPLY_RESERVE, context_length // 2))


def group_turns(history: Sequence[MessageRecord]) -> list[ChatTurn]:
    """The branch as turns: each user message with the replies that follow it."""
    turns: list[ChatTurn] = []
    for message in history:
        entry = message.chat_entry()
        if message.role == "user" or not turns:
            turns.append([entry])
        else:
            turns[-1].append(entry)
    return turns


def build_history_prompt(
    engine: Engine,
    *,
    system_prompt: str,
    history: Sequence[MessageRecord],
    question: str | Sequence[Mapping[str, Any]],
    max_tokens: int | None,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> HistoryPrompt:
    """Render ``history`` plus ``question``, dropping old turns until it fits.

    ``question`` is the user's text, or the messages that must all stay (the current turn).
    """
    context = engine.context_length
    budget = context - reply_reserve(context, max_tokens)
    head = [{"role": "system", "content": system_prompt}] if system_prompt else []
    tail = [{"role": "user", "content": question}] if isinstance(question, str) else [*question]
    turns = group_turns(history)

    def render(dropped: int) -> Prompt:
        kept = [message for turn in turns[dropped:] for message in turn]
        return engine.render_chat([*head, *kept, *tail], add_generation_prompt=True, tools=tools)

    best = render(0)
    if len(best.token_ids) > budget:
        low, high = 1, len(turns)
        best = render(high)
        if len(best.token_ids) > budget:
            raise ContextLengthError(
                f"the system prompt and this message take {len(best.token_ids)} tokens, but "
                f"the context is {context} tokens and {context - budget} of them are kept for "
                "the reply; shorten the message or the system prompt",
                param="content",
            )
        # Fewer turns never make a longer prompt: search for the fewest turns to drop.
        while low < high:
            middle = (low + high) // 2
            candidate = render(middle)
            if len(candidate.token_ids) <= budget:
                high, best = middle, candidate
            else:
                low = middle + 1
        dropped = high
    else:
        dropped = 0
    room = context - len(best.token_ids)
    budget_tokens = room if max_tokens is None else min(max_tokens, room)
    return HistoryPrompt(best, dropped, budget_tokens)


def current_turn(
    history: Sequence[MessageRecord], asked: Sequence[Mapping[str, Any]]
) -> tuple[list[MessageRecord], list[Mapping[str, Any]]]:
    """Split ``history`` + ``asked`` into older messages and the turn a reply answers.

    The turn starts at the last user message: after tool results it holds the question and every
    call and result since, which must stay together in the prompt.
    """
    if any(entry.get("role") == "user" for entry in asked):
        return list(history), list(asked)
    cut = next((i for i in range(len(history) - 1, -1, -1) if history[i].role == "user"), None)
    if cut is None:
        return [], [*(m.chat_entry() for m in history), *asked]
    return list(history[:cut]), [*(m.chat_entry() for m in history[cut:]), *asked]
