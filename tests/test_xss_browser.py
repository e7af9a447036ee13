"""Script injection through a customer's message, checked in a real headless Chromium: the chat
page served by ``supportbot serve`` (tiny models) and the reviewers' page that shows the logged
turns must show the payloads as literal text and never run them."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from test_server import REVIEWER, server  # noqa: F401  (the real-server fixture, with a reviewer)

PAYLOADS = ['<img src=x onerror="window.__xss=1">', "<script>window.__xss=2</script>",
            '<a href="javascript:window.__xss=3;alert(3)">my order</a>']
WAIT_S = 120


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


def send_in_chat(page, url: str) -> None:
    page.goto(url)
    box = page.get_by_label("Your message")
    for sent, payload in enumerate(PAYLOADS, start=1):
        box.fill(payload)
        box.press("Enter")

        def answered(sent=sent) -> bool:
            bots = page.locator(".bot").all_inner_texts()
            return len(bots) >= sent and bots[-1].strip() not in ("", "…") and not page.locator(".generating").count()

        wait_for_text(page, PAYLOADS[:sent], answered)


def test_payloads_show_as_text_and_never_run_in_chat_and_review(server, browser):
    url, home = server
    dialogs: list[str] = []
    chat = watched_page(browser, dialogs)
    send_in_chat(chat, url)
    assert_inert(chat, dialogs)

    review = watched_page(browser, dialogs)
    review.goto(url + "review/")
    review.get_by_label("username").fill(REVIEWER[0])
    review.get_by_label("password").fill(REVIEWER[1])
    review.get_by_role("button", name="Login").click()
    wait_for_text(review, ["Left to review", *PAYLOADS])
    assert_inert(review, dialogs)
