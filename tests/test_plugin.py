"""The voice-notes plugin on its own: no chat platform, an in-memory port, the real speech
service against the local Coze fake."""

from __future__ import annotations

import asyncio
import re
import itertools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from voicebridge.config import Settings
from voicebridge.speech.retry import Retrier
from voicebridge.speech.service import SpeechService
from voicebridge.voice_notes.delivery import LiveMessage
from voicebridge.voice_notes.model import (
    Activity,
    Button,
    ChatKind,
    ChatRef,
    CommandRequest,
    DownloadFailed,
    Person,
    ResponderContext,
    VoiceNotAllowed,
    VoiceNote,
    VoiceReply,
)
from voicebridge.voice_notes.plugin import VoiceNotesPlugin
from voicebridge.voice_notes.store import SQLiteStore, StoreError
from tests.harness import is_placeholder
from tests.audio_tools import analyse, decode, make_tone
from tests.fakes.coze import DEFAULT_TOKEN, DEFAULT_VOICES, FakeCoze
from tests.fakes.transcriber import FakeTranscriber
from tests import violations
from tests.violations import watch

ALICE = Person("11", "Alice", "en")
BOB = Person("22", "Bob", "zh-hans")
PRIVATE = ChatRef("test", "11", ChatKind.PRIVATE)
GROUP = ChatRef("test", "-500", ChatKind.GROUP)


@dataclass
class Sent:
    kind: str  # "text", "edit", "voice", "audio"
    text: str = ""
    reply_to: str | None = None
    message_id: str = ""
    voice: VoiceReply | None = None
    buttons: tuple[Button, ...] = ()
    at: float = field(default_factory=time.monotonic)


@dataclass
class MemoryChat:
    """A ChatPort that records everything, with switches for platform refusals."""

    max_text_length: int = 4096
    needs_waveform: bool = False
    min_edit_interval: float = 0.0
    admins: set[str] = field(default_factory=set)
    refuse_voice: bool = False
    refuse_audio: bool = False
    sent: list[Sent] = field(default_factory=list)
    activities: list[Activity] = field(default_factory=list)
    reported: list[BaseException] = field(default_factory=list)  # what reached the host's error handling
    open_activities: int = 0
    most_open_activities: int = 0
    ids: itertools.count = field(default_factory=lambda: itertools.count(100))

    # Rules broken by the plugin: the plugin swallows the error a send raises, so each is also
    # recorded here, and any left fails the test (tests/violations.py).
    violations: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        watch(self)

    def text_length(self, text: str) -> int:
        return len(text)

    def _refuse_bad_length(self, action: str, text: str) -> None:
        if not 0 < len(text) <= self.max_text_length:
            self.violations.append(f"{action} of {len(text)} characters (limit {self.max_text_length})")
            raise ValueError(self.violations[-1])  # what the platform would answer

    async def send_text(self, text: str, reply_to: str | None, buttons: Sequence[Button] = ()) -> str:
        self._refuse_bad_length("send", text)
        message_id = str(next(self.ids))
        self.sent.append(Sent("text", text, reply_to, message_id, buttons=tuple(buttons)))
        return message_id

    async def edit_text(self, message_id: str, text: str, buttons: Sequence[Button] = ()) -> None:
        self._refuse_bad_length("edit", text)
        self.sent.append(Sent("edit", text, None, message_id, buttons=tuple(buttons)))

    async def send_voice(self, voice: VoiceReply, reply_to: str | None) -> str:
        if self.refuse_voice:
            raise VoiceNotAllowed("VOICE_MESSAGES_FORBIDDEN")
        self.sent.append(Sent("voice", reply_to=reply_to, voice=voice))
        return str(next(self.ids))

    async def send_audio(self, voice: VoiceReply, reply_to: str | None) -> str:
        if self.refuse_audio:
            raise VoiceNotAllowed("not enough rights")
        self.sent.append(Sent("audio", reply_to=reply_to, voice=voice))
        return str(next(self.ids))

    @asynccontextmanager
    async def activity(self, kind: Activity) -> AsyncIterator[None]:
        self.activities.append(kind)
        self.open_activities += 1
        self.most_open_activities = max(self.most_open_activities, self.open_activities)
        try:
            yield
        finally:
            self.open_activities -= 1

    async def is_admin(self, user_id: str) -> bool:
        return user_id in self.admins

    async def report_error(self, error: BaseException) -> None:
        self.reported.append(error)

    def texts(self) -> list[str]:
        """What the chat shows now: each text message with its last edit applied (a placeholder
        shows as what it became)."""
        return self.visible_texts()

    def visible_texts(self) -> list[str]:
        """What the chat shows now: each text message with its last edit applied."""
        shown = {item.message_id: item.text for item in self.sent if item.kind == "text"}
        for item in self.sent:
            if item.kind == "edit":
                shown[item.message_id] = item.text
        return list(shown.values())

    def kinds(self) -> list[str]:
        return [item.kind for item in self.sent]


@dataclass
class Harness:
    fake: FakeCoze
    plugin: VoiceNotesPlugin
    fetches: list[str] = field(default_factory=list)

    def note(self, audio: bytes, *, chat: ChatRef = PRIVATE, sender: Person = ALICE, message_id: str = "7", key: str = "file-1",
             seconds: float | None = None, size: int | None = None, speaker: str | None = None) -> VoiceNote:
        async def fetch() -> bytes:
            self.fetches.append(message_id)
            return audio

        return VoiceNote(chat=chat, message_id=message_id, sender=sender, cache_key=key, fetch=fetch, declared_seconds=seconds,
                         declared_bytes=size or len(audio), download_limit=20_000_000, speaker=speaker or sender.name)

    def command(self, name: str, args: str = "", *, chat: ChatRef = PRIVATE, sender: Person = ALICE, **extra: object) -> CommandRequest:
        return CommandRequest(name=name, args=args, chat=chat, sender=sender, message_id="9", **extra)  # type: ignore[arg-type]


def make_plugin(fake: FakeCoze, retrier: Retrier, db: Path | str = ":memory:", **env: str) -> VoiceNotesPlugin:
    values = {"COZE_API_TOKEN": DEFAULT_TOKEN, "COZE_API_BASE": fake.base_url, "COZE_WS_BASE": fake.ws_base_url,
              "COZE_VOICE_ID": DEFAULT_VOICES[0].voice_id, **env}
    settings = Settings.from_values(values)
    service = SpeechService.from_settings(settings.speech, retrier=retrier)
    store = SQLiteStore(db)
    return VoiceNotesPlugin(service, store, settings.plugin, edit_interval=0.2, closes=(store,))


@pytest.fixture
async def harness(fast_retrier: Retrier) -> AsyncIterator[Harness]:
    async with FakeCoze() as fake:
        plugin = make_plugin(fake, fast_retrier)
        yield Harness(fake, plugin)
        await plugin.aclose()
        await plugin.service.aclose()


TONE = make_tone("ogg", 440.0, 2.0)


