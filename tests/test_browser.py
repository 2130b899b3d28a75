"""A real browser uses the browsable API: headless Chromium signs in, creates a session and posts a
message through DRF's HTML forms, and sees the message on the page.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them). Skipped locally when they
are missing; under CI=true it fails instead.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User

from conversations.store import ConversationStore

pytestmark = pytest.mark.redis

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WAIT_SECONDS = 30


@pytest.fixture
def browser() -> Iterator[Any]:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
    if missing:
        message = f"headless Chromium is not installed ({', '.join(missing)} missing)"
        if IN_CI:
            pytest.fail(message + " (CI=true: the browser test never skips)", pytrace=False)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="conversations-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1280,1600",
    ):
        options.add_argument(flag)
    # The Debian driver, named explicitly: Selenium Manager never goes looking for (or downloading) one.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def submit_form_with(driver: Any, field_name: str) -> None:
    """Press the POST button of the HTML form holding the field ``field_name``."""
    from selenium.webdriver.common.by import By

    form = driver.find_element(By.NAME, field_name).find_element(By.XPATH, "./ancestor::form")
    form.find_element(By.CSS_SELECTOR, "button.btn-primary").click()


def test_a_person_chats_through_the_browsable_api(
    browser: Any,
    live_server: Any,
    store: ConversationStore,
    transactional_db: None,
    django_user_model: type[User],
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    user = django_user_model.objects.create_user("carol", password="carol-password")
    wait = WebDriverWait(browser, WAIT_SECONDS)

    # Sign in with DRF's login page; it sends us on to the session list.
    browser.get(f"{live_server.url}/api-auth/login/?next=/api/sessions/")
    browser.find_element(By.NAME, "username").send_keys("carol")
    browser.find_element(By.NAME, "password").send_keys("carol-password")
    browser.find_element(By.CSS_SELECTOR, "form [type=submit]").click()
    wait.until(ec.url_contains("/api/sessions/"))

    # Create a session with the HTML form.
    title = wait.until(ec.visibility_of_element_located((By.NAME, "title")))
    title.send_keys("Asked from a browser")
    submit_form_with(browser, "title")
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".response-info"), "201 Created"))
    response = browser.find_element(By.CSS_SELECTOR, ".response-info").text
    match = re.search(r'"id": "([A-Za-z0-9_-]{22})"', response)
    assert match, response
    session_id = match.group(1)

    # Post a message with the messages page's HTML form.
    browser.get(f"{live_server.url}/api/sessions/{session_id}/messages/")
    Select(wait.until(ec.visibility_of_element_located((By.NAME, "role")))).select_by_value("user")
    browser.find_element(By.NAME, "content").send_keys("Hello from a real browser")
    submit_form_with(browser, "content")
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".response-info"), "201 Created"))

    # The message is on the page of messages, and in Redis under carol's name.
    browser.get(f"{live_server.url}/api/sessions/{session_id}/messages/")
    page = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, ".response-info"))).text
    assert "HTTP 200 OK" in page
    assert "Hello from a real browser" in page
    session = store.get_session(session_id, owner=f"user:{user.pk}")
    assert session is not None
    assert session.title == "Asked from a browser"
    assert [(m.role, m.content) for m in session.messages] == [("user", "Hello from a real browser")]
