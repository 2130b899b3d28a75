"""Adapters that let agent frameworks keep their memory in this store (each an optional extra).

* ``conversations.integrations.agents``: ``ConversationSession``, the OpenAI Agents SDK's ``Session``
  (``pip install 'django-conversations[agents]'``).
* ``conversations.integrations.llama_index``: ``ConversationChatStore``, a LlamaIndex ``BaseChatStore``
  (``[llama-index]``).
* ``conversations.integrations.langchain``: ``ConversationChatMessageHistory``, a LangChain
  ``BaseChatMessageHistory`` (``[langchain]``).

Each submodule imports its framework when it is imported; this package imports none of them, so the
base install never needs one. Every adapter writes ordinary messages: a ``role`` the HTTP API and the
reports know, a readable ``content``, and the framework's own object kept verbatim in ``data`` under
the framework's name (``data["agents"]``, ``data["llama_index"]``, ``data["langchain"]``), which is what
the adapter reads back. A message written some other way (over the HTTP API, say) has no such entry
and reads back as a plain text message of its role.
"""

from __future__ import annotations

from conversations.store import ConversationStore, get_store


def resolve_store(store: ConversationStore | None) -> ConversationStore:
    """The store an adapter was given, else the one settings configure (read at call time, so
    ``override_settings`` applies to adapters built earlier)."""
    return store if store is not None else get_store()


def readable(text: str, store: ConversationStore) -> str:
    """``text`` cut to ``MAX_MESSAGE_LENGTH``: ``content`` is the human-readable copy, and the
    framework's object in ``data`` keeps the whole of it."""
    return text[: store.config.max_message_length]
