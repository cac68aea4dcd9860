"""Messages rendered as Markdown in the web client (issue 17, point 5), in headless Chromium.

Replies come from the built-in echo provider (it streams the message back word by word),
so the text a test sends is the Markdown the page renders, for the user's message and for
the reply. The hostile corpus must run nothing, open no dialog and make no request to
another host, under the page's unchanged Content-Security-Policy.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from playwright.sync_api import Page, Request, expect

from tests.browser import screenshot
from tests.support import Server, register_and_login
from tests.test_web_client import ASSISTANT, USER, log_in, send

VENDOR = Path(__file__).resolve().parent.parent / "chatsvc" / "web" / "vendor"

#: Sets `window.__pwned` (and, for the report, says which payload ran).
PWN = "window.__pwned=1"

HOSTILE = "\n\n".join(
    [
        "Hostile corpus follows.",
        f"<script>{PWN}</script>",
        f'<img src="x" onerror="{PWN}">',
        f'<svg onload="{PWN}"><circle r="5"/></svg>',
        f'<iframe src="javascript:{PWN}"></iframe>',
        f'<iframe srcdoc="<script>{PWN}</script>"></iframe>',
        f"[a js link](javascript:{PWN})",
        f"[an entity link](jav&#x61;script:{PWN})",
        f"[a spaced link]( JaVaScRiPt:{PWN})",
        "[a data link](data:text/html;base64,PHNjcmlwdD53aW5kb3cuX19wd25lZD0xPC9zY3JpcHQ+)",
        f'<a href="javascript:{PWN}">raw html link</a>',
        f'<details open ontoggle="{PWN}"><summary>s</summary>d</details>',
        f'<math><mtext><table><mglyph><style><img src=x onerror="{PWN}">',
        f'<form action="javascript:{PWN}"><button>go</button></form>',
        '<object data="http://198.51.100.7/x.swf"></object>',
        '<link rel="stylesheet" href="http://198.51.100.7/x.css">',
        "<style>@import url(http://198.51.100.7/y.css);</style>",
        '<meta http-equiv="refresh" content="0;url=http://198.51.100.7/">',
        "![a tracking pixel](http://198.51.100.7/pixel.gif)",
        "![a data image](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+)",
        f"&lt;img src=x onerror={PWN}&gt; and &#60;script&#62;{PWN}&#60;/script&#62;",
        f"`<img src=x onerror={PWN}>` in inline code",
        f'```html\n<img src="x" onerror="{PWN}">\n<script>{PWN}</script>\n```',
        "End of the corpus.",
    ]
)

FEATURES = "\n".join(
    [
        "Features follow.",
        "",
        "## A heading",
        "",
        "- first item",
        "- second item with `inline code`",
        "",
        "1. one",
        "2. two",
        "",
        "| Name | Count |",
        "| --- | ---: |",
        "| apples | 3 |",
        "| pears | 5 |",
        "",
        "> a quoted line",
        "",
        "See [the docs](https://example.org/docs) or [mail us](mailto:team@example.org).",
        "",
        "```python",
        "def greet(name):",
        '    return f"hello {name}"',
        "```",
        "",
        "The end.",
    ]
)


def watch(page: Page) -> dict[str, list[Any]]:
    """Records on `page` every request, dialog, script error and CSP violation."""
    seen: dict[str, list[Any]] = {"requests": [], "dialogs": [], "errors": []}
    page.on("request", lambda request: seen["requests"].append(request))
    page.on("pageerror", lambda error: seen["errors"].append(str(error)))
    page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
    page.on("dialog", lambda dialog: (seen["dialogs"].append(dialog.message), dialog.dismiss()))
    page.add_init_script(
        """
        window.__violations = [];
        document.addEventListener("securitypolicyviolation", (event) => {
          window.__violations.push(
            [event.violatedDirective, event.blockedURI, event.sourceFile].join(" "));
        });
        """
    )
    return seen


def foreign(requests: list[Request], server: Server) -> list[str]:
    host = urlsplit(server.url).netloc
    return [r.url for r in requests if urlsplit(r.url).netloc != host]


def test_vendored_files_are_the_recorded_releases_and_load_nothing_remote() -> None:
    readme = (VENDOR / "README.md").read_text()
    recorded = dict(
        (name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, re.M)
    )
    files = {
        path.relative_to(VENDOR).as_posix(): path
        for path in VENDOR.rglob("*")
        if path.is_file() and path.name != "README.md"
    }
    assert sorted(recorded) == sorted(files)  # every file recorded, nothing else here
    for name, path in files.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == recorded[name], name
        if name.endswith(("js", "mjs")):
            text = path.read_text()
            # Self-contained: no static or dynamic import, no remote source map, no fetch.
            assert not re.search(r"^\s*import\b|\bimport\s*\(|\bimportScripts\b", text, re.M)
            assert not re.search(r"sourceMappingURL=(?!\w[\w.-]*\.map\s*$)", text, re.M)
            assert not re.search(r"\bfetch\(|XMLHttpRequest|sendBeacon|new WebSocket", text)


def test_markdown_renders_with_highlighted_code_and_safe_links(
    echo_server: Server, page: Page
) -> None:
    seen = watch(page)
    user = register_and_login(echo_server)
    log_in(page, echo_server.url, user)
    send(page, FEATURES)
    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-status", "complete")
    body = reply.locator(":scope > .body")
    expect(body.locator("h2")).to_have_text("A heading")
    expect(body.locator("ul > li")).to_have_count(2)
    expect(body.locator("ul > li code")).to_have_text("inline code")
    expect(body.locator("ol > li")).to_have_text(["one", "two"])
    expect(body.locator("table th")).to_have_text(["Name", "Count"])
    expect(body.locator("table tbody tr")).to_have_count(2)
    expect(body.locator("table tbody td").nth(1)).to_have_attribute("align", "right")
    expect(body.locator("blockquote")).to_have_text("a quoted line")
    links = body.locator("a")
    expect(links).to_have_count(2)
    expect(links.nth(0)).to_have_attribute("href", "https://example.org/docs")
    expect(links.nth(1)).to_have_attribute("href", "mailto:team@example.org")
    for index in range(2):
        expect(links.nth(index)).to_have_attribute("target", "_blank")
        expect(links.nth(index)).to_have_attribute("rel", "noopener noreferrer")
    code = body.locator(":scope > pre > code")
    expect(code).to_have_attribute("data-language", "python")
    expect(code).to_have_class(re.compile(r"\bhljs\b.*\blanguage-python\b"))
    expect(code.locator("span.hljs-keyword").first).to_have_text("def")
    expect(code.locator("span.hljs-string")).to_have_count(1)
    assert code.text_content() == 'def greet(name):\n    return f"hello {name}"'
    # The user's own message is rendered the same way.
    expect(page.locator(USER).last.locator(":scope > .body h2")).to_have_text("A heading")
    screenshot(page, "web-rendering")
    # Colours come from markdown.css's variables, with a dark set.
    keyword = code.locator("span.hljs-keyword").first
    colour = "(node) => getComputedStyle(node).color"
    page.emulate_media(color_scheme="light")
    light = keyword.evaluate(colour)
    page.emulate_media(color_scheme="dark")
    dark = keyword.evaluate(colour)
    assert light == "rgb(179, 38, 30)"  # --hl-keyword
    assert dark == "rgb(255, 123, 114)"
    assert page.evaluate("window.__violations") == []
    assert seen["errors"] == []
    assert foreign(seen["requests"], echo_server) == []


def test_hostile_markdown_and_html_run_nothing_and_load_nothing(
    echo_server: Server, page: Page
) -> None:
    seen = watch(page)
    user = register_and_login(echo_server)
    log_in(page, echo_server.url, user)
    send(page, HOSTILE)
    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-status", "complete")
    expect(reply.locator(":scope > .body")).to_contain_text("End of the corpus.")
    page.wait_for_timeout(300)  # time for a late onerror/onload to fire, if any could
    messages = page.locator("#messages")
    # The raw HTML shows as text; nothing of it is an element.
    expect(reply.locator(":scope > .body")).to_contain_text("<script>window.__pwned=1</script>")
    for tag in ("script", "img", "svg", "iframe", "object", "form", "style", "link", "meta"):
        expect(messages.locator(f".body {tag}")).to_have_count(0)
    handlers = messages.evaluate(
        """(box) => [...box.querySelectorAll(".body *")].flatMap((node) =>
             [...node.attributes].map((a) => a.name).filter((name) => name.startsWith("on")))"""
    )
    assert handlers == []
    hrefs = messages.evaluate(
        """(box) => [...box.querySelectorAll(".body a[href]")].map((a) => a.href)"""
    )
    assert hrefs
    assert all(re.match(r"(https?:|mailto:)", href) for href in hrefs), hrefs
    assert "http://198.51.100.7/pixel.gif" in hrefs  # the remote image, as a link
    for name in ("a js link", "an entity link", "a spaced link", "a data link"):
        link = reply.locator(".body a", has_text=name)
        expect(link).to_have_count(1)
        assert link.get_attribute("href") is None, name
    # Clicking a defused link does nothing either.
    reply.locator(".body a", has_text="a js link").click()
    page.wait_for_timeout(200)
    assert page.evaluate("window.__pwned") is None
    assert seen["dialogs"] == []
    assert page.evaluate("window.__violations") == []
    assert seen["errors"] == []  # no script error, no blocked inline script (CSP report)
    assert foreign(seen["requests"], echo_server) == []
    assert len(page.context.pages) == 1  # no tab opened


def test_the_copy_button_copies_a_code_block(echo_server: Server, page: Page) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=echo_server.url)
    user = register_and_login(echo_server)
    log_in(page, echo_server.url, user)
    code = "SELECT name\nFROM users\nWHERE id = 1;"
    send(page, f"A query:\n\n```sql\n{code}\n```")
    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-status", "complete")
    button = reply.get_by_role("button", name="Copy code")
    button.click()
    expect(reply.get_by_role("button", name="Code copied")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == code
    expect(reply.get_by_role("button", name="Copy code")).to_have_text("Copy", timeout=5000)


def test_streaming_keeps_finished_blocks_and_shows_an_open_fence_as_code(
    echo_server: Server, page: Page
) -> None:
    user = register_and_login(echo_server)
    log_in(page, echo_server.url, user)
    render = """async ([first, second]) => {
        const { renderText } = await import("/static/message-text.js");
        const body = renderText(first);
        const kept = body.firstElementChild;
        const again = renderText(second, body);
        const pre = again.querySelector(":scope > pre");
        return {
          same: again === body && again.firstElementChild === kept,
          count: again.children.length,
          language: pre && pre.querySelector("code").dataset.language,
          code: pre && pre.querySelector("code").textContent,
          highlighted: Boolean(pre && pre.querySelector("code span.hljs-keyword")),
        };
    }"""
    texts = ["Intro line.\n\nsecond", "Intro line.\n\n```python\nimport os\nfor"]
    result = page.evaluate(render, texts)
    assert result == {
        "same": True,
        "count": 2,
        "language": "python",
        "code": "import os\nfor",
        "highlighted": True,
    }
    # In a real stream: a long code block is shown as code while its fence is still open,
    # and the paragraph before it stays the same element until the reply completes.
    lines = "\n".join(f"value_{i} = {i}  # line {i}" for i in range(80))
    send(page, f"Before the code.\n\n```python\n{lines}\n```\n\nAfter the code.")
    reply = page.locator(ASSISTANT).last
    page.wait_for_function(
        """() => {
          const reply = [...document.querySelectorAll("#messages .message")].at(-1);
          const pre = reply && reply.dataset.status === "streaming"
            && reply.querySelector(":scope > .body > pre code span.hljs-number");
          if (pre) window.__firstBlock = reply.querySelector(":scope > .body > p");
          return Boolean(pre);
        }"""
    )
    expect(reply).to_have_attribute("data-status", "complete", timeout=30_000)
    assert reply.evaluate(
        "(node) => node.querySelector(':scope > .body > p') === window.__firstBlock"
    )
    expect(reply.locator(":scope > .body > p").last).to_have_text("After the code.")
