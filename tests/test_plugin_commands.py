"""The plugin's commands, menus and lifecycle on their own (no chat platform, an in-memory port):
each answer's exact words in the reader's language, replying to the command; an agent's
commands and typed messages; the command menus per audience; the retention sweep; shutdown.

Written against the survivors of a mutation run (docs/testing.md, "Mutation testing"): each
test states behaviour a user or an operator sees, cheaply (in-process provider where no speech
synthesis is needed)."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

import pytest

from voicebridge.config import Settings
from voicebridge.speech.retry import Retrier
from voicebridge.speech.service import SpeechService
from voicebridge.voice_notes import messages
from voicebridge.voice_notes.buttons import ButtonAction
from voicebridge.voice_notes.model import Activity, Button, ButtonPress, ChatRef, CommandRequest, Person, ResponderContext, TextMessage, VoiceNote
from voicebridge.voice_notes.plugin import ALL_COMMANDS, MenuAudience, VoiceNotesPlugin, resolve_commands
from voicebridge.voice_notes.store import SQLiteStore, today
from tests.audio_tools import make_tone
from tests.fakes.coze import DEFAULT_TOKEN, DEFAULT_VOICES, FakeCoze, FakeVoice
from tests.fakes.transcriber import FakeTranscriber
from tests.test_plugin import ALICE, BOB, GROUP, PRIVATE, Harness, MemoryChat, Sent, eventually, make_plugin

TONE = make_tone("ogg", 440.0, 2.0)


class EchoAgent:
    """A responder that converses (as an agent does): it answers typed text and /ask too."""

    converses = True
    service_name = "Agent Cloud"

    def __init__(self) -> None:
        self.asked: list[tuple[str, ResponderContext]] = []
        self.conversations: list[str] = []  # the conversation each question went to
        self.closed = 0

    async def __call__(self, question: str, context: ResponderContext) -> str:
        self.asked.append((question, context))
        if question == "fail":
            raise RuntimeError("the agent broke")
        assert context.conversation is not None
        conversation = await context.conversation.get()
        if conversation is None:  # a new conversation, kept by the plugin for the next question
            conversation = f"conversation-{len(set(self.conversations)) + 1}"
            await context.conversation.set(conversation)
        self.conversations.append(conversation)
        return f"agent: {question}"

    async def aclose(self) -> None:
        self.closed += 1


@asynccontextmanager
async def no_tts_plugin(retrier: Retrier, responder: object = None, **env: str) -> AsyncIterator[VoiceNotesPlugin]:
    """The plugin with an in-process transcriber and no speech synthesis set up."""
    transcriber = FakeTranscriber()
    service = SpeechService(transcribers=[transcriber], asr_chain=[transcriber.name], retrier=retrier)
    store = SQLiteStore(":memory:")
    plugin_settings = Settings.from_values({"COZE_API_TOKEN": DEFAULT_TOKEN, **env}).plugin
    plugin = VoiceNotesPlugin(service, store, plugin_settings, edit_interval=0.2, closes=(store,),
                              responder=responder)  # type: ignore[arg-type]
    try:
        yield plugin
    finally:
        await plugin.aclose()
        await service.aclose()


def command(name: str, args: str = "", *, chat: ChatRef = PRIVATE, sender: Person = BOB, **extra: object) -> CommandRequest:
    """A command from Bob (a Chinese reader) unless told otherwise."""
    return CommandRequest(name=name, args=args, chat=chat, sender=sender, **({"message_id": "9"} | extra))  # type: ignore[arg-type]


def answers(chat: MemoryChat) -> list[tuple[str, str | None]]:
    return [(item.text, item.reply_to) for item in chat.sent if item.kind == "text"]


# ------------------------------------------------------------------ commands without speech synthesis

NO_TTS_ZH = "本机器人未配置语音回复功能。"


async def test_without_speech_synthesis_the_voice_commands_say_so_in_the_readers_language(fast_retrier: Retrier) -> None:
    async with no_tts_plugin(fast_retrier) as plugin:
        chat = MemoryChat()
        for name, args in (("voices", ""), ("voice", "Jay"), ("voice", ""), ("speak", "你好")):
            await plugin.handle_command(command(name, args), chat)
        assert await plugin.voice_choices("", 5) == []  # nothing to complete
    assert answers(chat) == [(NO_TTS_ZH, "9"), (NO_TTS_ZH, "9"), ("请使用 /voice ID；发送 /voices 查看可用音色。", "9"),
                             (NO_TTS_ZH, "9")]


async def test_privacy_names_an_unknown_provider_by_its_name_and_says_nothing_speaks(fast_retrier: Retrier) -> None:
    async with no_tts_plugin(fast_retrier, VOICEBRIDGE_RETENTION_HOURS="2.5") as plugin:
        chat = MemoryChat()
        await plugin.handle_command(command("privacy"), chat)
    [(privacy, reply_to)] = answers(chat)
    assert reply_to == "9"
    assert privacy.startswith("发送到这里的语音消息由 fake 转写；语音回复由 无（未配置） 生成。\n")
    assert "保留 2.5 小时" in privacy and "保留 31 天" in privacy
    assert "智能体" not in privacy  # no agent here


async def test_privacy_names_each_provider_of_the_chain_once_and_an_unnamed_agents_service(fast_retrier: Retrier) -> None:
    class UnnamedAgent:
        converses = True  # and no service_name

        async def __call__(self, question: str, context: ResponderContext) -> str:
            return question

    first, spare = FakeTranscriber("coze"), FakeTranscriber("coze-stream")
    other = FakeTranscriber("backup")
    service = SpeechService(transcribers=[first, spare, other], asr_chain=["coze", "coze-stream", "backup"], retrier=fast_retrier)
    store = SQLiteStore(":memory:")
    plugin = VoiceNotesPlugin(service, store, Settings.from_values({"COZE_API_TOKEN": DEFAULT_TOKEN}).plugin,
                              responder=UnnamedAgent(), closes=(store,))
    chat = MemoryChat()
    await plugin.handle_command(command("privacy", sender=ALICE), chat)
    await plugin.aclose()
    await service.aclose()
    [(privacy, _)] = answers(chat)
    assert privacy.startswith("Voice messages sent here are transcribed by Coze (扣子) / backup; spoken answers are made by "
                              "nobody (not set up).\n")
    assert "\n\nAnswers come from an agent on ?: " in privacy


async def test_hot_words_are_shown_set_and_cleared_in_the_readers_language(fast_retrier: Retrier) -> None:
    async with no_tts_plugin(fast_retrier) as plugin:
        chat = MemoryChat()
        for args in ("", "扣子, voicebridge", "", "OFF", "a", "none", "b", "-", ""):
            await plugin.handle_command(command("hotwords", args), chat)
        assert (await plugin.chat_settings(PRIVATE)).hot_words == ()
    current = "当前热词：{}。使用 /hotwords a, b, c 修改，或 /hotwords off 清除。"
    assert answers(chat) == [(current.format("无"), "9"), ("已设置：热词为 扣子, voicebridge。", "9"),
                             (current.format("扣子, voicebridge"), "9"), ("已清除热词。", "9"), ("已设置：热词为 a。", "9"),
                             ("已清除热词。", "9"), ("已设置：热词为 b。", "9"), ("已清除热词。", "9"), (current.format("无"), "9")]


async def test_settings_commands_answer_the_command_in_the_readers_language(fast_retrier: Retrier) -> None:
    async with no_tts_plugin(fast_retrier) as plugin:
        chat = MemoryChat(admins={BOB.id})
        steps = [("auto", "", GROUP), ("auto", "maybe", GROUP), ("auto", "OFF", GROUP), ("mode", "loud", PRIVATE),
                 ("mode", "VOICE", PRIVATE), ("language", "xx", PRIVATE), ("start", "", PRIVATE), ("usage", "", PRIVATE),
                 ("forget", "", PRIVATE)]
        for name, args, where in steps:
            await plugin.handle_command(command(name, args, chat=where), chat)
        assert (await plugin.chat_settings(GROUP)).auto_transcribe is False
    usage_texts = [text for text, _ in answers(chat)]
    assert answers(chat)[:5] == [
        ("请使用 /auto on（开启）或 /auto off（关闭）。", "9"), ("请使用 /auto on（开启）或 /auto off（关闭）。", "9"),
        ("已关闭自动转写：当前聊天的语音消息仅在使用 /transcribe 时转写。", "9"),
        (messages.text("mode_usage", "zh"), "9"), ("已设置：之后将以语音回复。", "9")]
    assert answers(chat)[5] == ("请使用 /language 语言代码，可选：自动识别 (auto)。", "9")
    assert answers(chat)[6] == (messages.text("start", "zh"), "9")
    assert answers(chat)[7] == ("当前聊天的用量：\n今天：转写音频 0 秒，朗读 0 个字符\n本月：转写音频 0 秒，朗读 0 个字符\n"
                                "每日额度：不限", "9")
    assert answers(chat)[8] == ("已删除 0 条保存的转写文本及当前聊天的设置。", "9")
    assert len(usage_texts) == 9


async def test_voices_list_names_languages_and_how_many_more_there_are(fast_retrier: Retrier) -> None:
    voices = [FakeVoice(f"70000000000000000{index:02d}", f"Voice {index}", 300.0 + index,
                        language_code="en" if index % 2 else "", language_name="English" if index % 2 else "")
              for index in range(33)]
    async with FakeCoze(voices=voices) as fake:
        plugin = make_plugin(fake, fast_retrier)
        chat = MemoryChat()
        await plugin.handle_command(command("voices"), chat)
        await plugin.handle_command(command("voices", sender=ALICE), chat)
        choices = await plugin.voice_choices(" voice 1", 3)
        by_id = await plugin.voice_choices("0032", 5)
        await plugin.aclose()
        await plugin.service.aclose()
    chinese, english = answers(chat)
    assert chinese[1] == english[1] == "9"
    lines = chinese[0].splitlines()
    assert lines[0] == "可用音色（使用 /voice ID 选择）："
    assert lines[1:3] == ["7000000000000000000 — Voice 0", "7000000000000000001 — Voice 1 (English)"]
    assert len(lines) == 1 + 30 + 1 and lines[-1] == "……还有 3 个。"
    assert english[0].splitlines()[-1] == "… and 3 more."
    # Autocomplete: by name in any case, or by id; the language after the name when there is one.
    assert choices == [("7000000000000000001", "Voice 1 (English)"), ("7000000000000000010", "Voice 10"),
                       ("7000000000000000011", "Voice 11 (English)")]
    assert by_id == [("7000000000000000032", "Voice 32")]


async def test_exactly_thirty_voices_are_listed_without_a_more_line(fast_retrier: Retrier) -> None:
    voices = [FakeVoice(f"70000000000000000{index:02d}", f"Voice {index}", 300.0 + index) for index in range(30)]
    async with FakeCoze(voices=voices) as fake:
        plugin = make_plugin(fake, fast_retrier)
        chat = MemoryChat()
        await plugin.handle_command(command("voices"), chat)
        await plugin.aclose()
        await plugin.service.aclose()
    [(listing, _)] = answers(chat)
    assert len(listing.splitlines()) == 31 and listing.splitlines()[-1] == "7000000000000000029 — Voice 29 (中文)"


# ------------------------------------------------------------------ an agent

async def test_an_agent_introduces_itself_answers_ask_and_typed_text_and_forgets(fast_retrier: Retrier) -> None:
    agent = EchoAgent()
    async with no_tts_plugin(fast_retrier, responder=agent) as plugin:
        assert plugin.command_names == ALL_COMMANDS
        chat = MemoryChat()
        await plugin.handle_command(command("start"), chat)
        await plugin.handle_command(command("help"), chat)
        await plugin.handle_command(command("privacy"), chat)
        await plugin.handle_command(command("ask", "  天气怎么样  "), chat)
        await plugin.handle_command(command("ask", replied_text=" quoted "), chat)
        await plugin.handle_command(command("ask"), chat)
        await plugin.handle_command(command("new"), chat)
        typed = TextMessage(chat=PRIVATE, message_id="12", sender=BOB, text="  hello  ")
        await plugin.handle_text(typed, chat)
        await plugin.handle_text(replace(typed, text="   "), chat)  # nothing typed: no answer
        await plugin.handle_text(replace(typed, chat=GROUP), chat)  # groups: only what is said to the bot
    assert agent.closed == 1  # the agent's connection is closed with the plugin
    texts = answers(chat)
    assert texts[0] == (messages.text("start_agent", "zh"), "9")
    assert texts[1][0].startswith(messages.text("help_agent", "zh") + "\n\n" + "发送语音消息") and texts[1][1] == "9"
    assert texts[2][0].endswith("\n\n回答来自 Agent Cloud 上的智能体：你对它说的话（语音消息的转写文本或你的文字）会发送到那里，"
                                "对话记录也保存在那里。本机器人只保存对话的 ID，直到使用 /new 或 /forget 为止；"
                                "Agent Cloud 上的对话记录仍会保留。") and texts[2][1] == "9"
    assert texts[3:] == [("agent: 天气怎么样", "9"), ("agent: quoted", "9"), ("请使用 /ask 问题，或用 /ask 回复一条语音消息。", "9"),
                         ("好的，下一条消息将开始新的对话。", "9"), ("agent: hello", "12")]
    assert [question for question, _ in agent.asked] == ["天气怎么样", "quoted", "hello"]
    assert agent.conversations == ["conversation-1", "conversation-1", "conversation-2"]  # /new started another
    assert all(context.sender.id == BOB.id and context.chat == PRIVATE for _, context in agent.asked)
    assert [context.message_id for _, context in agent.asked] == ["9", "9", "12"]


async def test_typed_text_reaches_the_agent_with_the_platforms_objects_and_the_allowlist(fast_retrier: Retrier) -> None:
    agent = EchoAgent()
    async with no_tts_plugin(fast_retrier, responder=agent, VOICEBRIDGE_ALLOWED_CHATS="11") as plugin:
        chat = MemoryChat()
        message, context = object(), object()  # the platform's message and PTB's CallbackContext
        await plugin.handle_text(TextMessage(chat=PRIVATE, message_id="12", sender=BOB, text="hi", message=message,
                                             context=context), chat)
        await plugin.handle_text(TextMessage(chat=PRIVATE, message_id="13", sender=replace(BOB, language=None), text="fail"),
                                 chat)
        outsider = ChatRef(PRIVATE.platform, "99", PRIVATE.kind)
        await plugin.handle_text(TextMessage(chat=outsider, message_id="14", sender=replace(BOB, id="99"), text="hi"), chat)
        await plugin.handle_command(command("start", sender=replace(BOB, language=None)), chat)  # remembered for commands too
    assert agent.asked[0][1].message is message and agent.asked[0][1].context is context
    # A typed question that fails says so, without "I heard" (nothing was heard), in the language
    # Bob's client reported with his earlier message.
    assert answers(chat) == [("agent: hi", "12"), ("抱歉，我无法回答这个问题。", "13"), ("抱歉，当前聊天无法使用本机器人。", "14"),
                             (messages.text("start_agent", "zh"), "9")]
    assert [question for question, _ in agent.asked] == ["hi", "fail"]  # nothing from the chat not allowed


async def test_ask_answers_in_the_chats_language_when_the_asker_has_none(fast_retrier: Retrier) -> None:
    """Discord tells a user's language only in interactions: a chat's language stands in."""
    agent = EchoAgent()
    async with no_tts_plugin(fast_retrier, responder=agent) as plugin:
        chat = MemoryChat()
        anonymous = Person("77", "Dan", None)
        await plugin.handle_command(command("ask", "fail", sender=anonymous, chat_language="zh-hans"), chat)

        async def fetch() -> bytes:
            return TONE

        note = VoiceNote(chat=PRIVATE, message_id="5", sender=ALICE, cache_key="k", fetch=fetch, declared_seconds=2.0,
                         declared_bytes=len(TONE), download_limit=20_000_000, speaker=ALICE.name)
        await plugin.handle_command(command("ask", sender=anonymous, chat_language="zh-hans", replied_note=note,
                                            message_id=None), chat)
    assert answers(chat)[0] == ("抱歉，我无法回答这个问题。", "9")  # typed: no "I heard"
    assert (chat.sent[1].text, chat.sent[1].reply_to) == ("🎙 正在转写… 0:02", "5")  # no /ask message id: the note's


async def test_ask_as_a_reply_to_a_voice_note_answers_the_asker(fast_retrier: Retrier) -> None:
    agent = EchoAgent()
    async with no_tts_plugin(fast_retrier, responder=agent) as plugin:
        chat = MemoryChat()

        async def fetch() -> bytes:
            return TONE

        note = VoiceNote(chat=GROUP, message_id="5", sender=ALICE, cache_key="k", fetch=fetch, declared_seconds=2.0,
                         declared_bytes=len(TONE), download_limit=20_000_000, speaker=ALICE.name)
        await plugin.handle_command(command("ask", chat=GROUP, replied_note=note), chat)
    assert [question for question, _ in agent.asked] == ["tone 440 hz 2.0 s"]
    assert agent.asked[0][1].sender.id == BOB.id  # the asker's conversation, not the speaker's
    # The placeholder answers the /ask, and becomes the agent's answer.
    assert [(item.kind, item.reply_to) for item in chat.sent][0] == ("text", "9")
    assert chat.texts() == ["agent: tone 440 hz 2.0 s"]


async def test_without_an_agent_there_is_no_ask_new_or_typed_answer(fast_retrier: Retrier) -> None:
    heard: list[str] = []

    async def host(transcript: str, context: ResponderContext) -> str:
        heard.append(transcript)
        return "host"

    async with no_tts_plugin(fast_retrier, responder=host) as plugin:
        assert "ask" not in plugin.command_names and "new" not in plugin.command_names
        chat = MemoryChat()
        await plugin.handle_command(command("ask", "x"), chat)
        await plugin.handle_text(TextMessage(chat=PRIVATE, message_id="12", sender=BOB, text="hello"), chat)
        await plugin.handle_command(command("start"), chat)
    assert heard == [] and answers(chat) == [(messages.text("start", "zh"), "9")]


async def test_an_agent_answers_with_a_voice_message_in_voice_mode(fast_retrier: Retrier) -> None:
    async with FakeCoze() as fake:
        without_agent = make_plugin(fake, fast_retrier, VOICEBRIDGE_DAILY_TTS_CHARACTERS="1000")
        plugin = VoiceNotesPlugin(without_agent.service, without_agent.store, without_agent.settings, responder=EchoAgent(),
                                  edit_interval=0.2, closes=(without_agent.store,))
        chat = MemoryChat()
        await plugin.handle_command(command("mode", "voice"), chat)
        await plugin.handle_command(command("ask", "hello"), chat)
        await plugin.bookkeeper.flush()
        usage = await plugin.store.usage(PRIVATE.platform, PRIVATE.id, today())
        await plugin.aclose()
        await plugin.service.aclose()
    [voice] = [item for item in chat.sent if item.kind == "voice"]
    assert voice.reply_to == "9" and voice.voice is not None
    assert voice.voice.seconds == pytest.approx(len("agent: hello") * 0.06, abs=0.05)
    assert usage.tts_characters == len("agent: hello")  # counted against the chat's allowance


async def test_a_streamed_answer_is_not_read_aloud_beyond_the_chats_allowance(fast_retrier: Retrier) -> None:
    class StreamingAgent(EchoAgent):
        async def __call__(self, question: str, context: ResponderContext) -> AsyncIterator[str]:  # type: ignore[override]
            async def pieces() -> AsyncIterator[str]:
                for piece in ("Hello there. ", "How are you today?"):
                    yield piece

            return pieces()

    async with FakeCoze() as fake:
        without_agent = make_plugin(fake, fast_retrier, VOICEBRIDGE_DAILY_TTS_CHARACTERS="5")
        plugin = VoiceNotesPlugin(without_agent.service, without_agent.store, without_agent.settings,
                                  responder=StreamingAgent(), edit_interval=0.2, closes=(without_agent.store,))
        chat = MemoryChat()
        await plugin.handle_command(command("mode", "voice", sender=ALICE), chat)
        await plugin.handle_command(command("ask", "hi", sender=ALICE), chat)
        await plugin.aclose()
        await plugin.service.aclose()
    assert "voice" not in chat.kinds() and fake.calls_to("speech") == []
    assert answers(chat)[-1] == ("Hello there. How are you today?\n\n" + messages.text("voice_reply_over_limit", "en", limit=5), "9")


# ------------------------------------------------------------------ menus

def test_command_names_are_checked_and_normalised() -> None:
    assert resolve_commands(["/Speak", " HELP ", "speak"]) == ("speak", "help")
    with pytest.raises(ValueError, match="unknown voicebridge command 'nope'"):
        resolve_commands(["help", "/nope"])


@pytest.mark.parametrize(("policy", "members", "admins"), [
    ("everyone", True, True), ("admins", False, True), ("off", False, False)])
async def test_menus_offer_each_audience_what_it_may_use(fast_retrier: Retrier, policy: str, members: bool,
                                                          admins: bool) -> None:
    async with no_tts_plugin(fast_retrier, VOICEBRIDGE_SPEAK_IN_GROUPS=policy) as plugin:
        private = [name for name, _ in plugin.command_descriptions("en", MenuAudience.PRIVATE)]
        group = [name for name, _ in plugin.command_descriptions("en", MenuAudience.GROUP)]
        group_admins = [name for name, _ in plugin.command_descriptions("zh", MenuAudience.GROUP_ADMINS)]
        everything = plugin.command_descriptions("zh-hant")
    assert private == [name for name in plugin.command_names if name != "auto"]
    assert group == ["start", "help", "transcribe"] + (["speak"] if members else []) + ["settings", "privacy"]
    assert group_admins == [name for name in plugin.command_names if name != "speak" or admins]
    assert ("help", "查看功能說明") in everything and len(everything) == len(plugin.command_names)


async def test_a_plugin_given_some_commands_answers_only_those(fast_retrier: Retrier) -> None:
    transcriber = FakeTranscriber()
    service = SpeechService(transcribers=[transcriber], asr_chain=[transcriber.name], retrier=fast_retrier)
    store = SQLiteStore(":memory:")
    plugin = VoiceNotesPlugin(service, store, Settings.from_values({"COZE_API_TOKEN": DEFAULT_TOKEN}).plugin,
                              commands=["/transcribe", "privacy"], closes=(store,))
    chat = MemoryChat()
    await plugin.handle_command(command("help"), chat)
    await plugin.handle_command(command("privacy"), chat)
    await plugin.aclose()
    await service.aclose()
    assert plugin.command_names == ("transcribe", "privacy") and len(answers(chat)) == 1


# ------------------------------------------------------------------ lifecycle

async def test_the_retention_sweep_runs_at_start_and_keeps_what_is_recent(fast_retrier: Retrier) -> None:
    """Transcripts after VOICEBRIDGE_RETENTION_HOURS (to the second), usage totals after 31 days,
    buttons after a day (at least): swept when the plugin starts, and the sweeper lives on."""
    started = time.time()
    now = [started - 2 * 86400]
    async with no_tts_plugin(fast_retrier, VOICEBRIDGE_RETENTION_HOURS="1") as plugin:
        store = plugin.store
        assert isinstance(store, SQLiteStore)
        store.clock = plugin.buttons.clock = lambda: now[0]
        [old_button] = await plugin.buttons.issue(PRIVATE, [("x", ButtonAction("mode", "text"))])
        now[0] = started - 3600.5
        await store.cache_transcript("just over an hour", "test", "11", "old words", 1.0)
        now[0] = started - 3599.5
        await store.cache_transcript("just under an hour", "test", "11", "recent words", 1.0)
        [new_button] = await plugin.buttons.issue(PRIVATE, [("x", ButtonAction("mode", "text"))])
        days = {age: (datetime.now(UTC) - timedelta(days=age)).strftime("%Y-%m-%d") for age in (32, 31, 0)}
        for day in days.values():
            await store.reserve_usage("test", "11", day, 10.0, 100.0)
        now[0] = started
        await plugin.start()
        sweeper = plugin._sweeper
        await plugin.start()  # idempotent: one sweeper
        assert plugin._sweeper is sweeper
        await eventually_async(lambda: plugin.buttons.look_up(PRIVATE, old_button.data, 86400), None)  # swept last
        await asyncio.sleep(0.05)
        assert sweeper is not None and not sweeper.done()  # asleep until the next sweep, not dead
        assert await store.cached_transcript("just over an hour", 10 * 3600) is None
        assert (await store.cached_transcript("just under an hour", 10 * 3600)) is not None
        assert await plugin.buttons.look_up(PRIVATE, new_button.data, 3 * 86400) is not None
        # usage(day): the totals from that day on; the one of 32 days ago is gone, 31 days ago kept.
        assert [(await store.usage("test", "11", day)).audio_seconds for day in days.values()] == [20.0, 20.0, 10.0]
    assert plugin._sweeper is None  # stopped with the plugin


async def eventually_async(read, expected: object, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while await read() != expected:
            await asyncio.sleep(0.01)


async def test_drain_lets_work_finish_then_turns_new_work_away(fast_retrier: Retrier) -> None:
    async with no_tts_plugin(fast_retrier) as plugin:
        chat = MemoryChat()
        assert await plugin.drain(5.0) is True and plugin.in_flight == 0
        await plugin.handle_command(command("start"), chat)
        await plugin.handle_text(TextMessage(chat=PRIVATE, message_id="12", sender=BOB, text="hi"), chat)
    assert chat.sent == []  # shutting down: nothing more is taken


async def test_drain_stops_work_that_outlasts_the_grace_period(fast_retrier: Retrier) -> None:
    transcriber = FakeTranscriber()
    transcriber.hold.add("tone 440 hz 2.0 s")
    service = SpeechService(transcribers=[transcriber], asr_chain=[transcriber.name], retrier=fast_retrier)
    store = SQLiteStore(":memory:")
    plugin = VoiceNotesPlugin(service, store, Settings.from_values({"COZE_API_TOKEN": DEFAULT_TOKEN}).plugin,
                              edit_interval=0.2, closes=(store,))
    harness = Harness(None, plugin)  # type: ignore[arg-type]
    chat = MemoryChat()
    plugin.run_in_background(plugin.handle_voice_note(harness.note(TONE), chat))
    await eventually(lambda: transcriber.heard() == ["tone 440 hz 2.0 s"])
    assert plugin.in_flight == 1
    assert await plugin.drain(0.2) is False  # held in the provider: cancelled
    assert plugin.in_flight == 0 and not plugin.accepting
    await plugin.aclose()
    await service.aclose()


# ------------------------------------------------------------------ buttons (the platform-neutral half)

@dataclass
class Presser:
    """Makes :class:`ButtonPress` es and records what each was acknowledged with."""

    acknowledged: list[str | None] = field(default_factory=list)

    def press(self, button: Button, message_id: str, *, chat: ChatRef = PRIVATE, sender: Person = ALICE,
              note: VoiceNote | None = None) -> ButtonPress:
        async def acknowledge(message: str | None) -> None:
            self.acknowledged.append(message)

        async def find_note() -> VoiceNote | None:
            return note

        return ButtonPress(chat=chat, sender=sender, data=button.data, message_id=message_id, acknowledge=acknowledge,
                           note=find_note)


def labels(sent: Sent) -> list[str]:
    return [button.label for button in sent.buttons]


def button(sent: Sent, label: str) -> Button:
    return next(item for item in sent.buttons if item.label == label)


async def test_choice_buttons_set_the_choice_for_admins_only_and_confirm_by_name(fast_retrier: Retrier) -> None:
    jay = DEFAULT_VOICES[1]
    async with FakeCoze() as fake:
        plugin = make_plugin(fake, fast_retrier, VOICEBRIDGE_ASR="coze-stream", COZE_VOICE_ID="")  # the provider's default
        chat, presser = MemoryChat(admins={BOB.id}), Presser()
        await plugin.handle_command(command("voice", chat=GROUP), chat)
        prompt = chat.sent[-1]
        assert (prompt.text, prompt.reply_to) == ("使用哪个音色朗读？当前：默认", "9")
        assert labels(prompt) == [voice.name for voice in DEFAULT_VOICES]
        member = Person("33", "Chen", "zh-TW")
        await plugin.handle_button(presser.press(button(prompt, jay.name), prompt.message_id, chat=GROUP, sender=member), chat)
        assert presser.acknowledged == ["只有管理員可以在這裡變更設定。"]  # no admin, told in their language
        await plugin.handle_button(presser.press(button(prompt, jay.name), prompt.message_id, chat=GROUP, sender=BOB), chat)
        assert presser.acknowledged[1:] == [None]
        assert (chat.sent[-1].kind, chat.sent[-1].message_id, chat.sent[-1].text) == (
            "edit", prompt.message_id, "已设置：语音回复将使用音色“Jay”。")
        await plugin.handle_command(command("voice", chat=GROUP), chat)
        assert chat.sent[-1].text == "使用哪个音色朗读？当前：Jay"

        await plugin.handle_command(command("mode", chat=GROUP), chat)
        prompt = chat.sent[-1]
        assert prompt.text == "在这里以什么方式回复？当前：文字" and labels(prompt)[0] == "📝 文字" and len(labels(prompt)) == 3
        await plugin.handle_button(presser.press(prompt.buttons[1], prompt.message_id, chat=GROUP, sender=BOB), chat)
        assert chat.sent[-1].text == "已设置：之后将以语音回复。"

        await plugin.handle_command(command("language", chat=GROUP), chat)
        prompt = chat.sent[-1]
        assert prompt.text == "识别哪种语言？当前：自动识别 (auto)" and "粤语 (yue)" in labels(prompt)
        await plugin.handle_button(presser.press(button(prompt, "粤语 (yue)"), prompt.message_id, chat=GROUP, sender=BOB), chat)
        assert chat.sent[-1].text == "已设置：识别语言为粤语 (yue)。"

        forged = Button("x", "vb:forgedtoken:0")
        await plugin.handle_button(presser.press(forged, prompt.message_id, chat=GROUP, sender=BOB), chat)
        assert presser.acknowledged[-1] == "此按钮已失效。"
        settings = await plugin.chat_settings(GROUP)
        await plugin.aclose()
        await plugin.service.aclose()
    assert (settings.voice_id, settings.reply_mode.value, settings.language) == (jay.voice_id, "voice", "yue")
    assert len(presser.acknowledged) == 5  # every press acknowledged, once


class NoEditChat(MemoryChat):
    """A chat where the bot's messages cannot be edited (e.g. deleted meanwhile)."""

    async def edit_text(self, message_id: str, text: str, buttons: Sequence[Button] = ()) -> None:
        raise ValueError("message to edit not found")


