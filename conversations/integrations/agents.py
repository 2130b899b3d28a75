"""The OpenAI Agents SDK's ``Session`` on this store: ``pip install 'django-conversations[agents]'``.

    session = await ConversationSession.create(owner="user:42", title="Refunds")
    result = await Runner.run(agent, "Where is my refund?", session=session)
    # later, in another request or process:
    session = ConversationSession(session_id, owner="user:42")

Each SDK item (a Responses API input item: a message, a ``function_call``, a ``function_call_output``,
``reasoning``...) is one message of the conversation. The item itself is kept verbatim in the
message's ``data["agents"]`` and comes back exactly as it went in (the runner compares items it pops
on retries); the message's ``role`` (user, assistant, system or tool) and ``content`` (the item's text
where it has one, ``name(arguments)`` for a function call) are what the HTTP API, the exports and the
reports show. The site's ``ROLES`` must include those four (the default does).

Everything is owner-scoped, one round trip per call and atomic (each call is one Lua script over keys
sharing the session's hash tag, so it works on a Redis Cluster and under Sentinel as the store does),
and every write renews the session's TTL. Reads of a missing, expired or another owner's session find
no items; ``add_items`` to one raises ``SessionNotFound`` (an expired session is gone: create another).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

try:
    from agents import SessionSettings
    from agents.items import TResponseInputItem
    from agents.memory.session_settings import resolve_session_limit
except ImportError as exc:  # say which extra brings it
    raise ImportError(
        f"{exc}: this adapter needs openai-agents: pip install 'django-conversations[agents]'"
    ) from exc

from conversations.exceptions import InvalidInput, SessionNotFound
from conversations.store import ConversationStore, Message
from conversations.store.validation import STATUSES

from . import readable, resolve_store

#: The key of ``Message.data`` that holds the SDK's item.
DATA_KEY = "agents"

# Message roles of the Responses API, as the store's roles.
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def _text(content: Any) -> str:
    """The text of a message's content: a string, or a list of parts (input_text, output_text,
    refusal, summary_text...) whose texts are joined."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = []
    for part in content:
        if isinstance(part, Mapping):
            text = part.get("text", part.get("refusal"))
            if isinstance(text, str):
                texts.append(text)
    return "\n".join(texts)


def item_to_message(item: Any, store: ConversationStore) -> dict[str, Any]:
    """The message spec (for ``append_messages``) that stores ``item``."""
    if not isinstance(item, Mapping):
        raise InvalidInput("Each item must be a dict (a Responses API input item).", field="items")
    kind, role = item.get("type"), item.get("role")
    if isinstance(role, str) and kind in (None, "message"):
        stored_role, text = _ROLES.get(role, "user"), _text(item.get("content"))
    elif isinstance(kind, str) and kind.endswith("_output"):  # function_call_output, computer_call_output...
        stored_role, output = "tool", item.get("output")
        text = output if isinstance(output, str) else _text(output)
    elif kind == "function_call":
        stored_role, text = "assistant", f"{item.get('name', '')}({item.get('arguments', '')})"
    elif kind == "reasoning":
        stored_role, text = "assistant", _text(item.get("summary"))
    else:  # other calls the model makes (web search, computer, shell...): no text of their own
        stored_role, text = "assistant", ""
    status = item.get("status")
    return {
        "role": stored_role,
        "content": readable(text, store),
        "status": status if status in STATUSES else "completed",
        "data": {DATA_KEY: dict(item)},
    }


def message_to_item(message: Message) -> TResponseInputItem | None:
    """The SDK item a message holds; a plain text message of the conversation (one written over the
    HTTP API, say) reads as an easy input message; a tool message without an item has no SDK form."""
    item = message.data.get(DATA_KEY)
    if isinstance(item, dict):
        return cast("TResponseInputItem", item)  # the item as the SDK gave it
    if message.role in ("user", "assistant", "system"):
        return cast("TResponseInputItem", {"role": message.role, "content": message.content})
    return None


class ConversationSession:
    """An Agents SDK ``Session`` (the protocol) kept in a conversation of this store.

    ``session_id`` is the conversation's id: ``GET /api/sessions/<session_id>/`` shows it to its owner.
    ``session_settings.limit`` is the default ``limit`` of ``get_items``, as for the SDK's own
    sessions. ``store`` defaults to ``get_store()``, read at each call.
    """

    session_settings: SessionSettings | None = None

    def __init__(
        self,
        session_id: str,
        *,
        owner: str | None = None,
        session_settings: SessionSettings | None = None,
        store: ConversationStore | None = None,
    ) -> None:
        self.session_id = session_id
        self.owner = owner
        self.session_settings = session_settings if session_settings is not None else SessionSettings()
        self._store = store

    @classmethod
    async def create(
        cls,
        *,
        owner: str | None = None,
        title: str = "",
        metadata: dict[str, Any] | None = None,
        session_settings: SessionSettings | None = None,
        store: ConversationStore | None = None,
    ) -> ConversationSession:
        """A new, empty conversation of ``owner`` and a session on it."""
        conversation = await resolve_store(store).acreate_session(metadata, owner=owner, title=title)
        return cls(conversation.id, owner=owner, session_settings=session_settings, store=store)

    @property
    def store(self) -> ConversationStore:
        return resolve_store(self._store)

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The newest ``limit`` items (default: ``session_settings.limit``; None: all), oldest first,
        in one round trip. As in the SDK's sessions, ``limit`` counts items: messages with no SDK form
        are skipped, and the window widens past them."""
        wanted = resolve_session_limit(limit, self.session_settings)
        if wanted is not None and wanted <= 0:
            return []
        store = self.store
        most = store.config.max_messages  # no session holds more: last=most reads all of it at once
        window = most if wanted is None else min(wanted, most)
        while True:
            try:
                messages = await store.aget_messages(self.session_id, owner=self.owner, last=window)
            except SessionNotFound:
                return []
            items = [item for message in messages if (item := message_to_item(message)) is not None]
            if wanted is None:
                return items
            if len(items) >= wanted or len(messages) < window or window >= most:
                return items[-wanted:]
            window = min(window * 2, most)

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append the items as consecutive messages, all in one script (one round trip), all or
        nothing. Raises ``SessionNotFound`` for a missing, expired or another owner's session and
        ``InvalidInput`` for an item over the store's limits (``MAX_MESSAGE_DATA_BYTES``...)."""
        if not items:
            return
        store = self.store
        specs = [item_to_message(item, store) for item in items]
        await store.aappend_messages(self.session_id, specs, owner=self.owner)

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove and return the newest item (None when there is none), in one owner-checked script.
        A newest message with no SDK form is removed and passed over, as the SDK's sessions pass over
        rows they cannot read."""
        store = self.store
        while True:
            try:
                message = await store.apop_message(self.session_id, owner=self.owner)
            except SessionNotFound:
                return None
            if message is None:
                return None
            item = message_to_item(message)
            if item is not None:
                return item

    async def clear_session(self) -> None:
        """Remove every item; the conversation itself stays (with its title and metadata)."""
        try:
            await self.store.atruncate_messages(self.session_id, after=0, owner=self.owner)
        except SessionNotFound:
            return

    def __repr__(self) -> str:
        return f"ConversationSession({self.session_id!r}, owner={self.owner!r})"


__all__ = ["ConversationSession", "item_to_message", "message_to_item"]
