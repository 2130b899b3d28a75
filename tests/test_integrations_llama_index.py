"""``ConversationChatStore``: a LlamaIndex ``BaseChatStore`` on the store, on the real Redis.

``ChatMemoryBuffer`` gets a whitespace tokenizer: its default (tiktoken) would fetch its tables from
the network.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from django.contrib.auth.models import User
from llama_index.core.llms import ChatMessage, ImageBlock, MessageRole, TextBlock
from llama_index.core.memory import ChatMemoryBuffer
from rest_framework.test import APIClient

from conversations.exceptions import SessionNotFound
from conversations.integrations.llama_index import ConversationChatStore
from conversations.store import ConversationStore

pytestmark = pytest.mark.redis


def texts(messages: list[ChatMessage] | None) -> list[str | None]:
    assert messages is not None
    return [m.content for m in messages]


def filled(chat_store: ConversationChatStore, n: int = 5) -> str:
    key = chat_store.create_key(title="Notes")
    chat_store.set_messages(key, [ChatMessage(role="user", content=f"m{i}") for i in range(n)])
    return key


def test_a_chat_memory_buffer_puts_and_gets_through_the_store(store: ConversationStore) -> None:
    chat_store = ConversationChatStore(owner="user:1", store=store)
    key = chat_store.create_key()
    memory = ChatMemoryBuffer.from_defaults(chat_store=chat_store, chat_store_key=key, tokenizer_fn=str.split)

    memory.put(ChatMessage(role=MessageRole.USER, content="Where is my refund?"))
    memory.put(ChatMessage(role=MessageRole.ASSISTANT, content="It was sent on Monday."))
    # Another process with another buffer on the same key sees the same history.
    again = ChatMemoryBuffer.from_defaults(
        chat_store=ConversationChatStore(owner="user:1"), chat_store_key=key, tokenizer_fn=str.split
    )

    assert texts(again.get()) == ["Where is my refund?", "It was sent on Monday."]
    assert [m.role for m in again.get_all()] == [MessageRole.USER, MessageRole.ASSISTANT]
    memory.reset()
    assert again.get_all() == []
    assert chat_store.get_keys() == [key]  # the conversation stays for the next turn


def test_from_defaults_with_a_history_sets_it(store: ConversationStore) -> None:
    chat_store = ConversationChatStore(store=store)
    key = filled(chat_store, 2)

    memory = ChatMemoryBuffer.from_defaults(
        chat_history=[ChatMessage(role="system", content="be brief")],
        chat_store=chat_store,
        chat_store_key=key,
        tokenizer_fn=str.split,
    )

    assert texts(memory.get_all()) == ["be brief"]


def test_chat_messages_round_trip_whole(store: ConversationStore) -> None:
    chat_store = ConversationChatStore(store=store)
    key = chat_store.create_key()
    sent = [
        ChatMessage(role="developer", content="Answer in French."),
        ChatMessage(
            role="user", blocks=[TextBlock(text="What is this?"), ImageBlock(url="https://e.x/a.png")]
        ),
        ChatMessage(
            role="assistant",
            content="",
            additional_kwargs={"tool_calls": [{"id": "c1", "function": {"name": "look", "arguments": "{}"}}]},
        ),
        ChatMessage(role="tool", content="a cat", additional_kwargs={"tool_call_id": "c1", "name": "look"}),
        ChatMessage(role="chatbot", content="C'est un chat."),
    ]

    for message in sent:
        chat_store.add_message(key, message)

    assert chat_store.get_messages(key) == sent
    stored = store.get_messages(key, last=10)
    assert [(m.role, m.content) for m in stored] == [
        ("system", "Answer in French."),
        ("user", "What is this?"),
        ("assistant", ""),
        ("tool", "a cat"),
        ("assistant", "C'est un chat."),
    ]


def test_delete_in_the_middle_keeps_the_order(store: ConversationStore) -> None:
    chat_store = ConversationChatStore(store=store)
    key = filled(chat_store)

    removed = chat_store.delete_message(key, 2)
    from_end = chat_store.delete_message(key, -2)

    assert removed is not None
    assert removed.content == "m2"
    assert from_end is not None
    assert from_end.content == "m3"
    assert texts(chat_store.get_messages(key)) == ["m0", "m1", "m4"]
    assert chat_store.delete_message(key, 3) is None
    assert chat_store.delete_message(key, -4) is None
    assert texts(chat_store.get_messages(key)) == ["m0", "m1", "m4"]


def test_delete_message_never_removes_another_than_it_returns(store: ConversationStore) -> None:
    """Writers race a deleter: whatever each delete returns is what left the history, and nothing else."""
    chat_store = ConversationChatStore(store=store)
    key = filled(chat_store, 60)
    returned: list[str] = []

    def delete() -> None:
        for _ in range(15):
            message = chat_store.delete_message(key, 0)
            if message is not None:
                returned.append(str(message.content))

    threads = [threading.Thread(target=delete) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    left = texts(chat_store.get_messages(key))
    assert sorted(returned + [str(t) for t in left], key=lambda t: int(t[1:])) == [f"m{i}" for i in range(60)]
    assert len(set(returned)) == len(returned)
    assert left == sorted(left, key=lambda t: int(str(t)[1:]))


def test_delete_last_message_and_delete_messages(store: ConversationStore) -> None:
    chat_store = ConversationChatStore(store=store)
    key = filled(chat_store, 3)

    last = chat_store.delete_last_message(key)
    held = chat_store.delete_messages(key)

    assert last is not None
    assert last.content == "m2"
    assert texts(held) == ["m0", "m1"]
    assert chat_store.get_messages(key) == []
    assert chat_store.delete_last_message(key) is None


def test_get_keys_lists_the_owners_conversations_from_their_index_never_keys(private_cache: Any) -> None:
    """On a Redis of this test's own, whose command statistics only this test moves."""
    mine, theirs = ConversationChatStore(owner="user:1"), ConversationChatStore(owner="user:2")
    first, second = mine.create_key(), mine.create_key()
    other = theirs.create_key()
    admin = private_cache.admin()
    admin.config_resetstat()

    assert sorted(mine.get_keys()) == sorted([first, second])
    assert theirs.get_keys() == [other]
    assert asyncio.run(mine.aget_keys()) == mine.get_keys()

    used = set(admin.info("commandstats"))
    assert used  # the listings went to this server
    assert not {"cmdstat_keys", "cmdstat_scan"} & used


