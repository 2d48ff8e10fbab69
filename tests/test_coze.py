"""Coze providers and the speech service, end to end against the local Coze fake.

Every frame our WebSocket clients send is checked against cozepy's own models (the contract), and
audio results are checked on the audio: the fake's ASR describes what it heard, its TTS encodes
the voice as a frequency and the text length as a duration.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
from websockets.asyncio.server import ServerConnection, serve

from voicebridge.speech.coze_asr import CozeFileTranscriber
from voicebridge.speech.coze_asr_stream import CozeStreamTranscriber
from voicebridge.speech.coze_auth import StaticToken
from voicebridge.speech.coze_common import (CozeEndpoint, CozeEvent, CozeRest, CozeVoiceCatalogue, error_from_code,
                                              error_from_status, error_from_transport, parse_event, probe_coze_socket,
                                              token_refused)
from voicebridge.speech.coze_tts import CozeSpeechSynthesizer
from voicebridge.speech.coze_tts_stream import CozeStreamSynthesizer, speech_rate
from voicebridge.speech.errors import AudioError, AudioProblem, ErrorKind, InputFormatRefused, SpeechError
from voicebridge.speech.metering import AudioUsage
from voicebridge.speech.models import AudioClip, AudioFormat, EncodedAudio, PcmStream, SpeechAudio, SynthesizeOptions, TranscribeOptions, Voice
from voicebridge.speech.retry import Retrier
from voicebridge.speech.service import SpeechService
from tests.audio_tools import analyse, decode, make_silence, make_tone, ogg_pages, pcm_samples, probe, probe_duration, tone_pcm, with_granule
from tests.cozepy_contract import validate_uplink
from tests.fakes.coze import DEFAULT_TOKEN, DEFAULT_VOICES, FakeCoze, FakeVoice

DEFAULT_VOICE = DEFAULT_VOICES[0]
JAY = DEFAULT_VOICES[1]


@pytest.fixture
async def fake() -> AsyncIterator[FakeCoze]:
    async with FakeCoze() as server:
        yield server


def build_service(fake: FakeCoze, retrier: Retrier, *, asr: tuple[str, ...] = ("coze",), tts: tuple[str, ...] = ("coze",),
                  voice_id: str | None = DEFAULT_VOICE.voice_id, token: str = DEFAULT_TOKEN, read_timeout: float = 5.0,
                  result_timeout: float = 5.0) -> SpeechService:
    endpoint = CozeEndpoint(StaticToken(token), fake.base_url, fake.ws_base_url, connect_timeout=2.0, read_timeout=read_timeout)
    return SpeechService(
        transcribers=[CozeFileTranscriber(endpoint), CozeStreamTranscriber(endpoint, result_timeout=result_timeout)],
        synthesizers=[CozeSpeechSynthesizer(endpoint, voice_id), CozeStreamSynthesizer(endpoint, voice_id, audio_timeout=result_timeout)],
        asr_chain=asr,
        tts_chain=tts,
        retrier=retrier,
    )


@pytest.fixture
async def service(fake: FakeCoze, fast_retrier: Retrier) -> AsyncIterator[SpeechService]:
    speech = build_service(fake, fast_retrier)
    yield speech
    await speech.aclose()


def tone_clip(container: str = "ogg", seconds: float = 2.0, frequency: float = 440.0) -> AudioClip:
    return AudioClip(data=make_tone(container, frequency, seconds))


# ------------------------------------------------------------------------------------ file ASR


@pytest.mark.parametrize(("container", "mime"), [("ogg", "audio/ogg"), ("mp3", "audio/mpeg"), ("m4a", "audio/mp4"),
                                                 ("mp4", "video/mp4"), ("wav", "audio/wav")])
async def test_file_asr_uploads_accepted_containers_as_they_are(fake: FakeCoze, service: SpeechService, container: str, mime: str) -> None:
    clip = tone_clip(container)
    transcript = await service.transcribe(clip)
    assert transcript.final and transcript.text == "tone 440 hz 2.0 s"
    (call,) = fake.calls_to("transcriptions")
    assert call.upload is not None
    assert (call.upload.field, call.upload.filename, call.upload.content_type) == ("file", f"audio.{container}", mime)
    assert call.upload.size == clip.size  # the original bytes, not a conversion
    assert call.token == DEFAULT_TOKEN


@pytest.mark.parametrize("container", ["webm", "flac"])
async def test_file_asr_converts_other_containers_to_wav(fake: FakeCoze, service: SpeechService, container: str) -> None:
    assert (await service.transcribe(tone_clip(container, 1.5))).text == "tone 440 hz 1.5 s"
    (call,) = fake.calls_to("transcriptions")
    assert call.upload is not None and call.upload.content_type == "audio/wav"


@pytest.mark.parametrize(
    ("data", "problem"),
    [(b"", AudioProblem.EMPTY), (b"definitely not audio" * 50, AudioProblem.UNDECODABLE), (None, AudioProblem.SILENT)],
)
@pytest.mark.parametrize("asr", ["coze", "coze-stream"])
async def test_unusable_audio_is_refused_before_any_call(fake: FakeCoze, fast_retrier: Retrier, data: bytes | None,
                                                         problem: AudioProblem, asr: str) -> None:
    service = build_service(fake, fast_retrier, asr=(asr,))
    clip = AudioClip(data=make_silence("ogg", 2.0) if data is None else data)
    with pytest.raises(AudioError) as caught:
        await service.transcribe(clip)
    await service.aclose()
    assert caught.value.problem is problem
    assert fake.rest_calls == [] and fake.ws_sessions == []


async def test_auth_failure_is_not_retried(fake: FakeCoze, fast_retrier: Retrier) -> None:
    service = build_service(fake, fast_retrier, token="pat_wrong")
    with pytest.raises(SpeechError) as caught:
        await service.transcribe(tone_clip())
    await service.aclose()
    error = caught.value
    assert (error.kind, error.code, error.retryable) == (ErrorKind.AUTH, 4100, False)
    assert error.logid == fake.rest_calls[0].logid
    assert len(fake.calls_to("transcriptions")) == 1
    assert "pat_wrong" not in str(error)


@pytest.mark.parametrize("code", [5000, 4009, 4013, 4020])
async def test_transient_codes_are_retried_until_success(fake: FakeCoze, service: SpeechService, code: int) -> None:
    fake.fail_next("transcriptions", code=code, times=2)
    assert (await service.transcribe(tone_clip())).text == "tone 440 hz 2.0 s"
    assert len(fake.calls_to("transcriptions")) == 3


async def test_retries_are_bounded(fake: FakeCoze, service: SpeechService) -> None:
    fake.fail_next("transcriptions", code=5000, times=10)
    with pytest.raises(SpeechError) as caught:
        await service.transcribe(tone_clip())
    assert (caught.value.kind, caught.value.code) == (ErrorKind.SERVER, 5000)
    assert len(fake.calls_to("transcriptions")) == 3


async def test_gateway_pages_and_dropped_connections_are_transient(fake: FakeCoze, service: SpeechService) -> None:
    fake.fail_next("transcriptions", raw_body="<html><body>502 Bad Gateway</body></html>", http_status=502)
    fake.drop_next("transcriptions")
    assert (await service.transcribe(tone_clip())).text == "tone 440 hz 2.0 s"
    assert [call.status for call in fake.calls_to("transcriptions")] == [502, 0, 200]


async def test_a_slow_answer_times_out_and_is_retried(fake: FakeCoze, fast_retrier: Retrier) -> None:
    # The first answer is held until the fake stops, so the timeout fires first however loaded the
    # machine; 3 s is still ample for the second, unheld answer (an ffmpeg decode in the fake).
    fake.delay_next("transcriptions", 3600.0)
    service = build_service(fake, fast_retrier, read_timeout=3.0)
    assert (await service.transcribe(tone_clip(seconds=0.5))).text == "tone 440 hz 0.5 s"
    await service.aclose()
    assert len(fake.calls_to("transcriptions")) == 2


async def test_business_errors_with_http_error_statuses_keep_their_code(fast_retrier: Retrier) -> None:
    async with FakeCoze(error_http_status={4101: 403}) as fake:
        fake.fail_next("transcriptions", code=4101)
        service = build_service(fake, fast_retrier)
        with pytest.raises(SpeechError) as caught:
            await service.transcribe(tone_clip())
        await service.aclose()
    assert (caught.value.kind, caught.value.code) == (ErrorKind.PERMISSION, 4101)


async def test_clips_over_10_mb_switch_to_streaming_asr(fake: FakeCoze, service: SpeechService) -> None:
    clip = AudioClip(data=make_tone("wav", 440.0, 330.0, sample_rate=16000))  # 10.6 MB of WAV
    assert clip.size > 10 * 1024 * 1024
    assert (await service.transcribe(clip)).text == "tone 440 hz 330.0 s"
    assert fake.calls_to("transcriptions") == []
    assert len(fake.sessions_to("ws_transcriptions")) == 1


async def test_clips_over_30_minutes_switch_to_streaming_asr(fake: FakeCoze, service: SpeechService) -> None:
    file_asr = service.transcribers["coze"]
    assert file_asr.capabilities.max_seconds == 30 * 60  # Coze's file ASR limit (spec §7)
    # The routing is the same at any limit: at one minute, the test encodes and streams a minute of
    # audio instead of 31 (12 s of CPU); both sides of the limit are checked.
    file_asr.capabilities = replace(file_asr.capabilities, max_seconds=60)  # type: ignore[misc]
    assert (await service.transcribe(AudioClip(data=make_tone("ogg", 440.0, 59.0)))).text == "tone 440 hz 59.0 s"
    assert len(fake.calls_to("transcriptions")) == 1 and fake.sessions_to("ws_transcriptions") == []
    assert (await service.transcribe(AudioClip(data=make_tone("ogg", 440.0, 61.0)))).text == "tone 440 hz 61.0 s"
    assert len(fake.calls_to("transcriptions")) == 1 and len(fake.sessions_to("ws_transcriptions")) == 1


# ------------------------------------------------------------------------------- streaming ASR


async def test_streaming_asr_sends_an_ogg_opus_note_as_its_own_pages(fake: FakeCoze, fast_retrier: Retrier) -> None:
    """A voice note (Ogg/Opus) is not decoded by the bot: its pages go out as they are, and the
    fake, decoding what it received, hears the note's tone and length."""
    service = build_service(fake, fast_retrier, asr=("coze-stream",))
    options = TranscribeOptions(language="zh", hot_words=("扣子", "voicebridge"), context="a test", punctuation=False)
    clip = tone_clip("ogg", 3.0)
    results = [transcript async for transcript in service.stream(clip, options)]
    await service.aclose()

    final = results[-1]
    assert final.final and final.text == "tone 440 hz 3.0 s" and final.provider == "coze-stream"
    partials = [result.text for result in results[:-1]]
    assert partials and partials[0] != final.text and partials[-1] == final.text  # each the full text so far
    (session,) = fake.sessions_to("ws_transcriptions")
    update = session.uplink[0]
    assert update["data"]["input_audio"] == {"format": "ogg", "codec": "opus", "sample_rate": 48000, "channel": 1, "bit_depth": 16}
    assert session.config == update["data"]["input_audio"]  # what the server echoed as effective
    assert session.asr_config == {"user_language": "zh", "hot_words": ["扣子", "voicebridge"], "context": "a test",
                                  "enable_punc": False}
    assert session.audio_bytes == clip.size  # the file itself, not a conversion…
    appended = [base64.b64decode(event["data"]["delta"]) for event in session.uplink
                if event["event_type"] == "input_audio_buffer.append" and "delta" in event["data"]]  # the fake keeps 3
    assert b"".join(appended) == clip.data[:sum(map(len, appended))]
    assert all(chunk.startswith(b"OggS") for chunk in appended)  # …in whole pages, about a second each
    assert session.uplink_types.count("input_audio_buffer.append") == 4  # 3 s, and the encoder's last 13 ms
    assert session.heard_seconds == pytest.approx(3.0, abs=0.01)
    assert session.uplink_types[-1] == "input_audio_buffer.complete"
    for event in session.uplink[:4] + session.uplink[-1:]:
        validate_uplink(event)