async def test_private_note_is_answered_with_its_transcript(harness: Harness) -> None:
    chat = MemoryChat()
    await harness.plugin.handle_voice_note(harness.note(TONE), chat)
    # A placeholder at once, replying to the note, then edited into the transcript.
    assert [(item.kind, item.text, item.reply_to) for item in chat.sent] == [("text", "🎙 Transcribing…", "7"),
                                                                          ("edit", "tone 440 hz 2.0 s", None)]
    assert chat.sent[1].message_id == chat.sent[0].message_id
    assert chat.activities == []  # the placeholder is the chat's status: no "typing…" beside it


class MiscountingChat(MemoryChat):
    """Counts half the characters there are, as a buggy adapter would: the plugin then sends
    texts over the platform's limit, and the platform refuses them."""

    def text_length(self, text: str) -> int:
        return len(text) // 2


async def test_a_too_long_send_swallowed_by_the_plugin_still_fails_the_test(harness: Harness) -> None:
    chat = MiscountingChat(max_text_length=10)
    await harness.plugin.handle_voice_note(harness.note(TONE), chat)  # "tone 440 hz 2.0 s": 17 characters
    assert chat.texts() == []  # the refusal was swallowed by the plugin, as around every send
    assert "MiscountingChat: send of 17 characters (limit 10)" in violations.recorded()  # after the placeholder's
    with pytest.raises(pytest.fail.Exception, match="send of 17 characters"):
        violations.fail_if_any()  # what tests/conftest.py does after every test
    violations.forget()  # this test broke the rule on purpose


async def test_group_transcripts_name_the_speaker_and_auto_can_be_switched_off(harness: Harness) -> None:
    chat = MemoryChat(admins={BOB.id})
    forwarded = harness.note(TONE, chat=GROUP, sender=BOB, speaker="Carol (forwarded)")
    await harness.plugin.handle_voice_note(forwarded, chat)
    assert chat.texts() == ["🎤 Carol (forwarded)：tone 440 hz 2.0 s"]  # Bob reads Chinese

    await harness.plugin.handle_command(harness.command("auto", "off", chat=GROUP, sender=BOB), chat)
    await harness.plugin.handle_voice_note(harness.note(TONE, chat=GROUP, sender=ALICE, message_id="8", key="other"), chat)
    assert len(chat.texts()) == 2  # only the confirmation came
    assert harness.fetches == ["7"]

    request = harness.command("transcribe", chat=GROUP, sender=ALICE, replied_note=harness.note(TONE, chat=GROUP, sender=BOB,
                                                                                                  message_id="8", key="other"))
    await harness.plugin.handle_command(request, chat)
    assert chat.texts()[-1] == "🎤 Bob: tone 440 hz 2.0 s" and chat.sent[-2].reply_to == "8"


async def test_only_admins_change_group_settings(harness: Harness) -> None:
    chat = MemoryChat(admins={BOB.id})
    await harness.plugin.handle_command(harness.command("mode", "voice", chat=GROUP, sender=ALICE), chat)
    assert chat.texts() == ["Only the chat's admins can change settings here."]
    await harness.plugin.handle_command(harness.command("settings", chat=GROUP, sender=ALICE), chat)  # reading is fine
    assert "Reply mode: text" in chat.texts()[-1]
    await harness.plugin.handle_command(harness.command("mode", "voice", chat=GROUP, sender=BOB), chat)
    assert (await harness.plugin.chat_settings(GROUP)).reply_mode.value == "voice"


@pytest.mark.parametrize(("mode", "kinds"), [("text", ["text", "edit"]), ("voice", ["voice"]), ("both", ["text", "edit", "voice"])])
async def test_reply_modes(harness: Harness, mode: str, kinds: list[str]) -> None:
    chat = MemoryChat()
    await harness.plugin.handle_command(harness.command("mode", mode), chat)
    chat.sent.clear()
    await harness.plugin.handle_voice_note(harness.note(TONE), chat)
    assert chat.kinds() == kinds
    if "voice" in kinds:
        voice = next(item.voice for item in chat.sent if item.kind == "voice")
        assert voice is not None and voice.data.startswith(b"OggS")
        samples, rate = decode(voice.data)
        spoken = analyse(samples, rate)
        assert spoken.frequency == pytest.approx(DEFAULT_VOICES[0].frequency, rel=0.01)  # the configured voice
        assert spoken.seconds == pytest.approx(len("tone 440 hz 2.0 s") * 0.06, abs=0.05)
        assert voice.seconds == pytest.approx(spoken.seconds, abs=0.05)
        assert Activity.RECORDING_VOICE in chat.activities


async def test_voice_ladder_falls_back_to_audio_then_text(harness: Harness) -> None:
    await harness.plugin.handle_command(harness.command("mode", "voice"), MemoryChat())
    refuses_voice = MemoryChat(refuse_voice=True)
    await harness.plugin.handle_voice_note(harness.note(TONE), refuses_voice)
    assert refuses_voice.kinds() == ["audio"]
    refuses_both = MemoryChat(refuse_voice=True, refuse_audio=True)
    await harness.plugin.handle_voice_note(harness.note(TONE, message_id="8"), refuses_both)
    assert refuses_both.texts() == ["tone 440 hz 2.0 s"]  # the text is never lost


async def test_failed_synthesis_still_delivers_the_text(harness: Harness) -> None:
    await harness.plugin.handle_command(harness.command("mode", "voice"), MemoryChat())
    harness.fake.fail_next("speech", code=4101)
    chat = MemoryChat()
    await harness.plugin.handle_voice_note(harness.note(TONE), chat)
    assert chat.texts() == ["tone 440 hz 2.0 s"]


async def test_discord_style_ports_get_a_waveform(harness: Harness) -> None:
    await harness.plugin.handle_command(harness.command("mode", "voice"), MemoryChat())
    chat = MemoryChat(needs_waveform=True)
    await harness.plugin.handle_voice_note(harness.note(TONE), chat)
    voice = chat.sent[0].voice
    assert voice is not None and 5 <= len(voice.waveform) <= 256 and max(voice.waveform) == 255


async def test_streaming_partials_edit_one_message_at_most_once_per_interval(fast_retrier: Retrier) -> None:
    script = " ".join(f"word{index}" for index in range(24))
    async with FakeCoze(transcript=script, seconds_per_word=0.25, partial_every_seconds=0.25, recognition_speed=4.0) as fake:
        plugin = make_plugin(fake, fast_retrier, VOICEBRIDGE_ASR="coze-stream")
        chat = MemoryChat()
        started = asyncio.get_running_loop().time()
        await plugin.handle_voice_note(Harness(fake, plugin).note(make_tone("ogg", 440.0, 6.0)), chat)
        elapsed = asyncio.get_running_loop().time() - started
        await plugin.aclose()
        await plugin.service.aclose()
    assert chat.kinds()[0] == "text" and set(chat.kinds()[1:]) == {"edit"}
    assert {item.message_id for item in chat.sent} == {chat.sent[0].message_id}
    assert chat.sent[-1].text == script
    assert len(chat.sent) - 1 <= elapsed / 0.2 + 1  # edits throttled to the interval


