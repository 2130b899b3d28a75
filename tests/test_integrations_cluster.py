"""The three framework adapters on a real local 3-primary Redis Cluster (through ``ClusterClient``),
sync and async: every script they cause keeps to one hash slot, where the frameworks' own Redis stores
send multi-key transactions across slots."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage, message_to_dict
from llama_index.core.llms import ChatMessage

from conversations.integrations.agents import ConversationSession
from conversations.integrations.langchain import ConversationChatMessageHistory
from conversations.integrations.llama_index import ConversationChatStore
from conversations.store import get_store
from tests.redis_servers import (
    LocalCluster,
    local_cluster,  # noqa: F401  (the module-scoped ``cluster`` fixture)
)
from tests.test_integrations_agents import two_turns

pytestmark = pytest.mark.redis


@pytest.fixture(autouse=True)
def on_the_cluster(settings: Any, cluster: LocalCluster) -> None:
    alias = f"cluster-{uuid.uuid4().hex[:8]}"
    settings.CACHES = {**settings.CACHES, alias: cluster.cache_config()}
    settings.CONVERSATIONS = {"CACHE_ALIAS": alias, "KEY_PREFIX": f"ct-{uuid.uuid4().hex[:10]}"}
    assert get_store().is_cluster


def test_an_agents_session_runs_on_the_cluster() -> None:
    async def go() -> tuple[list[Any], Any, list[Any]]:
        session = await ConversationSession.create(owner="user:1")
        await two_turns(session)
        writers = [ConversationSession(session.session_id, owner="user:1") for _ in range(10)]
        await asyncio.gather(
            *(
                w.add_items([{"role": "user", "content": f"w{n}-{i}"} for i in range(2)])
                for n, w in enumerate(writers)
            )
        )
        items = await session.get_items()
        popped = await session.pop_item()
        await session.clear_session()
        return items, popped, await session.get_items()

    items, popped, cleared = asyncio.run(go())

    assert len(items) == 8 + 20
    assert popped == items[-1]
    assert cleared == []


def test_a_llama_index_chat_store_runs_on_the_cluster() -> None:
    chat_store = ConversationChatStore(owner="user:1")
    key = chat_store.create_key()
    chat_store.set_messages(key, [ChatMessage(role="user", content=f"m{i}") for i in range(4)])

    assert chat_store.delete_message(key, 1) == ChatMessage(role="user", content="m1")
    assert [m.content for m in chat_store.get_messages(key)] == ["m0", "m2", "m3"]
    assert chat_store.get_keys() == [key]
    assert [m.content for m in asyncio.run(chat_store.aget_messages(key))] == ["m0", "m2", "m3"]


def test_a_langchain_history_runs_on_the_cluster() -> None:
    history = ConversationChatMessageHistory.create(owner="user:1")
    sent = [
        HumanMessage("Where is order 7?"),
        AIMessage("", tool_calls=[{"name": "lookup", "args": {"order": 7}, "id": "c1", "type": "tool_call"}]),
        ToolMessage("sent", tool_call_id="c1"),
    ]

    history.add_messages(sent)

    assert [message_to_dict(m) for m in history.messages] == [message_to_dict(m) for m in sent]
    asyncio.run(history.aclear())
    assert history.messages == []