@pytest.mark.parametrize("container", ["mp3", "webm"])  # WebM holds Opus too: only Ogg goes as it is
async def test_streaming_asr_declares_the_pcm_it_sends_for_other_containers(fake: FakeCoze, fast_retrier: Retrier,
                                                                            container: str) -> None:
    service = build_service(fake, fast_retrier, asr=("coze-stream",))
    options = TranscribeOptions(language="zh", hot_words=("扣子", "voicebridge"), context="a test", punctuation=False)
    results = [transcript async for transcript in service.stream(tone_clip(container, 3.0), options)]
    await service.aclose()

    final = results[-1]
    assert final.final and final.text == "tone 440 hz 3.0 s" and final.provider == "coze-stream"
    partials = [result.text for result in results[:-1]]
    assert partials[:2] == ["tone 440 hz 1.0 s", "tone 440 hz 2.0 s"]  # each the full text so far
    (session,) = fake.sessions_to("ws_transcriptions")
    update = session.uplink[0]
    assert update["event_type"] == "transcriptions.update"
    assert update["data"]["input_audio"] == {"format": "pcm", "codec": "pcm", "sample_rate": 16000, "channel": 1, "bit_depth": 16}
    assert session.config == update["data"]["input_audio"]  # what the server echoed as effective
    assert session.uplink_types[-1] == "input_audio_buffer.complete"
    assert session.audio_bytes == pytest.approx(3.0 * 16000 * 2, abs=0.06 * 16000 * 2)  # MP3's encoder delay
    appended = [len(base64.b64decode(event["data"]["delta"])) for event in session.uplink
                if event["event_type"] == "input_audio_buffer.append"]
    assert appended[:2] == [16000 * 2] * 2  # a second of audio per frame
    for event in session.uplink[:4] + session.uplink[-1:]:
        validate_uplink(event)
    # Uncompressed frames: deflating base64 PCM cost most of the client's CPU (docs/performance.md).
    assert "Sec-WebSocket-Extensions" not in session.headers


def input_formats(fake: FakeCoze) -> list[str]:
    """The input_audio.format each streaming session declared, in order."""
    return [session.uplink[0]["data"]["input_audio"]["format"] for session in fake.sessions_to("ws_transcriptions")]


