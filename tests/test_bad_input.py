"""Bad input never crashes anything, never leaks markup or mentions, and never loses the next
message: broken audio, lying metadata, oversized texts and transcripts, hostile content."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicebridge.speech.audio import AudioConverter
from voicebridge.speech.coze_common import CozeEvent, parse_event
from voicebridge.speech.errors import AudioError
from voicebridge.speech.feishu_asr import StreamText, TextMode
from voicebridge.speech.models import AudioClip
from voicebridge.speech.retry import Retrier
from tests.audio_tools import analyse, decode, make_silence, make_tone
from tests.fakes.coze import FakeCoze
from tests.fakes.telegram import Chat, FakeTelegram, User
from tests.harness import replies_to, speech_values, telegram_bot
from tests.test_plugin import Harness, MemoryChat, make_plugin

GOOD = make_tone("ogg", 600.0, 1.0)


def zero_duration_ogg() -> bytes:
    """A valid Ogg/Opus container holding no audio at all."""
    return subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc=r=48000:cl=mono", "-t", "0",
                           "-c:a", "libopus", "-f", "ogg", "pipe:1"], check=True, capture_output=True).stdout


BAD_AUDIO = {
    "corrupt": (random.Random(7).randbytes(20_000), "This file could not be read as audio."),
    "empty": (b"", "This audio is empty."),
    # Headers but not one audio packet: ffmpeg cannot open it, so it reads as a broken file.
    "zero duration": (zero_duration_ogg(), "This file could not be read as audio."),
    "silent": (make_silence("ogg", 3.0), "I could not hear anything in this audio: it is silent."),
    "video without sound": (subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=red:s=32x32:d=1", "-c:v", "mpeg4", "-f", "matroska",
         "pipe:1"], check=True, capture_output=True).stdout, "This file could not be read as audio."),
}


@pytest.fixture
async def plugin_harness(fast_retrier: Retrier, request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    async with FakeCoze() as fake:
        plugin = make_plugin(fake, fast_retrier, VOICEBRIDGE_ASR=request.param, VOICEBRIDGE_MAX_DURATION="30")
        yield Harness(fake, plugin)
        await plugin.aclose()
        await plugin.service.aclose()


@pytest.mark.parametrize("plugin_harness", ["coze", "coze-stream"], indirect=True)
@pytest.mark.parametrize("case", list(BAD_AUDIO))
async def test_unusable_audio_gets_one_message_and_no_provider_call(plugin_harness: Harness, case: str) -> None:
    data, expected = BAD_AUDIO[case]
    chat = MemoryChat()
    await plugin_harness.plugin.handle_voice_note(plugin_harness.note(data, key=case), chat)
    await plugin_harness.plugin.handle_voice_note(plugin_harness.note(GOOD, key="good", message_id="8"), chat)
    first, second = chat.visible_texts()
    assert first.startswith(expected)
    assert second == "tone 600 hz 1.0 s"
    assert len(plugin_harness.fake.rest_calls) + len(plugin_harness.fake.ws_sessions) == 1  # only the good note


@pytest.mark.parametrize("plugin_harness", ["coze", "coze-stream"], indirect=True)
async def test_truncated_and_mislabeled_files_are_transcribed_for_what_they_hold(plugin_harness: Harness) -> None:
    whole = make_tone("ogg", 440.0, 10.0)
    mp3 = make_tone("mp3", 500.0, 2.0)
    chat = MemoryChat()
    await plugin_harness.plugin.handle_voice_note(plugin_harness.note(whole[: len(whole) // 2], key="cut"), chat)
    mislabeled = plugin_harness.note(mp3, key="mp3", message_id="8")
    await plugin_harness.plugin.handle_voice_note(
        mislabeled.__class__(**{**mislabeled.__dict__, "mime_type": "audio/ogg", "file_name": "voice.ogg"}), chat)
    assert chat.visible_texts() == ["tone 440 hz 5.0 s", "tone 500 hz 2.0 s"]


@pytest.mark.parametrize("plugin_harness", ["coze", "coze-stream"], indirect=True)
async def test_a_declared_duration_that_lies_is_caught_on_the_audio(plugin_harness: Harness) -> None:
    chat = MemoryChat()
    liar = plugin_harness.note(make_tone("ogg", 440.0, 40.0), seconds=5, key="liar")  # says 5 s, lasts 40 s (limit 30)
    await plugin_harness.plugin.handle_voice_note(liar, chat)
    await plugin_harness.plugin.handle_voice_note(plugin_harness.note(GOOD, key="good", message_id="8"), chat)
    assert chat.visible_texts() == ["This recording is longer than I accept.", "tone 600 hz 1.0 s"]
    await plugin_harness.plugin.bookkeeper.flush()  # usage is settled in the background
    usage = await plugin_harness.plugin.store.usage("test", "11", "2000-01-01")
    assert usage.audio_seconds == pytest.approx(1.0, abs=0.05)  # the refused note's reservation was released


@pytest.mark.parametrize("tts", ["coze", "coze-stream"])
async def test_ten_kilobytes_of_mixed_scripts_and_emoji_are_spoken_in_pieces(fast_retrier: Retrier, tts: str) -> None:
    text = "Voice notes 语音消息 🎙️ работают! 👨‍👩‍👧‍👦 مرحبا. " * 150
    assert len(text.encode()) > 10_000
    # 6,750 characters at the default 60 ms each would be 7 minutes of audio to make and join.
    async with FakeCoze(seconds_per_char=0.005) as fake:
        plugin = make_plugin(fake, fast_retrier, VOICEBRIDGE_TTS=tts)
        audio = await plugin.service.synthesize(text)
        await plugin.aclose()
        await plugin.service.aclose()
        pieces = ([call.json["input"] for call in fake.calls_to("speech")] if tts == "coze"
                  else [piece for session in fake.sessions_to("ws_speech") for piece in session.texts])
    assert all(len(piece.encode()) <= 1024 for piece in pieces) and len(pieces) >= 10
    assert "".join(pieces).replace(" ", "") == text.strip().replace(" ", "")  # nothing lost, no character cut
    samples, rate = decode(audio.data)
    assert analyse(samples, rate).seconds == pytest.approx(sum(len(piece) for piece in pieces) * 0.005, abs=0.1)


async def test_speaking_ten_kilobytes_is_refused_politely(fast_retrier: Retrier) -> None:
    async with FakeCoze() as fake:
        plugin = make_plugin(fake, fast_retrier)
        harness = Harness(fake, plugin)
        chat = MemoryChat()
        await plugin.handle_command(harness.command("speak", "长" * 10_000), chat)
        await plugin.aclose()
        await plugin.service.aclose()
    assert chat.texts() == ["That is too long to read aloud (limit: 2000 characters)."] and fake.calls_to("speech") == []


async def test_a_20k_character_transcript_with_markup_and_emoji_reaches_telegram_intact(fast_retrier: Retrier) -> None:
    hostile = "<b>bold</b> *star* _under_ [link](http://evil.example) @everyone 😀 "
    transcript = (hostile * 320)[:20_000].strip()
    user = User(1001, "Alice", language_code="en")
    async with FakeTelegram() as telegram, FakeCoze(transcript=transcript) as coze:
        async with telegram_bot(telegram, speech_values(coze), fast_retrier):
            note = await telegram.push_voice(Chat.private(user), user, GOOD, duration=1)
            await telegram.wait_for(lambda: sum(len(message["text"]) for message in telegram.messages_sent(user.id)
                                                if "text" in message) >= len(transcript) - 20
                                    and "reply_markup" in telegram.messages_sent(user.id)[-1], timeout=30)
        sent = [call for call in telegram.calls_to("sendMessage") if replies_to(note)(call)]
    assert all(call.status == 200 for call in sent) and len(sent) >= 5
    for call in sent:
        assert "parse_mode" not in call.params and len(call.params["text"].encode("utf-16-le")) // 2 <= 4096
    stored = [message for message in telegram.messages_sent(user.id) if "text" in message]
    assert all("entities" not in message for message in stored)  # markup stayed plain text
    count = len(stored)
    assert all(message["text"].endswith(f" ({number}/{count})") for number, message in enumerate(stored, 1))
    assert " ".join(message["text"].rsplit(" (", 1)[0] for message in stored) == transcript


@settings(max_examples=300, deadline=None)
@given(frame=st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                 lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
                 max_leaves=12).map(json.dumps),
    st.fixed_dictionaries({"event_type": st.sampled_from(["error", "transcriptions.message.update", "speech.audio.update"]),
                           "data": st.one_of(st.none(), st.text(), st.lists(st.integers()),
                                             st.dictionaries(st.sampled_from(["code", "msg", "content", "delta"]),
                                                             st.one_of(st.text(), st.integers(), st.none()))),
                           "detail": st.one_of(st.none(), st.text(), st.dictionaries(st.just("logid"), st.integers()))})
    .map(json.dumps),
))
def test_any_downlink_frame_parses_to_an_event_or_nothing(frame: str | bytes) -> None:
    event = parse_event(frame)
    assert event is None or (isinstance(event, CozeEvent) and isinstance(event.type, str)
                             and isinstance(event.data, dict) and (event.logid is None or isinstance(event.logid, str)))


@settings(max_examples=300, deadline=None)
@given(answers=st.lists(st.text(max_size=30), max_size=12), mode=st.sampled_from(list(TextMode)))
def test_feishu_text_updates_always_show_the_latest_words(answers: list[str], mode: TextMode) -> None:
    text = StreamText(mode)
    for answer in answers:
        shown = text.partial(answer)
        assert "".join(answer.split()) in "".join(shown.split())
    final = text.final(answers[-1] if answers else "")
    # Read cumulatively, the final answer is the whole text and may revise what was shown.
    assert "".join(text.text.split()) in "".join(final.split()) or text.cumulative


_VALID_OGG = make_tone("ogg", 440.0, 0.5)
_CONVERTER_LOOP = asyncio.new_event_loop()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(
    st.binary(max_size=4096),
    st.builds(lambda cut: _VALID_OGG[:cut], st.integers(min_value=0, max_value=len(_VALID_OGG))),
    st.builds(lambda flips, seed: _flip(_VALID_OGG, flips, seed), st.integers(1, 40), st.integers(0, 10_000)),
))
def test_fuzzed_audio_ends_in_a_verdict_never_a_crash(data: bytes) -> None:
    async def verdict() -> None:
        converter = AudioConverter(max_processes=2)
        try:
            info = await asyncio.wait_for(converter.analyse(AudioClip(data=data)), timeout=20)
        except AudioError:
            return
        finally:
            converter.close()
        assert info.seconds >= 0 and len(info.waveform()) <= 256

    _CONVERTER_LOOP.run_until_complete(verdict())


def _flip(data: bytes, flips: int, seed: int) -> bytes:
    generator = random.Random(seed)
    mutated = bytearray(data)
    for _ in range(flips):
        mutated[generator.randrange(len(mutated))] = generator.randrange(256)
    return bytes(mutated)