async def test_a_choice_is_confirmed_anew_when_its_message_cannot_be_edited(fast_retrier: Retrier) -> None:
    jay = DEFAULT_VOICES[1]
    async with FakeCoze() as fake:
        plugin = make_plugin(fake, fast_retrier)
        chat, presser = NoEditChat(), Presser()
        await plugin.handle_command(command("voice", sender=ALICE), chat)
        prompt = chat.sent[-1]
        fake.voices.remove(jay)  # gone from the provider's list since it was offered
        await plugin.handle_button(presser.press(button(prompt, jay.name), prompt.message_id), chat)
        settings = await plugin.chat_settings(PRIVATE)
        await plugin.aclose()
        await plugin.service.aclose()
    assert settings.voice_id == jay.voice_id
    assert answers(chat)[-1] == (f"Done: spoken answers will use the voice {jay.voice_id}.", prompt.message_id)


async def test_without_buttons_the_choice_commands_explain_their_arguments(fast_retrier: Retrier) -> None:
    async with FakeCoze() as fake:
        plugin = make_plugin(fake, fast_retrier, VOICEBRIDGE_ASR="coze-stream", VOICEBRIDGE_BUTTONS="off")
        chat = MemoryChat()
        for name in ("voice", "mode", "language"):
            await plugin.handle_command(command(name), chat)
        await plugin.handle_voice_note(Harness(fake, plugin).note(TONE, sender=BOB), chat)
        await plugin.aclose()
        await plugin.service.aclose()
    assert [text for text, _ in answers(chat)][:3] == ["请使用 /voice ID；发送 /voices 查看可用音色。", messages.text("mode_usage", "zh"),
                                                        chat.sent[2].text]
    assert chat.sent[2].text.startswith("请使用 /language 语言代码，可选：") and all(not item.buttons for item in chat.sent)