@pytest.mark.parametrize("answer", ["error", "ignore"])  # 4000 "The parameter audio is invalid…", or an echo without ogg
async def test_refused_ogg_opus_goes_again_as_pcm_at_once_and_is_remembered(fast_retrier: Retrier, answer: str,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    async with FakeCoze(ws_asr_formats=frozenset({"pcm", "wav"}), unsupported_format_answer=answer) as fake:  # type: ignore[arg-type]
        service = build_service(fake, fast_retrier, asr=("coze-stream",))
        with caplog.at_level(logging.WARNING, logger="voicebridge.speech.service"):
            first = await service.transcribe(tone_clip("ogg", 2.0))
            second = await service.transcribe(tone_clip("ogg", 1.0))
        await service.aclose()
    assert (first.text, second.text) == ("tone 440 hz 2.0 s", "tone 440 hz 1.0 s")
    assert input_formats(fake) == ["ogg", "pcm", "pcm"]  # the same note again as PCM, and the next one PCM at once
    assert service.health.healthy("coze-stream")  # a refused form is no failure of the provider
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "Ogg/Opus" in warnings[0] and "COZE_STREAM_INPUT=pcm" in warnings[0]
    # What the operator needs for Coze's support: the provider, the session's log id, what Coze said.
    assert "provider=coze-stream" in warnings[0] and f"logid={fake.ws_sessions[0].logid}" in warnings[0]
    assert ("The parameter audio is invalid" if answer == "error" else "'format': 'wav'") in warnings[0]


async def test_a_pcm_session_whose_echo_differs_fails_instead_of_giving_garbage_text(fast_retrier: Retrier) -> None:
    async with FakeCoze(ws_asr_formats=frozenset({"wav"}), unsupported_format_answer="ignore") as fake:
        service = build_service(fake, fast_retrier, asr=("coze-stream",))
        with pytest.raises(SpeechError) as caught:
            await service.transcribe(tone_clip("mp3", 1.0))  # goes as PCM; the echo keeps wav
        await service.aclose()
    assert not isinstance(caught.value, InputFormatRefused)  # nothing left to fall back to
    assert caught.value.kind is ErrorKind.INVALID_INPUT and "did not accept the declared audio format" in str(caught.value)
    assert (caught.value.provider, caught.value.logid) == ("coze-stream", fake.ws_sessions[0].logid)
    assert input_formats(fake) == ["pcm"]


@pytest.mark.parametrize("message", ["The parameter audio is invalid.", "The parameter format is invalid.",
                                     "Codec opus is not supported."])
async def test_a_4000_about_the_audio_format_or_codec_refuses_ogg(fake: FakeCoze, fast_retrier: Retrier, message: str) -> None:
    fake.fail_next("ws_transcriptions", code=4000, msg=message)
    service = build_service(fake, fast_retrier, asr=("coze-stream",))
    assert (await service.transcribe(tone_clip("ogg", 1.0))).text == "tone 440 hz 1.0 s"
    await service.aclose()
    assert input_formats(fake) == ["ogg", "pcm"] and service.pcm_only == {"coze-stream"}


async def test_an_echo_without_ogg_is_remembered_even_when_the_pcm_retry_fails(fast_retrier: Retrier) -> None:
    """The echo says outright that the deployment does not take Ogg/Opus: no later note tries it."""
    async with FakeCoze(ws_asr_formats=frozenset({"pcm", "wav"}), unsupported_format_answer="ignore") as fake:
        fake.delay_next("ws_transcriptions", 0.01)  # the first session (Ogg) goes through: its echo refuses Ogg
        fake.fail_next("ws_transcriptions", code=5000, times=5)  # every PCM attempt after it fails
        service = build_service(fake, fast_retrier, asr=("coze-stream",))
        with pytest.raises(SpeechError):
            await service.transcribe(tone_clip("ogg", 1.0))
        await service.aclose()
    assert input_formats(fake)[:2] == ["ogg", "pcm"] and service.pcm_only == {"coze-stream"}


async def test_a_server_error_that_mentions_audio_is_no_refusal_of_ogg(fake: FakeCoze, fast_retrier: Retrier) -> None:
    fake.fail_next("ws_transcriptions", code=5000, msg="The audio service had an internal error.")
    service = build_service(fake, fast_retrier, asr=("coze-stream",))
    assert (await service.transcribe(tone_clip("ogg", 1.0))).text == "tone 440 hz 1.0 s"  # retried, as Ogg
    await service.aclose()
    assert input_formats(fake) == ["ogg", "ogg"] and service.pcm_only == set()


async def test_the_streaming_transcriber_also_answers_a_plain_transcribe_call(fake: FakeCoze) -> None:
    """``transcribe`` (the Transcriber protocol) is the stream's final text; the service itself streams."""
    endpoint = CozeEndpoint(StaticToken(DEFAULT_TOKEN), fake.base_url, fake.ws_base_url, connect_timeout=2.0)

    async def chunks() -> AsyncIterator[bytes]:
        yield tone_pcm(440, 1.5, 16000)

    transcript = await CozeStreamTranscriber(endpoint).transcribe(PcmStream(16000, chunks()), TranscribeOptions())
    assert (transcript.text, transcript.final, transcript.seconds) == ("tone 440 hz 1.5 s", True, 1.5)


async def test_an_empty_answer_for_ogg_with_sound_is_retried_as_pcm(fast_retrier: Retrier) -> None:
    async with FakeCoze(hears_nothing_in=frozenset({"ogg"})) as fake:
        service = build_service(fake, fast_retrier, asr=("coze-stream",))
        first = await service.transcribe(tone_clip("ogg", 2.0))
        second = await service.transcribe(tone_clip("ogg", 1.0))
        await service.aclose()
    assert (first.text, second.text) == ("tone 440 hz 2.0 s", "tone 440 hz 1.0 s")
    assert input_formats(fake) == ["ogg", "pcm", "pcm"]  # PCM heard what Ogg did not: remembered


async def test_an_empty_answer_that_pcm_confirms_is_the_answer_and_ogg_stays(fast_retrier: Retrier) -> None:
    """Sound that the recogniser turns into no words (noise, music) is not Ogg's fault: the empty
    answer stands, and the next note still goes as Ogg."""
    async with FakeCoze(hears_nothing_in=frozenset({"ogg", "pcm"})) as fake:
        service = build_service(fake, fast_retrier, asr=("coze-stream",))
        answers = [(await service.transcribe(tone_clip("ogg", 1.0))).text for _ in range(2)]
        await service.aclose()
    assert answers == ["", ""]
    assert input_formats(fake) == ["ogg", "pcm", "ogg", "pcm"] and service.pcm_only == set()


async def test_a_4000_about_something_else_is_no_refusal_of_ogg(fake: FakeCoze, fast_retrier: Retrier) -> None:
    fake.fail_next("ws_transcriptions", code=4000, msg="The parameter hot_words is invalid.")
    service = build_service(fake, fast_retrier, asr=("coze-stream",))
    with pytest.raises(SpeechError) as caught:
        await service.transcribe(tone_clip("ogg", 1.0))
    assert (await service.transcribe(tone_clip("ogg", 1.0))).text == "tone 440 hz 1.0 s"
    await service.aclose()
    assert (caught.value.kind, caught.value.code) == (ErrorKind.INVALID_INPUT, 4000)
    assert input_formats(fake) == ["ogg", "ogg"] and service.pcm_only == set()


async def test_a_silent_ogg_note_never_reaches_the_streaming_provider(fake: FakeCoze, fast_retrier: Retrier) -> None:
    service = build_service(fake, fast_retrier, asr=("coze-stream",))
    with pytest.raises(AudioError) as caught:
        await service.transcribe(AudioClip(data=make_silence("ogg", 2.0)))
    await service.aclose()
    assert caught.value.problem is AudioProblem.SILENT and fake.ws_sessions == []


async def test_stereo_ogg_goes_as_it_is_and_a_pcm_only_provider_gets_pcm(fake: FakeCoze, fast_retrier: Retrier) -> None:
    endpoint = CozeEndpoint(StaticToken(DEFAULT_TOKEN), fake.base_url, fake.ws_base_url, connect_timeout=2.0)
    stereo = AudioClip(data=make_tone("ogg", 440.0, 1.0, channels=2))
    for ogg_opus in (True, False):  # False: COZE_STREAM_INPUT=pcm
        service = SpeechService(transcribers=[CozeStreamTranscriber(endpoint, ogg_opus=ogg_opus)], asr_chain=["coze-stream"],
                                retrier=fast_retrier)
        assert (await service.transcribe(stereo)).text == "tone 440 hz 1.0 s"
        await service.aclose()
    declared = [session.uplink[0]["data"]["input_audio"] for session in fake.sessions_to("ws_transcriptions")]
    assert [(audio["format"], audio["channel"]) for audio in declared] == [("ogg", 2), ("pcm", 1)]


async def test_ogg_that_is_not_one_plain_opus_stream_goes_as_pcm(fake: FakeCoze, fast_retrier: Retrier) -> None:
    note = make_tone("ogg", 440.0, 1.0)
    service = build_service(fake, fast_retrier, asr=("coze-stream",))
    damaged = note[:-5] + bytes([note[-5] ^ 0x01]) + note[-4:]  # the last page's checksum fails
    for data in (note + note, note + b"trailing bytes", damaged):  # chained streams; bytes after the last page
        assert (await service.transcribe(AudioClip(data=data))).text.startswith("tone 440 hz")
    await service.aclose()
    assert input_formats(fake) == ["pcm", "pcm", "pcm"]


async def test_an_ogg_note_lying_about_its_length_is_bounded_and_metered_by_its_packets(fake: FakeCoze,
                                                                                      fast_retrier: Retrier) -> None:
    """Granule positions are the muxer's word: the last page of a 3 s note claims 1 s, with a
    checksum that holds. The limit and the meter go by the packets."""
    pages = ogg_pages(make_tone("ogg", 440.0, 3.0))
    liar = AudioClip(data=b"".join(pages[:-1]) + with_granule(pages[-1], 312 + 48000))
    service = build_service(fake, fast_retrier, asr=("coze-stream",))
    with pytest.raises(AudioError) as caught:
        await service.transcribe(liar, TranscribeOptions(max_seconds=2.0))
    assert caught.value.problem is AudioProblem.TOO_LONG and fake.ws_sessions == []  # refused before any call
    usage = AudioUsage()
    await service.transcribe(liar, TranscribeOptions(max_seconds=60.0), meter=usage)
    await service.aclose()
    assert input_formats(fake) == ["ogg"] and usage.seconds == pytest.approx(3.0, abs=0.02)


async def test_an_ogg_note_from_a_file_on_disk_goes_as_its_pages(fake: FakeCoze, fast_retrier: Retrier, tmp_path) -> None:
    path = tmp_path / "note.ogg"
    path.write_bytes(make_tone("ogg", 440.0, 2.0))
    service = build_service(fake, fast_retrier, asr=("coze-stream",))
    assert (await service.transcribe(AudioClip.from_path(path))).text == "tone 440 hz 2.0 s"
    await service.aclose()
    assert input_formats(fake) == ["ogg"] and fake.ws_sessions[0].audio_bytes == path.stat().st_size


@pytest.mark.parametrize("mode", ["http401", "error_event"])
async def test_streaming_auth_failure_in_both_documented_forms(fast_retrier: Retrier, mode: str) -> None:
    async with FakeCoze(ws_auth_failure=mode) as fake:  # type: ignore[arg-type]
        service = build_service(fake, fast_retrier, asr=("coze-stream",), token="pat_wrong")
        with pytest.raises(SpeechError) as caught:
            await service.transcribe(tone_clip())
        await service.aclose()
        assert caught.value.kind is ErrorKind.AUTH and not caught.value.retryable
        assert caught.value.logid == fake.ws_sessions[0].logid
        assert len(fake.ws_sessions) == 1


async def test_a_socket_dropped_mid_stream_is_retried(fake: FakeCoze, fast_retrier: Retrier) -> None:
    fake.drop_next("ws_transcriptions", after_appends=1)
    service = build_service(fake, fast_retrier, asr=("coze-stream",))
    assert (await service.transcribe(tone_clip())).text == "tone 440 hz 2.0 s"
    await service.aclose()
    assert [session.ended for session in fake.sessions_to("ws_transcriptions")] == ["dropped", "client"]


async def test_error_events_mid_stream_become_typed_errors(fake: FakeCoze, fast_retrier: Retrier) -> None:
    fake.fail_next("ws_transcriptions", code=5000, after_appends=2)
    fake.fail_next("ws_transcriptions", code=4000)
    service = build_service(fake, fast_retrier, asr=("coze-stream",))
    with pytest.raises(SpeechError) as caught:
        await service.transcribe(tone_clip())
    await service.aclose()
    assert (caught.value.kind, caught.value.code) == (ErrorKind.INVALID_INPUT, 4000)
    assert len(fake.sessions_to("ws_transcriptions")) == 2  # 5000 retried once, 4000 not


async def test_a_silent_server_times_out(fake: FakeCoze, fast_retrier: Retrier) -> None:
    fake.delay_next("ws_transcriptions", 2.0, times=3)
    service = build_service(fake, fast_retrier, asr=("coze-stream",), result_timeout=0.3)
    with pytest.raises(SpeechError) as caught:
        await service.transcribe(tone_clip("ogg", 0.5))
    await service.aclose()
    assert caught.value.kind is ErrorKind.TIMEOUT
    assert len(fake.sessions_to("ws_transcriptions")) == 3


async def test_unknown_events_are_ignored_and_a_server_close_is_fine(fast_retrier: Retrier) -> None:
    async with FakeCoze(extra_downlink_event="transcriptions.future_feature", close_after_transcription=True) as fake:
        service = build_service(fake, fast_retrier, asr=("coze-stream",))
        assert (await service.transcribe(tone_clip())).text == "tone 440 hz 2.0 s"
        await service.aclose()
        assert "transcriptions.future_feature" in fake.ws_sessions[0].downlink_types


async def test_fallback_chain_uses_the_next_provider(fake: FakeCoze, fast_retrier: Retrier) -> None:
    fake.fail_next("ws_transcriptions", code=4101)
    service = build_service(fake, fast_retrier, asr=("coze-stream", "coze"))
    transcript = await service.transcribe(tone_clip())
    await service.aclose()
    assert (transcript.text, transcript.provider) == ("tone 440 hz 2.0 s", "coze")
    assert len(fake.ws_sessions) == 1 and len(fake.calls_to("transcriptions")) == 1


async def test_concurrent_streams_keep_their_own_audio(fake: FakeCoze, fast_retrier: Retrier) -> None:
    service = build_service(fake, fast_retrier, asr=("coze-stream",))
    frequencies = [300.0, 500.0, 700.0, 900.0, 1100.0, 1300.0]
    results = await asyncio.gather(*(service.transcribe(tone_clip("ogg", 1.0, frequency)) for frequency in frequencies))
    await service.aclose()
    assert [result.text for result in results] == [f"tone {int(frequency)} hz 1.0 s" for frequency in frequencies]


# ------------------------------------------------------------------------------------------ TTS


def assert_tone(audio: bytes, frequency: float, seconds: float) -> None:
    samples, rate = decode(audio)
    report = analyse(samples, rate)
    assert report.frequency == pytest.approx(frequency, rel=0.01)
    assert report.seconds == pytest.approx(seconds, abs=0.03)


@pytest.mark.parametrize("tts", ["coze", "coze-stream"])
async def test_voice_note_synthesis_is_ogg_opus_in_the_chosen_voice(fake: FakeCoze, fast_retrier: Retrier, tts: str) -> None:
    service = build_service(fake, fast_retrier, tts=(tts,))
    text = "今天天气不错，我们去散步吧。"  # 14 characters: 0.84 s
    audio = await service.synthesize(text, SynthesizeOptions(voice_id=JAY.voice_id))
    await service.aclose()
    assert audio.format is AudioFormat.OGG_OPUS and audio.data.startswith(b"OggS")
    assert (probe(audio.data)["codec_name"], probe(audio.data)["sample_rate"]) == ("opus", "48000")
    assert audio.seconds == pytest.approx(0.84, abs=0.03)
    assert probe_duration(audio.data) == pytest.approx(0.84, abs=0.03)  # what players show
    assert_tone(audio.data, JAY.frequency, 0.84)
    if tts == "coze":
        (call,) = fake.calls_to("speech")
        assert call.json["response_format"] == "ogg_opus" and call.json["voice_id"] == JAY.voice_id
    else:
        (session,) = fake.sessions_to("ws_speech")
        for event in session.uplink:
            validate_uplink(event)
        update = session.uplink[0]["data"]["output_audio"]
        assert update == {"codec": "pcm", "pcm_config": {"sample_rate": 24000}, "speech_rate": 0, "voice_id": JAY.voice_id}


async def test_chained_ogg_from_the_provider_becomes_one_stream_stating_its_real_length(fast_retrier: Retrier) -> None:
    text = "今天天气不错。我们去散步吧。好的！"  # three sentences, 17 characters: 1.02 s
    async with FakeCoze(ogg_opus_per_sentence=True) as fake:
        service = build_service(fake, fast_retrier, tts=("coze",))
        audio = await service.synthesize(text, SynthesizeOptions(voice_id=JAY.voice_id))
        async with httpx.AsyncClient(base_url=fake.base_url, headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"}) as client:
            raw = (await client.post("/v1/audio/speech", json={"input": text, "voice_id": JAY.voice_id,
                                                                 "response_format": "ogg_opus"})).content
        await service.aclose()
    assert raw.count(b"OpusHead") == 3 and probe_duration(raw) < 0.5  # as sent: players would show one link
    assert audio.data.count(b"OpusHead") == 1
    assert probe_duration(audio.data) == pytest.approx(1.02, abs=0.03)
    assert audio.seconds == pytest.approx(1.02, abs=0.03)
    assert_tone(audio.data, JAY.frequency, 1.02)


@pytest.mark.parametrize("tts", ["coze", "coze-stream"])
async def test_text_over_1024_bytes_is_split_and_the_audio_joined(fake: FakeCoze, fast_retrier: Retrier, tts: str) -> None:
    service = build_service(fake, fast_retrier, tts=(tts,))
    sentence = "这是一个用来测试长文本的句子。"  # 15 characters, 45 bytes
    text = sentence * 60  # 2700 bytes, 900 characters: 54 s of speech at 0.06 s per character
    audio = await service.synthesize(text)
    await service.aclose()
    assert_tone(audio.data, DEFAULT_VOICE.frequency, 54.0)
    assert probe_duration(audio.data) == pytest.approx(54.0, abs=0.03)
    if tts == "coze":
        calls = fake.calls_to("speech")
        pieces = [call.json["input"] for call in calls]
        assert {call.json["response_format"] for call in calls} == {"pcm"}
    else:
        sessions = fake.sessions_to("ws_speech")
        pieces = [text for session in sessions for text in session.texts]
    assert len(pieces) == 3
    assert all(len(piece.encode()) <= 1024 and piece.endswith("。") for piece in pieces)
    assert "".join(sorted(pieces, key=text.index)) == text


async def test_speed_reaches_both_protocols(fake: FakeCoze, fast_retrier: Retrier) -> None:
    for tts in ("coze", "coze-stream"):
        service = build_service(fake, fast_retrier, tts=(tts,))
        audio = await service.synthesize("abcdefghij" * 2, SynthesizeOptions(speed=2.0, format=AudioFormat.WAV))
        await service.aclose()
        assert_tone(audio.data, DEFAULT_VOICE.frequency, 0.6)
    assert fake.calls_to("speech")[0].json["speed"] == 2.0
    assert fake.sessions_to("ws_speech")[0].uplink[0]["data"]["output_audio"]["speech_rate"] == 100


async def test_without_a_configured_voice_the_first_listed_voice_is_used(fake: FakeCoze, fast_retrier: Retrier) -> None:
    service = build_service(fake, fast_retrier, voice_id=None)
    await service.synthesize("hello")
    await service.synthesize("again")
    await service.aclose()
    assert len(fake.calls_to("voices")) == 1  # looked up once
    assert {call.json["voice_id"] for call in fake.calls_to("speech")} == {DEFAULT_VOICE.voice_id}


async def test_unknown_voice_is_a_permanent_error(fake: FakeCoze, service: SpeechService) -> None:
    with pytest.raises(SpeechError) as caught:
        await service.synthesize("hello", SynthesizeOptions(voice_id="no-such-voice"))
    assert (caught.value.kind, caught.value.retryable) == (ErrorKind.INVALID_INPUT, False)
    assert len(fake.calls_to("speech")) == 1


async def test_streaming_tts_errors_and_server_closing_after_each_text(fast_retrier: Retrier) -> None:
    async with FakeCoze(close_after_speech=True, seconds_per_char=0.01) as fake:  # 6 s of speech, not 36
        service = build_service(fake, fast_retrier, tts=("coze-stream",))
        fake.fail_next("ws_speech", code=4020)
        audio = await service.synthesize("短句。" * 200)  # 1800 bytes: two sessions, the first retried
        assert_tone(audio.data, DEFAULT_VOICE.frequency, 600 * 0.01)
        fake.fail_next("ws_speech", code=3010)
        with pytest.raises(SpeechError) as caught:
            await service.synthesize("hello")
        await service.aclose()
    assert caught.value.kind is ErrorKind.TOO_LARGE


async def test_empty_text_is_refused_without_a_call(fake: FakeCoze, service: SpeechService) -> None:
    with pytest.raises(SpeechError) as caught:
        await service.synthesize("   \n ")
    assert caught.value.kind is ErrorKind.INVALID_INPUT
    assert fake.rest_calls == []


async def test_voices_are_listed_across_pages(fast_retrier: Retrier) -> None:
    async with FakeCoze(voices=FakeVoice.generate(250)) as fake:
        service = build_service(fake, fast_retrier)
        voices = await service.voices()
        await service.aclose()
        assert len(voices) == 250 and len({voice.id for voice in voices}) == 250
        assert [call.query["page_num"] for call in fake.calls_to("voices")] == ["1", "2", "3"]


# ------------------------------------------------------------------------------------ each client on its own, answer by answer


def replaying(*answers: httpx.Response) -> tuple[CozeEndpoint, httpx.MockTransport, list[httpx.Request]]:
    """An endpoint whose REST calls get ``answers`` in turn (Coze's envelopes, spec §2), and the requests."""
    requests: list[httpx.Request] = []
    queue = list(answers)

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return queue.pop(0)

    endpoint = CozeEndpoint(StaticToken(DEFAULT_TOKEN), "https://api.coze.invalid", "wss://ws.coze.invalid", read_timeout=7.0)
    return endpoint, httpx.MockTransport(answer), requests


@pytest.mark.parametrize(("speed", "rate"), [(1.0, 0), (1.25, 25), (1.7, 70), (0.994, -1), (0.5, -50), (0.2, -50), (2.0, 100), (3.0, 100)])
def test_speed_factors_become_cozes_speech_rate_within_its_range(speed: float, rate: int) -> None:
    assert speech_rate(speed) == rate


@pytest.mark.parametrize(("echo", "refused"), [
    (None, False),
    ({"codec": "pcm", "pcm_config": {"sample_rate": 24000}}, False),
    ({"codec": "pcm"}, False),  # no rate echoed: the one asked for
    ({"pcm_config": {"sample_rate": 24000}}, False),
    ({"codec": "pcm", "pcm_config": {"sample_rate": 16000}}, True),
    ({"codec": "opus", "pcm_config": {"sample_rate": 24000}}, True),
])
def test_streaming_tts_refuses_a_session_that_would_send_another_format(echo: dict[str, object] | None, refused: bool) -> None:
    synthesizer = CozeStreamSynthesizer(CozeEndpoint(StaticToken(DEFAULT_TOKEN)), None)
    if not refused:
        synthesizer._check_echo(echo, 24000, "log-1")
        return
    with pytest.raises(SpeechError) as failure:
        synthesizer._check_echo(echo, 24000, "log-1")
    assert failure.value.kind is ErrorKind.INVALID_INPUT and not failure.value.retryable
    assert (failure.value.provider, failure.value.logid) == ("coze-stream", "log-1")
    assert str(echo["codec"] if "codec" in echo else None) in str(failure.value) and "not pcm at 24000 Hz" in str(failure.value)  # type: ignore[index, operator]


async def test_rest_tts_sends_the_options_and_states_the_length_of_pcm_only() -> None:
    pcm = b"\x01\x00" * 24000
    endpoint, transport, requests = replaying(httpx.Response(200, headers={"content-type": "audio/pcm"}, content=pcm),
                                              httpx.Response(200, headers={"content-type": "audio/mpeg"}, content=b"ID3mp3"))
    synthesizer = CozeSpeechSynthesizer(endpoint, "voice-1", transport)
    speech = await synthesizer.synthesize("Hello.", SynthesizeOptions(format=AudioFormat.PCM, speed=1.5, sample_rate=24000))
    compressed = await synthesizer.synthesize("Hello.", SynthesizeOptions(voice_id="voice-2", format=AudioFormat.MP3))
    await synthesizer.aclose()
    assert (speech.data, speech.format, speech.sample_rate, speech.seconds) == (pcm, AudioFormat.PCM, 24000, 1.0)
    assert (compressed.format, compressed.seconds) == (AudioFormat.MP3, None)  # a compressed length is not guessed
    assert [request.url.path for request in requests] == ["/v1/audio/speech"] * 2
    assert requests[0].headers["Authorization"] == f"Bearer {DEFAULT_TOKEN}"
    assert json.loads(requests[0].content) == {"input": "Hello.", "voice_id": "voice-1", "response_format": "pcm",
                                               "speed": 1.5, "sample_rate": 24000}
    assert json.loads(requests[1].content)["voice_id"] == "voice-2"


@pytest.mark.parametrize("answer", [
    httpx.Response(200, headers={"content-type": "application/json", "x-tt-logid": "log-2"}, json={"code": 0, "msg": ""}),
    httpx.Response(200, headers={"content-type": "text/html", "x-tt-logid": "log-2"}, content=b"<html>hi</html>"),
    httpx.Response(200, headers={"content-type": "audio/pcm", "x-tt-logid": "log-2"}, content=b""),
    httpx.Response(200, headers={"x-tt-logid": "log-2"}, content=b""),
])
async def test_rest_tts_never_hands_on_a_success_without_audio_as_sound(answer: httpx.Response) -> None:
    endpoint, transport, _ = replaying(answer)
    synthesizer = CozeSpeechSynthesizer(endpoint, "voice-1", transport)
    with pytest.raises(SpeechError) as failure:
        await synthesizer.synthesize("Hello.", SynthesizeOptions(format=AudioFormat.PCM))
    await synthesizer.aclose()
    assert failure.value.kind is ErrorKind.SERVER and not failure.value.retryable
    assert (failure.value.provider, failure.value.logid) == ("coze", "log-2")
    assert f"Coze answered {answer.headers.get('content-type') or 'nothing'} instead of audio" in str(failure.value)


async def test_file_asr_uploads_one_file_part_and_reads_data_text() -> None:
    endpoint, transport, requests = replaying(
        httpx.Response(200, json={"code": 0, "msg": "", "data": {"text": "  你好呀 "}, "detail": {"logid": "log-3"}}),
        httpx.Response(200, json={"code": 0, "msg": "", "data": {"text": "long"}}),
        httpx.Response(200, json={"code": 0, "msg": "", "data": {"text": "odd"}}),
    )
    transcriber = CozeFileTranscriber(endpoint, transport)
    short = await transcriber.transcribe(EncodedAudio(b"OggS-short", "m4a", 2.5), TranscribeOptions())
    long = await transcriber.transcribe(EncodedAudio(b"OggS-long", "ogg", 95.0), TranscribeOptions())
    await transcriber.transcribe(EncodedAudio(b"\x00", "xyz", 1.0), TranscribeOptions())
    with pytest.raises(TypeError, match="Coze file ASR takes an encoded file"):
        await transcriber.transcribe(PcmStream(16000, pcm_chunks()), TranscribeOptions())
    await transcriber.aclose()
    assert (short.text, short.provider, short.seconds) == ("你好呀", "coze", 2.5) and long.seconds == 95.0
    assert requests[0].url.path == "/v1/audio/transcriptions" and requests[0].headers["Authorization"] == f"Bearer {DEFAULT_TOKEN}"
    assert b'name="file"; filename="audio.m4a"\r\nContent-Type: audio/mp4\r\n\r\nOggS-short' in requests[0].content
    assert b"Content-Type: application/octet-stream\r\n\r\n\x00" in requests[2].content
    # A long upload waits as long as the audio lasts for its answer; a short one the endpoint's read timeout.
    assert [request.extensions["timeout"]["read"] for request in requests] == [7.0, 95.0, 7.0]


async def pcm_chunks() -> AsyncIterator[bytes]:
    yield b"\x00\x00"


@pytest.mark.parametrize("body", [{"code": 0, "msg": "", "data": {}, "detail": {"logid": "log-4"}},
                                  {"code": 0, "msg": "", "data": {"text": None}, "detail": {"logid": "log-4"}},
                                  {"code": 0, "msg": "", "data": "text", "detail": {"logid": "log-4"}}])
async def test_file_asr_answers_without_data_text_are_a_server_fault(body: dict[str, object]) -> None:
    endpoint, transport, _ = replaying(httpx.Response(200, json=body))
    transcriber = CozeFileTranscriber(endpoint, transport)
    with pytest.raises(SpeechError) as failure:
        await transcriber.transcribe(EncodedAudio(b"OggS", "ogg", 1.0), TranscribeOptions())
    await transcriber.aclose()
    assert failure.value.kind is ErrorKind.SERVER and not failure.value.retryable
    assert (failure.value.provider, failure.value.logid) == ("coze", "log-4") and "without data.text" in str(failure.value)


# ------------------------------------------------------------------------------------ what every Coze client shares (coze_common)


class RecordingCredentials(StaticToken):
    """A static token that records what Coze said about it."""

    def __init__(self, token: str = DEFAULT_TOKEN) -> None:
        super().__init__(token)
        self.verdicts: list[str] = []

    def rejected(self, token: str) -> bool:
        self.verdicts.append(f"rejected {token}")
        return True

    def accepted(self, token: str) -> None:
        self.verdicts.append(f"accepted {token}")


def rest_client(*answers: httpx.Response) -> tuple[CozeRest, RecordingCredentials, list[httpx.Request]]:
    endpoint, transport, requests = replaying(*answers)
    credentials = RecordingCredentials()
    return CozeRest(replace(endpoint, credentials=credentials), "coze", transport), credentials, requests


@pytest.mark.parametrize(("code", "kind", "retryable"), [
    (4013, ErrorKind.SERVER, True), (4100, ErrorKind.AUTH, False), (4102, ErrorKind.RATE_LIMITED, True),
    (3010, ErrorKind.TOO_LARGE, False), (4101, ErrorKind.PERMISSION, False), (777, ErrorKind.SERVER, False),
])
def test_coze_codes_become_error_kinds_and_unknown_ones_are_not_retried(code: int, kind: ErrorKind, retryable: bool) -> None:
    error = error_from_code("coze", code, "words", "log-5")
    assert (error.kind, error.retryable, error.code, error.logid, error.provider) == (kind, retryable, code, "log-5", "coze")
    assert str(error).startswith("Coze error: words")


@pytest.mark.parametrize(("status", "kind"), [(500, ErrorKind.SERVER), (503, ErrorKind.SERVER), (429, ErrorKind.RATE_LIMITED),
                                              (401, ErrorKind.AUTH), (403, ErrorKind.PERMISSION), (408, ErrorKind.TIMEOUT),
                                              (413, ErrorKind.TOO_LARGE), (418, ErrorKind.INVALID_INPUT)])
def test_http_statuses_without_a_coze_body_become_error_kinds(status: int, kind: ErrorKind) -> None:
    error = error_from_status("coze", status, "x" * 300, "log-6")
    assert (error.kind, error.code, error.logid, error.provider) == (kind, status, "log-6", "coze")
    assert f"HTTP {status}: {'x' * 200}" in str(error) and "x" * 201 not in str(error)  # a page is cut, not logged whole


def test_transport_failures_are_timeouts_or_connectivity_and_refused_tokens_are_recognised() -> None:
    slow = error_from_transport("coze", httpx.ReadTimeout("slow"))
    assert (slow.kind, slow.provider) == (ErrorKind.TIMEOUT, "coze") and "no answer in time (ReadTimeout)" in str(slow)
    assert error_from_transport("coze", TimeoutError()).kind is ErrorKind.TIMEOUT
    dropped = error_from_transport("coze", httpx.ConnectError("refused"))
    assert (dropped.kind, dropped.provider) == (ErrorKind.CONNECTIVITY, "coze")
    assert "connection failed: ConnectError: refused" in str(dropped)
    assert token_refused(error_from_code("coze", 4100, "", None)) and token_refused(error_from_code("coze", 700012006, "", None))
    assert token_refused(error_from_status("coze", 401, "", None))
    assert not token_refused(error_from_status("coze", 403, "", None)) and not token_refused(error_from_code("coze", 4101, "", None))


async def test_rest_calls_raise_coze_envelopes_whatever_the_status_and_tell_the_credentials() -> None:
    rest, credentials, requests = rest_client(
        httpx.Response(200, json={"code": 4009, "msg": "rate", "detail": {"logid": "log-body"}}),
        httpx.Response(400, headers={"x-tt-logid": "log-head"}, json={"code": 4100, "msg": "expired", "detail": {"logid": "b"}}),
        httpx.Response(502, headers={"x-tt-logid": "log-gw"}, text="<html>bad gateway</html>"),
        httpx.Response(400, text="bad request"),
        httpx.Response(200, headers={"content-type": "text/plain"}, text='{"code": 4000}'),  # not JSON by its type
        httpx.Response(200, json={"code": 0, "data": {}}),
    )
    errors = []
    for _ in range(4):
        with pytest.raises(SpeechError) as raised:
            await rest.request("POST", "/v1/x", json={})
        errors.append(raised.value)
    plain = await rest.request("POST", "/v1/x")
    body = await rest.json("GET", "/v1/y", read_timeout=33.0)
    await rest.aclose()
    assert [(error.kind, error.code, error.logid, error.provider) for error in errors] == [
        (ErrorKind.RATE_LIMITED, 4009, "log-body", "coze"), (ErrorKind.AUTH, 4100, "log-head", "coze"),
        (ErrorKind.SERVER, 502, "log-gw", "coze"), (ErrorKind.INVALID_INPUT, 400, None, "coze")]
    assert "Coze error: rate" in str(errors[0]) and "https://api.coze.invalid/v1/x: <html>bad gateway</html>" in str(errors[2])
    assert plain.text == '{"code": 4000}' and body == {"code": 0, "data": {}}
    assert credentials.verdicts == [f"rejected {DEFAULT_TOKEN}", f"accepted {DEFAULT_TOKEN}", f"accepted {DEFAULT_TOKEN}"]
    assert errors[1].retryable  # a refused token the credentials renew: worth one more try
    assert [request.extensions["timeout"]["read"] for request in requests] == [7.0] * 5 + [33.0]
    assert {request.extensions["timeout"]["connect"] for request in requests} == {10.0}
    assert all(request.headers["Authorization"] == f"Bearer {DEFAULT_TOKEN}" for request in requests)


async def test_a_rest_answer_that_should_be_json_and_is_not_is_a_server_fault() -> None:
    rest, _, _ = rest_client(httpx.Response(200, headers={"x-tt-logid": "log-7"}, text="<html>welcome</html>"))
    with pytest.raises(SpeechError) as raised:
        await rest.json("GET", "/v1/y")
    await rest.aclose()
    assert (raised.value.kind, raised.value.logid, raised.value.provider) == (ErrorKind.SERVER, "log-7", "coze")
    assert "not JSON" in str(raised.value)


@pytest.mark.parametrize(("answer", "passes"), [
    (httpx.Response(200, json={"code": 4000, "msg": "invalid param"}), True),  # Coze's own refusal: the API is there
    (httpx.Response(404, text="not found"), False),  # another server, or a wrong path
    (httpx.Response(200, json={"code": 4100, "msg": "expired"}), False),
    (httpx.Response(200, json={"code": 0}), False),  # an empty request accepted: not the Coze API
])
async def test_probes_pass_only_on_cozes_own_parameter_refusal(answer: httpx.Response, passes: bool) -> None:
    rest, _, requests = rest_client(answer)
    if passes:
        await rest.probe("POST", "/v1/audio/speech", json={"input": ""})
        assert json.loads(requests[0].content) == {"input": ""}  # the incomplete request asked for
    else:
        with pytest.raises(SpeechError) as raised:
            await rest.probe("POST", "/v1/audio/speech", json={})
        if answer.status_code == 200 and answer.json()["code"] == 0:
            assert "https://api.coze.invalid/v1/audio/speech accepted an empty request" in str(raised.value)
            assert raised.value.kind is ErrorKind.INVALID_INPUT and not raised.value.retryable and raised.value.provider == "coze"
    await rest.aclose()


@pytest.mark.parametrize(("frame", "event"), [
    ('{"event_type": "speech.audio.update", "data": {"delta": "AA=="}, "detail": {"logid": "L"}}',
     CozeEvent("speech.audio.update", {"delta": "AA=="}, "L")),
    (b'{"event_type": "speech.created"}', CozeEvent("speech.created", {}, None)),
    ('{"event_type": "x", "data": [1], "detail": {"logid": 5}}', CozeEvent("x", {}, None)),
    ('{"event_type": 7}', None), ("[]", None), ("not json", None),
])
def test_downlink_frames_are_read_as_events_or_skipped(frame: str | bytes, event: CozeEvent | None) -> None:
    assert parse_event(frame) == event


def voice_page(voices: list[dict[str, object]], has_more: bool) -> httpx.Response:
    return httpx.Response(200, json={"code": 0, "msg": "", "data": {"voice_list": voices, "has_more": has_more}})


async def test_voices_are_read_page_by_page_with_what_each_voice_states() -> None:
    jay = {"voice_id": "7426720361733144585", "name": "jay", "is_system_voice": False, "language_code": "zh",
           "language_name": "中文", "model_type": "big"}
    rest, _, requests = rest_client(voice_page([jay, {"name": "no id"}, "junk"], True),
                                    voice_page([{"voice_id": 42}], False), voice_page([{"voice_id": "never"}], False))
    voices = await CozeVoiceCatalogue(rest, None).voices()
    await rest.aclose()
    assert voices == [Voice("7426720361733144585", "jay", "zh", "中文", False, "big"), Voice("42", "42", "", "", True, "")]
    assert [dict(request.url.params) for request in requests] == [{"page_num": "1", "page_size": "100"},
                                                                  {"page_num": "2", "page_size": "100"}]
    assert {(request.method, request.url.path) for request in requests} == {("GET", "/v1/audio/voices")}


async def test_a_server_that_always_has_more_voices_is_read_for_fifty_pages_only() -> None:
    rest, _, requests = rest_client(*(voice_page([{"voice_id": f"v{page}"}], True) for page in range(60)))
    voices = await CozeVoiceCatalogue(rest, None).voices()
    await rest.aclose()
    assert len(voices) == len(requests) == 50


async def test_the_default_voice_is_the_configured_one_else_the_first_listed_looked_up_once() -> None:
    rest, _, requests = rest_client(voice_page([{"voice_id": "first"}, {"voice_id": "second"}], False))
    catalogue = CozeVoiceCatalogue(rest, None)
    chosen = await asyncio.gather(*(catalogue.resolve(None) for _ in range(3)))
    assert chosen == ["first"] * 3 and len(requests) == 1
    assert await catalogue.resolve("asked") == "asked" and await CozeVoiceCatalogue(rest, "configured").resolve(None) == "configured"
    await rest.aclose()
    single, _, _ = rest_client(voice_page([{"voice_id": "only"}], False))
    assert await CozeVoiceCatalogue(single, None).resolve(None) == "only"
    await single.aclose()
    empty, _, _ = rest_client(voice_page([], False))
    with pytest.raises(SpeechError) as raised:
        await CozeVoiceCatalogue(empty, None).resolve(None)
    await empty.aclose()
    assert (raised.value.kind, raised.value.retryable, raised.value.provider) == (ErrorKind.INVALID_INPUT, False, "coze")
    assert "no Coze voice available; set COZE_VOICE_ID" in str(raised.value)


# ------------------------------------------------------------------------------------ streaming TTS on its own


async def test_streaming_tts_gives_pcm_at_the_asked_rate_stating_its_length(fake: FakeCoze) -> None:
    endpoint = CozeEndpoint(StaticToken(DEFAULT_TOKEN), fake.base_url, fake.ws_base_url)
    synthesizer = CozeStreamSynthesizer(endpoint, JAY.voice_id)
    text = "Hello there."
    speech = await synthesizer.synthesize(text, SynthesizeOptions(format=AudioFormat.PCM, sample_rate=16000))
    refused = CozeStreamSynthesizer(CozeEndpoint(StaticToken("pat_wrong"), fake.base_url, fake.ws_base_url), JAY.voice_id)
    with pytest.raises(SpeechError) as handshake:
        await refused.synthesize(text, SynthesizeOptions(format=AudioFormat.PCM))
    await synthesizer.aclose()
    await refused.aclose()
    assert (speech.format, speech.sample_rate) == (AudioFormat.PCM, 16000)
    assert speech.seconds == len(speech.data) / 2 / 16000
    assert speech.seconds == pytest.approx(len(text) * fake.seconds_per_char, abs=0.05)  # the fake's speech length at 1x
    report = analyse(pcm_samples(speech.data), 16000)
    assert report.frequency == pytest.approx(JAY.frequency, rel=0.05)  # the voice asked for
    assert (handshake.value.kind, handshake.value.provider) == (ErrorKind.AUTH, "coze-stream")


ScriptedEvents = list[tuple[str, dict[str, object]]]


async def scripted_tts_session(events: ScriptedEvents, *, error_then_close: bool = False, audio_timeout: float = 5.0
                               ) -> tuple[SpeechAudio | SpeechError, list[str]]:
    """One streaming TTS session against a WebSocket server that answers ``input_text_buffer.complete``
    with ``events`` (or, with ``error_then_close``, answers ``speech.update`` with the first event and hangs up)."""
    uplink: list[str] = []

    async def session(connection: ServerConnection) -> None:
        await connection.send(json.dumps({"event_type": "speech.created", "detail": {"logid": "log-ws"}}))
        async for frame in connection:
            event_type = json.loads(frame)["event_type"]
            uplink.append(event_type)
            if error_then_close and event_type == "speech.update":
                name, data = events[0]
                await connection.send(json.dumps({"event_type": name, "data": data, "detail": {"logid": "log-ws"}}))
                return
            if event_type == "input_text_buffer.complete":
                for name, data in events:
                    await connection.send(json.dumps({"event_type": name, "data": data, "detail": {"logid": "log-ws"}}))

    async with serve(session, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        endpoint = CozeEndpoint(StaticToken(DEFAULT_TOKEN), "http://127.0.0.1:1", f"ws://127.0.0.1:{port}")
        synthesizer = CozeStreamSynthesizer(endpoint, "voice-1", audio_timeout=audio_timeout)
        result: SpeechAudio | SpeechError
        try:
            async with asyncio.timeout(30):  # a deadline for a client that would wait forever, not a margin
                result = await synthesizer.synthesize("Hi.", SynthesizeOptions(format=AudioFormat.PCM, sample_rate=24000))
        except SpeechError as error:
            result = error
        await synthesizer.aclose()
    return result, uplink


PCM_ECHO = {"output_audio": {"codec": "pcm", "pcm_config": {"sample_rate": 24000}}}


async def test_streaming_tts_checks_the_echoed_format_and_the_audio_it_is_sent() -> None:
    audio = b"\x01\x02" * 240
    ok, uplink = await scripted_tts_session([("speech.updated", PCM_ECHO), ("input_text_buffer.completed", {}),
                                             ("speech.audio.update", {"delta": base64.b64encode(audio[:100]).decode()}),
                                             ("speech.audio.update", {}),  # no delta: nothing to add
                                             ("speech.audio.update", {"delta": base64.b64encode(audio[100:]).decode()}),
                                             ("speech.audio.completed", {})])
    assert isinstance(ok, SpeechAudio) and ok.data == audio and ok.seconds == 0.01
    assert uplink == ["speech.update", "input_text_buffer.append", "input_text_buffer.complete"]
    wrong_rate, _ = await scripted_tts_session([("speech.updated", {"output_audio": {"codec": "pcm", "pcm_config": {"sample_rate": 8000}}}),
                                                ("speech.audio.completed", {})])
    assert isinstance(wrong_rate, SpeechError) and wrong_rate.kind is ErrorKind.INVALID_INPUT
    assert wrong_rate.logid == "log-ws" and "at 8000 Hz" in str(wrong_rate)
    # "AAAA" with junk after it: a lenient decoder would drop the junk and play three zero bytes.
    garbled, _ = await scripted_tts_session([("speech.audio.update", {"delta": "AAAA!!!!"}), ("speech.audio.completed", {})])
    assert isinstance(garbled, SpeechError) and (garbled.kind, garbled.retryable) == (ErrorKind.SERVER, False)
    assert (garbled.provider, garbled.logid) == ("coze-stream", "log-ws") and "Coze sent audio that is not base64" in str(garbled)


async def test_streaming_tts_reports_why_the_server_hung_up_and_a_server_gone_silent() -> None:
    refused, _ = await scripted_tts_session([("error", {"code": 4200, "msg": "voice not found"})], error_then_close=True)
    assert isinstance(refused, SpeechError) and (refused.kind, refused.code) == (ErrorKind.INVALID_INPUT, 4200)
    silent, _ = await scripted_tts_session([("speech.updated", PCM_ECHO)], audio_timeout=0.2)
    assert isinstance(silent, SpeechError) and silent.kind is ErrorKind.TIMEOUT


async def test_refusals_name_the_client_they_came_through() -> None:
    refusal = httpx.Response(200, json={"code": 4000, "msg": "invalid param"})
    endpoint, transport, _ = replaying(refusal, refusal)
    clients = [CozeSpeechSynthesizer(endpoint, "voice-1", transport), CozeFileTranscriber(endpoint, transport)]
    providers = []
    for client in clients:
        with pytest.raises(SpeechError) as raised:
            if isinstance(client, CozeSpeechSynthesizer):
                await client.synthesize("Hi.", SynthesizeOptions())
            else:
                await client.transcribe(EncodedAudio(b"OggS", "ogg", 1.0), TranscribeOptions())
        providers.append(raised.value.provider)
        await client.aclose()
    assert providers == ["coze", "coze"]  # the names the service's fallback and the health checks use


async def test_a_rest_call_that_cannot_connect_is_a_connectivity_failure_of_its_client() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    endpoint = CozeEndpoint(StaticToken(DEFAULT_TOKEN), "https://api.coze.invalid", "wss://ws.coze.invalid")
    rest = CozeRest(endpoint, "coze", httpx.MockTransport(refuse))
    with pytest.raises(SpeechError) as raised:
        await rest.request("GET", "/v1/y")
    await rest.aclose()
    assert (raised.value.kind, raised.value.provider) == (ErrorKind.CONNECTIVITY, "coze")
    assert "connection failed: ConnectError: refused" in str(raised.value)


async def test_socket_probes_wait_for_the_created_event_and_name_their_client() -> None:
    async def session(connection: ServerConnection) -> None:
        path = connection.request.path if connection.request else ""
        if "created" in path:
            await connection.send(json.dumps({"event_type": "transcriptions.updated"}))
            await connection.send(json.dumps({"event_type": "transcriptions.created", "detail": {"logid": "log-p"}}))
        elif "refused" in path:
            await connection.send(json.dumps({"event_type": "error", "data": {"code": 4101, "msg": "no permission"},
                                              "detail": {"logid": "log-p"}}))
        else:  # silent
            await connection.send(json.dumps({"event_type": "transcriptions.updated", "detail": {"logid": "log-p"}}))
        await connection.wait_closed()

    async with serve(session, "127.0.0.1", 0) as server:
        endpoint = CozeEndpoint(StaticToken(DEFAULT_TOKEN), "http://127.0.0.1:1", f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        await probe_coze_socket(endpoint, "/created", "coze-stream", timeout=5.0)
        failures = []
        for path in ("/refused", "/silent"):
            with pytest.raises(SpeechError) as raised:
                async with asyncio.timeout(30):  # a deadline for a probe without a timeout, not a margin
                    await probe_coze_socket(endpoint, path, "coze-stream", timeout=0.2)
            failures.append(raised.value)
    assert [(error.kind, error.code, error.provider, error.logid) for error in failures] == [
        (ErrorKind.PERMISSION, 4101, "coze-stream", "log-p"), (ErrorKind.TIMEOUT, None, "coze-stream", "log-p")]
    assert "no session-created event" in str(failures[1])


async def test_rest_health_checks_send_an_incomplete_request_and_pass_on_cozes_refusal() -> None:
    refusal = httpx.Response(200, json={"code": 4000, "msg": "invalid param"})
    endpoint, transport, requests = replaying(refusal, refusal)
    transcriber, synthesizer = CozeFileTranscriber(endpoint, transport), CozeSpeechSynthesizer(endpoint, None, transport)
    await transcriber.check()
    await synthesizer.check()
    await transcriber.aclose()
    await synthesizer.aclose()
    upload, speech = requests
    assert (upload.method, upload.url.path, speech.method, speech.url.path) == (
        "POST", "/v1/audio/transcriptions", "POST", "/v1/audio/speech")
    assert b'name="file"; filename="probe.wav"\r\nContent-Type: audio/wav\r\n\r\n\r\n' in upload.content
    assert json.loads(speech.content) == {"input": "", "voice_id": ""}
