"""Answers on their own (voicebridge.voice_notes.answers): what a responder gets, each kind of
answer and failure, a streamed answer shown growing and read aloud sentence by sentence, with
an in-memory port and a speech service that makes a known amount of PCM per character."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from voicebridge.speech.errors import SpeechError
from voicebridge.speech.models import AudioClip, AudioFormat, SpeechAudio, SynthesizeOptions
from voicebridge.voice_notes import answers
from voicebridge.voice_notes.answers import Answerer, Question, SpokenAnswer, spoken_form
from voicebridge.voice_notes.delivery import ELLIPSIS, LiveMessage
from voicebridge.voice_notes.messages import text
from voicebridge.voice_notes.model import (
    Activity,
    AnswerFailed,
    ChatKind,
    ChatRef,
    Person,
    Reply,
    ResponderContext,
    VoiceReply,
    converses,
)
from voicebridge.voice_notes.settings import ChatSettings, PluginSettings, ReplyMode
from voicebridge.voice_notes.store import SQLiteStore
from tests.test_delivery import Chat, until

RATE = answers.SPEECH_RATE
SAMPLES_PER_CHARACTER = 240  # 10 ms of PCM per character spoken
CHAT = ChatRef("telegram", "5", ChatKind.PRIVATE)
ALICE = Person("1", "Alice", language="en")
SENTENCE = "This sentence is long enough to be read aloud on its own, forty more characters. "  # 80 characters, stripped: just enough to speak


@dataclass
class FakeConverter:
    encoded: list[tuple[int, int, AudioFormat]] = field(default_factory=list)
    analysed: list[bytes] = field(default_factory=list)

    async def encode(self, pcm: bytes, rate: int, target: AudioFormat) -> bytes:
        self.encoded.append((len(pcm), rate, target))
        return b"OggS" + pcm[:8]

    async def analyse(self, clip: AudioClip) -> Any:
        assert clip.data is not None
        self.analysed.append(clip.data)

        class Report:
            def waveform(self) -> bytes:
                return b"wave"
        return Report()


@dataclass
class FakeSpeech:
    """Synthesizes 10 ms of PCM per character; fails where told."""

    can_synthesize: bool = True
    converter: FakeConverter = field(default_factory=FakeConverter)
    spoken: list[tuple[str, SynthesizeOptions]] = field(default_factory=list)
    fail: bool = False
    hold: asyncio.Event | None = None  # synthesis waits for it
    cancelled: list[str] = field(default_factory=list)

    async def synthesize(self, spoken: str, options: SynthesizeOptions) -> SpeechAudio:
        self.spoken.append((spoken, options))
        try:
            if self.hold is not None:
                await self.hold.wait()
        except asyncio.CancelledError:
            self.cancelled.append(spoken)
            raise
        if self.fail:
            raise SpeechError("coze", "synthesis failed")
        return SpeechAudio(b"\x01\x00" * SAMPLES_PER_CHARACTER * len(spoken), AudioFormat.PCM, options.sample_rate)


@dataclass
class Allowance:
    """The chat's daily speech allowance: characters asked for, refused past ``left``."""

    left: int = 10**6
    asked: list[int] = field(default_factory=list)
    askers: set[tuple[ChatRef, str | None]] = field(default_factory=set)  # which chat asked, in which language

    async def __call__(self, where: ChatRef, characters: int, lang: str | None) -> str | None:
        self.asked.append(characters)
        self.askers.add((where, lang))
        if characters > self.left:
            return f"only {self.left} characters left today"
        self.left -= characters
        return None


@dataclass
class Delivered:
    calls: list[tuple[str, str, LiveMessage | None, str | None]] = field(default_factory=list)
    to: list[tuple[Any, ChatSettings, ChatRef, str | None]] = field(default_factory=list)  # where each went

    async def __call__(self, chat: Any, settings: ChatSettings, where: ChatRef, reply_to: str | None, written: str,
                       voice_text: str, placeholder: LiveMessage | None, lang: str | None) -> None:
        self.calls.append((written, voice_text, placeholder, lang))
        self.to.append((chat, settings, where, reply_to))