async def test_transcript_buttons_speak_it_and_recognise_it_again(fast_retrier: Retrier) -> None:
    async with FakeCoze() as fake:
        plugin = make_plugin(fake, fast_retrier, VOICEBRIDGE_ASR="coze-stream")
        harness, chat, presser = Harness(fake, plugin), MemoryChat(), Presser()
        note = harness.note(TONE)
        await plugin.handle_voice_note(note, chat)
        answer = chat.sent[-1]
        assert answer.text == "tone 440 hz 2.0 s"
        assert labels(answer) == ["🔊 Speak", "Recognise as 中文", "Recognise as English"]
        await plugin.handle_button(presser.press(button(answer, "🔊 Speak"), answer.message_id), chat)
        spoken = chat.sent[-1]
        assert spoken.kind == "voice" and spoken.reply_to == answer.message_id and presser.acknowledged == [None]
        assert spoken.voice is not None and spoken.voice.seconds == pytest.approx(len(answer.text) * 0.06, abs=0.05)

        await plugin.handle_button(presser.press(button(answer, "Recognise as English"), answer.message_id, note=note), chat)
        assert presser.acknowledged[-1] is None and fake.ws_sessions[-1].asr_config is not None
        assert chat.texts()[-1] == "tone 440 hz 2.0 s" and chat.sent[-1].reply_to is None  # the edit of a new answer
        assert [item.reply_to for item in chat.sent if item.kind == "text"] == [note.message_id] * 2
        await plugin.handle_button(presser.press(button(answer, "Recognise as 中文"), answer.message_id), chat)
        assert presser.acknowledged[-1] == "This button no longer works."  # the note is gone from the chat

        await plugin.handle_command(command("language", "zh", sender=ALICE), chat)
        await plugin.handle_voice_note(harness.note(TONE, message_id="8", key="other"), chat)
        assert labels(chat.sent[-1]) == ["🔊 Speak", "Recognise as English"]  # not the language just used
        await plugin.aclose()
        await plugin.service.aclose()


