"""The Coze agent chat client (voicebridge.speech.coze_chat) and the CozeAgent responder,
against the agent chat API of the Coze fake; every request our client sends is checked against
cozepy's models there (``fake.agents.violations``)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from cozepy import AsyncCoze, AsyncTokenAuth, ChatEventType

from voicebridge.config import Settings
from voicebridge.responders import AgentUnavailable, CozeAgent, coze_user_id
from voicebridge.speech.coze_auth import StaticToken
from voicebridge.speech.coze_chat import AgentError, AgentProblem, AnswerPiece, ChatOpened, CozeChatClient, _read_limited
from voicebridge.speech.coze_common import CozeEndpoint
from voicebridge.speech.errors import ConfigError, ErrorKind, SpeechError
from voicebridge.speech.retry import Retrier
from voicebridge.voice_notes.conversations import StoredConversation, forget_conversations
from voicebridge.voice_notes.model import ChatKind, ChatRef, Person, ResponderContext
from voicebridge.voice_notes.store import SQLiteStore
from tests.fakes.coze import DEFAULT_TOKEN, FakeCoze, FakeJwtApp
from tests.fakes.coze_agent import DEFAULT_BOT_ID, FakeAgent
from tests.harness import speech_values

ALICE = Person("1001", "Alice", "en")
BOB = Person("1002", "Bob", "zh-hans")
PRIVATE = ChatRef("telegram", "1001", ChatKind.PRIVATE)
GROUP = ChatRef("telegram", "-100200", ChatKind.GROUP)
# The example session of Coze's chat docs (replayed by cozepy's own tests), with the docs' layout.
DOCS_SESSION = """event:conversation.chat.created
data:{"id":"7382159487131697202","conversation_id":"7381473525342978089","bot_id":"7379462189365198898","completed_at":1718792949,"last_error":{"code":0,"msg":""},"status":"created","usage":{"token_count":0,"output_count":0,"input_count":0}}

event:conversation.chat.in_progress
data:{"id":"7382159487131697202","conversation_id":"7381473525342978089","bot_id":"7379462189365198898","completed_at":1718792949,"last_error":{"code":0,"msg":""},"status":"in_progress","usage":{"token_count":0,"output_count":0,"input_count":0}}

event:conversation.message.delta
data:{"id":"7382159494123470858","conversation_id":"7381473525342978089","bot_id":"7379462189365198898","role":"assistant","type":"answer","content":"2","content_type":"text","chat_id":"7382159487131697202"}

event:conversation.message.delta
data:{"id":"7382159494123470858","conversation_id":"7381473525342978089","bot_id":"7379462189365198898","role":"assistant","type":"answer","content":"0","content_type":"text","chat_id":"7382159487131697202"}

event:conversation.message.delta
data:{"id":"7382159494123470858","conversation_id":"7381473525342978089","bot_id":"7379462189365198898","role":"assistant","type":"answer","content":"24 年 10 月 1 日是星期三","content_type":"text","chat_id":"7382159487131697202"}

event:conversation.message.delta
data:{"id":"7382159494123470858","conversation_id":"7381473525342978089","bot_id":"7379462189365198898","role":"assistant","type":"answer","content":"。","content_type":"text","chat_id":"7382159487131697202"}

event:conversation.message.completed
data:{"id":"7382159494123470858","conversation_id":"7381473525342978089","bot_id":"7379462189365198898","role":"assistant","type":"answer","content":"2024 年 10 月 1 日是星期三。","content_type":"text","chat_id":"7382159487131697202"}

event:conversation.message.completed
data:{"id":"7382159494123552778","conversation_id":"7381473525342978089","bot_id":"7379462189365198898","role":"assistant","type":"verbose","content":"{\\"msg_type\\":\\"generate_answer_finish\\",\\"data\\":\\"\\",\\"from_module\\":null,\\"from_unit\\":null}","content_type":"text","chat_id":"7382159487131697202"}

event:conversation.chat.completed
data:{"id":"7382159487131697202","conversation_id":"7381473525342978089","bot_id":"7379462189365198898","completed_at":1718792949,"last_error":{"code":0,"msg":""},"status":"completed","usage":{"token_count":633,"output_count":19,"input_count":614}}