def test_another_owners_key_reads_empty_and_refuses_writes(store: ConversationStore) -> None:
    key = filled(ConversationChatStore(owner="user:1", store=store), 2)
    intruder = ConversationChatStore(owner="user:2", store=store)

    assert intruder.get_messages(key) == []
    assert intruder.delete_message(key, 0) is None
    assert intruder.delete_last_message(key) is None
    assert intruder.delete_messages(key) is None
    with pytest.raises(SessionNotFound, match="create_key"):
        intruder.add_message(key, ChatMessage(role="user", content="x"))
    with pytest.raises(SessionNotFound):
        intruder.set_messages(key, [])
    with pytest.raises(SessionNotFound):
        ConversationChatStore(store=store).add_message("chat_history", ChatMessage(content="x"))

    assert len(ConversationChatStore(owner="user:1").get_messages(key)) == 2


def test_the_async_twins(store: ConversationStore) -> None:
    chat_store = ConversationChatStore(owner="u", store=store)

    async def go() -> dict[str, Any]:
        key = await chat_store.acreate_key()
        await chat_store.aset_messages(key, [ChatMessage(role="user", content=f"m{i}") for i in range(4)])
        await chat_store.async_add_message(key, ChatMessage(role="assistant", content="m4"))
        out: dict[str, Any] = {"key": key, "keys": await chat_store.aget_keys()}
        out["middle"] = await chat_store.adelete_message(key, 1)
        out["last"] = await chat_store.adelete_last_message(key)
        out["all"] = await chat_store.aget_messages(key)
        out["deleted"] = await chat_store.adelete_messages(key)
        out["after"] = await chat_store.aget_messages(key)
        out["missing"] = await ConversationChatStore(owner="v").aget_messages(key)
        return out

    out = asyncio.run(go())

    assert out["keys"] == [out["key"]]
    assert out["middle"].content == "m1"
    assert out["last"].content == "m4"
    assert texts(out["all"]) == ["m0", "m2", "m3"]
    assert texts(out["deleted"]) == ["m0", "m2", "m3"]
    assert out["after"] == []
    assert out["missing"] == []


@pytest.mark.django_db
def test_the_conversation_is_listed_readable_and_exportable_over_http(
    store: ConversationStore, django_user_model: type[User]
) -> None:
    alice = django_user_model.objects.create_user("alice")
    chat_store = ConversationChatStore(owner=f"user:{alice.pk}", store=store)
    key = chat_store.create_key(title="Notes")
    memory = ChatMemoryBuffer.from_defaults(chat_store=chat_store, chat_store_key=key, tokenizer_fn=str.split)
    memory.put(ChatMessage(role="user", content="Where is my refund?"))
    memory.put(ChatMessage(role="assistant", content="Sent on Monday."))
    api = APIClient()
    api.force_authenticate(alice)

    listed = api.get("/api/sessions/").json()["results"]
    detail = api.get(f"/api/sessions/{key}/").json()
    export = api.get(f"/api/sessions/{key}/export/?format=markdown")

    assert [(s["id"], s["title"], s["message_count"]) for s in listed] == [(key, "Notes", 2)]
    assert [(m["role"], m["content"]) for m in detail["messages"]] == [
        ("user", "Where is my refund?"),
        ("assistant", "Sent on Monday."),
    ]
    assert export.status_code == 200
    assert "Sent on Monday." in export.getvalue().decode()
    # A message posted over HTTP joins the memory as a plain message of its role.
    api.post(f"/api/sessions/{key}/messages/", {"role": "user", "content": "Thanks"}, format="json")
    assert memory.get_all()[-1] == ChatMessage(role="user", content="Thanks")
