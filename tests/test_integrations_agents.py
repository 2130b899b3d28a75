"""``ConversationSession``: the OpenAI Agents SDK's ``Session`` on the store, on the real Redis.

The runner is driven by a scripted ``Model`` (no network, no API key): it asks for a function tool
when the last input is not a tool's output, and answers otherwise.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from agents import Agent, RunConfig, Runner, Session, SessionSettings, SQLiteSession, Usage, function_tool
from agents.items import ModelResponse
from agents.models.interface import Model
from django.contrib.auth.models import User
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText
from rest_framework.test import APIClient

from conversations.exceptions import InvalidInput, SessionNotFound
from conversations.integrations.agents import ConversationSession
from conversations.store import ConversationStore

pytestmark = pytest.mark.redis

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@function_tool
def refund_status(order: int) -> str:
    """Where the refund of an order is."""
    return f"order {order}: refund sent on Monday"


class ScriptedModel(Model):
    """Asks for ``refund_status`` unless the last input item is a tool's output, then answers."""

    def __init__(self) -> None:
        self.inputs: list[list[Any]] = []

    async def get_response(
        self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any
    ) -> ModelResponse:
        items = [{"role": "user", "content": input}] if isinstance(input, str) else list(input)
        self.inputs.append(items)
        n = len(self.inputs)
        output: list[Any]
        if items[-1].get("type") != "function_call_output":
            output = [
                ResponseFunctionToolCall(
                    type="function_call",
                    id=f"fc_{n}",
                    call_id=f"call_{n}",
                    name="refund_status",
                    arguments='{"order": 7}',
                    status="completed",
                )
            ]
        else:
            text = ResponseOutputText(type="output_text", text=f"Answer {n}: sent on Monday.", annotations=[])
            output = [
                ResponseOutputMessage(
                    type="message", id=f"msg_{n}", role="assistant", status="completed", content=[text]
                )
            ]
        return ModelResponse(output=output, usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


async def two_turns(session: Session) -> tuple[ScriptedModel, list[str]]:
    model = ScriptedModel()
    agent = Agent(name="support", instructions="Be brief.", model=model, tools=[refund_status])
    config = RunConfig(tracing_disabled=True)
    answers = []
    for question in ("Where is my refund?", "Thanks! And order 8?"):
        result = await Runner.run(agent, question, session=session, run_config=config)
        answers.append(str(result.final_output))
    return model, answers


def items(n: int, batch: str = "b") -> list[Any]:
    return [{"role": "user", "content": f"{batch}-{i}"} for i in range(n)]


def test_two_runner_turns_store_exactly_what_the_sdks_sqlite_session_stores(store: ConversationStore) -> None:
    async def go() -> tuple[list[Any], list[Any], ScriptedModel, list[str]]:
        ours = await ConversationSession.create(owner="user:1", title="Refunds", store=store)
        model, answers = await two_turns(ours)
        reference = SQLiteSession("reference")
        await two_turns(reference)
        return await ours.get_items(), await reference.get_items(), model, answers

    ours, reference, model, answers = run(go())

    assert answers == ["Answer 2: sent on Monday.", "Answer 4: sent on Monday."]
    assert ours == reference
    assert [item.get("type", "message") for item in ours] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
    ] * 2
    # Turn two's first model call saw all of turn one, then the new question.
    assert model.inputs[2][:4] == ours[:4]
    assert model.inputs[2][4] == {"role": "user", "content": "Thanks! And order 8?"}


def test_messages_read_well_in_the_store(store: ConversationStore) -> None:
    session = run(ConversationSession.create(owner="u", store=store))
    run(two_turns(session))

    messages = store.get_messages(session.session_id, owner="u", last=4)

    assert [(m.role, m.content) for m in messages] == [
        ("user", "Thanks! And order 8?"),
        ("assistant", 'refund_status({"order": 7})'),
        ("tool", "order 7: refund sent on Monday"),
        ("assistant", "Answer 4: sent on Monday."),
    ]
    assert messages[1].data["agents"]["call_id"] == "call_3"


def test_pop_item_removes_and_returns_the_newest_item(store: ConversationStore) -> None:
    async def go() -> tuple[Any, Any, list[Any], Any]:
        session = await ConversationSession.create(store=store)
        call = {
            "type": "function_call",
            "call_id": "c1",
            "name": "f",
            "arguments": "{}",
            "id": "fc",
            "status": "completed",
        }
        await session.add_items([{"role": "user", "content": "hi"}, call])
        popped = await session.pop_item()
        second = await session.pop_item()
        left = await session.get_items()
        return popped, second, left, await session.pop_item()

    popped, second, left, empty = run(go())

    assert popped == {
        "type": "function_call",
        "call_id": "c1",
        "name": "f",
        "arguments": "{}",
        "id": "fc",
        "status": "completed",
    }
    assert second == {"role": "user", "content": "hi"}
    assert left == []
    assert empty is None