def question(words: str = "what is the weather", *, spoken: bool = True, sender: Person = ALICE,
             chat_language: str | None = None) -> Question:
    return Question(words, CHAT, sender, "7", spoken, chat_language=chat_language, message="message", context="ctx",
                    duration=2.5)


def answerer(responder: Any, store: SQLiteStore, speech: FakeSpeech | None = None, allowance: Allowance | None = None,
             timeout: float = 30.0) -> tuple[Answerer, Delivered]:
    delivered = Delivered()
    return Answerer(responder, speech or FakeSpeech(), store, PluginSettings(responder_timeout_seconds=timeout),  # type: ignore[arg-type]
                    delivered, allowance or Allowance(), edit_interval=0.0), delivered


def mode(reply: ReplyMode) -> ChatSettings:
    return ChatSettings(reply_mode=reply, language="en", voice_id="v1")


def test_markup_is_not_read_aloud_but_words_are() -> None:
    written = ("# Weather\n> quoted\n- **Sunny** and _warm_ in snake_case_town, see [the map](https://x.example/m) "
               "or https://y.example/z\n```\ncode()\n```\n+ `done` ~~old~~")
    assert spoken_form(written) == "Weather\nquoted\nSunny and warm in snake_case_town, see the map or \n \ndone old"


def test_an_answer_is_in_the_senders_language_else_the_chats() -> None:
    assert question(sender=Person("2", "Bob", language="zh"), chat_language="fr").answer_language == "zh"
    assert question(sender=Person("2", "Bob"), chat_language="fr").answer_language == "fr"


def test_only_a_responder_that_says_so_converses() -> None:
    class Agent:
        converses = True

    assert converses(Agent()) is True  # type: ignore[arg-type]
    assert converses(lambda words, context: None) is False and converses(None) is False


async def test_the_responder_gets_the_question_and_its_context_and_a_reply_is_delivered(store: SQLiteStore) -> None:
    asked: list[tuple[str, ResponderContext]] = []

    async def responder(words: str, context: ResponderContext) -> Reply:
        asked.append((words, context))
        await context.conversation.set("conversation-1")  # type: ignore[union-attr]
        return Reply("  Sunny.  ", voice_text=" Sunny today. ")

    plugin, delivered = answerer(responder, store)
    chat = Chat()
    await plugin.answer(question(chat_language="fr"), chat, mode(ReplyMode.TEXT))
    [(words, context)] = asked
    assert words == "what is the weather"
    assert (context.platform, context.chat, context.sender, context.message, context.context) == (
        "telegram", CHAT, ALICE, "message", "ctx")
    assert (context.language, context.user_language, context.duration, context.message_id) == ("en", "en", 2.5, "7")
    assert await store.marker("conversation:telegram:5:1") == "conversation-1"
    assert delivered.calls == [("Sunny.", "Sunny today.", None, "en")]
    assert delivered.to == [(chat, mode(ReplyMode.TEXT), CHAT, "7")]
    unthreaded = Question("hello", CHAT, ALICE, None, spoken=False)
    await plugin.answer(unthreaded, chat, mode(ReplyMode.TEXT))
    assert asked[-1][1].message_id == "" and delivered.to[-1][3] is None


async def test_a_plain_function_may_answer_with_a_string(store: SQLiteStore) -> None:
    plugin, delivered = answerer(lambda words, context: f"You said: {words}", store)
    await plugin.answer(question(), Chat(), mode(ReplyMode.TEXT))
    assert delivered.calls == [("You said: what is the weather", "You said: what is the weather", None, "en")]


