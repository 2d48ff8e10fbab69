"""Buttons end to end through a real python-telegram-bot Application and the Bot API fake: under
every transcript (Speak, Recognise as …), choice keyboards for /mode, /language and /voice,
pressed after a restart on the same database, forged, and next to a host's own buttons."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from telegram import Update
from telegram.ext import Application, CallbackQueryHandler, ContextTypes

from voicebridge.speech.coze_asr_stream import USER_LANGUAGES
from voicebridge.speech.retry import Retrier
from voicebridge.voice_notes.buttons import ButtonAction, ButtonBook, ButtonRecord
from voicebridge.voice_notes.model import ChatKind, ChatRef
from voicebridge.voice_notes.store import SQLiteStore
from tests.audio_tools import make_tone
from tests.fakes.coze import DEFAULT_VOICES, FakeCoze
from tests.fakes.telegram import Chat, FakeTelegram, User
from tests.harness import replies_to, speech_values, telegram_bot, transcript_reply

ALICE = User(1001, "Alice", username="alice", language_code="en")
BOB = User(1002, "Bob", last_name="Li", language_code="zh-hans")
GROUP = Chat.supergroup(-1001234567890, "Voice club")
TONE = make_tone("ogg", 440.0, 2.0)
EXPIRED = "This button no longer works."


@dataclass
class World:
    telegram: FakeTelegram
    coze: FakeCoze
    retrier: Retrier
    db: str


@pytest.fixture
async def world(fast_retrier: Retrier, tmp_path: Path) -> AsyncIterator[World]:
    async with FakeTelegram() as telegram, FakeCoze() as coze:
        yield World(telegram, coze, fast_retrier, str(tmp_path / "bot.db"))


@asynccontextmanager
async def running_bot(world: World, **env: str) -> AsyncIterator[Application[Any, Any, Any, Any, Any, Any]]:
    async with telegram_bot(world.telegram, {**speech_values(world.coze), **env}, world.retrier, db=world.db) as application:
        yield application


def buttons_of(message: dict[str, Any]) -> dict[str, str]:
    """label → callback_data of a message's inline keyboard."""
    rows = (message.get("reply_markup") or {}).get("inline_keyboard") or []
    return {button["text"]: button["callback_data"] for row in rows for button in row}


async def answered_query(world: World, query: dict[str, Any]) -> dict[str, Any]:
    return await world.telegram.wait_for(  # type: ignore[no-any-return]
        lambda: next((answer for answer in world.telegram.callback_answers
                      if answer["callback_query_id"] == query["id"]), None), timeout=30)


async def test_transcript_buttons_work_after_a_restart_and_forged_ones_get_a_short_answer(world: World) -> None:
    chat = Chat.private(ALICE)
    async with running_bot(world, VOICEBRIDGE_ASR="coze-stream"):
        note = await world.telegram.push_voice(chat, ALICE, TONE, duration=2)
        transcript = await transcript_reply(world.telegram, note)
        await world.telegram.wait_for(lambda: buttons_of(world.telegram.messages_sent(ALICE.id)[-1]), timeout=30)
        transcript = world.telegram.messages_sent(ALICE.id)[-1]
    buttons = buttons_of(transcript)
    assert transcript["text"] == "tone 440 hz 2.0 s"
    assert list(buttons) == ["🔊 Speak", "Recognise as 中文", "Recognise as English"]
    assert all(data.startswith("vb:") and len(data.encode()) <= 64 for data in buttons.values())
    assert len(set(buttons.values())) == 3

    async with running_bot(world, VOICEBRIDGE_ASR="coze-stream"):  # a new process on the same database
        speak = await world.telegram.push_callback_query(chat, ALICE, transcript["message_id"], buttons["🔊 Speak"])
        voice = await world.telegram.wait_for_call("sendVoice", lambda call: (call.params.get("reply_parameters") or {})
                                                   .get("message_id") == transcript["message_id"], timeout=30)
        assert (await answered_query(world, speak)).get("text") is None  # nothing to say: the voice is the answer

        again = await world.telegram.push_callback_query(chat, ALICE, transcript["message_id"], buttons["Recognise as English"])
        await answered_query(world, again)
        await world.telegram.wait_for(lambda: len(world.coze.ws_sessions) >= 2 and len(
            [message for message in world.telegram.messages_sent(ALICE.id) if message.get("text") == "tone 440 hz 2.0 s"]) == 2,
            timeout=30)

        forged = await world.telegram.push_callback_query(chat, ALICE, transcript["message_id"], "vb:AAAAAAAAAAAA:0")
        nonsense = await world.telegram.push_callback_query(chat, ALICE, transcript["message_id"], "vb:" + "x" * 40)
        assert (await answered_query(world, forged))["text"] == EXPIRED
        assert (await answered_query(world, nonsense))["text"] == EXPIRED
    assert voice.files["voice"].startswith(b"OggS")
    usage_after_speaking = world.coze.calls_to("speech")
    assert len(usage_after_speaking) == 1 and usage_after_speaking[0].json["input"] == "tone 440 hz 2.0 s"
    assert world.coze.ws_sessions[-1].asr_config["user_language"] == USER_LANGUAGES["en"]  # type: ignore[index]
    assert world.coze.ws_sessions[0].asr_config["user_language"] == USER_LANGUAGES["auto"]  # type: ignore[index]


