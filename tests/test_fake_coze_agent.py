"""The agent chat API of the Coze fake (tests/fakes/coze_agent.py), checked with cozepy's own
client: if cozepy's ``chat.stream`` reads the fake's event streams as Coze's, the fake speaks the
wire format the real service does (cozepy is the oracle of spec §10.2)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from cozepy import AsyncCoze, AsyncTokenAuth, ChatEvent, ChatEventType, ChatStatus, CozeAPIError, Message, MessageType

from tests.cozepy_contract import ContractError, validate_chat_event
from tests.fakes.coze import DEFAULT_TOKEN, FakeCoze
from tests.fakes.coze_agent import DEFAULT_BOT_ID, FakeAgent

# The example session of Coze's chat docs, as cozepy's own tests replay it.
DOCS_DELTA = ('{"id":"7382159494123470858","conversation_id":"7381473525342978089","bot_id":"7379462189365198898",'
              '"role":"assistant","type":"answer","content":"星期三","content_type":"text","chat_id":"7382159487131697202"}')


def client(fake: FakeCoze, token: str = DEFAULT_TOKEN) -> AsyncCoze:
    return AsyncCoze(auth=AsyncTokenAuth(token), base_url=fake.base_url)


async def ask(coze: AsyncCoze, question: str, **fields: Any) -> list[ChatEvent]:
    """cozepy's streaming chat, read to its end."""
    fields.setdefault("bot_id", DEFAULT_BOT_ID)
    fields.setdefault("user_id", "alice")
    return [event async for event in coze.chat.stream(additional_messages=[Message.build_user_question_text(question)],
                                                       **fields)]


async def test_cozepy_reads_a_whole_answer_and_its_conversation_continues() -> None:
    async with FakeCoze(agents=[FakeAgent(follow_ups=("What about tomorrow?",))]) as fake:
        coze = client(fake)
        first = await ask(coze, "Hello")
        conversation_id = first[0].chat.conversation_id
        second = await ask(coze, "And again", conversation_id=conversation_id)
    assert [event.event for event in first[:2]] == [ChatEventType.CONVERSATION_CHAT_CREATED,
                                                    ChatEventType.CONVERSATION_CHAT_IN_PROGRESS]
    deltas = [event.message.content for event in first if event.event is ChatEventType.CONVERSATION_MESSAGE_DELTA]
    completed = [event.message for event in first if event.event is ChatEventType.CONVERSATION_MESSAGE_COMPLETED]
    assert "".join(deltas) == completed[0].content == "You said: Hello. This is message 1 of our conversation."
    assert len(deltas) > 1  # it streams
    assert [message.type for message in completed] == [MessageType.ANSWER, MessageType.VERBOSE, MessageType.FOLLOW_UP]
    assert first[-1].event is ChatEventType.CONVERSATION_CHAT_COMPLETED and first[-1].chat.usage.token_count > 0
    assert second[0].chat.conversation_id == conversation_id
    assert next(event.message.content for event in second if event.event is ChatEventType.CONVERSATION_MESSAGE_COMPLETED
                and event.message.type is MessageType.ANSWER) == "You said: And again. This is message 2 of our conversation."
    assert fake.agents.violations == []
    assert fake.calls_to("chat")[1].query == {"conversation_id": conversation_id}


@pytest.mark.parametrize(("ending", "expected"), [
    ("failed", ChatEventType.CONVERSATION_CHAT_FAILED),
    ("requires_action", ChatEventType.CONVERSATION_CHAT_REQUIRES_ACTION),
])
async def test_cozepy_reads_the_chats_that_end_without_an_answer(ending: str, expected: ChatEventType) -> None:
    async with FakeCoze() as fake:
        fake.agents.script_next(ending, after_pieces=2, code=4011, msg="insufficient balance")  # type: ignore[arg-type]
        coze = client(fake)
        events = await ask(coze, "Weather?", user_id="bob")
        last = events[-1]
        if ending == "requires_action":
            call = last.chat.required_action.submit_tool_outputs.tool_calls[0]
            canceled = await coze.chat.cancel(conversation_id=last.chat.conversation_id, chat_id=last.chat.id)
    assert last.event is expected
    assert sum(event.event is ChatEventType.CONVERSATION_MESSAGE_DELTA for event in events) == 2
    if ending == "failed":
        assert last.chat.status is ChatStatus.FAILED
        assert (last.chat.last_error.code, last.chat.last_error.msg) == (4011, "insufficient balance")
    else:
        assert call.function.name == "get_current_weather"
        assert canceled.status is ChatStatus.CANCELED
        assert fake.agents.cancels == [{"conversation_id": last.chat.conversation_id, "chat_id": last.chat.id}]
    assert fake.agents.violations == []


async def test_an_error_event_and_refused_chats_are_what_cozepy_raises() -> None:
    async with FakeCoze(agents=[FakeAgent(), FakeAgent(bot_id="7000000000000000001", published=False)]) as fake:
        fake.agents.script_next("error", code=4000, msg="The parameter is invalid.")
        coze = client(fake)
        with pytest.raises(Exception, match="error event"):
            await ask(coze, "Hi")
        refusals = {}
        for bot_id, token in (("7000000000000000001", DEFAULT_TOKEN), ("7999999999999999999", DEFAULT_TOKEN),
                              (DEFAULT_BOT_ID, "pat_wrong")):
            with pytest.raises(CozeAPIError) as raised:
                await ask(client(fake, token), "Hi", bot_id=bot_id)
            refusals[bot_id, token] = raised.value.code
        with pytest.raises(CozeAPIError) as unknown:
            await ask(coze, "Hi", conversation_id="7111111111111111111")
    assert refusals == {("7000000000000000001", DEFAULT_TOKEN): 4015, ("7999999999999999999", DEFAULT_TOKEN): 4200,
                        (DEFAULT_BOT_ID, "pat_wrong"): 4100}
    assert unknown.value.code == 4200
    assert fake.agents.violations == []


@pytest.mark.breaks_rules
async def test_the_fake_refuses_and_records_a_request_off_the_contract() -> None:
    async with FakeCoze() as fake, httpx.AsyncClient(base_url=fake.base_url) as http:
        response = await http.post("/v3/chat", headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"},
                                   json={"bot_id": DEFAULT_BOT_ID, "user_id": "dave", "stream": True,
                                         "additional_message": [{"role": "user", "content": "Hi", "content_type": "text"}]})
    assert response.json()["code"] == 4000
    assert fake.agents.violations and "additional_message" in fake.agents.violations[0]


def test_the_contract_rejects_what_cozepy_would_silently_accept() -> None:
    assert validate_chat_event("conversation.message.delta", DOCS_DELTA).content == "星期三"  # type: ignore[union-attr]
    with pytest.raises(ContractError, match="unknown"):
        validate_chat_event("conversation.message.delta", DOCS_DELTA.replace('"type"', '"kind"'))
    with pytest.raises(ContractError, match="status"):
        validate_chat_event("conversation.chat.completed", '{"id":"1","conversation_id":"2","status":"created"}')
    with pytest.raises(ContractError, match="unknown to cozepy"):
        validate_chat_event("conversation.message.finished", DOCS_DELTA)
    with pytest.raises(ContractError, match="DONE"):
        validate_chat_event("done", "[DONE]")  # the real server sends the JSON string "[DONE]"