@pytest.mark.parametrize("nothing", [None, "   ", Reply(" ")])
async def test_no_answer_sends_nothing_or_turns_the_placeholder_into_what_was_heard(store: SQLiteStore, nothing: Any) -> None:
    plugin, delivered = answerer(lambda words, context: nothing, store)
    chat = Chat(max_text_length=4096)
    await plugin.answer(question(), chat, mode(ReplyMode.TEXT))
    assert chat.posted == [] and delivered.calls == []
    placeholder = LiveMessage(chat, "7", 0.0)
    placeholder.open("Transcribing…")
    await plugin.answer(question(), chat, mode(ReplyMode.TEXT), placeholder)
    assert chat.shown() == [text("heard_placeholder", "en", transcript="what is the weather")]


async def test_a_placeholder_is_handed_to_the_delivery_of_a_reply(store: SQLiteStore) -> None:
    plugin, delivered = answerer(lambda words, context: "Sunny.", store)
    chat = Chat(max_text_length=4096)
    placeholder = LiveMessage(chat, "7", 0.0)
    await plugin.answer(question(), chat, mode(ReplyMode.TEXT), placeholder)
    assert delivered.calls == [("Sunny.", "Sunny.", placeholder, "en")]


class Refused(AnswerFailed):
    def user_message(self, lang: str | None) -> str:
        return f"The agent refused ({lang}). "


async def never(words: str, context: ResponderContext) -> str:
    await asyncio.Event().wait()
    return "never"


async def broken(words: str, context: ResponderContext) -> str:
    raise RuntimeError("bug in the host")


async def refusing(words: str, context: ResponderContext) -> str:
    raise Refused("no")


@pytest.mark.parametrize(("responder", "failure", "reported"), [
    (never, text("responder_timeout", "zh"), []),
    (refusing, "The agent refused (zh). ", []),
    (broken, text("responder_failed", "zh"), ["bug in the host"]),
    (lambda words, context: 42, text("responder_failed", "zh"), ["a responder returns str, Reply, None or an async iterable of str, not int"]),
], ids=["timeout", "answer failed", "bug", "wrong type"])
async def test_every_failure_is_one_message_that_repeats_what_was_heard(store: SQLiteStore, responder: Any, failure: str,
                                                                        reported: list[str]) -> None:
    plugin, delivered = answerer(responder, store, timeout=0.05)  # ``never`` never answers: the timeout is certain
    bob = Person("2", "Bob", language="zh")
    heard = text("heard", "zh", transcript="what is the weather")
    for reply_mode in (ReplyMode.TEXT, ReplyMode.VOICE):
        chat = Chat(max_text_length=4096)
        await plugin.answer(question(sender=bob), chat, mode(reply_mode))
        assert chat.shown() == [failure + heard] and chat.posted[0].reply_to == "7"
        assert [str(error) for error in chat.reported] == reported and delivered.calls == []
    typed = Chat(max_text_length=4096)
    await plugin.answer(question(spoken=False, sender=bob), typed, mode(ReplyMode.TEXT))
    assert typed.shown() == [failure]  # a typed question is on screen already
    with_placeholder = Chat(max_text_length=4096)
    placeholder = LiveMessage(with_placeholder, "7", 0.0)
    placeholder.open("Transcribing…")
    await plugin.answer(question(sender=bob), with_placeholder, mode(ReplyMode.VOICE), placeholder)
    assert with_placeholder.shown() == [failure + heard]  # the placeholder became the message


def stream(*pieces: Any, closed: list[bool] | None = None) -> Any:
    async def pieces_of_the_answer() -> AsyncIterator[Any]:
        try:
            for piece in pieces:
                yield piece
                await asyncio.sleep(0)
        finally:
            if closed is not None:
                closed.append(True)
    return pieces_of_the_answer()