async def test_live_edits_keep_to_the_chats_own_floor(fast_retrier: Retrier) -> None:
    script = " ".join(f"word{index}" for index in range(24))
    async with FakeCoze(transcript=script, seconds_per_word=0.25, partial_every_seconds=0.25, recognition_speed=2.0) as fake:
        plugin = make_plugin(fake, fast_retrier, VOICEBRIDGE_ASR="coze-stream")  # edit interval 0.2 s
        chat = MemoryChat(min_edit_interval=1.0)  # e.g. a Telegram group: 20 messages a minute
        await plugin.handle_voice_note(Harness(fake, plugin).note(make_tone("ogg", 440.0, 6.0)), chat)
        await plugin.aclose()
        await plugin.service.aclose()
    live_changes = chat.sent[:-1]  # the final text is not held back
    assert len(live_changes) >= 2 and chat.sent[-1].text == script
    assert all(later.at - earlier.at >= 0.99 for earlier, later in itertools.pairwise(live_changes))


@dataclass
class FloodedChat(MemoryChat):
    """Edits hang until released, as under a long flood-control wait."""

    released: asyncio.Event = field(default_factory=asyncio.Event)
    edits_waiting: int = 0
    most_edits_waiting: int = 0

    async def edit_text(self, message_id: str, text: str, buttons: Sequence[Button] = ()) -> None:
        self.edits_waiting += 1
        self.most_edits_waiting = max(self.most_edits_waiting, self.edits_waiting)
        try:
            await self.released.wait()
        finally:  # a cancelled edit (overtaken by the final text) is no longer on its way
            self.edits_waiting -= 1
        await super().edit_text(message_id, text, buttons)


@dataclass
class TranscribedNotes:
    """A NoteObserver that keeps the providers of finished transcriptions."""

    providers: list[str] = field(default_factory=list)

    def note_received(self, platform: str) -> None:
        pass

    def note_transcribed(self, platform: str, provider: str, audio_seconds: float, cached: bool) -> None:
        self.providers.append(provider)

    def note_failed(self, platform: str, reason: str) -> None:
        pass


async def test_a_slow_chat_does_not_hold_up_recognition(fast_retrier: Retrier) -> None:
    script = " ".join(f"word{index}" for index in range(24))
    async with FakeCoze(transcript=script, seconds_per_word=0.25, partial_every_seconds=0.25, recognition_speed=4.0) as fake:
        plugin = make_plugin(fake, fast_retrier, VOICEBRIDGE_ASR="coze-stream")
        chat = FloodedChat()
        plugin.observer = transcribed = TranscribedNotes()
        answer = asyncio.create_task(plugin.handle_voice_note(Harness(fake, plugin).note(make_tone("ogg", 440.0, 6.0)), chat))
        await fake.wait_for(lambda: chat.edits_waiting == 1)
        # While that edit hangs, the bot takes in the whole note's recognition.
        async with asyncio.timeout(10):
            while transcribed.providers != ["coze-stream"]:
                await asyncio.sleep(0.01)
        assert not answer.done()
        chat.released.set()
        await asyncio.wait_for(answer, timeout=10)
        await plugin.aclose()
        await plugin.service.aclose()
    assert chat.most_edits_waiting == 1  # one update on its way at a time, never a queue of them
    assert chat.visible_texts() == [script]


async def test_the_final_text_is_not_held_back_by_the_edit_interval() -> None:
    now = 0.0
    chat = MemoryChat()
    live = LiveMessage(chat, "7", interval=5.0, clock=lambda: now)
    now = 5.0
    live.show("partial")
    await asyncio.wait_for(live.finish("partial and the rest"), timeout=1.0)  # was: waited out the 5 s
    assert [(item.kind, item.text) for item in chat.sent] == [("text", "partial…"), ("edit", "partial and the rest")]


@pytest.mark.parametrize(("length", "shown"), [(18, "x" * 18 + "…"), (19, "x" * 19 + "…"), (20, "x" * 19 + "…"),
                                               (50, "x" * 19 + "…")])
async def test_a_live_partial_is_cut_to_the_limit_exactly(length: int, shown: str) -> None:
    # A partial ends with "…": one that fits with it shows whole, at the limit exactly; one character
    # more is cut to exactly the limit, ellipsis included (one more would be refused: a violation).
    now = 0.0
    chat = MemoryChat(max_text_length=20)
    live = LiveMessage(chat, "7", interval=1.0, clock=lambda: now)
    now = 1.0
    live.show("x" * length)
    await eventually(lambda: chat.sent)
    assert [(item.kind, item.text) for item in chat.sent] == [("text", shown)]
    await live.finish("x" * length)
    parts = [re.sub(r" \(\d+/\d+\)$", "", text) for text in chat.visible_texts()]
    assert "".join(parts) == "x" * length  # a final text over the limit goes on in (i/n) parts, nothing lost


async def test_a_note_recognised_within_the_interval_gets_its_placeholder_and_one_edit(fast_retrier: Retrier) -> None:
    async with FakeCoze(transcript="quick note", partial_every_seconds=0.25) as fake:
        plugin = make_plugin(fake, fast_retrier, VOICEBRIDGE_ASR="coze-stream")
        plugin.edit_interval = 5.0
        chat = MemoryChat()
        await plugin.handle_voice_note(Harness(fake, plugin).note(TONE), chat)
        await plugin.aclose()
        await plugin.service.aclose()
    assert [(item.kind, item.text) for item in chat.sent] == [("text", "🎙 Transcribing…"), ("edit", "quick note")]


async def test_the_placeholder_shows_while_a_note_waits_for_a_free_slot(fast_retrier: Retrier) -> None:
    async with FakeCoze() as fake:
        settings = Settings.from_values({"COZE_API_TOKEN": DEFAULT_TOKEN, "COZE_API_BASE": fake.base_url,
                                         "COZE_WS_BASE": fake.ws_base_url})
        store = SQLiteStore(":memory:")
        plugin = VoiceNotesPlugin(SpeechService.from_settings(settings.speech, retrier=fast_retrier), store,
                                  settings.plugin, max_concurrent_notes=1, closes=(store,))
        harness = Harness(fake, plugin)
        first_chat, second_chat = MemoryChat(), MemoryChat()
        first = asyncio.create_task(plugin.handle_voice_note(harness.note(make_tone("ogg", 300.0, 6.0), key="a"), first_chat))
        await harness.fake.wait_for(lambda: first_chat.kinds() == ["text"], timeout=10)
        other = replace(PRIVATE, id="2")
        second = asyncio.create_task(plugin.handle_voice_note(harness.note(TONE, chat=other, key="b"), second_chat))
        await harness.fake.wait_for(lambda: second_chat.kinds() == ["text"], timeout=10)
        assert not first.done() and not second.done()  # the second chat sees its placeholder before its note has a slot
        assert second_chat.sent[0].text == "🎙 Transcribing…"
        await asyncio.gather(first, second)
        await plugin.aclose()
        await plugin.service.aclose()
    assert first_chat.texts() and second_chat.texts()


