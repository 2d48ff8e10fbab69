"""Coze providers and the speech service, end to end against the local Coze fake.

Every frame our WebSocket clients send is checked against cozepy's own models (the contract), and
audio results are checked on the audio: the fake's ASR describes what it heard, its TTS encodes
the voice as a frequency and the text length as a duration.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest

from voicebridge.speech.coze_asr import CozeFileTranscriber
from voicebridge.speech.coze_asr_stream import CozeStreamTranscriber
from voicebridge.speech.coze_auth import StaticToken
from voicebridge.speech.coze_common import CozeEndpoint
from voicebridge.speech.coze_tts import CozeSpeechSynthesizer
from voicebridge.speech.coze_tts_stream import CozeStreamSynthesizer
from voicebridge.speech.errors import AudioError, AudioProblem, ErrorKind, InputFormatRefused, SpeechError
from voicebridge.speech.metering import AudioUsage
from voicebridge.speech.models import AudioClip, AudioFormat, PcmStream, SynthesizeOptions, TranscribeOptions
from voicebridge.speech.retry import Retrier
from voicebridge.speech.service import SpeechService
from tests.audio_tools import analyse, decode, make_silence, make_tone, ogg_pages, probe, probe_duration, tone_pcm, with_granule
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
