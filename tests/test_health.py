"""Fallback with health: a failing provider is skipped for a cool-down, probed in the background,
and a hung primary costs a note one provider timeout, not a timeout per retry."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from voicebridge.speech.coze_asr import CozeFileTranscriber
from voicebridge.speech.coze_asr_stream import CozeStreamTranscriber
from voicebridge.speech.coze_auth import StaticToken
from voicebridge.speech.coze_common import CozeEndpoint
from voicebridge.speech.coze_tts import CozeSpeechSynthesizer
from voicebridge.speech.coze_tts_stream import CozeStreamSynthesizer
from voicebridge.speech.errors import ErrorKind, SpeechError
from voicebridge.speech.health import ProviderHealth
from voicebridge.speech.models import AudioClip, AudioFormat, SynthesizeOptions
from voicebridge.speech.retry import Retrier
from voicebridge.speech.service import SpeechService
from tests.audio_tools import make_tone
from tests.fakes.coze import DEFAULT_TOKEN, DEFAULT_VOICES, FakeCoze

# A provider whose answer the fake holds (60 s, released when the fake stops) times out after
# HANG_TIMEOUT; one that is meant to answer gets ANSWER_TIMEOUT, so that on a loaded machine the
# answer is never raced against the short timeout. Which is which is configuration, not a margin.
HANG_TIMEOUT = 1.0
ANSWER_TIMEOUT = 30.0
TONE = AudioClip(data=make_tone("ogg", 440.0, 0.5))


def coze_endpoint(fake: FakeCoze, timeout: float) -> CozeEndpoint:
    return CozeEndpoint(StaticToken(DEFAULT_TOKEN), fake.base_url, fake.ws_base_url, connect_timeout=timeout,
                        read_timeout=timeout)


def chain_service(fake: FakeCoze, retrier: Retrier, *, asr: tuple[str, ...] = ("coze", "coze-stream"),
                  tts: tuple[str, ...] = ("coze", "coze-stream"), cool_down: float = 30.0,
                  hung: tuple[str, ...] = ()) -> SpeechService:
    """The Coze chains; the providers named in ``hung`` (their ASR and TTS) get the short timeout."""
    def timeout(name: str) -> float:
        return HANG_TIMEOUT if name in hung else ANSWER_TIMEOUT

    rest, stream = coze_endpoint(fake, timeout("coze")), coze_endpoint(fake, timeout("coze-stream"))
    voice = DEFAULT_VOICES[0].voice_id
    return SpeechService(
        transcribers=[CozeFileTranscriber(rest), CozeStreamTranscriber(stream, result_timeout=timeout("coze-stream"))],
        synthesizers=[CozeSpeechSynthesizer(rest, voice),
                      CozeStreamSynthesizer(stream, voice, audio_timeout=timeout("coze-stream"))],
        asr_chain=asr, tts_chain=tts, retrier=retrier, health=ProviderHealth(cool_down=cool_down),
    )


def answer_from_now_on(service: SpeechService, fake: FakeCoze) -> None:
    """Give Coze file ASR the answering timeout from its next request on (one in flight keeps its own)."""
    transcriber = service.transcribers["coze"]
    assert isinstance(transcriber, CozeFileTranscriber)
    transcriber.rest.endpoint = coze_endpoint(fake, ANSWER_TIMEOUT)


async def eventually(predicate: Callable[[], bool], timeout: float = 120.0) -> None:
    """Poll a condition of the client's own state (the fakes cannot signal it) until a generous deadline."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_a_hung_primary_costs_one_timeout_and_is_skipped_while_it_cools_down(fast_retrier: Retrier) -> None:
    async with FakeCoze() as fake:
        service = chain_service(fake, fast_retrier, hung=("coze",))
        fake.delay_next("transcriptions", 60.0, times=5)  # hangs far beyond the provider timeout
        first = await service.transcribe(TONE)
        second = await service.transcribe(TONE)
        healthy = service.health.healthy("coze")
        await service.aclose()
    assert (first.provider, second.provider) == ("coze-stream", "coze-stream")
    # One attempt at the primary, no retry of it, and none at all for the second note.
    assert len(fake.calls_to("transcriptions")) == 1 and len(fake.sessions_to("ws_transcriptions")) == 2
    assert not healthy