async def test_a_streamed_answer_grows_in_one_reply_and_ends_as_the_whole_text(store: SQLiteStore) -> None:
    closed: list[bool] = []
    plugin, delivered = answerer(lambda words, context: stream("Sunny ", "and ", "warm.  ", closed=closed), store)
    chat = Chat(max_text_length=4096)
    await plugin.answer(question(), chat, mode(ReplyMode.TEXT))
    assert chat.shown() == ["Sunny and warm."] and chat.posted[0].text == "Sunny" + ELLIPSIS
    assert chat.posted[0].reply_to == "7" and closed == [True] and delivered.calls == []


async def test_a_stream_that_yields_no_text_is_a_failure_and_is_closed(store: SQLiteStore) -> None:
    closed: list[bool] = []
    plugin, _ = answerer(lambda words, context: stream("Sunny ", 42, closed=closed), store)
    chat = Chat(max_text_length=4096)
    await plugin.answer(question(), chat, mode(ReplyMode.TEXT))
    assert chat.shown() == [text("responder_failed", "en") + text("heard", "en", transcript="what is the weather")]
    assert [str(error) for error in chat.reported] == ["a streaming responder yields str, not int"] and closed == [True]


async def test_a_stream_that_goes_on_is_cut_at_the_limit(store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(answers, "MAX_ANSWER_CHARACTERS", 25)
    closed: list[bool] = []
    plugin, _ = answerer(lambda words, context: stream(*(["0123456789"] * 10), closed=closed), store)
    chat = Chat(max_text_length=4096)
    await plugin.answer(question(), chat, mode(ReplyMode.TEXT))
    assert chat.shown() == ["0123456789" * 2 + "01234" + ELLIPSIS] and closed == [True]
    exactly = Chat(max_text_length=4096)
    plugin, _ = answerer(lambda words, context: stream("0123456789", "0123456789", "01234"), store)
    await plugin.answer(question(), exactly, mode(ReplyMode.TEXT))
    assert exactly.shown() == ["0123456789" * 2 + "01234"]  # exactly the limit: whole


async def test_a_stream_that_stops_coming_times_out_from_its_last_piece(store: SQLiteStore) -> None:
    async def stalls() -> AsyncIterator[str]:
        yield "It is"
        await asyncio.Event().wait()

    plugin, _ = answerer(lambda words, context: stalls(), store, timeout=0.05)
    chat = Chat(max_text_length=4096)
    await asyncio.wait_for(plugin.answer(question(), chat, mode(ReplyMode.TEXT)), timeout=30)
    assert chat.shown() == [text("responder_timeout", "en") + text("heard", "en", transcript="what is the weather")]


async def test_a_stream_with_nothing_in_it_is_no_answer(store: SQLiteStore) -> None:
    plugin, _ = answerer(lambda words, context: stream(" ", "\n"), store)
    chat = Chat(max_text_length=4096)
    placeholder = LiveMessage(chat, "7", 0.0)
    await plugin.answer(question(), chat, mode(ReplyMode.VOICE), placeholder)
    assert chat.shown() == [text("heard_placeholder", "en", transcript="what is the weather")]


async def test_a_streamed_answer_is_spoken_sentence_by_sentence_as_it_comes(store: SQLiteStore) -> None:
    speech = FakeSpeech()
    allowance = Allowance()
    rest = "And a short end."
    plugin, _ = answerer(lambda words, context: stream(SENTENCE[:40], SENTENCE[40:], rest), store, speech, allowance)
    chat = Chat(max_text_length=4096, needs_waveform=True)
    await plugin.answer(question(), chat, mode(ReplyMode.BOTH))
    assert allowance.askers == {(CHAT, "en")}  # counted against this chat, refused in the asker's language
    assert [spoken for spoken, _ in speech.spoken] == [SENTENCE.strip(), rest]
    assert all((options.voice_id, options.format, options.sample_rate) == ("v1", AudioFormat.PCM, RATE)
               for _, options in speech.spoken)
    assert chat.shown() == [(SENTENCE + rest).strip()]
    [voice] = [item for item in chat.posted if item.kind == "voice"]
    assert voice.reply_to == "7" and voice.voice is not None and voice.voice.data.startswith(b"OggS")
    assert voice.voice.waveform == b"wave"  # the platform wants one
    assert chat.activities == [Activity.TYPING, Activity.RECORDING_VOICE]  # writing, then recording the voice
    characters = len(SENTENCE.strip()) + len(rest)
    assert speech.converter.encoded == [(2 * SAMPLES_PER_CHARACTER * characters, RATE, AudioFormat.OGG_OPUS)]


async def test_a_voice_only_answer_that_cannot_be_spoken_is_written(store: SQLiteStore) -> None:
    speech = FakeSpeech(fail=True)
    plugin, _ = answerer(lambda words, context: stream("Sunny and warm."), store, speech)
    chat = Chat(max_text_length=4096)
    await plugin.answer(question(), chat, mode(ReplyMode.VOICE))
    assert [(item.kind, item.text, item.reply_to) for item in chat.posted] == [("text", "Sunny and warm.", "7")]
    assert chat.activities[0] == Activity.RECORDING_VOICE  # no text is being written
    both = Chat(max_text_length=4096)
    await plugin.answer(question(), both, mode(ReplyMode.BOTH))
    assert both.shown() == ["Sunny and warm."] and not any(item.kind == "voice" for item in both.posted)


async def test_a_voice_only_answer_is_written_where_voice_is_refused(store: SQLiteStore) -> None:
    plugin, _ = answerer(lambda words, context: stream("Sunny and warm."), store)
    chat = Chat(max_text_length=4096, refuse={"voice", "audio"})
    await plugin.answer(question(), chat, mode(ReplyMode.VOICE))
    assert [(item.kind, item.text) for item in chat.posted] == [("text", "Sunny and warm.")]


async def test_an_answer_over_the_speech_allowance_says_so_in_the_chats_mode(store: SQLiteStore) -> None:
    for reply_mode, expected in ((ReplyMode.BOTH, ["Sunny and warm.", "only 5 characters left today"]),
                                 (ReplyMode.VOICE, ["Sunny and warm.\n\nonly 5 characters left today"])):
        allowance = Allowance(left=5)
        plugin, _ = answerer(lambda words, context: stream("Sunny and warm."), store, allowance=allowance)
        chat = Chat(max_text_length=4096)
        await plugin.answer(question(), chat, mode(reply_mode))
        assert chat.shown() == expected and not any(item.kind == "voice" for item in chat.posted)
        assert all(item.reply_to == "7" for item in chat.posted if item.kind == "text")
        assert allowance.asked == [len("Sunny and warm.")]


async def test_a_chat_without_speech_synthesis_gets_voice_mode_answers_in_text(store: SQLiteStore) -> None:
    speech = FakeSpeech(can_synthesize=False)
    plugin, _ = answerer(lambda words, context: stream("Sunny and warm."), store, speech)
    chat = Chat(max_text_length=4096)
    await plugin.answer(question(), chat, mode(ReplyMode.VOICE))
    assert [(item.kind, item.text) for item in chat.posted] == [("text", "Sunny and warm.")] and speech.spoken == []


# ---------------------------------------------------------------- SpokenAnswer on its own


def spoken_answer(speech: FakeSpeech, allowance: Allowance | None = None, *, waveform: bool = False) -> SpokenAnswer:
    return SpokenAnswer(speech, allowance or Allowance(), CHAT, "v1", waveform, "en")  # type: ignore[arg-type]


async def test_sentences_wait_until_there_are_enough_of_them_to_speak() -> None:
    speech = FakeSpeech()
    voice = spoken_answer(speech)
    short = "A short one. "
    voice.heard(short)
    voice.heard(short + "Another")
    await asyncio.sleep(0)
    assert speech.spoken == []  # one sentence of 12 characters: too few to pay for a call
    written = short + SENTENCE + "And the rest"
    voice.heard(written)  # whole sentences of 80 and more: they go now, the unfinished one waits
    await until(lambda: len(speech.spoken) == 1)
    assert speech.spoken[0][0] == (short + SENTENCE).strip()
    note = await voice.finish(written)
    assert [spoken for spoken, _ in speech.spoken] == [(short + SENTENCE).strip(), "And the rest"]
    characters = len((short + SENTENCE).strip()) + len("And the rest")
    assert isinstance(note, VoiceReply) and note.waveform == b""
    assert note.seconds == pytest.approx(characters * SAMPLES_PER_CHARACTER / RATE)
    assert voice.characters == characters


async def test_a_voice_note_with_its_waveform_where_the_platform_wants_one() -> None:
    speech = FakeSpeech()
    voice = spoken_answer(speech, waveform=True)
    note = await voice.finish("Sunny.")
    assert note is not None and note.waveform == b"wave" and speech.converter.analysed == [note.data]


async def test_an_answer_too_long_to_read_aloud_is_not_spoken_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(answers, "SPEAK_LIMIT_CHARACTERS", len(SENTENCE.strip()))
    speech = FakeSpeech()
    voice = spoken_answer(speech)
    voice.heard(SENTENCE)  # exactly the limit: spoken
    await until(lambda: len(speech.spoken) == 1)
    assert await voice.finish(SENTENCE + "One more.") is None
    assert len(speech.spoken) == 1 and voice.characters == len(SENTENCE.strip()) + len("One more.")


async def test_nothing_to_say_or_a_failed_synthesis_gives_no_voice_note(caplog: pytest.LogCaptureFixture) -> None:
    speech = FakeSpeech()
    assert await spoken_answer(speech).finish("```\ncode()\n```") is None and speech.spoken == []
    assert await spoken_answer(FakeSpeech(fail=True)).finish("Sunny.") is None
    assert [record.getMessage() for record in caplog.records] == ["voice answer failed, answering in text: synthesis failed"]


async def test_the_first_refusal_of_the_allowance_is_kept_and_nothing_is_spoken() -> None:
    speech = FakeSpeech()
    allowance = Allowance(left=100)
    voice = spoken_answer(speech, allowance)
    voice.heard(SENTENCE)
    await until(lambda: len(speech.spoken) == 1)
    assert await voice.finish(SENTENCE + SENTENCE + "x" * 30 + ".") is None
    assert voice.refusal == f"only {100 - len(SENTENCE.strip())} characters left today"


async def test_each_run_of_sentences_is_spoken_once_as_the_answer_grows() -> None:
    speech = FakeSpeech()
    voice = spoken_answer(speech)
    second = SENTENCE.replace("This", "That")
    voice.heard(SENTENCE)
    voice.heard(SENTENCE + second)
    voice.heard(SENTENCE + second + "The end")
    note = await voice.finish(SENTENCE + second + "The end.")
    assert [spoken for spoken, _ in speech.spoken] == [SENTENCE.strip(), second.strip(), "The end."]
    assert note is not None and note.data.startswith(b"OggS")


async def test_a_failed_answer_leaves_no_synthesis_running(store: SQLiteStore) -> None:
    speech = FakeSpeech(hold=asyncio.Event())

    async def speaks_then_fails(words: str, context: ResponderContext) -> AsyncIterator[str]:
        yield SENTENCE
        await until(lambda: len(speech.spoken) == 1)
        raise RuntimeError("the agent broke off")

    plugin, _ = answerer(speaks_then_fails, store, speech)
    chat = Chat(max_text_length=4096)
    await plugin.answer(question(), chat, mode(ReplyMode.BOTH))
    assert speech.cancelled == [SENTENCE.strip()]  # stopped, and waited for, before the answer returned
    assert not any(item.kind == "voice" for item in chat.posted)
