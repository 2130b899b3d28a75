"""A LlamaIndex chat store on this store: ``pip install 'django-conversations[llama-index]'``.

    chat_store = ConversationChatStore(owner="user:42")
    key = chat_store.create_key(title="Refunds")          # a new conversation; its id is the key
    memory = ChatMemoryBuffer.from_defaults(chat_store=chat_store, chat_store_key=key)

Keys are conversation (session) ids: make one with ``create_key()`` (or ``store.create_session``),
and ``GET /api/sessions/<key>/`` shows it to its owner. Every ``ChatMessage`` is one message: its
role as the store's (system and developer: system; user; assistant, chatbot and model: assistant;
tool and function: tool; the site's ``ROLES`` must include these four, as the default does), its
text as ``content``, and the whole message (role, blocks, additional_kwargs) in ``data["llama_index"]``,
from which it reads back equal.

Reads of a missing, expired or another owner's key find no messages (as a ``SimpleChatStore`` finds
none for an unknown key); writes to one raise ``SessionNotFound``: a key is made with ``create_key``,
never by a first write. Each call is one round trip and one atomic script, except ``delete_message``
(see there) and ``delete_messages``, which read and then remove.
"""

from __future__ import annotations

from typing import Any

try:
    from llama_index.core.bridge.pydantic import PrivateAttr
    from llama_index.core.llms import ChatMessage
    from llama_index.core.storage.chat_store.base import BaseChatStore
except ImportError as exc:  # say which extra brings it
    raise ImportError(
        f"{exc}: this adapter needs llama-index-core: pip install 'django-conversations[llama-index]'"
    ) from exc

from conversations.exceptions import InvalidInput, SessionNotFound
from conversations.store import ConversationStore, Message

from . import readable, resolve_store

#: The key of ``Message.data`` that holds the LlamaIndex message.
DATA_KEY = "llama_index"

_ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "chatbot": "assistant",
    "model": "assistant",
    "tool": "tool",
    "function": "tool",
}


def chat_message_to_message(message: ChatMessage, store: ConversationStore) -> dict[str, Any]:
    """The message spec (for ``append_messages``) that stores ``message``."""
    if not isinstance(message, ChatMessage):
        raise InvalidInput("Expected a llama_index ChatMessage.", field="messages")
    try:
        dumped = message.model_dump(mode="json")
    except ValueError as exc:  # pydantic's serialization errors are ValueErrors
        raise InvalidInput(f"The message does not serialize to JSON: {exc}", field="data") from exc
    role = getattr(message.role, "value", message.role)
    return {
        "role": _ROLES.get(str(role), "user"),
        "content": readable(message.content or "", store),
        "data": {DATA_KEY: dumped},
    }


def message_to_chat_message(message: Message) -> ChatMessage:
    """The ``ChatMessage`` a stored message holds; one written some other way reads as a text message
    of its role."""
    dumped = message.data.get(DATA_KEY)
    if isinstance(dumped, dict):
        return ChatMessage.model_validate(dumped)
    return ChatMessage(role=message.role, content=message.content)


def _window(idx: int) -> dict[str, int]:
    """The shortest read that reaches position ``idx`` (negative: from the end)."""
    return {"after": 0, "limit": idx + 1} if idx >= 0 else {"last": -idx}


def _at(messages: list[Message], idx: int) -> Message | None:
    if idx >= 0:
        return messages[idx] if len(messages) > idx else None
    return messages[0] if len(messages) == -idx else None


