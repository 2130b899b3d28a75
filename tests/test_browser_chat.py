"""The example project's chat page in a real browser, served as ``make demo`` serves it (runserver, WSGI,
fakeredis): headless Chromium signs in, chats with the scripted assistant, watches replies stream in,
regenerates, edits, deletes, and follows the session live from a second window.

Set ``CHAT_SCREENSHOTS=<dir>`` to save the page's screenshots there (the README's come from this test).
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.example_site import example_env, prepare, runserver_command, serve
from tests.test_browser import WAIT_SECONDS, browser  # noqa: F401  (the fixture)

LABEL = "[Scripted demo assistant, no LLM]"


@pytest.fixture
def demo_site(tmp_path: Path) -> Iterator[str]:
    """The example site under ``manage.py runserver`` on fakeredis: exactly what ``make demo`` runs."""
    env = example_env(tmp_path)
    prepare(env)
    with serve(runserver_command, env, tmp_path / "runserver.log") as (base, _proc):
        yield base


def api_session(base: str, session_id: str) -> dict[str, Any]:
    """The session as the API gives it to the demo user (HTTP Basic), outside the browser."""
    request = urllib.request.Request(f"{base}/api/sessions/{session_id}/")
    token = base64.b64encode(b"demo:demo-password").decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        data: dict[str, Any] = json.load(response)
    return data


def test_a_person_chats_live_on_the_chat_page(browser: Any, demo_site: str) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT_SECONDS, poll_frequency=0.02)
    shots = os.environ.get("CHAT_SCREENSHOTS")

    def messages() -> list[tuple[int, str, str, str]]:
        """(id, role, status, text) of each message on the page, in order."""
        rows = browser.execute_script(
            "return [...document.querySelectorAll('#messages [data-message-id]')].map(li => "
            "[Number(li.dataset.messageId), li.dataset.role, li.dataset.status,"
            " (li.querySelector('.content') || {textContent: ''}).textContent])"
        )
        return [tuple(row) for row in rows]

    def assistant_replies() -> list[tuple[int, str, str, str]]:
        return [m for m in messages() if m[1] == "assistant"]

    def settled(driver: Any) -> bool:
        replies = assistant_replies()
        return bool(replies) and all(
            status == "completed" and LABEL in text for _, _, status, text in replies
        )

    def watch_reply_stream_in() -> list[int]:
        """The lengths the streaming reply's text went through, sampled until it is completed."""
        lengths: list[int] = []
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            replies = assistant_replies()
            if replies and replies[-1][2] == "in_progress":
                lengths.append(len(replies[-1][3]))
            elif lengths and replies and replies[-1][2] == "completed":
                return lengths
            time.sleep(0.01)
        raise AssertionError(f"the reply never completed: {messages()}")

    def send(text: str) -> None:
        box = browser.find_element(By.CSS_SELECTOR, "form.composer textarea[name=content]")
        box.send_keys(text)
        browser.find_element(By.CSS_SELECTOR, "form.composer button[type=submit]").click()

    # The home page links the chat; signing in from there lands on it.
    browser.get(demo_site + "/")
    browser.find_element(By.LINK_TEXT, "Sign in").click()
    browser.find_element(By.NAME, "username").send_keys("demo")
    browser.find_element(By.NAME, "password").send_keys("demo-password")
    browser.find_element(By.CSS_SELECTOR, "form [type=submit]").click()
    wait.until(ec.url_to_be(demo_site + "/chat/"))

    # The first message starts a conversation; the scripted reply is written into it on the server.
    send("Hello from a real browser")
    wait.until(ec.url_matches(r"/chat/[A-Za-z0-9_-]{22}/$"))
    session_id = browser.current_url.rstrip("/").rsplit("/", 1)[1]
    wait.until(ec.text_to_be_present_in_element((By.ID, "live"), "live"))
    wait.until(settled)
    assert messages()[0][1::2] == ("user", "Hello from a real browser")

    # The next reply is watched as it streams in: its text grows token by token, in the page.
    send("Tell me about live events please")
    lengths = watch_reply_stream_in()
    assert len(set(lengths)) >= 5, lengths  # seen at many intermediate lengths, not all at once
    assert lengths == sorted(lengths)
    wait.until(settled)
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(shots) / "chat.png"))

    # Regenerate: the last reply goes, a new one (with a new id) is written; one reply remains.
    before = assistant_replies()
    old_reply = before[-1][0]
    browser.find_element(By.CSS_SELECTOR, "[data-action=regenerate]").click()
    wait.until(lambda d: assistant_replies() and assistant_replies()[-1][0] != old_reply and settled(d))
    after = assistant_replies()
    assert len(after) == len(before)
    assert after[-1][0] > old_reply
    assert messages()[-1][0] == after[-1][0]
    stored = api_session(demo_site, session_id)["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant"]
    assert stored[-1]["id"] == after[-1][0]

    # Edit the first message and resubmit it: everything after it goes, a new reply follows it.
    first = messages()[0][0]
    browser.find_element(By.CSS_SELECTOR, f'[data-message-id="{first}"] [data-action=edit]').click()
    box = browser.find_element(By.CSS_SELECTOR, f'[data-message-id="{first}"] form.edit textarea')
    box.clear()
    box.send_keys("An edited question")
    browser.find_element(By.CSS_SELECTOR, f'[data-message-id="{first}"] [data-action=save]').click()
    wait.until(lambda d: [m[1:4:2] for m in messages()][:1] == [("user", "An edited question")])
    wait.until(lambda d: len(messages()) == 2 and settled(d))
    (user_id, _, _, _), (reply_id, _, _, _) = messages()
    assert user_id == first
    assert reply_id > after[-1][0]
    stored = api_session(demo_site, session_id)["messages"]
    assert (stored[0]["id"], stored[0]["role"], stored[0]["content"]) == (first, "user", "An edited question")
    assert len(stored) == 2

    # Delete the reply.
    browser.find_element(By.CSS_SELECTOR, f'[data-message-id="{reply_id}"] [data-action=delete]').click()
    wait.until(lambda d: [m[0] for m in messages()] == [first])
    assert [m["id"] for m in api_session(demo_site, session_id)["messages"]] == [first]

    # A second window on the same session sees the next reply arrive live, token by token.
    first_window = browser.current_window_handle
    browser.switch_to.new_window("window")
    browser.get(f"{demo_site}/chat/{session_id}/")
    wait.until(ec.text_to_be_present_in_element((By.ID, "live"), "live"))
    second_window = browser.current_window_handle
    browser.switch_to.window(first_window)
    send("Both windows should see this")
    browser.switch_to.window(second_window)
    lengths = watch_reply_stream_in()
    assert len(set(lengths)) >= 3, lengths
    wait.until(settled)
    assert [(role, text) for _, role, _, text in messages()][:2] == [
        ("user", "An edited question"),
        ("user", "Both windows should see this"),
    ]
    if shots:
        browser.save_screenshot(str(Path(shots) / "chat-second-window.png"))

    # Rename from one window: the other shows the new title.
    browser.switch_to.window(first_window)
    title = browser.find_element(By.CSS_SELECTOR, "#rename input[name=title]")
    title.clear()
    title.send_keys("Renamed live")
    browser.find_element(By.CSS_SELECTOR, "#rename button[type=submit]").click()
    browser.switch_to.window(second_window)
    wait.until(ec.text_to_be_present_in_element((By.ID, "title"), "Renamed live"))

    # Delete the conversation: both windows leave it.
    browser.find_element(By.CSS_SELECTOR, "[data-action=delete-session]").click()
    browser.switch_to.alert.accept()
    wait.until(ec.url_to_be(demo_site + "/chat/"))
    browser.switch_to.window(first_window)
    wait.until(ec.url_to_be(demo_site + "/chat/"))
    assert session_id not in browser.page_source
