"""How long a request lets an R1 model think: budgets, effort levels and skipping the thinking.

``reasoning_effort`` maps to a budget of reasoning tokens (``EFFORT_BUDGETS``); an explicit
``max_reasoning_tokens`` wins over it, and either wins over the server's or the model's default.
The engine ends the thinking at the budget by inserting the end-of-thinking text
(``"\\n</think>\\n\\n"``), and the model answers. ``none`` gives the model an empty thinking
block in the prompt instead, so it answers at once.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from r1serve.engine.protocol import Prompt, Tokenizer

ReasoningEffort = Literal["none", "low", "medium", "high"]

EFFORT_BUDGETS: dict[str, int] = {"low": 1024, "medium": 4096, "high": 16384}
EMPTY_THINKING = "</think>\n\n"  # after the template's opened "<think>\n"


def reasoning_budget(
    max_reasoning_tokens: int | None, effort: ReasoningEffort | None, default: int | None
) -> int | None:
    """The reasoning-token budget of a request (None: unbounded)."""
    if max_reasoning_tokens is not None:
        return max_reasoning_tokens
    if effort is not None and effort != "none":
        return EFFORT_BUDGETS[effort]
    return default


def skip_reasoning(prompt: Prompt, tokenizer: Tokenizer) -> Prompt:
    """The prompt with an empty thinking block, so an R1 model answers without reasoning.

    Where the template opened ``<think>`` the block is closed; otherwise (older R1 templates)
    ``<think>\\n</think>\\n\\n`` is added. A model without a ``</think>`` token is left alone.
    """
    if len(tokenizer.encode("</think>")) != 1:
        return prompt
    extra = EMPTY_THINKING if prompt.opens_reasoning else "<think>\n" + EMPTY_THINKING
    ids = tokenizer.encode(extra)
    return replace(
        prompt,
        token_ids=prompt.token_ids + tuple(ids),
        text=prompt.text + extra,
        opens_reasoning=False,
    )