async def test_notes_queued_in_one_chat_get_their_placeholders_in_order(harness: Harness) -> None:
    chat = MemoryChat()
    notes = [harness.note(make_tone("ogg", 300.0 + 50 * index, 2.0), key=f"n{index}", message_id=str(index))
             for index in range(5)]
    await asyncio.gather(*(harness.plugin.handle_voice_note(note, chat) for note in notes))
    # Each note's placeholder is its status, sent when its turn in the chat has come.
    assert chat.activities == []
    assert [item.reply_to for item in chat.sent if item.kind == "text"] == [str(index) for index in range(5)]


async def test_long_transcripts_are_split_at_word_boundaries(fast_retrier: Retrier) -> None:
    script = " ".join(["supercalifragilistic"] * 30)  # 629 characters: 4 words (83) fit in 100
    async with FakeCoze(transcript=script) as fake:
        plugin = make_plugin(fake, fast_retrier)
        chat = MemoryChat(max_text_length=100)
        await plugin.handle_voice_note(Harness(fake, plugin).note(TONE), chat)
        await plugin.aclose()
        await plugin.service.aclose()
    pieces = chat.texts()
    assert len(pieces) >= 8 and all(len(piece) <= 100 for piece in pieces)
    count = len(pieces)
    assert all(piece.endswith(f" ({number}/{count})") for number, piece in enumerate(pieces, 1))
    assert " ".join(piece.rsplit(" (", 1)[0] for piece in pieces) == script
    assert {item.reply_to for item in chat.sent if item.kind == "text"} == {"7"}


async def test_conversation_mode_answers_with_the_hosts_reply(fast_retrier: Retrier) -> None:
    heard: list[tuple[str, ResponderContext]] = []

    async def responder(transcript: str, context: ResponderContext) -> str | None:
        heard.append((transcript, context))
        return None if "300" in transcript else f"You said {len(transcript)} characters."

    async with FakeCoze() as fake:
        plugin = make_plugin(fake, fast_retrier)
        plugin.responder = responder
        chat = MemoryChat()
        harness = Harness(fake, plugin)
        await plugin.handle_voice_note(harness.note(TONE), chat)
        await plugin.handle_voice_note(harness.note(make_tone("ogg", 300.0, 1.0), message_id="8", key="b"), chat)
        await plugin.aclose()
        await plugin.service.aclose()
    # The answer replaces the note's placeholder; with no answer, the placeholder shows what was heard.
    assert chat.texts() == ["You said 17 characters.", "🎙 tone 300 hz 1.0 s"]
    assert heard[0][0] == "tone 440 hz 2.0 s" and heard[0][1].sender == ALICE and heard[0][1].message_id == "7"


async def test_limits_are_checked_before_download(harness: Harness) -> None:
    chat = MemoryChat()
    await harness.plugin.handle_voice_note(harness.note(TONE, size=25_000_000), chat)
    await harness.plugin.handle_voice_note(harness.note(TONE, seconds=3600, message_id="8"), chat)
    assert chat.texts() == ["This file is too large for me to download (limit: 20 MB).",
                            "This recording is too long for me (limit: 30 minutes)."]
    assert harness.fetches == [] and harness.fake.rest_calls == []


async def test_allowlist_refuses_other_chats_before_any_provider_call(fast_retrier: Retrier) -> None:
    async with FakeCoze() as fake:
        plugin = make_plugin(fake, fast_retrier, VOICEBRIDGE_ALLOWED_CHATS="-500, 42")
        harness = Harness(fake, plugin)
        private, group = MemoryChat(), MemoryChat()
        other_group = replace(GROUP, id="-600")
        for message_id in ("1", "2"):
            await plugin.handle_voice_note(harness.note(TONE, message_id=message_id), private)
            await plugin.handle_voice_note(harness.note(TONE, chat=other_group, message_id=message_id), group)
        await plugin.handle_command(harness.command("speak", "hello"), private)
        allowed = MemoryChat()
        await plugin.handle_voice_note(harness.note(TONE, chat=GROUP, message_id="3"), allowed)
        await plugin.aclose()
        await plugin.service.aclose()
    assert private.texts() == ["Sorry, this bot is not available in this chat."] * 3
    assert group.texts() == ["Sorry, this bot is not available in this chat."]  # a group is told once
    assert harness.fetches == ["3"] and len(fake.calls_to("transcriptions")) == 1 and fake.calls_to("speech") == []
    assert allowed.texts() == ["🎤 Alice: tone 440 hz 2.0 s"]


async def test_a_re_sent_note_is_answered_from_the_cache(fast_retrier: Retrier) -> None:
    async with FakeCoze() as fake:
        plugin = make_plugin(fake, fast_retrier, VOICEBRIDGE_ASR="coze-stream")
        harness, chat = Harness(fake, plugin), MemoryChat()
        await plugin.handle_voice_note(harness.note(TONE, message_id="1"), chat)
        await plugin.handle_voice_note(harness.note(TONE, message_id="2"), chat)
        assert chat.visible_texts() == ["tone 440 hz 2.0 s"] * 2  # the live reply, edited to the final text
        assert len(fake.sessions_to("ws_transcriptions")) == 1 and harness.fetches == ["1"]
        await plugin.handle_command(harness.command("language", "en"), chat)  # the result may differ now
        await plugin.handle_voice_note(harness.note(TONE, message_id="3"), chat)
        await plugin.aclose()
        await plugin.service.aclose()
    assert len(fake.sessions_to("ws_transcriptions")) == 2


async def test_bad_audio_gets_one_clear_message_and_the_next_note_works(harness: Harness) -> None:
    chat = MemoryChat(max_text_length=4096)
    await harness.plugin.handle_voice_note(harness.note(b"\x00garbage" * 300, key="bad"), chat)
    await harness.plugin.handle_voice_note(harness.note(TONE, message_id="8"), chat)
    assert chat.texts() == ["This file could not be read as audio. Please send a voice message or a common audio file.",
                            "tone 440 hz 2.0 s"]


async def test_provider_outage_and_download_failure_are_explained(harness: Harness) -> None:
    harness.fake.fail_next("transcriptions", code=5000, times=3)
    chat = MemoryChat()
    await harness.plugin.handle_voice_note(harness.note(TONE, sender=BOB), chat)

    async def broken_fetch() -> bytes:
        raise DownloadFailed("Telegram: NetworkError")

    await harness.plugin.handle_voice_note(replace(harness.note(TONE, message_id="8", key="x"), fetch=broken_fetch), chat)
    assert chat.texts() == ["语音服务出现故障，请稍后再试。", "I could not download this file. Please try again."]


