"""``ConversationChatMessageHistory``: a LangChain ``BaseChatMessageHistory`` on the store, on the real
Redis, driven by LangChain's own ``RunnableWithMessageHistory`` over its ``GenericFakeChatModel``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.contrib.auth.models import User
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    message_to_dict,
)
from langchain_core.prompt_values import PromptValue
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory
from rest_framework.test import APIClient

from conversations.exceptions import SessionNotFound
from conversations.integrations.langchain import ConversationChatMessageHistory
from conversations.store import ConversationStore

pytestmark = pytest.mark.redis

TOOL_TURN: list[BaseMessage] = [
    SystemMessage("Be brief."),
    HumanMessage(content=[{"type": "text", "text": "Where is order 7?"}], id="h1"),
    AIMessage(
        content="",
        tool_calls=[{"name": "lookup", "args": {"order": 7}, "id": "call_1", "type": "tool_call"}],
        response_metadata={"model_name": "fake"},
        id="a1",
    ),
    ToolMessage(
        content="refund sent on Monday", tool_call_id="call_1", artifact={"rows": [7]}, name="lookup"
    ),
    AIMessage(
        content="It was sent on Monday.",
        usage_metadata={"input_tokens": 3, "output_tokens": 5, "total_tokens": 8},
    ),
    ChatMessage(role="assistant", content="(a chat message of its own role)"),
]


def chain_with(store: ConversationStore, owner: str, seen: list[list[BaseMessage]]) -> Any:
    prompt = ChatPromptTemplate.from_messages([MessagesPlaceholder("history"), ("human", "{question}")])

    def record(value: PromptValue) -> PromptValue:
        seen.append(value.to_messages())
        return value

    model = GenericFakeChatModel(messages=iter([AIMessage("Sent on Monday."), AIMessage("You're welcome.")]))

    def get_session_history(session_id: str) -> ConversationChatMessageHistory:
        return ConversationChatMessageHistory(session_id, owner=owner, store=store)

    return RunnableWithMessageHistory(
        prompt | RunnableLambda(record) | model,
        get_session_history,
        input_messages_key="question",
        history_messages_key="history",
    )


# LangChain deprecates RunnableWithMessageHistory in favour of LangGraph's persistence (see the README).
@pytest.mark.filterwarnings("ignore:RunnableWithMessageHistory is deprecated")
def test_two_turns_of_runnable_with_message_history(store: ConversationStore) -> None:
    history = ConversationChatMessageHistory.create(owner="user:1", title="Refunds", store=store)
    seen: list[list[BaseMessage]] = []
    chain = chain_with(store, "user:1", seen)
    config: Any = {"configurable": {"session_id": history.session_id}}

    first = chain.invoke({"question": "Where is my refund?"}, config=config)
    second = chain.invoke({"question": "Thanks!"}, config=config)

    assert (first.content, second.content) == ("Sent on Monday.", "You're welcome.")
    assert [m.content for m in seen[1]] == ["Where is my refund?", "Sent on Monday.", "Thanks!"]
    stored = ConversationChatMessageHistory(history.session_id, owner="user:1").messages
    assert [(m.type, m.content) for m in stored] == [
        ("human", "Where is my refund?"),
        ("ai", "Sent on Monday."),
        ("human", "Thanks!"),
        ("ai", "You're welcome."),
    ]


def test_the_message_to_dict_form_round_trips_tool_calls_included(store: ConversationStore) -> None:
    history = ConversationChatMessageHistory.create(store=store)

    history.add_messages(TOOL_TURN)
    back = history.messages

    assert [message_to_dict(m) for m in back] == [message_to_dict(m) for m in TOOL_TURN]
    assert isinstance(back[2], AIMessage)
    assert back[2].tool_calls == [
        {"name": "lookup", "args": {"order": 7}, "id": "call_1", "type": "tool_call"}
    ]
    assert isinstance(back[3], ToolMessage)
    assert (back[3].tool_call_id, back[3].artifact) == ("call_1", {"rows": [7]})
    readable = store.get_messages(history.session_id, last=10)
    assert [(m.role, m.content) for m in readable] == [
        ("system", "Be brief."),
        ("user", "Where is order 7?"),
        ("assistant", 'lookup({"order":7})'),
        ("tool", "refund sent on Monday"),
        ("assistant", "It was sent on Monday."),
        ("assistant", "(a chat message of its own role)"),
    ]
    assert [m.id for m in readable] == [1, 2, 3, 4, 5, 6]  # one batch: consecutive ids


def test_clear_and_assigning_replace_the_history(store: ConversationStore) -> None:
    history = ConversationChatMessageHistory.create(store=store, title="Kept")
    history.add_messages(TOOL_TURN)

    history.messages = [HumanMessage("start over")]
    assert [m.content for m in history.messages] == ["start over"]
    history.clear()

    assert history.messages == []
    assert [s.title for s in store.list_sessions()] == ["Kept"]


def test_another_owner_sees_nothing_and_cannot_write(store: ConversationStore) -> None:
    history = ConversationChatMessageHistory.create(owner="user:1", store=store)
    history.add_messages([HumanMessage("mine")])
    intruder = ConversationChatMessageHistory(history.session_id, owner="user:2", store=store)

    assert intruder.messages == []
    intruder.clear()
    with pytest.raises(SessionNotFound):
        intruder.add_messages([HumanMessage("yours")])
    with pytest.raises(SessionNotFound):
        intruder.messages = []

    assert [m.content for m in history.messages] == ["mine"]


def test_the_async_methods(store: ConversationStore) -> None:
    async def go() -> tuple[list[BaseMessage], list[BaseMessage], list[BaseMessage]]:
        history = await ConversationChatMessageHistory.acreate(owner="u", store=store)
        await history.aadd_messages(TOOL_TURN)
        full = await history.aget_messages()
        await history.aclear()
        missing = await ConversationChatMessageHistory("A" * 22, owner="u").aget_messages()
        return full, await history.aget_messages(), missing

    full, cleared, missing = asyncio.run(go())

    assert [message_to_dict(m) for m in full] == [message_to_dict(m) for m in TOOL_TURN]
    assert cleared == []
    assert missing == []


@pytest.mark.django_db
def test_the_conversation_is_listed_readable_and_exportable_over_http(
    store: ConversationStore, django_user_model: type[User]
) -> None:
    alice = django_user_model.objects.create_user("alice")
    history = ConversationChatMessageHistory.create(owner=f"user:{alice.pk}", title="Refunds", store=store)
    history.add_messages(TOOL_TURN[1:5])
    api = APIClient()
    api.force_authenticate(alice)

    listed = api.get("/api/sessions/").json()["results"]
    detail = api.get(f"/api/sessions/{history.session_id}/").json()
    export = api.get(f"/api/sessions/{history.session_id}/export/?format=markdown")

    assert [(s["id"], s["title"], s["message_count"]) for s in listed] == [(history.session_id, "Refunds", 4)]
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert detail["messages"][3]["content"] == "It was sent on Monday."
    assert export.status_code == 200
    assert "refund sent on Monday" in export.getvalue().decode()
    # A message posted over HTTP joins the history as a plain message of its role.
    api.post(
        f"/api/sessions/{history.session_id}/messages/", {"role": "user", "content": "Thanks"}, format="json"
    )
    assert history.messages[-1] == HumanMessage("Thanks")
