"""A LangChain chat message history on this store: ``pip install 'django-conversations[langchain]'``.

    history = ConversationChatMessageHistory(session_id, owner="user:42")
    chain = RunnableWithMessageHistory(
        model, lambda session_id: ConversationChatMessageHistory(session_id, owner="user:42")
    )

LangChain is moving its memory from ``BaseChatMessageHistory`` to graph checkpointers (LangGraph), so
this adapter stays small: the interface's own methods, with native async twins. Each message is one
message of the conversation: its role as the store's (human: user, ai: assistant, system, tool and
function: tool; the site's ``ROLES`` must include these four, as the default does), its text as
``content`` (``name(args)`` for an AI message that only calls tools), and its whole ``message_to_dict``
form in ``data["langchain"]`` (``tool_calls``, ``tool_call_id``, ``artifact``, ids and metadata
included), from which it reads back equal.

Reads of a missing, expired or another owner's conversation find no messages; ``add_messages`` to one
raises ``SessionNotFound`` (make one with ``create()`` or ``store.create_session``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

try:
    from langchain_core.chat_history import BaseChatMessageHistory
    from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict
except ImportError as exc:  # say which extra brings it
    raise ImportError(
        f"{exc}: this adapter needs langchain-core: pip install 'django-conversations[langchain]'"
    ) from exc

from conversations.exceptions import InvalidInput, SessionNotFound
from conversations.store import ConversationStore, Message

from . import readable, resolve_store

#: The key of ``Message.data`` that holds the LangChain message.
DATA_KEY = "langchain"

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "tool"}
_PLAIN = {"user": "human", "assistant": "ai", "system": "system"}


def _text(content: Any) -> str:
    """A message's text: its content string, or the texts of its content blocks."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = []
    for block in content:
        if isinstance(block, str):
            texts.append(block)
        elif isinstance(block, dict) and isinstance(block.get("text"), str):
            texts.append(block["text"])
    return "\n".join(texts)


def base_message_to_message(message: BaseMessage, store: ConversationStore) -> dict[str, Any]:
    """The message spec (for ``append_messages``) that stores ``message``."""
    if not isinstance(message, BaseMessage):
        raise InvalidInput("Expected a langchain_core BaseMessage.", field="messages")
    kind = message.type.removesuffix("MessageChunk").lower()  # chunks: "AIMessageChunk" -> "ai"
    role = _ROLES.get(kind)
    if role is None:  # ChatMessage: a role of its own
        role = str(getattr(message, "role", ""))
        role = role if role in ("user", "assistant", "system", "tool") else "user"
    text = _text(message.content)
    tool_calls = getattr(message, "tool_calls", None)
    if not text and tool_calls:
        text = ", ".join(
            f"{call.get('name', '')}({orjson.dumps(call.get('args', {})).decode()})" for call in tool_calls
        )
    return {"role": role, "content": readable(text, store), "data": {DATA_KEY: message_to_dict(message)}}


def message_to_base_message(message: Message) -> BaseMessage:
    """The LangChain message a stored message holds; one written some other way reads as a plain
    message of its role (a tool message without a call id as a plain chat message)."""
    stored = message.data.get(DATA_KEY)
    if isinstance(stored, dict):
        return messages_from_dict([stored])[0]
    kind = _PLAIN.get(message.role)
    if kind is None:
        return messages_from_dict(
            [{"type": "chat", "data": {"role": message.role, "content": message.content}}]
        )[0]
    return messages_from_dict([{"type": kind, "data": {"content": message.content}}])[0]


class ConversationChatMessageHistory(BaseChatMessageHistory):
    """The messages of one conversation (``session_id``) of ``owner``, as LangChain's history.

    ``store`` defaults to ``get_store()``, read at each call.
    """

    def __init__(
        self, session_id: str, *, owner: str | None = None, store: ConversationStore | None = None
    ) -> None:
        super().__init__()
        self.session_id = session_id
        self.owner = owner
        self._store = store

    @classmethod
    def create(
        cls,
        *,
        owner: str | None = None,
        title: str = "",
        metadata: dict[str, Any] | None = None,
        store: ConversationStore | None = None,
    ) -> ConversationChatMessageHistory:
        """A new, empty conversation of ``owner`` and its history."""
        conversation = resolve_store(store).create_session(metadata, owner=owner, title=title)
        return cls(conversation.id, owner=owner, store=store)

    @classmethod
    async def acreate(
        cls,
        *,
        owner: str | None = None,
        title: str = "",
        metadata: dict[str, Any] | None = None,
        store: ConversationStore | None = None,
    ) -> ConversationChatMessageHistory:
        conversation = await resolve_store(store).acreate_session(metadata, owner=owner, title=title)
        return cls(conversation.id, owner=owner, store=store)

    @property
    def store(self) -> ConversationStore:
        return resolve_store(self._store)

    @property
    def messages(self) -> list[BaseMessage]:
        """The whole history, oldest first, in one round trip ([] for a missing conversation)."""
        store = self.store
        try:
            stored = store.get_messages(self.session_id, owner=self.owner, last=store.config.max_messages)
        except SessionNotFound:
            return []
        return [message_to_base_message(message) for message in stored]

    @messages.setter
    def messages(self, messages: Sequence[BaseMessage]) -> None:
        """Assigning replaces the whole history atomically (one script): a concurrent reader sees the
        old history or the new one, never a mix. Raises ``SessionNotFound`` for a missing conversation."""
        store = self.store
        specs = [base_message_to_message(message, store) for message in messages]
        store.replace_messages(self.session_id, specs, owner=self.owner)

    async def aget_messages(self) -> list[BaseMessage]:
        store = self.store
        try:
            stored = await store.aget_messages(
                self.session_id, owner=self.owner, last=store.config.max_messages
            )
        except SessionNotFound:
            return []
        return [message_to_base_message(message) for message in stored]

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append the messages as consecutive messages in one script (one round trip), all or nothing."""
        if not messages:
            return
        store = self.store
        specs = [base_message_to_message(message, store) for message in messages]
        store.append_messages(self.session_id, specs, owner=self.owner)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        if not messages:
            return
        store = self.store
        specs = [base_message_to_message(message, store) for message in messages]
        await store.aappend_messages(self.session_id, specs, owner=self.owner)

    def clear(self) -> None:
        """Remove every message; the conversation itself stays."""
        try:
            self.store.truncate_messages(self.session_id, after=0, owner=self.owner)
        except SessionNotFound:
            return

    async def aclear(self) -> None:
        try:
            await self.store.atruncate_messages(self.session_id, after=0, owner=self.owner)
        except SessionNotFound:
            return


__all__ = ["ConversationChatMessageHistory", "base_message_to_message", "message_to_base_message"]