event:done
data:"[DONE]"
"""


JWT_APP, JWT_PRIVATE_KEY = FakeJwtApp.generate()


@pytest.fixture
async def fake() -> AsyncIterator[FakeCoze]:
    async with FakeCoze(agents=[FakeAgent(), FakeAgent(bot_id="7000000000000000001", published=False)],
                        jwt_apps=[JWT_APP]) as server:
        yield server


@pytest.fixture
async def store() -> AsyncIterator[SQLiteStore]:
    database = SQLiteStore(":memory:")
    yield database
    await database.aclose()


def chat_client(fake: FakeCoze, retrier: Retrier, *, read_timeout: float = 5.0, token: str = DEFAULT_TOKEN,
                transport: httpx.AsyncBaseTransport | None = None) -> CozeChatClient:
    endpoint = CozeEndpoint(StaticToken(token), fake.base_url, fake.ws_base_url, connect_timeout=2.0, read_timeout=read_timeout)
    return CozeChatClient(endpoint, retrier, transport)


def agent(fake: FakeCoze, retrier: Retrier, bot_id: str = DEFAULT_BOT_ID, **env: str) -> CozeAgent:
    settings = Settings.from_values(speech_values(fake) | env)
    responder = CozeAgent(bot_id=bot_id)
    responder.bind(settings, retrier)
    return responder


def context(store: SQLiteStore, chat: ChatRef = PRIVATE, sender: Person = ALICE) -> ResponderContext:
    return ResponderContext(platform=chat.platform, chat=chat, sender=sender, message=None, context=None, language="common",
                            user_language=sender.language, duration=2.0, conversation=StoredConversation(store, chat, sender))


async def answer(responder: CozeAgent, question: str, where: ResponderContext) -> str:
    return "".join([piece async for piece in responder(question, where)])


async def test_the_client_streams_the_answer_and_names_the_conversation(fake: FakeCoze, fast_retrier: Retrier) -> None:
    client = chat_client(fake, fast_retrier)
    updates = [update async for update in client.chat(DEFAULT_BOT_ID, "user-1", "Hello")]
    again = [update async for update in client.chat(DEFAULT_BOT_ID, "user-1", "Again", updates[0].conversation_id)]  # type: ignore[union-attr]
    await client.aclose()
    opened, *pieces = updates
    assert isinstance(opened, ChatOpened) and opened.conversation_id == fake.agents.chats[0].conversation_id
    assert all(isinstance(piece, AnswerPiece) for piece in pieces) and len(pieces) > 1
    assert "".join(piece.text for piece in pieces) == "You said: Hello. This is message 1 of our conversation."  # type: ignore[union-attr]
    assert "".join(piece.text for piece in again[1:]) == "You said: Again. This is message 2 of our conversation."  # type: ignore[union-attr]
    first, second = fake.calls_to("chat")
    assert first.token == DEFAULT_TOKEN and first.json["stream"] is True and first.json["auto_save_history"] is True
    assert "conversation_id" not in first.query and second.query == {"conversation_id": opened.conversation_id}
    assert fake.agents.violations == []


async def test_the_client_reads_the_docs_session_as_cozepy_does(fast_retrier: Retrier) -> None:
    """Coze's own example stream, through a transport that replays it: both readers agree."""

    def replay(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream; charset=utf-8"},
                              content=DOCS_SESSION.replace("\n", "\r\n").encode())

    endpoint = CozeEndpoint(StaticToken(DEFAULT_TOKEN), "https://api.coze.invalid", "wss://ws.coze.invalid")
    client = CozeChatClient(endpoint, fast_retrier, httpx.MockTransport(replay))
    ours = [update async for update in client.chat(DEFAULT_BOT_ID, "user-1", "2024年10月1日是星期几")]
    await client.aclose()
    coze = AsyncCoze(auth=AsyncTokenAuth(DEFAULT_TOKEN), base_url="https://api.coze.invalid",
                     http_client=httpx.AsyncClient(transport=httpx.MockTransport(replay)))
    theirs = [event async for event in coze.chat.stream(bot_id=DEFAULT_BOT_ID, user_id="user-1")]
    cozepy_answer = "".join(event.message.content for event in theirs if event.event is ChatEventType.CONVERSATION_MESSAGE_DELTA)
    assert ours[0] == ChatOpened("7381473525342978089", "7382159487131697202")
    assert "".join(piece.text for piece in ours[1:]) == cozepy_answer == "2024 年 10 月 1 日是星期三。"  # type: ignore[union-attr]


