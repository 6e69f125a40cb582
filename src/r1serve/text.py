"""Checks on text that clients send."""

from __future__ import annotations


def check_unicode(value: str) -> str:
    """Refuse strings that cannot be UTF-8 (lone surrogates from JSON escapes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"text contains a lone surrogate (\\u{ord(value[exc.start]):04x}); send valid Unicode"
        ) from None
    return value