async def test_a_locked_store_does_not_cost_the_answer(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    async def locked(*args: object, **kwargs: object) -> None:
        raise StoreError("database is locked")

    for method in ("chat_settings", "cached_transcript", "cache_transcript", "add_usage"):
        monkeypatch.setattr(harness.plugin.store, method, locked)
    chat = MemoryChat()
    await harness.plugin.handle_voice_note(harness.note(TONE), chat)
    assert chat.texts() == ["tone 440 hz 2.0 s"]


@asynccontextmanager
async def in_process_plugin(retrier: Retrier) -> AsyncIterator[tuple[VoiceNotesPlugin, FakeTranscriber]]:
    """The plugin on the real speech service with an in-process transcriber: no server, and notes
    can be held in "the provider" until the test releases them."""
    transcriber = FakeTranscriber()
    service = SpeechService(transcribers=[transcriber], asr_chain=[transcriber.name], retrier=retrier)
    store = SQLiteStore(":memory:")
    plugin_settings = Settings.from_values({"COZE_API_TOKEN": DEFAULT_TOKEN}).plugin
    plugin = VoiceNotesPlugin(service, store, plugin_settings, edit_interval=0.2, closes=(store,))
    try:
        yield plugin, transcriber
    finally:
        await plugin.aclose()
        await service.aclose()


async def eventually(predicate: Callable[[], object], timeout: float = 30.0) -> None:
    """Poll the plugin's own state (nothing can signal it) until a generous deadline."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_notes_of_one_chat_are_answered_in_order(fast_retrier: Retrier) -> None:
    async with in_process_plugin(fast_retrier) as (plugin, transcriber):
        chat = MemoryChat()
        fetched: list[str] = []

        def note(audio: bytes, message_id: str) -> VoiceNote:
            async def fetch() -> bytes:
                fetched.append(message_id)
                return audio

            return VoiceNote(chat=PRIVATE, message_id=message_id, sender=ALICE, cache_key=message_id, fetch=fetch,
                             declared_seconds=None, declared_bytes=len(audio), download_limit=20_000_000, speaker=ALICE.name)

        transcriber.hold.add("tone 300 hz 8.0 s")
        first = asyncio.create_task(plugin.handle_voice_note(note(make_tone("ogg", 300.0, 8.0), "1"), chat))
        await eventually(lambda: transcriber.heard() == ["tone 300 hz 8.0 s"])  # the long note is in the provider
        second = asyncio.create_task(plugin.handle_voice_note(note(make_tone("ogg", 600.0, 0.5), "2"), chat))
        # The short note waits for its turn (or, were the order broken, overtakes the held one).
        await eventually(lambda: len(fetched) == 2 or plugin._chat_queues[(PRIVATE.platform, PRIVATE.id)].users == 2)
        transcriber.release("tone 300 hz 8.0 s")
        await asyncio.gather(first, second)
    assert [item.reply_to for item in chat.sent if item.kind == "text"] == ["1", "2"]  # the placeholders
    answers = [item.text for item in chat.sent if not is_placeholder(item.text) and not item.text.endswith("…")]
    assert answers == ["tone 300 hz 8.0 s", "tone 600 hz 0.5 s"]  # edited into them in the notes' order


async def test_settings_commands_and_their_persistence(fast_retrier: Retrier, tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    async with FakeCoze() as fake:
        plugin = make_plugin(fake, fast_retrier, db, VOICEBRIDGE_ASR="coze-stream")
        harness = Harness(fake, plugin)
        chat = MemoryChat()
        jay = DEFAULT_VOICES[1]
        for name, args in (("mode", "both"), ("language", "zh"), ("voice", jay.voice_id), ("hotwords", "扣子，voicebridge, 扣子"),
                           ("auto", "off"), ("mode", "loud"), ("language", "xx"), ("voice", "nope")):
            await plugin.handle_command(harness.command(name, args), chat)
        # /auto is a group setting: in private it changes nothing, and says so.
        await plugin.handle_command(harness.command("auto", "on"), chat)
        await plugin.aclose()
        await plugin.service.aclose()

        restarted = make_plugin(fake, fast_retrier, db, VOICEBRIDGE_ASR="coze-stream")
        settings = await restarted.chat_settings(PRIVATE)
        await restarted.handle_command(harness.command("settings"), chat)
        await restarted.aclose()
        await restarted.service.aclose()
    assert (settings.reply_mode.value, settings.language, settings.voice_id, settings.auto_transcribe, settings.hot_words) == (
        "both", "zh", jay.voice_id, True, ("扣子", "voicebridge"))
    assert chat.texts()[:3] == ["Done: I will now answer with text and voice messages.",
                                "Done: recognition language is now Chinese (Mandarin) (zh).",
                                f"Done: spoken answers will use the voice {jay.name}."]
    assert chat.texts()[4] == chat.texts()[8] == ("/auto applies to groups: in a private chat every voice message is always "
                                                  "transcribed, so nothing was changed.")
    assert chat.texts()[5:8] == ["Use /mode text, /mode voice or /mode both (text, voice message, or both).",
                                 chat.texts()[6], "There is no voice with the id nope. Send /voices to see the available voices."]
    assert chat.texts()[6].startswith("Use /language CODE with one of: automatic (auto), Chinese (Mandarin) (zh), ")
    # The voice by its name from the provider's list, never its id.
    assert chat.texts()[-1].splitlines()[1:] == ["Reply mode: text and voice messages", "Language: Chinese (Mandarin) (zh)",
                                                 f"Voice: {jay.name}", "Transcribe every voice message in groups: on",
                                                 "Hot words: 扣子, voicebridge"]


async def test_hot_words_reach_the_streaming_provider(fast_retrier: Retrier) -> None:
    async with FakeCoze() as fake:
        plugin = make_plugin(fake, fast_retrier, VOICEBRIDGE_ASR="coze-stream")
        harness = Harness(fake, plugin)
        await plugin.handle_command(harness.command("hotwords", "Coze, 飞书"), MemoryChat())
        await plugin.handle_voice_note(harness.note(TONE), MemoryChat())
        await plugin.handle_command(harness.command("hotwords", "off"), MemoryChat())
        await plugin.aclose()
        await plugin.service.aclose()
    assert fake.ws_sessions[0].asr_config is not None and fake.ws_sessions[0].asr_config["hot_words"] == ["Coze", "飞书"]


async def test_speak_and_voices(harness: Harness) -> None:
    chat = MemoryChat()
    await harness.plugin.handle_command(harness.command("speak", "Read this aloud."), chat)
    await harness.plugin.handle_command(harness.command("speak", replied_text="Quoted message text"), chat)
    await harness.plugin.handle_command(harness.command("speak"), chat)
    await harness.plugin.handle_command(harness.command("speak", "x" * 2001), chat)
    await harness.plugin.handle_command(harness.command("voices"), chat)
    voices = [item.voice for item in chat.sent if item.kind == "voice"]
    assert [round(voice.seconds, 2) for voice in voices if voice] == [round(16 * 0.06, 2), round(19 * 0.06, 2)]
    assert chat.texts()[:2] == ["Use /speak TEXT, or reply to a text message with /speak.",
                                "That is too long to read aloud (limit: 2000 characters)."]
    assert all(voice.voice_id in chat.texts()[2] for voice in DEFAULT_VOICES)


async def test_usage_is_counted(harness: Harness) -> None:
    chat = MemoryChat()
    await harness.plugin.handle_voice_note(harness.note(TONE), chat)
    await harness.plugin.handle_command(harness.command("speak", "hello"), chat)
    await harness.plugin.bookkeeper.flush()  # usage is settled in the background
    usage = await harness.plugin.store.usage("test", PRIVATE.id, "2000-01-01")
    assert usage.audio_seconds == pytest.approx(2.0, abs=0.05) and usage.tts_characters == 5


async def test_help_and_start_follow_the_users_language(harness: Harness) -> None:
    chat = MemoryChat()
    await harness.plugin.handle_command(harness.command("start", sender=BOB), chat)
    await harness.plugin.handle_command(harness.command("help"), chat)
    assert chat.texts()[0].startswith("你好") and "/transcribe" in chat.texts()[1]
    assert "/language — recognition language: automatic (auto)\n" in chat.texts()[1]  # Coze file ASR takes no language
    # Telegram has no message menu to pick Transcribe from: its help says to reply with /transcribe.
    assert "Apps → Transcribe" not in chat.texts()[1]


async def test_privacy_names_the_providers_and_the_retention(harness: Harness) -> None:
    chat = MemoryChat()
    await harness.plugin.handle_command(harness.command("privacy"), chat)
    await harness.plugin.handle_command(harness.command("privacy", sender=BOB), chat)
    english, chinese = chat.texts()
    assert "transcribed by Coze (扣子)" in english and "Transcripts: 168 hours" in english and "No audio, ever." in english
    assert "Usage totals per chat and day" in english and "31 days" in english and "/forget keeps them" in english
    assert "由 Coze (扣子) 转写" in chinese and "168 小时" in chinese and "31 天" in chinese


async def test_forget_deletes_the_chats_transcripts_and_settings(harness: Harness) -> None:
    chat = MemoryChat(admins={BOB.id})
    await harness.plugin.handle_command(harness.command("mode", "both", chat=GROUP, sender=BOB), chat)
    await harness.plugin.handle_voice_note(harness.note(TONE, chat=GROUP, sender=ALICE), chat)
    other_chat_note = harness.note(make_tone("ogg", 300.0, 1.0), key="kept")
    await harness.plugin.handle_voice_note(other_chat_note, MemoryChat())
    await harness.plugin.handle_command(harness.command("forget", chat=GROUP, sender=ALICE), chat)
    assert chat.texts()[-1] == "Only the chat's admins can use this command here."
    await harness.plugin.handle_command(harness.command("forget", chat=GROUP, sender=BOB), chat)
    assert chat.texts()[-1] == "已删除 1 条保存的转写文本及当前聊天的设置。"
    assert (await harness.plugin.chat_settings(GROUP)).reply_mode.value == "text"
    await harness.plugin.handle_voice_note(harness.note(TONE, chat=GROUP, sender=ALICE, message_id="9"), chat)
    assert len(harness.fake.calls_to("transcriptions")) == 3  # transcribed again: the cached text was gone
    await harness.plugin.handle_voice_note(other_chat_note, MemoryChat())
    assert len(harness.fake.calls_to("transcriptions")) == 3  # another chat's cache is untouched


async def test_usage_shows_today_and_this_month(harness: Harness) -> None:
    chat = MemoryChat()
    await harness.plugin.handle_voice_note(harness.note(make_tone("ogg", 440.0, 90.0), seconds=90), chat)
    await harness.plugin.handle_command(harness.command("speak", "twelve chars"), chat)
    await harness.plugin.handle_command(harness.command("usage"), chat)
    assert chat.texts()[-1].splitlines() == [
        "Usage in this chat:",
        "Today: 1.5 minutes of audio transcribed, 12 characters read aloud",
        "This month: 1.5 minutes, 12 characters",
        "Daily limit: none",
    ]


async def test_daily_limit_refuses_before_any_provider_call(fast_retrier: Retrier) -> None:
    async with FakeCoze() as fake:
        plugin = make_plugin(fake, fast_retrier, VOICEBRIDGE_DAILY_MINUTES="1")
        harness = Harness(fake, plugin)
        chat = MemoryChat()
        await plugin.handle_voice_note(harness.note(make_tone("ogg", 440.0, 40.0), seconds=40, key="a"), chat)
        # 40 s used: a note declaring 30 s would pass 60 s, so it is refused without a download.
        await plugin.handle_voice_note(harness.note(make_tone("ogg", 440.0, 30.0), seconds=30, key="b", message_id="8"), chat)
        # Re-sending the first note costs nothing: answered from the cache despite the limit.
        await plugin.handle_voice_note(harness.note(make_tone("ogg", 440.0, 40.0), seconds=40, key="a", message_id="9"), chat)
        short = harness.note(make_tone("ogg", 440.0, 15.0), seconds=15, key="c", message_id="10")
        await plugin.handle_voice_note(short, chat)
        await plugin.handle_command(harness.command("usage"), chat)
        await plugin.aclose()
        await plugin.service.aclose()
    assert chat.texts()[:4] == [
        "tone 440 hz 40.0 s",
        chat.texts()[1],
        "tone 440 hz 40.0 s",
        "tone 440 hz 15.0 s",
    ]
    assert re.fullmatch(r"Daily transcription limit: this chat has used 40 seconds of its 1 minute today, and this "
                        r"recording does not fit in what is left\. The limit resets at 00:00 UTC \(in \d+ h \d+ min\)\.",
                        chat.texts()[1])
    assert harness.fetches == ["7", "10"]
    assert "Daily limit: 1 minute" in chat.texts()[-1] and "Today: 55 seconds of audio" in chat.texts()[-1]


async def test_a_failed_transcription_keeps_only_the_audio_really_sent(fast_retrier: Retrier) -> None:
    """The 50 s reserved on the declared length are given back; the 2 s the provider received
    before refusing stay counted (issue 12: every attempt is metered, whatever its outcome)."""
    async with FakeCoze() as fake:
        plugin = make_plugin(fake, fast_retrier, VOICEBRIDGE_DAILY_MINUTES="1")
        harness = Harness(fake, plugin)
        fake.fail_next("transcriptions", code=4101)
        await plugin.handle_voice_note(harness.note(TONE, seconds=50), MemoryChat())
        await plugin.bookkeeper.flush()  # usage is settled in the background
        usage = await plugin.store.usage("test", PRIVATE.id, "2000-01-01")
        chat = MemoryChat()
        await plugin.handle_voice_note(harness.note(TONE, seconds=50, message_id="8"), chat)
        await plugin.aclose()
        await plugin.service.aclose()
    assert usage.audio_seconds == pytest.approx(2.0, abs=0.02)
    assert chat.texts() == ["tone 440 hz 2.0 s"]


async def test_text_to_speech_is_limited_per_chat_per_day(fast_retrier: Retrier) -> None:
    # 5,000 characters at the default 60 ms each would be 5 minutes of speech to make and encode.
    async with FakeCoze(seconds_per_char=0.005) as fake:
        plugin = make_plugin(fake, fast_retrier, VOICEBRIDGE_DAILY_TTS_CHARACTERS="5000")
        harness = Harness(fake, plugin)
        chat = MemoryChat()
        for _ in range(2):
            await plugin.handle_command(harness.command("speak", "Read this aloud please. " * 83), chat)  # 1991 characters
        synthesized = len(fake.calls_to("speech"))
        await plugin.handle_command(harness.command("speak", "Read this aloud please. " * 83), chat)  # 5976 > 5000
        assert len(fake.calls_to("speech")) == synthesized  # refused before any synthesis
        await plugin.handle_command(harness.command("speak", "x" * 1018), chat)  # exactly to the limit
        synthesized = len(fake.calls_to("speech"))
        await plugin.handle_command(harness.command("speak", "one"), chat)
        # Voice mode: the voice reply no longer fits, so the transcript comes as text, with why.
        await plugin.handle_command(harness.command("mode", "voice"), chat)
        await plugin.handle_voice_note(harness.note(TONE), chat)
        await plugin.bookkeeper.flush()  # usage is settled in the background
        usage = await plugin.store.usage("test", PRIVATE.id, "2000-01-01")
        await plugin.aclose()
        await plugin.service.aclose()
    assert chat.kinds().count("voice") == 3
    assert re.fullmatch(r"This chat may have 5000 characters read aloud a day; 3982 are used today, and this text has "
                        r"1991\. The limit resets at 00:00 UTC \(in \d+ h \d+ min\)\.", chat.texts()[0])
    assert chat.texts()[1].startswith("This chat may have 5000 characters read aloud a day; 5000 are used today")
    assert chat.texts()[-1] == ("tone 440 hz 2.0 s\n\n(No voice reply: this chat has used its 5000 characters read aloud "
                                "for today.)")
    assert usage.tts_characters == 5000
    assert len(fake.calls_to("speech")) == synthesized  # never a synthesis beyond the allowance


@pytest.mark.parametrize(("policy", "member_may", "admin_may"), [("admins", False, True), ("everyone", True, True),
                                                                  ("off", False, False)])
async def test_who_may_speak_in_groups(fast_retrier: Retrier, policy: str, member_may: bool, admin_may: bool) -> None:
    async with FakeCoze() as fake:
        plugin = make_plugin(fake, fast_retrier, VOICEBRIDGE_SPEAK_IN_GROUPS=policy)
        harness = Harness(fake, plugin)
        group, private = MemoryChat(admins={ALICE.id}), MemoryChat()
        await plugin.handle_command(harness.command("speak", "from a member", chat=GROUP, sender=BOB), group)
        member_voices = group.kinds().count("voice")
        await plugin.handle_command(harness.command("speak", "from an admin", chat=GROUP, sender=ALICE), group)
        await plugin.handle_command(harness.command("speak", "in private", sender=BOB), private)
        await plugin.aclose()
        await plugin.service.aclose()
    assert member_voices == int(member_may)
    assert group.kinds().count("voice") == int(member_may) + int(admin_may)
    assert private.kinds() == ["voice"]  # private chats can always /speak
    refusals = {"admins": ["在这里只有管理员可以使用朗读功能。"],  # to Bob, in his language
                "off": ["本机器人已关闭群组中的朗读功能。", "Reading texts aloud is turned off in groups on this bot."],
                "everyone": []}
    assert group.texts() == refusals[policy]


async def test_forgotten_transcripts_cannot_be_read_back_from_the_database_files(fast_retrier: Retrier, tmp_path: Path) -> None:
    secret_words = "Meet me at the old mill at midnight, bring the ledger"
    database = tmp_path / "voicebridge.db"
    async with FakeCoze(transcript=secret_words) as fake:
        plugin = make_plugin(fake, fast_retrier, db=database)
        harness = Harness(fake, plugin)
        chat = MemoryChat()
        for index in range(3):
            await plugin.handle_voice_note(harness.note(make_tone("ogg", 400.0 + index, 2.0), key=f"k{index}",
                                                        message_id=str(index)), chat)
        files = [database, database.with_name(database.name + "-wal")]
        assert any(b"old mill" in path.read_bytes() for path in files if path.exists())  # it was there
        await plugin.handle_command(harness.command("forget"), chat)
        contents = b"".join(path.read_bytes() for path in files if path.exists())  # the bot still runs
        await plugin.bookkeeper.flush()  # usage is settled in the background
        usage = await plugin.store.usage("test", PRIVATE.id, "2000-01-01")
        await plugin.aclose()
        await plugin.service.aclose()
    assert b"old mill" not in contents and b"ledger" not in contents
    assert chat.texts()[-1] == "Done: 3 stored transcripts and this chat's settings were deleted."
    assert usage.audio_seconds == pytest.approx(6.0, abs=0.3)  # kept: the limits rely on it


async def test_usage_totals_are_kept_31_days(harness: Harness) -> None:
    store = harness.plugin.store
    for day in ("2026-10-01", "2026-11-02", "2026-11-03"):
        await store.reserve_usage("test", "1", day, 10.0, 100.0)
    assert await store.sweep_usage("2026-11-03") == 2
    assert (await store.usage("test", "1", "2000-01-01")).audio_seconds == 10.0


async def test_each_member_of_a_group_has_a_daily_allowance_of_their_own(fast_retrier: Retrier) -> None:
    async with FakeCoze() as fake:
        plugin = make_plugin(fake, fast_retrier, VOICEBRIDGE_DAILY_MINUTES="10", VOICEBRIDGE_DAILY_MINUTES_PER_USER="1")
        harness = Harness(fake, plugin)
        chat = MemoryChat()
        await plugin.handle_voice_note(harness.note(make_tone("ogg", 440.0, 40.0), chat=GROUP, sender=ALICE, seconds=40,
                                                    key="a"), chat)
        # Alice has 20 s left: a 30 s note is refused without a download; Bob still has his minute.
        await plugin.handle_voice_note(harness.note(make_tone("ogg", 500.0, 30.0), chat=GROUP, sender=ALICE, seconds=30,
                                                    key="b", message_id="8"), chat)
        await plugin.handle_voice_note(harness.note(make_tone("ogg", 550.0, 30.0), chat=GROUP, sender=BOB, seconds=30,
                                                    key="c", message_id="9"), chat)
        # In a private chat only the chat's own limit counts.
        private = MemoryChat()
        await plugin.handle_voice_note(harness.note(make_tone("ogg", 600.0, 90.0), seconds=90, key="d", message_id="10"),
                                       private)
        await plugin.bookkeeper.flush()
        group_usage = await plugin.store.usage("test", GROUP.id, "2000-01-01")
        await plugin.aclose()
        await plugin.service.aclose()
    assert chat.texts() == ["🎤 Alice: tone 440 hz 40.0 s", chat.texts()[1], "🎤 Bob：tone 550 hz 30.0 s"]
    assert chat.texts()[1].startswith("Daily transcription limit: you have used 40 seconds of your 1 minute in this group "
                                      "today, and this recording does not fit in what is left.")
    assert harness.fetches == ["7", "9", "10"] and private.texts() == ["tone 600 hz 90.0 s"]
    assert group_usage.audio_seconds == pytest.approx(70.0, abs=0.2)


# ------------------------------------------------------------------ placeholder, progress, split parts


async def test_file_recognition_that_takes_long_shows_the_time_spent(harness: Harness) -> None:
    harness.plugin.progress_after = 0.3  # as 5 s in production, compressed
    harness.fake.delay_next("transcriptions", 2.0)  # a slow file recognition
    chat = MemoryChat(min_edit_interval=0.5)
    await harness.plugin.handle_voice_note(harness.note(TONE, seconds=2), chat)
    placeholder, *progress, final = chat.sent
    assert (placeholder.kind, placeholder.text, placeholder.reply_to) == ("text", "🎙 Transcribing… 0:02", "7")
    assert progress and all(item.kind == "edit" and item.message_id == placeholder.message_id for item in progress)
    assert all(item.text.startswith("🎙 Transcribing… 0:02 · 0:0") and item.text.endswith(" so far") for item in progress)
    assert progress[0].at - placeholder.at < 0.3 + 1.0  # the first progress soon after the threshold
    assert all(later.at - earlier.at >= 0.49 for earlier, later in itertools.pairwise([placeholder, *progress]))
    assert (final.kind, final.text, final.message_id) == ("edit", "tone 440 hz 2.0 s", placeholder.message_id)


async def test_streaming_recognition_that_takes_long_shows_the_share_heard(fast_retrier: Retrier) -> None:
    async with FakeCoze(partial_every_seconds=None, recognition_speed=2.0) as fake:  # 6 s of audio: 3 s
        plugin = make_plugin(fake, fast_retrier, VOICEBRIDGE_ASR="coze-stream")
        plugin.progress_after = 0.3
        chat = MemoryChat()
        await plugin.handle_voice_note(Harness(fake, plugin).note(make_tone("ogg", 440.0, 6.0), seconds=6), chat)
        await plugin.aclose()
        await plugin.service.aclose()
    progress = [item.text for item in chat.sent[1:] if "% heard" in item.text]
    shares = [int(text.split(" · ")[1].split("%")[0]) for text in progress]
    assert len(progress) >= 2 and all(text.startswith("🎙 Transcribing… 0:06 · ") for text in progress)
    assert shares == sorted(shares) and 0 < shares[-1] < 100
    assert len(set(progress)) == len(progress)  # each edit says something new (the time goes on)
    assert chat.texts() == ["tone 440 hz 6.0 s"] and not chat.texts()[0].endswith("…")


async def test_partials_end_with_an_ellipsis_and_the_final_text_does_not(fast_retrier: Retrier) -> None:
    script = " ".join(f"word{index}" for index in range(24))
    async with FakeCoze(transcript=script, seconds_per_word=0.25, partial_every_seconds=0.25, recognition_speed=4.0) as fake:
        plugin = make_plugin(fake, fast_retrier, VOICEBRIDGE_ASR="coze-stream")
        chat = MemoryChat()
        await plugin.handle_voice_note(Harness(fake, plugin).note(make_tone("ogg", 440.0, 6.0)), chat)
        await plugin.aclose()
        await plugin.service.aclose()
    partials = [item.text for item in chat.sent[1:-1]]
    assert partials and all(text.endswith("…") and script.startswith(text[:-1]) for text in partials)
    assert chat.sent[-1].text == script


async def test_a_failure_turns_the_placeholder_into_the_error(harness: Harness) -> None:
    harness.fake.fail_next("transcriptions", code=5000, times=3)  # every attempt
    chat = MemoryChat()
    await harness.plugin.handle_voice_note(harness.note(TONE, seconds=2), chat)
    assert [item.kind for item in chat.sent] == ["text", "edit"]
    assert chat.sent[0].text == "🎙 Transcribing… 0:02" and chat.sent[1].message_id == chat.sent[0].message_id
    assert chat.texts() == ["The speech service had a problem. Please try again later."]


async def test_a_long_group_transcript_keeps_the_speaker_with_the_first_part(fast_retrier: Retrier) -> None:
    script = " ".join(["supercalifragilistic"] * 30)
    async with FakeCoze(transcript=script) as fake:
        plugin = make_plugin(fake, fast_retrier)
        chat = MemoryChat(max_text_length=100)
        await plugin.handle_voice_note(Harness(fake, plugin).note(TONE, chat=GROUP, speaker="Bob Jones"), chat)
        await plugin.aclose()
        await plugin.service.aclose()
    parts = chat.texts()
    count = len(parts)
    assert count > 1 and all(len(part) <= 100 for part in parts)
    assert parts[0].startswith("🎤 Bob Jones: supercalifragilistic")  # never a part with the name alone
    assert all(part.endswith(f" ({number}/{count})") for number, part in enumerate(parts, 1))
    assert all("supercalifragilistic" in part for part in parts)
    words = " ".join(part.removeprefix("🎤 Bob Jones: ").rsplit(" (", 1)[0] for part in parts)
    assert words == script
    # The buttons go under the last part.
    assert [bool(item.buttons) for item in chat.sent if item.kind == "text"][-1] and not any(
        item.buttons for item in chat.sent[:-1] if item.kind == "text")


async def test_a_note_behind_another_in_its_chat_shows_its_placeholder_at_once(harness: Harness) -> None:
    harness.fake.delay_next("transcriptions", 2.0)  # the first note takes a while
    chat = MemoryChat()
    first = asyncio.create_task(harness.plugin.handle_voice_note(harness.note(TONE, message_id="1", key="a"), chat))
    await harness.fake.wait_for(lambda: harness.fake.calls_to("transcriptions"), timeout=10)
    second = asyncio.create_task(harness.plugin.handle_voice_note(
        harness.note(make_tone("ogg", 600.0, 1.0), message_id="2", key="b", seconds=1), chat))
    await harness.fake.wait_for(lambda: [item.reply_to for item in chat.sent if item.kind == "text"] == ["1", "2"], timeout=10)
    assert not first.done()  # the second placeholder came while the first note was still being recognised
    await asyncio.gather(first, second)
    assert chat.sent[1].text == "🎙 Transcribing… 0:01"
    assert chat.texts() == ["tone 440 hz 2.0 s", "tone 600 hz 1.0 s"]  # each placeholder became its own transcript
    edits = [item.message_id for item in chat.sent if item.kind == "edit"]
    assert edits == [chat.sent[0].message_id, chat.sent[1].message_id]  # answered in the notes' order