async def test_buttons_from_another_chat_find_nothing_and_speak_keeps_to_the_limit(world: World) -> None:
    async with running_bot(world, VOICEBRIDGE_DAILY_TTS_CHARACTERS="10"):
        note = await world.telegram.push_voice(Chat.private(ALICE), ALICE, TONE, duration=2)
        await transcript_reply(world.telegram, note)
        await world.telegram.wait_for(lambda: buttons_of(world.telegram.messages_sent(ALICE.id)[-1]), timeout=30)
        transcript = world.telegram.messages_sent(ALICE.id)[-1]
        speak = buttons_of(transcript)["🔊 Speak"]
        # Bob's chat: a message of the bot's there, with Alice's button data copied onto a press.
        bob_note = await world.telegram.push_voice(Chat.private(BOB), BOB, make_tone("ogg", 300.0, 1.0), duration=1)
        bob_transcript = await transcript_reply(world.telegram, bob_note)
        stolen = await world.telegram.push_callback_query(Chat.private(BOB), BOB, bob_transcript["message_id"], speak)
        assert (await answered_query(world, stolen))["text"] == "此按钮已失效。"
        own = await world.telegram.push_callback_query(Chat.private(ALICE), ALICE, transcript["message_id"], speak)
        await answered_query(world, own)
        refusal = await world.telegram.wait_for_call("sendMessage", lambda call: "read aloud a day" in call.params["text"],
                                                     timeout=30)
    assert world.telegram.calls_to("sendVoice") == [] and world.coze.calls_to("speech") == []
    assert "10" in refusal.params["text"]


async def test_buttons_can_be_switched_off(world: World) -> None:
    async with running_bot(world, VOICEBRIDGE_BUTTONS="off"):
        note = await world.telegram.push_voice(Chat.private(ALICE), ALICE, TONE, duration=2)
        await transcript_reply(world.telegram, note)
        command = await world.telegram.push_text(Chat.private(ALICE), ALICE, "/mode")
        usage = await world.telegram.wait_for_call("sendMessage", replies_to(command))
    assert all("reply_markup" not in message for message in world.telegram.messages_sent(ALICE.id))
    assert "text" in usage.params["text"] and "voice" in usage.params["text"]


async def test_mode_language_and_voice_offer_their_choices_and_confirm_by_name(world: World) -> None:
    chat = Chat.private(BOB)
    async with running_bot(world, VOICEBRIDGE_ASR="coze-stream"):
        for command, label in (("/mode", "🔊 语音"), ("/language", "英语 (en)"), ("/voice", DEFAULT_VOICES[1].name)):
            sent = await world.telegram.push_text(chat, BOB, command)
            offer = await world.telegram.wait_for_call("sendMessage", replies_to(sent), timeout=30)
            message = world.telegram.messages_sent(BOB.id)[-1]
            assert message["message_id"] == offer.response["result"]["message_id"]  # type: ignore[index]
            query = await world.telegram.push_callback_query(chat, BOB, message["message_id"], buttons_of(message)[label])
            await answered_query(world, query)
            await world.telegram.wait_for(lambda: "reply_markup" not in world.telegram.messages_sent(BOB.id)[-1], timeout=30)
        texts = [message["text"] for message in world.telegram.messages_sent(BOB.id)]
    assert texts[0] == "已设置：之后将以语音回复。"
    assert texts[1] == "已设置：识别语言为英语 (en)。"
    assert texts[2] == f"已设置：语音回复将使用音色“{DEFAULT_VOICES[1].name}”。"


async def test_in_groups_only_admins_choose_and_a_hosts_own_buttons_stay_the_hosts(world: World) -> None:
    host_presses: list[str] = []

    async def host_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.callback_query is not None
        host_presses.append(update.callback_query.data or "")
        await update.callback_query.answer("host")

    async with running_bot(world) as application:
        application.add_handler(CallbackQueryHandler(host_button, pattern="^host:"))
        await world.telegram.push_text(GROUP, ALICE, "hello")  # the fake learns the members first
        world.telegram.set_admins(GROUP.id, [ALICE.id])
        sent = await world.telegram.push_text(GROUP, BOB, "/mode")
        await world.telegram.wait_for_call("sendMessage", replies_to(sent), timeout=30)
        offer = world.telegram.messages_sent(GROUP.id)[-1]
        voice = buttons_of(offer)["🔊 语音"]  # in the language of Bob, who asked
        refused = await world.telegram.push_callback_query(GROUP, BOB, offer["message_id"], voice)
        assert (await answered_query(world, refused))["text"] == "只有管理员可以在这里修改设置。"
        accepted = await world.telegram.push_callback_query(GROUP, ALICE, offer["message_id"], voice)
        await answered_query(world, accepted)
        await world.telegram.wait_for(lambda: world.telegram.messages_sent(GROUP.id)[-1]["text"]
                                      == "Done: I will now answer with voice messages.", timeout=30)
        hosts = await world.telegram.push_callback_query(GROUP, ALICE, offer["message_id"], "host:order")
        assert (await answered_query(world, hosts))["text"] == "host"
    assert host_presses == ["host:order"]
    assert len([answer for answer in world.telegram.callback_answers if answer["callback_query_id"] == hosts["id"]]) == 1