class ConversationChatStore(BaseChatStore):
    """A ``BaseChatStore`` whose keys are the conversations of one owner.

    Each sync method has a native async twin (``aget_messages``...) on the store's ``redis.asyncio``
    client (no thread hop). ``store`` defaults to ``get_store()``, read at each call.
    """

    _owner: str | None = PrivateAttr(default=None)
    _store: ConversationStore | None = PrivateAttr(default=None)

    def __init__(self, *, owner: str | None = None, store: ConversationStore | None = None) -> None:
        super().__init__()
        self._owner = owner
        self._store = store

    @property
    def owner(self) -> str | None:
        """The owner whose conversations the keys name."""
        return self._owner

    @classmethod
    def class_name(cls) -> str:
        return "ConversationChatStore"

    @property
    def store(self) -> ConversationStore:
        return resolve_store(self._store)

    def _missing(self, key: str, exc: SessionNotFound) -> SessionNotFound:
        error = SessionNotFound(
            f"No conversation {key!r} for this owner (missing, expired or another owner's); "
            "make keys with create_key()."
        )
        error.__cause__ = exc
        return error

    # ------------------------------------------------------------------ keys

    def create_key(self, *, title: str = "", metadata: dict[str, Any] | None = None) -> str:
        """A new, empty conversation of this store's owner; its id is the key."""
        return self.store.create_session(metadata, owner=self.owner, title=title).id

    async def acreate_key(self, *, title: str = "", metadata: dict[str, Any] | None = None) -> str:
        return (await self.store.acreate_session(metadata, owner=self.owner, title=title)).id

    def get_keys(self) -> list[str]:
        """The owner's conversations, most recently active first, from the owner's index (never a
        scan of the keyspace)."""
        return [summary.id for summary in self.store.list_sessions(owner=self.owner)]

    async def aget_keys(self) -> list[str]:
        return [summary.id for summary in await self.store.alist_sessions(owner=self.owner)]

    # ------------------------------------------------------------------ reads

    def get_messages(self, key: str) -> list[ChatMessage]:
        """The whole history, oldest first, in one round trip ([] for a missing key)."""
        store = self.store
        try:
            messages = store.get_messages(key, owner=self.owner, last=store.config.max_messages)
        except SessionNotFound:
            return []
        return [message_to_chat_message(message) for message in messages]

    async def aget_messages(self, key: str) -> list[ChatMessage]:
        store = self.store
        try:
            messages = await store.aget_messages(key, owner=self.owner, last=store.config.max_messages)
        except SessionNotFound:
            return []
        return [message_to_chat_message(message) for message in messages]

    # ------------------------------------------------------------------ writes

    def set_messages(self, key: str, messages: list[ChatMessage]) -> None:
        """Replace the whole history atomically (one script): a concurrent reader sees the old history
        or the new one, never a mix."""
        store = self.store
        specs = [chat_message_to_message(message, store) for message in messages]
        try:
            store.replace_messages(key, specs, owner=self.owner)
        except SessionNotFound as exc:
            raise self._missing(key, exc) from exc

    async def aset_messages(self, key: str, messages: list[ChatMessage]) -> None:
        store = self.store
        specs = [chat_message_to_message(message, store) for message in messages]
        try:
            await store.areplace_messages(key, specs, owner=self.owner)
        except SessionNotFound as exc:
            raise self._missing(key, exc) from exc

    def add_message(self, key: str, message: ChatMessage) -> None:
        """Append one message (one round trip; concurrent appends all land, in some order)."""
        store = self.store
        try:
            store.append_messages(key, [chat_message_to_message(message, store)], owner=self.owner)
        except SessionNotFound as exc:
            raise self._missing(key, exc) from exc

    async def async_add_message(self, key: str, message: ChatMessage) -> None:
        store = self.store
        try:
            await store.aappend_messages(key, [chat_message_to_message(message, store)], owner=self.owner)
        except SessionNotFound as exc:
            raise self._missing(key, exc) from exc

    def delete_messages(self, key: str) -> list[ChatMessage] | None:
        """Empty the history and return what it held (None for a missing key); the conversation itself
        stays, so the memory can go on with the same key. The messages are read, then removed: one
        appended in between is removed too without being returned (the history ends empty)."""
        store = self.store
        try:
            held = store.get_messages(key, owner=self.owner, last=store.config.max_messages)
            store.truncate_messages(key, after=0, owner=self.owner)
        except SessionNotFound:
            return None
        return [message_to_chat_message(message) for message in held]

    async def adelete_messages(self, key: str) -> list[ChatMessage] | None:
        store = self.store
        try:
            held = await store.aget_messages(key, owner=self.owner, last=store.config.max_messages)
            await store.atruncate_messages(key, after=0, owner=self.owner)
        except SessionNotFound:
            return None
        return [message_to_chat_message(message) for message in held]

    def delete_message(self, key: str, idx: int) -> ChatMessage | None:
        """Remove the message at position ``idx`` (negative counts from the end) and return it; None
        when there is no such position (or key). The others keep their order.

        Atomic and race-safe in this sense: ``idx`` is resolved by reading the history up to it, then
        exactly that message is removed by its id (one script), so a concurrent writer can never make
        this remove a different message than the one returned. Appends go at the end and shift no
        position. If another writer removes or inserts messages before ``idx`` between the read and the
        removal, the message removed is the one that was at ``idx`` when read; if that very message was
        removed meanwhile, nothing is removed and None is returned.
        """
        if isinstance(idx, bool) or not isinstance(idx, int):
            raise InvalidInput("idx must be an integer position.", field="idx")
        store = self.store
        try:
            target = _at(store.get_messages(key, owner=self.owner, **_window(idx)), idx)
            if target is None or not store.delete_message(key, target.id, owner=self.owner):
                return None
        except SessionNotFound:
            return None
        return message_to_chat_message(target)

    async def adelete_message(self, key: str, idx: int) -> ChatMessage | None:
        if isinstance(idx, bool) or not isinstance(idx, int):
            raise InvalidInput("idx must be an integer position.", field="idx")
        store = self.store
        try:
            target = _at(await store.aget_messages(key, owner=self.owner, **_window(idx)), idx)
            if target is None or not await store.adelete_message(key, target.id, owner=self.owner):
                return None
        except SessionNotFound:
            return None
        return message_to_chat_message(target)

    def delete_last_message(self, key: str) -> ChatMessage | None:
        """Remove and return the newest message, in one owner-checked script (None when there is none)."""
        try:
            message = self.store.pop_message(key, owner=self.owner)
        except SessionNotFound:
            return None
        return None if message is None else message_to_chat_message(message)

    async def adelete_last_message(self, key: str) -> ChatMessage | None:
        try:
            message = await self.store.apop_message(key, owner=self.owner)
        except SessionNotFound:
            return None
        return None if message is None else message_to_chat_message(message)


__all__ = ["ConversationChatStore", "chat_message_to_message", "message_to_chat_message"]