@pytest.mark.parametrize(("ending", "problem", "kind"), [
    ("failed", AgentProblem.FAILED, ErrorKind.QUOTA),
    ("requires_action", AgentProblem.NEEDS_ACTION, ErrorKind.INVALID_INPUT),
    ("drop", None, ErrorKind.CONNECTIVITY),
    ("hang", None, ErrorKind.TIMEOUT),
    ("error", None, ErrorKind.RATE_LIMITED),
])
async def test_a_chat_that_ends_without_an_answer_is_one_classified_error(fake: FakeCoze, fast_retrier: Retrier, ending: str,
                                                                          problem: AgentProblem | None, kind: ErrorKind) -> None:
    fake.agents.script_next(ending, after_pieces=2, code=4011 if ending == "failed" else 4009)  # type: ignore[arg-type]
    client = chat_client(fake, fast_retrier, read_timeout=0.5)
    received: list[str] = []
    with pytest.raises(SpeechError) as raised:
        async for update in client.chat(DEFAULT_BOT_ID, "user-1", "Weather in Hangzhou?"):
            if isinstance(update, AnswerPiece):
                received.append(update.text)
    await client.aclose()
    assert raised.value.kind is kind and not raised.value.retryable
    assert (raised.value.problem if isinstance(raised.value, AgentError) else None) is problem
    assert len(received) == 2 and len(fake.calls_to("chat")) == 1  # a chat that began is never asked twice
    if ending == "requires_action":  # the chat waiting for a tool is cancelled, not left in the conversation
        chat = fake.agents.chats[0]
        assert fake.agents.cancels == [{"conversation_id": chat.conversation_id, "chat_id": chat.chat_id}]
        assert chat.status == "canceled" and "get_current_weather" in str(raised.value)
    assert fake.agents.violations == []


async def test_a_refusal_before_the_chat_is_retried_only_when_transient(fake: FakeCoze, fast_retrier: Retrier) -> None:
    fake.fail_next("chat", raw_body="<html>502 Bad Gateway</html>", http_status=502)
    fake.fail_next("chat", code=4020)  # the RPM limit
    client = chat_client(fake, fast_retrier)
    pieces = [update async for update in client.chat(DEFAULT_BOT_ID, "user-1", "Hello")]
    with pytest.raises(SpeechError) as unpublished:
        async for _ in client.chat("7000000000000000001", "user-1", "Hello"):
            pass
    await client.aclose()
    assert len(pieces) > 1 and len(fake.agents.chats) == 1
    assert [call.status for call in fake.calls_to("chat")] == [502, 200, 200, 200]
    assert unpublished.value.code == 4015 and not unpublished.value.retryable


async def test_the_agent_keeps_one_conversation_per_chat_and_user(fake: FakeCoze, fast_retrier: Retrier,
                                                                  store: SQLiteStore) -> None:
    responder = agent(fake, fast_retrier)
    first = await answer(responder, "Hi", context(store))
    second = await answer(responder, "Hi again", context(store))
    alice_in_group = await answer(responder, "Hello group", context(store, GROUP, ALICE))
    bob_in_group = await answer(responder, "Hello from Bob", context(store, GROUP, BOB))
    bob_again = await answer(responder, "Me again", context(store, GROUP, BOB))
    await StoredConversation(store, GROUP, BOB).set(None)  # what /new does
    bob_new = await answer(responder, "Fresh start", context(store, GROUP, BOB))
    assert await forget_conversations(store, "telegram", GROUP.id) == 2  # what /forget does
    await responder.aclose()
    assert [text.rsplit("message ", 1)[1] for text in (first, second, alice_in_group, bob_in_group, bob_again, bob_new)] == [
        "1 of our conversation.", "2 of our conversation.", "1 of our conversation.", "1 of our conversation.",
        "2 of our conversation.", "1 of our conversation."]
    users = {chat.user_id for chat in fake.agents.chats}
    assert users == {coze_user_id("telegram", ALICE.id), coze_user_id("telegram", BOB.id)}
    assert not any("Alice" in user or ALICE.id in user for user in users)  # derived, neither the name nor the id
    assert await StoredConversation(store, PRIVATE, ALICE).get() == f"{DEFAULT_BOT_ID}:{fake.agents.chats[0].conversation_id}"
    assert await StoredConversation(store, GROUP, ALICE).get() is None