# ButtonBook on its own, on a SQLite store with a clock of its own.

class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


HERE = ChatRef("telegram", "-100", ChatKind.GROUP)


@pytest.fixture
async def book(tmp_path: Path) -> AsyncIterator[tuple[ButtonBook, SQLiteStore, Clock]]:
    store, clock = SQLiteStore(tmp_path / "state.db"), Clock()
    try:
        yield ButtonBook(store, clock=clock), store, clock
    finally:
        await store.aclose()


async def test_issued_buttons_name_one_record_and_their_own_action(book: tuple[ButtonBook, SQLiteStore, Clock]) -> None:
    buttons, store, clock = book
    assert await buttons.issue(HERE, []) == [] and await store.markers("button:") == {}
    labelled = [(f"Choice {index}", ButtonAction("language", str(index))) for index in range(12)]
    issued = await buttons.issue(HERE, labelled, transcript_key="key-1", note_id="42")
    assert [button.label for button in issued] == [label for label, _ in labelled]
    token = issued[0].data.split(":")[1]
    assert [button.data for button in issued] == [f"vb:{token}:{index}" for index in range(12)]
    assert all(len(button.data.encode()) <= 64 for button in issued)
    assert list(await store.markers("button:")) == [f"button:telegram:-100:{token}"]
    for index, button in enumerate(issued):
        found = await buttons.look_up(HERE, button.data, 60)
        assert found == (ButtonRecord(tuple(action for _, action in labelled), clock.now, "key-1", "42"), labelled[index][1])


async def test_a_button_works_until_exactly_its_age_and_is_swept_after(book: tuple[ButtonBook, SQLiteStore, Clock]) -> None:
    buttons, store, clock = book
    [speak] = await buttons.issue(HERE, [("Speak", ButtonAction("speak"))])
    await buttons.issue(HERE, [("Voice", ButtonAction("mode", "voice"))])
    clock.now += 60
    assert await buttons.look_up(HERE, speak.data, 60) is not None
    assert await buttons.sweep(60) == 0  # exactly as old as allowed: kept
    clock.now += 0.5
    assert await buttons.look_up(HERE, speak.data, 60) is None
    assert await buttons.sweep(60) == 2 and await store.markers("button:") == {}


async def test_data_that_names_no_action_of_a_readable_record_finds_nothing(book: tuple[ButtonBook, SQLiteStore, Clock]) -> None:
    buttons, store, _ = book
    [speak, english] = await buttons.issue(HERE, [("Speak", ButtonAction("speak")), ("English", ButtonAction("recognise", "en"))])
    token = speak.data.split(":")[1]
    found = await buttons.look_up(HERE, speak.data, 60)
    assert found is not None and (found[0].transcript_key, found[0].note_id) == ("", "")  # issued without them
    assert await buttons.look_up(HERE, f"vb:{token}:2", 60) is None  # one past the last action
    assert await buttons.look_up(HERE, f"vb:{token}:100", 60) is None  # not an index the data can hold
    assert await buttons.look_up(HERE, f"vb:{token}x:0", 60) is None
    assert await buttons.look_up(HERE, f"xvb:{token}:0", 60) is None
    # Records written without the optional fields (an earlier version) still work.
    await store.set_marker(f"button:telegram:-100:{token}", '{"c":1000000.0,"a":[["speak",""]]}')
    assert await buttons.look_up(HERE, speak.data, 60) == (ButtonRecord((ButtonAction("speak"),), 1_000_000.0), ButtonAction("speak"))
    for damaged in ("not json", '{"c":"soon","a":[]}', '{"c":1,"a":[["speak"]]}', '{"a":[["speak",""]]}'):
        await store.set_marker(f"button:telegram:-100:{token}", damaged)
        assert await buttons.look_up(HERE, speak.data, 60) is None
    assert await buttons.sweep(60) == 1  # a damaged record is swept as if it were the oldest


async def test_forgetting_a_chat_removes_its_buttons_only(book: tuple[ButtonBook, SQLiteStore, Clock]) -> None:
    buttons, store, _ = book
    longer = ChatRef("telegram", "-1001", ChatKind.GROUP)  # "-100" prefixes its id
    [mine] = await buttons.issue(HERE, [("Speak", ButtonAction("speak"))])
    [theirs] = await buttons.issue(longer, [("Speak", ButtonAction("speak"))])
    [discord] = await buttons.issue(ChatRef("discord", "-100", ChatKind.GROUP), [("Speak", ButtonAction("speak"))])
    await buttons.forget_chat("telegram", "-100")
    assert await buttons.look_up(HERE, mine.data, 60) is None
    assert await buttons.look_up(longer, theirs.data, 60) is not None
    assert await buttons.look_up(ChatRef("discord", "-100", ChatKind.GROUP), discord.data, 60) is not None