# ------------------------------------------------------------------ limits and the placeholder's length

def note_of(audio: bytes, message_id: str, **declared: object) -> VoiceNote:
    async def fetch() -> bytes:
        return audio

    values: dict[str, object] = {"declared_bytes": len(audio), "download_limit": 20_000_000} | declared
    return VoiceNote(chat=PRIVATE, message_id=message_id, sender=ALICE, cache_key=message_id, fetch=fetch,
                     speaker=ALICE.name, **values)  # type: ignore[arg-type]


async def test_limits_hold_at_the_exact_size_and_length(fast_retrier: Retrier) -> None:
    async with no_tts_plugin(fast_retrier, VOICEBRIDGE_MAX_DURATION="60") as plugin:
        chat = MemoryChat()
        notes = [note_of(TONE, "1", declared_bytes=20_000_000), note_of(TONE, "2", declared_bytes=20_000_001),
                 note_of(TONE, "3", declared_bytes=100_000_001, download_limit=None),  # no platform cap: 100 MB
                 note_of(TONE, "4", declared_bytes=200_000_000, download_limit=300_000_000),  # never above 100 MB
                 note_of(TONE, "5", declared_seconds=60.0), note_of(TONE, "6", declared_seconds=60.5)]
        for note in notes:
            await plugin.handle_voice_note(note, chat)
    assert chat.texts() == ["tone 440 hz 2.0 s", "This file is too large for me to download (limit: 20 MB).",
                            "This file is too large for me to download (limit: 100 MB).",
                            "This file is too large for me to download (limit: 100 MB).",
                            "tone 440 hz 2.0 s", "This recording is too long for me (limit: 1 minute)."]
    assert [item.reply_to for item in chat.sent if item.kind == "text"] == ["1", "2", "3", "4", "5", "6"]