async def test_a_conversation_coze_no_longer_has_is_replaced(fake: FakeCoze, fast_retrier: Retrier, store: SQLiteStore) -> None:
    responder = agent(fake, fast_retrier)
    await StoredConversation(store, PRIVATE, ALICE).set(f"{DEFAULT_BOT_ID}:7111111111111111111")
    reply = await answer(responder, "Hi", context(store))
    await StoredConversation(store, PRIVATE, BOB).set("7999999999999999999:7222222222222222222")  # another agent's
    other = await answer(responder, "Hi", context(store, PRIVATE, BOB))
    await responder.aclose()
    assert reply.endswith("message 1 of our conversation.") and other.endswith("message 1 of our conversation.")
    assert [call.code for call in fake.calls_to("chat")] == [4200, None, None]
    assert await StoredConversation(store, PRIVATE, ALICE).get() == f"{DEFAULT_BOT_ID}:{fake.agents.chats[0].conversation_id}"


@pytest.mark.parametrize(("setup", "message"), [
    ({"bot_id": "7000000000000000001"}, "The agent is not set up correctly. The bot owner needs to check its Coze settings."),
    ({"script": "requires_action"}, "Sorry, the agent wanted to use a tool that this bot cannot run, so there is no answer."),
    ({"script": "failed"}, "Sorry, the agent could not answer this time. Please try again."),
])
async def test_agent_failures_are_told_to_the_user_in_a_word_and_to_the_operator_in_the_log(
        fake: FakeCoze, fast_retrier: Retrier, store: SQLiteStore, caplog: pytest.LogCaptureFixture,
        setup: dict[str, str], message: str) -> None:
    caplog.set_level(logging.WARNING)
    if "script" in setup:
        fake.agents.script_next(setup["script"])  # type: ignore[arg-type]
    responder = agent(fake, fast_retrier, setup.get("bot_id", DEFAULT_BOT_ID))
    with pytest.raises(AgentUnavailable) as raised:
        await answer(responder, "Hi", context(store))
    await responder.aclose()
    assert raised.value.user_message("en") == message
    assert raised.value.user_message("zh-hans") != message  # Chinese for Chinese users
    if "bot_id" in setup:
        assert "publish the agent to the API channel" in caplog.text
    assert DEFAULT_TOKEN not in caplog.text


async def test_a_jwt_app_deployment_talks_to_the_agent_with_tokens_it_mints_and_renews(
        fake: FakeCoze, fast_retrier: Retrier, store: SQLiteStore) -> None:
    jwt = {"COZE_JWT_CLIENT_ID": JWT_APP.client_id, "COZE_JWT_PUBLIC_KEY_ID": JWT_APP.public_key_id,
           "COZE_JWT_PRIVATE_KEY": JWT_PRIVATE_KEY.strip().replace("\n", "\\n"), "COZE_API_BASE": fake.base_url,
           "COZE_WS_BASE": fake.ws_base_url}
    settings = Settings.from_values(jwt | {"VOICEBRIDGE_RESPONDER": "coze-agent", "COZE_BOT_ID": DEFAULT_BOT_ID})
    responder = CozeAgent(bot_id=DEFAULT_BOT_ID)
    responder.bind(settings, fast_retrier)
    first = await answer(responder, "Hi", context(store))
    fake.revoke_access_tokens()  # Coze refuses the token it minted: one new token, one more try
    second = await answer(responder, "Still there?", context(store))
    await responder.aclose()
    assert first.endswith("message 1 of our conversation.") and second.endswith("message 2 of our conversation.")
    assert [call.token_state for call in fake.calls_to("chat")] == ["valid", "revoked", "valid"]
    assert len([request for request in fake.token_requests if request.status == 200]) == 2
    assert len(fake.agents.chats) == 2  # the refused try never reached the agent