async def test_the_unhealthy_provider_is_probed_in_the_background_and_comes_back(fast_retrier: Retrier,
                                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "voicebridge.speech.health")
    async with FakeCoze() as fake:
        service = chain_service(fake, fast_retrier, cool_down=0.2, hung=("coze",))
        fake.delay_next("transcriptions", 60.0, times=2)  # the note's attempt and the first probe hang
        assert (await service.transcribe(TONE)).provider == "coze-stream"
        # The first probe is in flight with the short timeout; the second probe (at least 0.4 s
        # of loop time after it fails, far behind this poll's 0.01 s) and the note must answer.
        await eventually(lambda: len(fake.calls_to("transcriptions")) == 2)
        answer_from_now_on(service, fake)
        await eventually(lambda: service.health.healthy("coze"))
        back = await service.transcribe(TONE)
        await service.aclose()
    probes = fake.calls_to("transcriptions")[1:-1]
    assert back.provider == "coze"
    assert len(probes) == 2 and probes[-1].code == 4000  # the second probe's "invalid parameter" proves the service
    messages = [record.getMessage() for record in caplog.records]
    assert any("coze is unhealthy (timeout); skipped for 0 s" in message for message in messages)
    assert any("still fails its probe (timeout); next probe in 0 s" in message for message in messages)
    assert "speech provider coze answers again" in messages


async def test_transient_errors_move_to_the_fallback_but_request_errors_do_not_make_a_provider_unhealthy(
        fast_retrier: Retrier) -> None:
    async with FakeCoze() as fake:
        service = chain_service(fake, fast_retrier, asr=("coze-stream", "coze"))
        fake.fail_next("ws_transcriptions", code=5000)
        after_server_error = await service.transcribe(TONE)
        unhealthy_after_5000 = not service.health.healthy("coze-stream")
        await service.aclose()

        service = chain_service(fake, fast_retrier, asr=("coze-stream", "coze"))
        fake.fail_next("ws_transcriptions", code=4000)
        after_request_error = await service.transcribe(TONE)
        unhealthy_after_4000 = not service.health.healthy("coze-stream")
        await service.aclose()
    assert (after_server_error.provider, unhealthy_after_5000) == ("coze", True)
    assert (after_request_error.provider, unhealthy_after_4000) == ("coze", False)
    assert len(fake.sessions_to("ws_transcriptions")) == 2  # no retries of the primary while a fallback waits


async def test_the_last_provider_left_is_retried_as_before(fast_retrier: Retrier) -> None:
    async with FakeCoze() as fake:
        service = chain_service(fake, fast_retrier, hung=("coze",))
        fake.delay_next("transcriptions", 60.0)
        fake.fail_next("ws_transcriptions", code=5000, times=2)
        transcript = await service.transcribe(TONE)
        await service.aclose()
    assert transcript.provider == "coze-stream" and len(fake.sessions_to("ws_transcriptions")) == 3


async def test_when_every_provider_is_unhealthy_they_are_all_tried(fast_retrier: Retrier) -> None:
    async with FakeCoze() as fake:
        service = chain_service(fake, fast_retrier, hung=("coze",))
        fake.delay_next("transcriptions", 60.0)
        fake.fail_next("ws_transcriptions", code=5000, times=3)
        with pytest.raises(SpeechError):
            await service.transcribe(TONE)
        assert not service.health.healthy("coze") and not service.health.healthy("coze-stream")
        answer_from_now_on(service, fake)  # no probe comes before the 30 s cool-down ends
        transcript = await service.transcribe(TONE)  # both cool down, yet the note is not refused untried
        await service.aclose()
    assert transcript.provider == "coze" and len(fake.calls_to("transcriptions")) == 2


async def test_a_hung_speech_synthesis_falls_back_within_one_timeout(fast_retrier: Retrier) -> None:
    async with FakeCoze() as fake:
        service = chain_service(fake, fast_retrier, hung=("coze",))
        fake.delay_next("speech", 60.0, times=3)
        audio = await service.synthesize("Hello there.", SynthesizeOptions(format=AudioFormat.PCM))
        await service.aclose()
    assert audio.data and len(fake.calls_to("speech")) == 1 and len(fake.sessions_to("ws_speech")) == 1


async def test_risk_control_4102_is_retried_later_and_unknown_codes_are_logged_with_their_logid(
        fast_retrier: Retrier, caplog: pytest.LogCaptureFixture) -> None:
    async with FakeCoze() as fake:
        service = chain_service(fake, fast_retrier, asr=("coze",))
        fake.fail_next("transcriptions", code=4102, msg="命中风控拦截，请稍后重试")
        retried = await service.transcribe(TONE)
        fake.fail_next("transcriptions", code=4999, msg="something new")
        with pytest.raises(SpeechError) as unknown:
            await service.transcribe(TONE)
        await service.aclose()
    assert retried.text == "tone 440 hz 0.5 s" and [call.code for call in fake.calls_to("transcriptions")][:2] == [4102, 0]
    assert (unknown.value.kind, unknown.value.retryable) == (ErrorKind.SERVER, False)
    logid = fake.calls_to("transcriptions")[-1].logid
    assert any(f"unknown error code 4999 (something new), logid {logid}" in record.getMessage() for record in caplog.records)