@pytest.mark.parametrize(("seconds", "shown"), [(None, "🎙 Transcribing…"), (0.4, "🎙 Transcribing… 0:00"),
                                                (42.5, "🎙 Transcribing… 0:42"), (725, "🎙 Transcribing… 12:05")])
async def test_the_placeholder_shows_the_notes_length_as_a_player_does(fast_retrier: Retrier, seconds: float | None,
                                                                       shown: str) -> None:
    async with no_tts_plugin(fast_retrier) as plugin:
        chat = MemoryChat()
        await plugin.handle_voice_note(note_of(TONE, "1", declared_seconds=seconds), chat)
    assert (chat.sent[0].kind, chat.sent[0].text) == ("text", shown) and chat.texts() == ["tone 440 hz 2.0 s"]


async def test_the_speak_button_keeps_to_the_groups_policy_the_allowance_and_the_limits(fast_retrier: Retrier) -> None:
    async with FakeCoze() as fake:
        plugin = make_plugin(fake, fast_retrier, VOICEBRIDGE_DAILY_TTS_CHARACTERS="60")
        harness, chat, presser = Harness(fake, plugin), MemoryChat(admins={ALICE.id}), Presser()
        await plugin.handle_voice_note(harness.note(TONE, chat=GROUP, sender=BOB), chat)
        answer = chat.sent[-1]
        speak = button(answer, "🔊 朗读")

        async def press(sender: Person) -> None:
            await plugin.handle_button(presser.press(speak, answer.message_id, chat=GROUP, sender=sender), chat)

        await press(BOB)  # no admin: in groups only admins have texts read aloud (the default policy)
        assert presser.acknowledged == ["在这里只有管理员可以使用朗读功能。"]
        await press(ALICE)  # 17 characters of 60
        assert chat.sent[-1].kind == "voice" and chat.sent[-1].reply_to == answer.message_id
        assert chat.activities.count(Activity.RECORDING_VOICE) == 1
        chat.refuse_voice = chat.refuse_audio = True
        await press(ALICE)  # 34 of 60
        assert answers(chat)[-1] == ("I am not allowed to send voice or audio messages here.", answer.message_id)
        chat.refuse_voice = chat.refuse_audio = False
        fake.fail_next("speech", code=4101)
        await press(ALICE)  # 51 of 60: counted though synthesis failed
        assert answers(chat)[-1][1] == answer.message_id and "voice" not in chat.kinds()[-1:]
        failure = answers(chat)[-1][0]
        await press(ALICE)  # 68 would be over 60
        assert re.fullmatch(r"This chat may have 60 characters read aloud a day; 51 are used today, and this text has 17\. "
                            r"The limit resets at 00:00 UTC \(in \d+ h \d+ min\)\.", answers(chat)[-1][0])
        assert answers(chat)[-1][1] == answer.message_id and failure != answers(chat)[-1][0]
        assert presser.acknowledged[1:] == [None] * 4

        # A transcript of exactly 2,000 characters may be read aloud (here: over the allowance), one more may not.
        for length, message_id in ((2000, "21"), (2001, "22")):
            fake.transcript = ("x" * 9 + " ") * 199 + "x" * (length - 1990)  # no space at either end
            await plugin.handle_voice_note(harness.note(TONE, chat=GROUP, sender=BOB, message_id=message_id,
                                                        key=message_id), chat)
            long_answer = chat.sent[-1]
            await plugin.handle_button(presser.press(button(long_answer, "🔊 朗读"), long_answer.message_id, chat=GROUP,
                                                     sender=ALICE), chat)
        assert presser.acknowledged[-2:] == [None, "That is too long to read aloud (limit: 2000 characters)."]
        assert any(text.startswith("This chat may have 60 characters read aloud a day; 51 are used today, and this text "
                                   "has 2000.") for text, _ in answers(chat))

        # The transcript kept to read it from is gone once the retention is over (the button lives on).
        store = plugin.store
        assert isinstance(store, SQLiteStore)
        store.clock = lambda: time.time() + 168 * 3600 + 60
        await press(ALICE)
        assert presser.acknowledged[-1] == "This button no longer works."
        await plugin.aclose()
        await plugin.service.aclose()