def test_the_agent_fails_at_start_up_without_credentials_or_a_bot_id() -> None:
    with pytest.raises(ValueError, match="numeric id"):
        CozeAgent(bot_id="https://www.coze.cn/space/1/bot/2")
    with pytest.raises(ConfigError, match="COZE_BOT_ID is not set"):
        Settings.from_values({"COZE_API_TOKEN": DEFAULT_TOKEN, "VOICEBRIDGE_RESPONDER": "coze-agent"})
    with pytest.raises(ConfigError, match="COZE_BOT_ID must be the numeric id"):
        Settings.from_values({"COZE_API_TOKEN": DEFAULT_TOKEN, "COZE_BOT_ID": "bot_123"})
    with pytest.raises(ConfigError, match=r"COZE_API_TOKEN is not set .*VOICEBRIDGE_RESPONDER=coze-agent"):
        Settings.from_values({"FEISHU_APP_ID": "cli_x", "FEISHU_APP_SECRET": "s", "VOICEBRIDGE_RESPONDER": "coze-agent",
                              "COZE_BOT_ID": DEFAULT_BOT_ID})
    feishu_only = Settings.from_values({"FEISHU_APP_ID": "cli_x", "FEISHU_APP_SECRET": "s"})
    with pytest.raises(ConfigError, match="COZE_API_TOKEN"):
        CozeAgent(bot_id=DEFAULT_BOT_ID).bind(feishu_only, Retrier())


# ------------------------------------------------------------------------------------ the stream, event by event


def sse(*events: tuple[str, object]) -> bytes:
    """A chat answer stream (spec §10.2): ``event:`` and ``data:`` lines, a blank line after each."""
    return "".join(f"event:{name}\ndata:{data if isinstance(data, str) else json.dumps(data)}\n\n"
                   for name, data in events).encode()


CHAT = {"id": "7382159487131697202", "conversation_id": "7381473525342978089"}


def answer_message(message_id: str, content: str, **extra: str) -> dict[str, str]:
    return {"id": message_id, "role": "assistant", "type": "answer", "content": content, "content_type": "text", **extra}


class Replay:
    """Coze's /v3/chat (and /v3/chat/cancel) answering with the given responses in turn."""

    def __init__(self, *responses: httpx.Response | Exception) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response = self.responses.pop(0)
        if isinstance(response, Exception):
            raise response
        return response

    def client(self, fast_retrier: Retrier) -> CozeChatClient:
        endpoint = CozeEndpoint(StaticToken(DEFAULT_TOKEN), "https://api.coze.invalid", "wss://ws.coze.invalid")
        return CozeChatClient(endpoint, fast_retrier, httpx.MockTransport(self))


def stream(body: bytes, logid: str = "log-chat") -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream", "x-tt-logid": logid}, content=body)


async def chat_updates(replay: Replay, fast_retrier: Retrier) -> list[object]:
    client = replay.client(fast_retrier)
    try:
        return [update async for update in client.chat(DEFAULT_BOT_ID, "user-1", "Hi")]
    finally:
        await client.aclose()


async def test_answer_messages_are_pieced_together_and_everything_else_is_left_out(fast_retrier: Retrier) -> None:
    body = sse(("conversation.chat.created", CHAT), ("conversation.chat.in_progress", {**CHAT, "id": "other"}),
               ("conversation.message.delta", answer_message("m1", "Hello")),
               ("conversation.message.delta", answer_message("m1", "")),  # an empty delta adds nothing
               ("conversation.message.delta", answer_message("m1", " there.")),
               ("conversation.message.completed", answer_message("m1", "Hello there.")),  # repeats the deltas
               ("conversation.message.delta", {**answer_message("v1", "{}"), "type": "verbose"}),
               ("conversation.message.delta", {**answer_message("t1", "call"), "type": "function_call"}),
               ("conversation.message.delta", {**answer_message("u1", "echo"), "role": "user"}),
               ("conversation.message.delta", {**answer_message("c1", "[card]"), "content_type": "object_string"}),
               ("conversation.message.completed", answer_message("m2", "A second message.")),  # no deltas: taken whole
               ("conversation.message.completed", answer_message("m3", "")),
               ("conversation.message.completed", {**answer_message("f1", "Ask me more?"), "type": "follow_up"}),
               ("conversation.audio.delta", {"content": "AAAA"}),
               ("conversation.chat.completed", {**CHAT, "usage": {"token_count": 3}}),
               ("conversation.message.delta", answer_message("m9", "after the end")))
    updates = await chat_updates(Replay(stream(body)), fast_retrier)
    assert updates == [ChatOpened(CHAT["conversation_id"], CHAT["id"]), AnswerPiece("Hello"), AnswerPiece(" there."),
                       AnswerPiece("\n\n"), AnswerPiece("A second message.")]


