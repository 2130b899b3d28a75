"""The chat page's scripted assistant: a deterministic stand-in for an LLM, clearly labelled as one.

It writes its reply the way a real model's reply is written: an in-progress message first, extended
token by token, then marked completed. Every step is a store write, so every open events stream (each
browser window on the session) sees it live. It runs in a background thread: that works under runserver
(WSGI, what ``make demo`` uses) and under an ASGI server alike.
"""

from __future__ import annotations

import logging
import re
import threading
import time

from conversations.exceptions import ConversationError
from conversations.store import get_store

logger = logging.getLogger("demo")

LABEL = "[Scripted demo assistant, no LLM]"
#: Seconds between tokens, so that the stream is visible to the eye.
TOKEN_DELAY = 0.04


def reply_to(text: str, attempt: int) -> str:
    """The scripted answer to a user message: the same message and attempt always get the same reply."""
    words = re.findall(r"\w+", text.lower())
    topic = max(words, key=len) if words else "that"
    openings = [
        "Thanks for your message.",
        "Here is another take.",
        "Let me put it differently.",
    ]
    return (
        f"{LABEL} {openings[attempt % len(openings)]} You wrote {len(words)} words, the longest being "
        f"“{topic}”. A real assistant would answer here; this one streams a fixed reply token by token, "
        "so that you can watch the live events at work."
    )


def tokens(text: str) -> list[str]:
    """The reply cut the way a model streams it: each word with the space before it."""
    return re.findall(r"\s*\S+", text)


def answer(session_id: str, owner: str, prompt: str, *, attempt: int = 0, delay: float = TOKEN_DELAY) -> int:
    """Write the assistant's reply to ``prompt`` into the session; returns the reply's message id."""
    store = get_store()
    reply = store.append_message(session_id, role="assistant", content="", owner=owner, status="in_progress")
    for token in tokens(reply_to(prompt, attempt)):
        time.sleep(delay)
        store.extend_message(session_id, reply.id, token, owner=owner)
    store.update_message(session_id, reply.id, owner=owner, status="completed")
    return reply.id


def answer_in_background(session_id: str, owner: str, prompt: str, *, attempt: int = 0) -> threading.Thread:
    def run() -> None:
        try:
            answer(session_id, owner, prompt, attempt=attempt)
        except ConversationError as exc:
            # The reply was removed meanwhile (regenerated, edited, deleted) or the session is gone:
            # a newer answer, if any, is being written by another thread.
            logger.info("The scripted reply in %s stopped: %r", session_id, exc)

    thread = threading.Thread(target=run, name=f"demo-assistant-{session_id}", daemon=True)
    thread.start()
    return thread
