"""voicebridge as a guest in someone else's python-telegram-bot application.

The host here is a realistic bot: its own /start and /help, an /order conversation, HTML
defaults, its own command menu, persistence and an error handler. Each test checks that the host
is unharmed (its commands answered once, by itself; its menus kept) and that the plugin works.
The lifecycle is PTB's own: ``running_like_run_polling`` performs the steps of
``Application.run_polling`` (PTB 22 ``Application.__run``) in the same order.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from telegram import BotCommand, BotCommandScopeAllGroupChats, Message, Update
from telegram.constants import ParseMode
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackContext,
    CommandHandler,
    ContextTypes,
    ConversationHandler,
    Defaults,
    MessageHandler,
    PicklePersistence,
    filters,
)

import voicebridge
import voicebridge.telegram
from voicebridge.adapters.telegram import TelegramInstall
from voicebridge.config import RunnerSettings
from voicebridge.speech.errors import ConfigError
from voicebridge.speech.retry import Retrier
from voicebridge.voice_notes.plugin import VoiceNotesPlugin
from voicebridge.voice_notes.store import SQLiteStore
from tests.audio_tools import make_tone
from tests.fakes.coze import FakeCoze
from tests.fakes.telegram import Call, Chat, FakeTelegram, User
from tests.harness import replies_to, speech_values, transcript_reply

ROOT = Path(__file__).resolve().parent.parent
ALICE = User(1001, "Alice", username="alice", language_code="en")
BOB = User(1002, "Bob", language_code="zh-hans")
TONE = make_tone("ogg", 440.0, 2.0)
HOST_MENU = [BotCommand("start", "Welcome"), BotCommand("help", "What this bot does"), BotCommand("order", "Order a pizza")]
PLUGIN_COMMANDS = ["transcribe", "speak", "settings", "mode", "language", "voice", "voices", "auto", "hotwords", "usage",
                   "privacy", "forget"]
SIZE = 0
AnyApplication = Application[Any, Any, Any, Any, Any, Any]


@dataclass
class Host:
    """What the host bot saw: its own handlers' calls and the errors its error handler got."""

    application: AnyApplication
    answered: list[str] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)