async def test_events_without_a_blank_line_between_them_comments_and_fields_left_out_are_read(fast_retrier: Retrier) -> None:
    without_type = {key: value for key, value in answer_message("m1", "one").items() if key != "content_type"}  # text
    body = (": a comment\nid: 1\nevent: conversation.chat.in_progress\ndata: " + json.dumps(CHAT) + "\n"
            "event:conversation.message.delta\ndata:" + json.dumps(without_type) + "\n"
            'event:conversation.message.delta\ndata:{"id": "m1", "role": "assistant",\ndata: "type": "answer", "content": " two"}\n'
            "retry: 10\nevent:conversation.chat.completed\ndata:{}\n").encode()  # and no blank line at the end
    updates = await chat_updates(Replay(stream(body)), fast_retrier)
    assert updates == [ChatOpened(CHAT["conversation_id"], CHAT["id"]), AnswerPiece("one"), AnswerPiece(" two")]  # data lines joined


@pytest.mark.parametrize(("events", "problem", "kind", "code", "words"), [
    ((("conversation.chat.failed", {**CHAT, "last_error": {"code": 4011, "msg": "balance"}}),),
     AgentProblem.FAILED, ErrorKind.QUOTA, 4011, "the chat failed: balance"),
    ((("conversation.chat.failed", {**CHAT, "last_error": {"code": 710022004, "msg": "x"}}),),
     AgentProblem.FAILED, ErrorKind.SERVER, 710022004, "the chat failed: x"),
    ((("conversation.chat.failed", {**CHAT, "last_error": {"code": "4011"}}),),
     AgentProblem.FAILED, ErrorKind.SERVER, None, "the chat failed: no reason given"),
    ((("conversation.chat.failed", CHAT),), AgentProblem.FAILED, ErrorKind.SERVER, None, "the chat failed: no reason given"),
    ((("error", {"code": 4009, "msg": "too many"}),), None, ErrorKind.RATE_LIMITED, 4009, "too many"),
    ((("error", "not json"),), None, ErrorKind.SERVER, 5000, "not json"),
    ((("conversation.message.delta", answer_message("m1", "cut")), ("done", "[DONE]")),
     AgentProblem.INCOMPLETE, ErrorKind.CONNECTIVITY, None, "ended before the chat completed"),
    ((("conversation.message.delta", answer_message("m1", "cut")),),
     AgentProblem.INCOMPLETE, ErrorKind.CONNECTIVITY, None, "ended before the chat completed"),
])
async def test_a_chat_that_goes_wrong_mid_stream_is_one_classified_error_with_its_logid(
        fast_retrier: Retrier, events: tuple[tuple[str, object], ...], problem: AgentProblem | None, kind: ErrorKind,
        code: int | None, words: str) -> None:
    replay = Replay(stream(sse(("conversation.chat.created", CHAT), *events)))
    with pytest.raises(SpeechError) as raised:
        await chat_updates(replay, fast_retrier)
    error = raised.value
    assert (error.kind, error.code, error.logid, error.provider, error.retryable) == (kind, code, "log-chat", "coze-agent", False)
    assert (error.problem if isinstance(error, AgentError) else None) is problem
    assert words in str(error) and len(replay.requests) == 1


@pytest.mark.parametrize(("action", "cancel", "cancelled", "tools"), [
    ({"submit_tool_outputs": {"tool_calls": [{"function": {"name": "weather"}}, {"function": {}}, "junk"]}},
     httpx.Response(200, json={"code": 0, "msg": ""}), True, "run weather, ?"),
    ({}, httpx.ConnectError("refused"), True, "run a tool"),  # a cancel that fails still ends the chat as it should
    ({"submit_tool_outputs": {"tool_calls": "junk"}}, httpx.Response(200, json={"code": 4000, "msg": "bad"}), True, "run a tool"),
    ({}, None, False, "run a tool"),
])
async def test_a_chat_waiting_for_a_tool_is_cancelled_and_named(fast_retrier: Retrier, action: dict[str, object],
                                                                cancel: httpx.Response | Exception | None, cancelled: bool,
                                                                tools: str) -> None:
    waiting = {**(CHAT if cancelled else {"id": CHAT["id"]}), "required_action": action}
    replay = Replay(stream(sse(("conversation.chat.created", CHAT), ("conversation.chat.requires_action", waiting))),
                    *([cancel] if cancel is not None else []))
    with pytest.raises(AgentError) as raised:
        await chat_updates(replay, fast_retrier)
    assert raised.value.problem is AgentProblem.NEEDS_ACTION and raised.value.kind is ErrorKind.INVALID_INPUT
    assert raised.value.logid == "log-chat" and f"the agent asks this client to {tools}" in str(raised.value)
    cancels = replay.requests[1:]
    assert len(cancels) == cancelled
    if cancelled:
        assert cancels[0].url.path == "/v3/chat/cancel" and cancels[0].headers["Authorization"] == f"Bearer {DEFAULT_TOKEN}"
        assert json.loads(cancels[0].content) == {"conversation_id": CHAT["conversation_id"], "chat_id": CHAT["id"]}
        assert cancels[0].extensions["timeout"]["read"] == 10.0  # a hung cancel does not hold the reply for long


