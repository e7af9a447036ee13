"""Screenshot the chat page after a real exchange, or the review page after logging in, with
headless Chromium (Debian's ``chromium``) driven by Playwright.

    python scripts/screenshot.py chat http://127.0.0.1:7860/ out.png "where is my order?" ...
    python scripts/screenshot.py review http://127.0.0.1:7860/review/ out.png USER PASSWORD
"""

from __future__ import annotations

import sys
import time

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chat(page, url: str, messages: list[str], wait_s: float = 240) -> None:
    page.goto(url)
    box = page.get_by_label("Your message")
    for number, message in enumerate(messages, start=1):
        box.fill(message)
        box.press("Enter")
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            bots = page.locator(".bot").all_inner_texts()
            if len(bots) >= number and bots[-1].strip() not in ("", "…") and not page.locator(".generating").count():
                break
            time.sleep(1)
        time.sleep(2)


def review(page, url: str, user: str, password: str) -> None:
    page.goto(url)
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(password)
    page.get_by_role("button", name="Login").click()
    page.wait_for_timeout(6000)


def main() -> None:
    kind, url, out, *rest = sys.argv[1:]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        chat(page, url, rest) if kind == "chat" else review(page, url, *rest)
        page.screenshot(path=out, full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
