"""Script injection and remote resources through a customer's message, checked in a real headless
Chromium: the chat page served by ``supportbot serve`` (tiny models) and the reviewers' page that
shows the logged turns must show the payloads as literal text, never run them, and never request
a Markdown image or link from a customer (a tracking pixel on 127.0.0.1 records every hit)."""

from __future__ import annotations

import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from test_server import REVIEWER, server  # noqa: F401  (the real-server fixture, with a reviewer)

PAYLOADS = ['<img src=x onerror="window.__xss=1">', "<script>window.__xss=2</script>",
            '<a href="javascript:window.__xss=3;alert(3)">my order</a>']
WAIT_S = 120
PIXEL = "http://127.0.0.1:{port}/pixel.png"


@pytest.fixture(scope="module")
def pixel_server():
    """A local HTTP server that records the path of every request it gets; yields (port, hits)."""
    hits: list[str] = []

    class Record(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Record)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1], hits
    httpd.shutdown()


def markdown_payloads(port: int) -> list[str]:
    """A Markdown image (a tracking pixel), a Markdown link and a bare URL, all to the pixel server."""
    pixel = PIXEL.format(port=port)
    return [f"look ![x]({pixel}) here", f"[my order](http://127.0.0.1:{port}/link) is late",
            f"see http://127.0.0.1:{port}/bare please"]


def system_chromium() -> str | None:
    """Debian's Chromium (``apt-get install chromium``), if installed."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium driven by Playwright: the system's binary, else Playwright's own."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as playwright:
        executable = system_chromium() or playwright.chromium.executable_path
        if not Path(executable).is_file():
            pytest.skip("no Chromium binary: `apt-get install chromium` or `playwright install chromium`")
        launched = playwright.chromium.launch(executable_path=executable, headless=True,
                                              args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


def watched_page(browser, dialogs: list[str]):
    """A new page whose dialogs (alert, confirm, prompt) are recorded and dismissed."""
    page = browser.new_page()
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    return page


def wait_for_text(page, texts: list[str], also=lambda: True) -> None:
    """Until every text is in the page's visible text and ``also()`` holds, or fail after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        shown = page.locator("body").inner_text()
        if all(text in shown for text in texts) and also():
            return
        time.sleep(0.5)
    raise AssertionError(f"not all shown as text within {WAIT_S} s: {texts}; page text: {shown[-2000:]}")


def assert_inert(page, dialogs: list[str]) -> None:
    """No payload ran, none became an element, no dialog opened."""
    page.wait_for_timeout(1000)     # an onerror handler fires once the broken image fails to load
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.locator("img[src='x'], a[href^='javascript']").count() == 0
    assert "window.__xss" not in page.evaluate("Array.from(document.scripts, s => s.text).join()")
    assert dialogs == []


def send_in_chat(page, url: str | None, payloads: list[str]) -> None:
    """Type each payload in the chat at ``url`` (None: the page as it is) and wait for its reply."""
    if url is not None:
        page.goto(url)
    box = page.get_by_placeholder("Type your question and press Enter")
    before = page.get_by_test_id("bot").count()
    for sent, payload in enumerate(payloads, start=before + 1):
        box.fill(payload)
        box.press("Enter")

        def answered(sent=sent) -> bool:
            bots = page.get_by_test_id("bot").all_inner_texts()
            return (len(bots) >= sent and page.get_by_test_id("user").count() >= sent
                    and bots[-1].strip() not in ("", "…") and not page.locator(".generating").count())

        wait_for_text(page, [], answered)


def assert_no_request_to(page, port: int, hits: list[str], requested: list[str]) -> None:
    """Neither the pixel server nor the browser's own request log saw a request for the customer's
    Markdown image or link, and the page holds no element pointing there."""
    page.wait_for_timeout(1500)
    assert hits == []
    assert [url for url in requested if f"127.0.0.1:{port}" in url] == []
    assert page.locator(f"img[src*='{port}'], a[href*='{port}']").count() == 0


def test_payloads_show_as_text_and_never_run_in_chat_and_review(server, browser, pixel_server):
    url, home = server
    port, hits = pixel_server
    payloads = PAYLOADS + markdown_payloads(port)
    dialogs: list[str] = []
    requested: list[str] = []
    chat = watched_page(browser, dialogs)
    chat.on("request", lambda request: requested.append(request.url))
    send_in_chat(chat, url, payloads)
    assert_no_request_to(chat, port, hits, requested)
    wait_for_text(chat, payloads)
    assert_inert(chat, dialogs)

    review = watched_page(browser, dialogs)
    review.on("request", lambda request: requested.append(request.url))
    review.goto(url + "review/")
    review.get_by_label("username").fill(REVIEWER[0])
    review.get_by_label("password").fill(REVIEWER[1])
    review.get_by_role("button", name="Login").click()
    wait_for_text(review, ["Left to review"])
    assert_no_request_to(review, port, hits, requested)
    wait_for_text(review, payloads)
    assert_inert(review, dialogs)


def test_the_clear_icon_starts_a_new_conversation(server, browser):
    """The chat's own clear (trash) icon empties the screen; the next message opens a new
    conversation instead of continuing the cleared one."""
    import sqlite3

    url, home = server
    page = watched_page(browser, [])
    send_in_chat(page, url, ["where is my parcel"])
    page.get_by_role("button", name="Clear").click()
    page.wait_for_timeout(1000)
    assert page.get_by_test_id("bot").count() == 0
    send_in_chat(page, None, ["please refund my order"])      # same page, no reload
    rows = sqlite3.connect(home / "conversations.db").execute(
        "SELECT user_text, conversation_id FROM turns ORDER BY id").fetchall()
    assert [text for text, _ in rows] == ["where is my parcel", "please refund my order"]
    assert rows[0][1] != rows[1][1]