@pytest.mark.parametrize(("refusal", "kind", "code", "logid"), [
    (httpx.Response(200, json={"code": 4015, "msg": "not published", "detail": {"logid": "log-body"}}),
     ErrorKind.SERVER, 4015, "log-body"),  # a code missing from the table
    (httpx.Response(401, headers={"x-tt-logid": "log-head"}, json={"code": 4100, "msg": "expired", "detail": {"logid": "log-body"}}),
     ErrorKind.AUTH, 4100, "log-head"),
    (httpx.Response(404, headers={"x-tt-logid": "log-head"}, text="no such path"), ErrorKind.INVALID_INPUT, 404, "log-head"),
    (httpx.Response(200, headers={"content-type": "application/json", "x-tt-logid": "log-json"}, json={"code": 0, "msg": "", "data": {}}),
     ErrorKind.SERVER, None, "log-json"),
    (httpx.Response(200, content=b""), ErrorKind.SERVER, None, None),
    (httpx.Response(403, content="禁止访问".encode("gbk")), ErrorKind.PERMISSION, 403, None),  # a page in another encoding
])
async def test_a_refused_chat_request_is_classified_from_its_envelope_or_status(
        fast_retrier: Retrier, refusal: httpx.Response, kind: ErrorKind, code: int | None, logid: str | None) -> None:
    replay = Replay(refusal)
    with pytest.raises(SpeechError) as raised:
        await chat_updates(replay, fast_retrier)
    assert (raised.value.kind, raised.value.code, raised.value.logid, raised.value.provider) == (kind, code, logid, "coze-agent")
    assert len(replay.requests) == 1
    if code is None:
        said = refusal.headers.get("content-type") or "nothing"
        assert f"Coze answered {said} instead of an event stream" in str(raised.value) and not raised.value.retryable
    elif code == 403:
        assert "HTTP 403: \ufffd" in str(raised.value)  # undecodable bytes replaced, not a crash
    else:  # Coze's own words, or the page it answered with
        assert refusal.text[:8] in str(raised.value) if code == 404 else refusal.json()["msg"] in str(raised.value)


async def test_only_the_start_of_a_long_refusal_is_read(fast_retrier: Retrier) -> None:
    page = b"<html>" + b"x" * (200 * 1024)
    replay = Replay(httpx.Response(400, content=page))
    with pytest.raises(SpeechError) as raised:
        await chat_updates(replay, fast_retrier)
    assert raised.value.code == 400 and "<html>xxx" in str(raised.value)
    chunks = [b"a" * 1000] * 70

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    response = httpx.Response(200, content=body())
    assert await _read_limited(response, 64 * 1024) == b"a" * (64 * 1024)
    assert await _read_limited(httpx.Response(200, content=b"short"), 64 * 1024) == b"short"



async def test_a_chat_request_that_cannot_connect_is_retried_then_a_connectivity_failure_of_the_agent(
        fast_retrier: Retrier) -> None:
    replay = Replay(*[httpx.ConnectError("refused")] * 3)
    with pytest.raises(SpeechError) as raised:
        await chat_updates(replay, fast_retrier)
    assert (raised.value.kind, raised.value.provider) == (ErrorKind.CONNECTIVITY, "coze-agent")
    assert "connection failed: ConnectError: refused" in str(raised.value) and len(replay.requests) == 3
