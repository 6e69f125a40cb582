"""Formulas in replies: KaTeX renders them, while streaming, without markdown touching the TeX."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from r1serve.engine.fake import FakeReply
from support.browser import ChatPage

pytestmark = pytest.mark.browser

MATH_REPLY = (
    "<think>\nThe area is $\\int_0^1 x^2\\,dx$.\n</think>\n\n"
    "So $\\boxed{42}$ and \\(a_1 * b_2\\) hold, but $5 and $10 stay prices.\n\n"
    "$$\\int_0^1 x^2\\,dx = \\frac{1}{3}$$\n\n"
    "- a list item with $x^2$\n"
    "- and a display one:\n\n"
    "  \\[\\sqrt{2} \\approx 1.414\\]\n\n"
    "`$not math$` in code.\n"
)


def test_inline_display_and_listed_formulas_render(chat: ChatPage) -> None:
    chat.server.replies.set(FakeReply(MATH_REPLY))
    page = chat.page
    chat.send("Some math")
    chat.wait_idle()
    answer = page.locator(".message.assistant .answer")
    # Two inline formulas in the first paragraph; the prices are text.
    first = answer.locator("p").first
    expect(first.locator(".katex")).to_have_count(2)
    expect(first).to_contain_text("$5 and $10 stay prices")
    assert first.locator(".katex").nth(0).get_attribute("data-tex") == "\\boxed{42}"
    # \( a_1 * b_2 \): markdown would have made an <em> of "_1 * b_"; the TeX is untouched.
    assert first.locator(".katex").nth(1).get_attribute("data-tex") == "a_1 * b_2"
    expect(answer.locator("em")).to_have_count(0)
    # $$…$$ on its own line is display math; "\," survived (marked would have eaten the backslash).
    display = answer.locator(".katex-display")
    expect(display).to_have_count(2)
    assert display.nth(0).locator(".katex").get_attribute("data-tex") == (
        "\\int_0^1 x^2\\,dx = \\frac{1}{3}"
    )
    expect(answer.locator("li .katex")).to_have_count(2)
    expect(answer.locator("li .katex-display")).to_have_count(1)
    expect(answer.locator("li .katex-display svg")).to_have_count(1)  # the radical is SVG
    # In code the dollars are the model's text.
    expect(answer.locator("code")).to_have_text("$not math$")
    # Reasoning renders formulas too.
    expect(page.locator(".thinking-body .katex")).to_have_count(1)
    # KaTeX's layout is applied (a fraction has a height), through CSSOM: no CSP report.
    height = page.evaluate(
        "() => document.querySelector('.answer .katex-display .mfrac')"
        ".getBoundingClientRect().height"
    )
    assert height > 10, height
    # The whole reply copies as its source: the TeX, not KaTeX's glyphs.
    page.evaluate(
        """() => {
            window.__copied = null;
            navigator.clipboard.writeText = async (text) => { window.__copied = text; };
        }"""
    )
    page.locator(".message.assistant .copy-message").click()
    page.wait_for_function("() => window.__copied !== null")
    assert "$$\\int_0^1 x^2\\,dx = \\frac{1}{3}$$" in page.evaluate("window.__copied")


def test_selection_copy_gives_the_tex(chat: ChatPage) -> None:
    chat.server.replies.set(FakeReply("Inline $x^2+1$ here."))
    chat.send("copy")
    chat.wait_idle()
    copied = chat.page.evaluate(
        """() => {
            const answer = document.querySelector(".message.assistant .answer");
            const range = document.createRange();
            range.selectNodeContents(answer);
            const selection = window.getSelection();
            selection.removeAllRanges();
            selection.addRange(range);
            const data = new DataTransfer();
            const copy = new ClipboardEvent("copy", { clipboardData: data, bubbles: true });
            answer.dispatchEvent(copy);
            return data.getData("text/plain");
        }"""
    )
    assert copied.strip() == "Inline $x^2+1$ here."


def test_a_formula_split_across_chunks_shows_as_text_until_closed(chat: ChatPage) -> None:
    chunks = ["The value is $", "\\frac{1", "}{2}", " done soon", "$", " and more."]
    # Slow enough that the page renders the unclosed formula before its closing dollar.
    chat.server.replies.set(FakeReply(chunks=chunks, delay_s=0.8))
    page = chat.page
    chat.send("split")
    answer = page.locator(".message.assistant .answer")
    expect(answer).to_contain_text("\\frac{1}{2} done soon")
    expect(answer.locator(".katex")).to_have_count(0)
    expect(answer.locator(".katex")).to_have_count(1)
    chat.wait_idle()
    assert answer.locator(".katex").get_attribute("data-tex") == "\\frac{1}{2} done soon"
    expect(answer).to_contain_text("and more.")
