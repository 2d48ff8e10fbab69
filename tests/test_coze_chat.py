"""The Coze agent chat client (voicebridge.speech.coze_chat) and the CozeAgent responder,
against the agent chat API of the Coze fake; every request our client sends is checked against
cozepy's models there (``fake.agents.violations``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from cozepy import AsyncCoze, AsyncTokenAuth, ChatEventType

from voicebridge.config import Settings
from voicebridge.responders import AgentUnavailable, CozeAgent, coze_user_id
from voicebridge.speech.coze_auth import StaticToken
from voicebridge.speech.coze_chat import AgentError, AgentProblem, AnswerPiece, ChatOpened, CozeChatClient
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