def host_bot(telegram: FakeTelegram, tmp: Path) -> Host:
    application = (ApplicationBuilder().token(telegram.token).base_url(telegram.api_base_url)
                   .base_file_url(telegram.file_base_url).defaults(Defaults(parse_mode=ParseMode.HTML))
                   .persistence(PicklePersistence(tmp / "host.pickle")).build())
    host = Host(application)

    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        host.answered.append("start")
        await update.effective_message.reply_text("Welcome to <b>Pizza Bot</b>!")

    async def help_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        host.answered.append("help")
        await update.effective_message.reply_text("/order — order a pizza")

    async def order(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
        host.answered.append("order")
        await update.effective_message.reply_text("What size?")
        return SIZE

    async def size(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
        host.answered.append(f"size:{update.effective_message.text}")
        await update.effective_message.reply_text(f"Ordered: one <b>{update.effective_message.text.lower()}</b> pizza.")
        return ConversationHandler.END

    async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert context.error is not None
        host.errors.append(context.error)

    application.add_handler(CommandHandler("start", start))
    application.add_handler(CommandHandler("help", help_command))
    application.add_handler(ConversationHandler(
        entry_points=[CommandHandler("order", order)], states={SIZE: [MessageHandler(filters.TEXT & ~filters.COMMAND, size)]},
        fallbacks=[], name="order", persistent=True))
    application.add_error_handler(on_error)
    return host


async def publish_host_menu(application: AnyApplication) -> None:
    await application.bot.set_my_commands(HOST_MENU)


@asynccontextmanager
async def running_like_run_polling(application: AnyApplication) -> AsyncIterator[None]:
    """``Application.run_polling``'s steps, in its order, inside the test's event loop."""
    await application.initialize()
    if application.post_init:
        await application.post_init(application)
    await application.updater.start_polling(timeout=1)  # type: ignore[union-attr]
    await application.start()
    try:
        yield
    finally:
        await application.updater.stop()  # type: ignore[union-attr]
        await application.stop()
        if application.post_stop:
            await application.post_stop(application)
        await application.shutdown()
        if application.post_shutdown:
            await application.post_shutdown(application)


@dataclass
class World:
    telegram: FakeTelegram
    coze: FakeCoze
    retrier: Retrier
    tmp: Path

    def settings(self, **env: str) -> voicebridge.Settings:
        return voicebridge.Settings.from_values({**speech_values(self.coze), **env})


@pytest.fixture
async def world(fast_retrier: Retrier, tmp_path: Path) -> AsyncIterator[World]:
    async with FakeTelegram() as telegram, FakeCoze(transcript="Large <b>&amp; crispy</b>") as coze:
        yield World(telegram, coze, fast_retrier, tmp_path)


def texts_to(world: World, chat_id: int) -> list[str]:
    """The bot's text messages in a chat as Telegram shows them (markup parsed away)."""
    return [message["text"] for message in world.telegram.messages_sent(chat_id) if "text" in message]


async def wait_for_texts(world: World, chat_id: int, count: int) -> list[str]:
    """The texts the bot has sent into a chat, once there are ``count`` of them."""
    await world.telegram.wait_for_call("sendMessage", lambda call: call.status == 200 and int(call.params["chat_id"]) == chat_id,
                                       timeout=30, count=count)
    return texts_to(world, chat_id)


def answered(predicate: Callable[[Call], bool]) -> Callable[[Call], bool]:
    """``predicate``, once the fake has answered the call (its status and response are set)."""
    return lambda call: call.status is not None and predicate(call)


PRIVATE_CHATS = {"type": "all_private_chats"}
GROUP_CHATS = {"type": "all_group_chats"}
GROUP_ADMINS = {"type": "all_chat_administrators"}
# The plugin's commands per menu audience, in its order (speak: admins only in groups by default).
PRIVATE_MENU = [name for name in PLUGIN_COMMANDS if name != "auto"]
GROUP_MENU = ["transcribe", "settings", "privacy"]
ADMIN_MENU = [name for name in PLUGIN_COMMANDS]


def menu(world: World, language_code: str = "", scope: dict[str, str] | None = None) -> dict[str, str]:
    """The menu stored for ``scope`` (the default scope if None) and ``language_code``."""
    return {command["command"]: command["description"]
            for command in world.telegram.commands(scope, language_code=language_code)}


async def test_host_commands_are_answered_once_by_the_host_and_its_menu_is_kept(world: World) -> None:
    host = host_bot(world.telegram, world.tmp)
    host.application.post_init = publish_host_menu  # set before install, as ApplicationBuilder.post_init does
    handle = voicebridge.telegram.install(host.application, settings=world.settings(), store=":memory:")
    async with running_like_run_polling(host.application):
        chat = Chat.private(ALICE)
        for count, command in enumerate(("/start", "/help"), start=1):
            await world.telegram.push_text(chat, ALICE, command)
            await wait_for_texts(world, ALICE.id, count)
        note = await world.telegram.push_voice(chat, ALICE, TONE, duration=2)
        await world.telegram.wait_for_call("sendMessage", replies_to(note))
        english, chinese = menu(world, scope=PRIVATE_CHATS), menu(world, "zh", PRIVATE_CHATS)
        menus = {(str(scope), code): list(menu(world, code, scope)) for scope in (GROUP_CHATS, GROUP_ADMINS) for code in ("", "zh")}
        host_default = menu(world)
    assert host.answered == ["start", "help"]
    assert texts_to(world, ALICE.id) == ["Welcome to Pizza Bot!", "/order — order a pizza", "Large <b>&amp; crispy</b>"]
    assert list(english) == ["start", "help", "order", *PRIVATE_MENU]
    assert english["order"] == "Order a pizza" and english["speak"] == "Read a text aloud"
    # No Chinese menu of the host's: the host's default menu plus the plugin's commands in Chinese.
    assert list(chinese) == list(english) and chinese["order"] == "Order a pizza" and chinese["speak"] == "朗读文本"
    # Groups: every member sees the host's menu and what they may use; settings are in the admins' menu.
    for code in ("", "zh"):
        assert menus[(str(GROUP_CHATS), code)] == ["start", "help", "order", *GROUP_MENU]
        assert menus[(str(GROUP_ADMINS), code)] == ["start", "help", "order", *ADMIN_MENU]
    assert host_default == {command.command: command.description for command in HOST_MENU}  # untouched
    assert handle.plugin.command_names == tuple(PLUGIN_COMMANDS)
    assert host.errors == []


async def test_a_menu_set_in_post_init_after_install_is_merged_too(world: World) -> None:
    host = host_bot(world.telegram, world.tmp)
    handle = voicebridge.telegram.install(host.application, settings=world.settings(), store=":memory:")

    async def host_post_init(application: AnyApplication) -> None:
        await publish_host_menu(application)
        await application.bot.set_my_commands([BotCommand("start", "欢迎")], language_code="zh")

    host.application.post_init = host_post_init  # replaces the plugin's hook: it must cope
    async with running_like_run_polling(host.application):
        note = await world.telegram.push_voice(Chat.private(ALICE), ALICE, TONE, duration=2)
        await world.telegram.wait_for_call("sendMessage", replies_to(note))
        english, chinese = menu(world, scope=PRIVATE_CHATS), menu(world, "zh", PRIVATE_CHATS)
        admins_chinese = menu(world, "zh", GROUP_ADMINS)
    assert list(english) == ["start", "help", "order", *PRIVATE_MENU]
    assert list(chinese) == ["start", *PRIVATE_MENU] and chinese["start"] == "欢迎"
    assert list(admins_chinese) == ["start", *ADMIN_MENU] and admins_chinese["mode"] == "设置回复方式：文字、语音或两者"
    assert handle.plugin.store._connection is None  # type: ignore[attr-defined]  # closed at shutdown


async def test_merge_keeps_the_hosts_scoped_menus_and_a_restart_changes_nothing(world: World) -> None:
    """The host's own group menu is kept in the groups' and (Telegram's fallback) the admins'
    menus; at a second start only the menu the host published again (its group menu, without
    the plugin's commands) is written."""
    host_group_menu = [BotCommand("order", "Order a pizza"), BotCommand("menu", "See the menu")]

    async def host_post_init(application: AnyApplication) -> None:
        await publish_host_menu(application)
        await application.bot.set_my_commands(host_group_menu, scope=BotCommandScopeAllGroupChats())

    for run in range(2):
        host = host_bot(world.telegram, world.tmp)
        host.application.post_init = host_post_init
        voicebridge.telegram.install(host.application, settings=world.settings(), store=":memory:")
        writes_before = len(world.telegram.calls_to("setMyCommands"))
        async with running_like_run_polling(host.application):
            pass
        plugin_writes = len(world.telegram.calls_to("setMyCommands")) - writes_before - 2  # less the host's two
        assert plugin_writes == (6 if run == 0 else 1)
        for code in ("", "zh"):
            assert list(menu(world, code, GROUP_CHATS)) == ["order", "menu", *GROUP_MENU]
            assert list(menu(world, code, GROUP_ADMINS)) == ["order", "menu", *ADMIN_MENU]
            assert list(menu(world, code, PRIVATE_CHATS)) == ["start", "help", "order", *PRIVATE_MENU]
        assert menu(world, "zh", GROUP_ADMINS)["usage"] == "查看用量" and menu(world, "", GROUP_ADMINS)["menu"] == "See the menu"


@pytest.mark.parametrize("menu_option", ["replace", "none"])
async def test_menu_replace_and_none(world: World, menu_option: str) -> None:
    host = host_bot(world.telegram, world.tmp)
    host.application.post_init = publish_host_menu
    voicebridge.telegram.install(host.application, settings=world.settings(), store=":memory:", menu=menu_option)
    async with running_like_run_polling(host.application):
        pass
    expected = PRIVATE_MENU if menu_option == "replace" else []
    assert list(menu(world, scope=PRIVATE_CHATS)) == list(menu(world, "zh", PRIVATE_CHATS)) == expected
    assert list(menu(world)) == ["start", "help", "order"]  # the host's default menu stays
    set_calls = world.telegram.calls_to("setMyCommands")
    # The host's own, and the plugin's three audiences in two languages.
    assert len(set_calls) == (7 if menu_option == "replace" else 1)


async def test_html_defaults_never_garble_a_transcript_and_failures_reach_the_host(world: World) -> None:
    host = host_bot(world.telegram, world.tmp)
    voicebridge.telegram.install(host.application, settings=world.settings(), store=":memory:")
    async with running_like_run_polling(host.application):
        chat = Chat.private(ALICE)
        note = await world.telegram.push_voice(chat, ALICE, TONE, duration=2)
        reply = await transcript_reply(world.telegram, note)
        assert reply["text"] == "Large <b>&amp; crispy</b>"
        # Stated: no parse mode, whatever the host's Defaults say.
        assert all(call.params.get("parse_mode") is None for call in world.telegram.calls_to("sendMessage")
                   + world.telegram.calls_to("editMessageText"))
        # Blocked: the placeholder fails, and so does the transcript sent in its place.
        world.telegram.fail_next("sendMessage", error_code=403, description="Forbidden: bot was blocked by the user", times=2)
        second = await world.telegram.push_voice(chat, ALICE, make_tone("ogg", 500.0, 2.0), duration=2)
        await world.telegram.wait_for_call("sendMessage", lambda call: call.status == 403)
        async with asyncio.timeout(10):
            while not host.errors:
                await asyncio.sleep(0.01)
    assert [type(error).__name__ for error in host.errors] == ["Forbidden"]
    assert second["message_id"] > note["message_id"]


async def test_transcript_as_text_advances_the_hosts_conversation(world: World) -> None:
    world.coze.transcript = "Large"
    host = host_bot(world.telegram, world.tmp)
    voicebridge.telegram.install(host.application, settings=world.settings(), store=":memory:", transcript_as_text=True)
    async with running_like_run_polling(host.application):
        chat = Chat.private(ALICE)
        await world.telegram.push_text(chat, ALICE, "/order")
        await wait_for_texts(world, ALICE.id, 1)
        await world.telegram.push_voice(chat, ALICE, TONE, duration=2)
        await wait_for_texts(world, ALICE.id, 2)
    assert host.answered == ["order", "size:Large"]
    # The host answered in its own way (HTML parsed by Telegram); the plugin sent nothing of its own.
    assert texts_to(world, ALICE.id) == ["What size?", "Ordered: one large pizza."]


async def test_the_responder_gets_the_platform_objects_and_runs_outside_the_transcription_slots(world: World) -> None:
    host = host_bot(world.telegram, world.tmp)
    release = asyncio.Event()
    contexts: list[voicebridge.ResponderContext] = []

    async def slow_responder(transcript: str, context: voicebridge.ResponderContext) -> voicebridge.Reply | str:
        contexts.append(context)
        if context.chat.id == str(ALICE.id):
            await release.wait()  # a slow host answer (an LLM call) in Alice's chat
            return voicebridge.Reply(text=f"Alice said {transcript}")
        return f"Bob said {transcript}"

    settings = world.settings()
    store = SQLiteStore(":memory:")
    speech = voicebridge.SpeechService.from_settings(settings.speech, retrier=world.retrier)
    plugin = VoiceNotesPlugin(speech, store, settings.plugin, responder=slow_responder, max_concurrent_notes=1,
                              closes=(speech, store))
    TelegramInstall(host.application, plugin, voicebridge.Options(), owns_plugin=True)
    async with running_like_run_polling(host.application):
        alice_note = await world.telegram.push_voice(Chat.private(ALICE), ALICE, TONE, duration=2)
        async with asyncio.timeout(15):
            while not contexts:
                await asyncio.sleep(0.01)
        # Alice's answer is pending, yet Bob's note gets the one transcription slot and its answer.
        bob_note = await world.telegram.push_voice(Chat.private(BOB), BOB, TONE, duration=2)
        bob_reply = await transcript_reply(world.telegram, bob_note, timeout=15)
        release.set()
        alice_reply = await transcript_reply(world.telegram, alice_note, timeout=15)
    assert bob_reply["text"] == "Bob said Large <b>&amp; crispy</b>"
    assert alice_reply["text"] == "Alice said Large <b>&amp; crispy</b>"
    context = contexts[0]
    assert context.platform == "telegram" and isinstance(context.message, Message)
    assert context.message.voice is not None and context.message.message_id == alice_note["message_id"]
    assert isinstance(context.context, CallbackContext)
    assert context.language == settings.plugin.language and context.user_language == "en"
    assert context.duration == pytest.approx(2.0, abs=0.1) and context.sender.name == "Alice"


async def test_a_responder_that_is_too_slow_gets_the_user_a_short_answer_with_their_words(world: World) -> None:
    host = host_bot(world.telegram, world.tmp)
    never = asyncio.Event()

    async def hanging(transcript: str, context: voicebridge.ResponderContext) -> str:
        await never.wait()
        return "too late"

    voicebridge.telegram.install(host.application, settings=world.settings(VOICEBRIDGE_RESPONDER_TIMEOUT="0.5"),
                                 store=":memory:", responder=hanging)
    async with running_like_run_polling(host.application):
        note = await world.telegram.push_voice(Chat.private(ALICE), ALICE, TONE, duration=2)
        reply = await transcript_reply(world.telegram, note, timeout=15)
    assert reply["text"] == "Sorry, the answer is taking too long. I heard: Large <b>&amp; crispy</b>"


async def test_replies_in_a_forum_topic_stay_in_that_topic(world: World) -> None:
    forum = Chat.forum(-1009876543210, "Pizza lovers")
    host = host_bot(world.telegram, world.tmp)
    voicebridge.telegram.install(host.application, settings=world.settings(VOICEBRIDGE_SPEAK_IN_GROUPS="everyone"),
                                 store=":memory:")
    async with running_like_run_polling(host.application):
        topic = await world.telegram.open_topic(forum, ALICE, "Orders")
        note = await world.telegram.push_voice(forum, ALICE, TONE, duration=2, thread_id=topic)
        reply = await world.telegram.wait_for_call("sendMessage", answered(replies_to(note)))
        general_note = await world.telegram.push_voice(forum, ALICE, make_tone("ogg", 520.0, 2.0), duration=2)
        general_reply = await world.telegram.wait_for_call("sendMessage", answered(replies_to(general_note)))
        speak = await world.telegram.push_text(forum, ALICE, "/speak Pizza", thread_id=topic)  # "recording voice…" too
        await world.telegram.wait_for_call("sendVoice", replies_to(speak))
    sent = {message["message_id"]: message for message in world.telegram.messages_sent(forum.id)}
    assert sent[reply.response["result"]["message_id"]]["message_thread_id"] == topic  # type: ignore[index]
    assert "message_thread_id" not in sent[general_reply.response["result"]["message_id"]]  # type: ignore[index]
    actions = [call for call in world.telegram.calls_to("sendChatAction") if int(call.params["chat_id"]) == forum.id]
    assert actions[0].params["message_thread_id"] == topic


async def test_uninstall_removes_the_handlers_and_hooks_and_closes_what_it_started(world: World) -> None:
    host = host_bot(world.telegram, world.tmp)
    host.application.post_init = publish_host_menu
    handle = voicebridge.telegram.install(host.application, settings=world.settings(), store=":memory:")
    async with running_like_run_polling(host.application):
        chat = Chat.private(ALICE)
        note = await world.telegram.push_voice(chat, ALICE, TONE, duration=2)
        await world.telegram.wait_for_call("sendMessage", replies_to(note))
        handle.uninstall()
        assert host.application.post_init is publish_host_menu and host.application.post_stop is None
        await world.telegram.push_voice(chat, ALICE, make_tone("ogg", 600.0, 2.0), duration=2)
        await world.telegram.push_text(chat, ALICE, "/start")
        await wait_for_texts(world, ALICE.id, 2)
    assert texts_to(world, ALICE.id) == ["Large <b>&amp; crispy</b>", "Welcome to Pizza Bot!"]
    assert all(not handlers for group, handlers in host.application.handlers.items() if group == 10)
    assert handle.plugin.store._connection is None  # type: ignore[attr-defined]


def test_an_unknown_command_name_fails_at_install(world: World) -> None:
    application = ApplicationBuilder().token(world.telegram.token).build()
    with pytest.raises(ValueError, match="unknown voicebridge command 'ordr'"):
        voicebridge.telegram.install(application, commands=["transcribe", "ordr"], settings=world.settings())
    assert application.handlers == {}


def test_plugin_settings_never_read_the_runners_variables(world: World) -> None:
    values = {**speech_values(world.coze), "TELEGRAM_WEBHOOK_PORT": "auto", "VOICEBRIDGE_METRICS_PORT": "none"}
    assert voicebridge.Settings.from_values(values).speech.asr_chain == ("coze",)
    with pytest.raises(ConfigError, match="TELEGRAM_WEBHOOK_PORT"):
        RunnerSettings.from_values(values)


async def test_the_example_host_bot_runs_answers_by_voice_and_shuts_down_clean(world: World) -> None:
    """examples/telegram_host.py in its own process under ``python -X dev``: a voice note answers
    the host's conversation; SIGINT stops it with no ResourceWarning and no task left behind."""
    world.coze.transcript = "Large, please."
    env = {**{key: value for key, value in os.environ.items() if not key.startswith(("COZE_", "FEISHU_", "VOICEBRIDGE_"))},
           **speech_values(world.coze), "TELEGRAM_BOT_TOKEN": world.telegram.token,
           "TELEGRAM_BASE_URL": world.telegram.api_base_url, "TELEGRAM_BASE_FILE_URL": world.telegram.file_base_url,
           "VOICEBRIDGE_DB": str(world.tmp / "voicebridge.db"), "PIZZA_STATE": str(world.tmp / "pizza.pickle"),
           "PYTHONWARNINGS": "default"}
    process = subprocess.Popen([sys.executable, "-X", "dev", str(ROOT / "examples" / "telegram_host.py")], cwd=world.tmp,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        await world.telegram.wait_for_call("getUpdates", timeout=60)
        chat = Chat.private(ALICE)
        for count, command in enumerate(("/start", "/order"), start=1):
            await world.telegram.push_text(chat, ALICE, command)
            await wait_for_texts(world, ALICE.id, count)
        await world.telegram.push_voice(chat, ALICE, TONE, duration=2)
        await wait_for_texts(world, ALICE.id, 3)
        english = menu(world, scope=PRIVATE_CHATS)
    finally:
        process.send_signal(signal.SIGINT)
        stdout, stderr = await asyncio.to_thread(process.communicate, timeout=60)
    log = stderr.decode(errors="replace")
    assert process.returncode == 0, log
    assert texts_to(world, ALICE.id) == ["Welcome to Pizza Bot! Send /order, by text or by voice.",
                                         "What size? (small, medium, large)", "Ordered: one large pizza."]
    assert list(english) == ["start", "help", "order", *PRIVATE_MENU]
    for trouble in ("ResourceWarning", "Task was destroyed", "Traceback", "never awaited"):
        assert trouble not in log, log