def test_limit_comes_from_the_argument_or_the_session_settings(store: ConversationStore) -> None:
    async def go() -> list[list[Any]]:
        session = await ConversationSession.create(store=store, session_settings=SessionSettings(limit=2))
        await session.add_items(items(5))
        return [
            await session.get_items(),
            await session.get_items(limit=3),
            await session.get_items(limit=0),
            await ConversationSession(session.session_id, store=store).get_items(),
        ]

    default, three, none, unlimited = run(go())

    assert [i["content"] for i in default] == ["b-3", "b-4"]
    assert [i["content"] for i in three] == ["b-2", "b-3", "b-4"]
    assert none == []
    assert len(unlimited) == 5


def test_limit_counts_items_past_messages_with_no_sdk_form(store: ConversationStore) -> None:
    session = run(ConversationSession.create(store=store))
    run(session.add_items(items(3)))
    # Tool messages written without an SDK item (over the HTTP API, say) have no SDK form.
    store.append_messages(session.session_id, [{"role": "tool", "content": "raw"}] * 4)

    newest = run(session.get_items(limit=2))

    assert [i["content"] for i in newest] == ["b-1", "b-2"]


def test_clear_session_empties_the_conversation_which_stays(store: ConversationStore) -> None:
    async def go() -> list[Any]:
        session = await ConversationSession.create(store=store, title="Kept")
        await session.add_items(items(3))
        await session.clear_session()
        return await session.get_items()

    assert run(go()) == []
    assert [s.title for s in store.list_sessions()] == ["Kept"]


def test_another_owner_sees_no_items_and_cannot_write(store: ConversationStore) -> None:
    session = run(ConversationSession.create(owner="user:1", store=store))
    run(session.add_items(items(2)))
    intruder = ConversationSession(session.session_id, owner="user:2", store=store)

    assert run(intruder.get_items()) == []
    assert run(intruder.pop_item()) is None
    run(intruder.clear_session())
    with pytest.raises(SessionNotFound):
        run(intruder.add_items(items(1)))

    assert len(run(session.get_items())) == 2


def test_an_item_over_the_limits_writes_nothing(store: ConversationStore, settings: Any) -> None:
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "MAX_MESSAGE_DATA_BYTES": 200}
    session = run(ConversationSession.create())

    with pytest.raises(InvalidInput) as caught:
        run(session.add_items([*items(1), {"role": "user", "content": "x" * 500}]))

    assert caught.value.field == "messages[1].data"
    assert run(session.get_items()) == []


def test_fifty_concurrent_add_items_lose_nothing_and_keep_each_batch_together(
    store: ConversationStore,
) -> None:
    async def go() -> list[Any]:
        session = await ConversationSession.create(store=store)
        writers = [ConversationSession(session.session_id, store=store) for _ in range(50)]
        await asyncio.gather(*(w.add_items(items(3, batch=f"w{n}")) for n, w in enumerate(writers)))
        return await session.get_items()

    stored = [item["content"] for item in run(go())]

    assert len(stored) == 150
    assert sorted(stored) == sorted(f"w{n}-{i}" for n in range(50) for i in range(3))
    for start in range(0, 150, 3):  # each batch is three consecutive messages, in order
        batch = stored[start].split("-")[0]
        assert stored[start : start + 3] == [f"{batch}-0", f"{batch}-1", f"{batch}-2"]


@pytest.mark.django_db
def test_the_conversation_is_listed_readable_and_exportable_over_http(
    store: ConversationStore, django_user_model: type[User]
) -> None:
    alice = django_user_model.objects.create_user("alice")
    session = run(ConversationSession.create(owner=f"user:{alice.pk}", title="Refunds", store=store))
    run(two_turns(session))
    api = APIClient()
    api.force_authenticate(alice)

    listed = api.get("/api/sessions/").json()["results"]
    detail = api.get(f"/api/sessions/{session.session_id}/").json()
    export = api.get(f"/api/sessions/{session.session_id}/export/?format=json")
    markdown = api.get(f"/api/sessions/{session.session_id}/export/?format=markdown")

    assert [(s["id"], s["title"], s["message_count"]) for s in listed] == [(session.session_id, "Refunds", 8)]
    assert [(m["role"], m["content"]) for m in detail["messages"][:4]] == [
        ("user", "Where is my refund?"),
        ("assistant", 'refund_status({"order": 7})'),
        ("tool", "order 7: refund sent on Monday"),
        ("assistant", "Answer 2: sent on Monday."),
    ]
    assert export.status_code == 200
    exported = json.loads(export.getvalue())
    assert exported["title"] == "Refunds"
    assert [(m["role"], m["content"]) for m in exported["messages"]] == [
        (m.role, m.content) for m in store.get_messages(session.session_id, owner=f"user:{alice.pk}", last=8)
    ]
    assert "Answer 4: sent on Monday." in markdown.getvalue().decode()
    # A message the user posts over HTTP is the next turn's input.
    api.post(
        f"/api/sessions/{session.session_id}/messages/", {"role": "user", "content": "Hello?"}, format="json"
    )
    assert run(session.get_items(limit=1)) == [{"role": "user", "content": "Hello?"}]
