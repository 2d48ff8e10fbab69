"""Metering (issue 12): every second handed to a provider is reported, in every attempt and
whatever the outcome, and nothing beyond a request's allowance leaves the machine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicebridge.speech.audio import AudioConverter
from voicebridge.speech.coze_asr import CozeFileTranscriber
from voicebridge.speech.coze_asr_stream import CozeStreamTranscriber
from voicebridge.speech.coze_auth import StaticToken
from voicebridge.speech.coze_common import CozeEndpoint
from voicebridge.speech.errors import AudioError, ErrorKind, SpeechError
from voicebridge.speech.metering import AllowanceExceeded, AudioUsage
from voicebridge.speech.models import (
    AudioClip,
    EncodedAudio,
    PcmStream,
    ProviderAudio,
    TranscribeOptions,
    TranscriberCapabilities,
    Transcript,
)
from voicebridge.speech.retry import Retrier, RetryPolicy
from voicebridge.speech.service import SpeechService
from voicebridge.voice_notes.store import today
from tests.audio_tools import make_tone, tone_wav
from tests.fakes.coze import DEFAULT_TOKEN, FakeCoze
from tests.test_plugin import PRIVATE, Harness, MemoryChat, make_plugin

PCM_RATE = 16000
BYTES_PER_SECOND = PCM_RATE * 2


# ----------------------------------------------------------------------------- property: usage >= audio sent


@dataclass(frozen=True)
class Outcome:
    kind: str  # "ok", "transient" (retried), "permanent" (next provider)
    after_chunks: int  # a streaming provider takes this many chunks before failing


@dataclass
class RecordingProvider:
    """A provider that keeps count of the audio it really took, then does what its script says."""

    name: str
    takes_pcm: bool
    script: list[Outcome]
    received_seconds: float = 0.0
    calls: int = 0
    capabilities: TranscriberCapabilities = field(init=False)

    def __post_init__(self) -> None:
        self.capabilities = (TranscriberCapabilities(pcm_sample_rate=PCM_RATE, pcm_chunk_seconds=0.25) if self.takes_pcm
                             else TranscriberCapabilities(containers=frozenset({"wav"})))

    async def transcribe(self, audio: ProviderAudio, options: TranscribeOptions) -> Transcript:
        self.calls += 1
        outcome = self.script.pop(0) if self.script else Outcome("ok", 1_000)
        if isinstance(audio, PcmStream):
            taken = 0
            async for chunk in audio.chunks:
                self.received_seconds += len(chunk) / BYTES_PER_SECOND
                taken += 1
                if outcome.kind != "ok" and taken >= outcome.after_chunks:
                    break
        else:
            assert isinstance(audio, EncodedAudio)
            self.received_seconds += len(audio.data[44:]) / BYTES_PER_SECOND  # the WAV as sent: its PCM body
        if outcome.kind == "transient":
            raise SpeechError(ErrorKind.SERVER, "scripted transient failure", provider=self.name)
        if outcome.kind == "permanent":
            raise SpeechError(ErrorKind.INVALID_INPUT, "scripted refusal", provider=self.name, retryable=False)
        return Transcript(text="ok", provider=self.name)

    async def check(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


outcomes = st.builds(Outcome, st.sampled_from(["ok", "transient", "permanent"]), st.integers(0, 12))
providers = st.tuples(st.booleans(), st.lists(outcomes, max_size=4))
CLIPS = {"2.5 s tone": tone_wav(440.0, 2.5), "1 s tone": tone_wav(600.0, 1.0), "silence": tone_wav(0.0, 1.5)}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chain=st.lists(providers, min_size=1, max_size=3), clip=st.sampled_from(list(CLIPS)),
       allowance=st.none() | st.floats(0.0, 8.0), max_seconds=st.sampled_from([2.0, 60.0]))
def test_usage_is_never_less_than_the_audio_providers_took(chain: list[tuple[bool, list[Outcome]]], clip: str,
                                                           allowance: float | None, max_seconds: float) -> None:
    recorders = [RecordingProvider(f"p{index}", takes_pcm, list(script)) for index, (takes_pcm, script) in enumerate(chain)]
    usage = AudioUsage()

    async def scenario() -> BaseException | None:
        converter = AudioConverter()
        service = SpeechService(transcribers=recorders, asr_chain=[r.name for r in recorders], converter=converter,
                                retrier=Retrier(RetryPolicy(attempts=3, base_delay=0.0, max_delay=0.0)))
        try:
            await service.transcribe(AudioClip(data=CLIPS[clip]),
                                     TranscribeOptions(max_seconds=max_seconds, allowance_seconds=allowance), meter=usage)
        except SpeechError as error:
            return error
        finally:
            converter.close()
        return None

    failure = asyncio.run(scenario())
    received = sum(recorder.received_seconds for recorder in recorders)
    assert usage.seconds >= received - 1e-9
    assert usage.seconds == pytest.approx(received, abs=1e-6)  # and no more: it is a measurement, not a guess
    for recorder in recorders:
        assert usage.by_provider.get(recorder.name, 0.0) == pytest.approx(recorder.received_seconds, abs=1e-6)
    if allowance is not None:
        assert received <= allowance + 1e-6
    if isinstance(failure, AudioError) or (clip == "2.5 s tone" and max_seconds == 2.0):
        assert received == 0  # refusals of the input happen before any provider hears a sample
    if isinstance(failure, AllowanceExceeded):
        assert allowance is not None


# ----------------------------------------------------------------------------- the real protocols, against the fake


@pytest.fixture
async def coze() -> AsyncIterator[FakeCoze]:
    async with FakeCoze() as fake:
        yield fake


def coze_service(fake: FakeCoze, retrier: Retrier) -> SpeechService:
    endpoint = CozeEndpoint(StaticToken(DEFAULT_TOKEN), fake.base_url, fake.ws_base_url, connect_timeout=5, read_timeout=10)
    return SpeechService(transcribers=[CozeFileTranscriber(endpoint), CozeStreamTranscriber(endpoint, result_timeout=10)],
                         asr_chain=["coze-stream", "coze"], retrier=retrier)


async def test_a_stream_broken_mid_way_counts_what_the_server_received_in_both_attempts(coze: FakeCoze,
                                                                                       fast_retrier: Retrier) -> None:
    coze.fail_next("ws_transcriptions", code=5000, after_appends=2)
    service = coze_service(coze, fast_retrier)
    usage = AudioUsage()
    transcript = await service.transcribe(AudioClip(data=make_tone("ogg", 440.0, 5.0)), TranscribeOptions(max_seconds=60),
                                          meter=usage, asr="coze-stream")
    await service.aclose()
    assert transcript.text == "tone 440 hz 5.0 s"
    sessions = coze.sessions_to("ws_transcriptions")
    assert len(sessions) == 2
    heard = sum(session.audio_bytes for session in sessions) / BYTES_PER_SECOND
    # The broken attempt's audio (two chunks, or more: a client faster than the fake may have
    # sent the whole note before the error reached it), then the whole note again.
    assert 5.0 < heard <= 10.0
    assert heard <= usage.seconds <= heard + 1.0  # a chunk taken while the socket broke may not have arrived


async def test_every_upload_attempt_counts_the_files_measured_length(coze: FakeCoze, fast_retrier: Retrier) -> None:
    coze.fail_next("transcriptions", code=5000)
    service = coze_service(coze, fast_retrier)
    usage = AudioUsage()
    # The sender declares one second; the file holds three.
    clip = AudioClip(data=make_tone("ogg", 440.0, 3.0), declared_seconds=1.0)
    await service.transcribe(clip, TranscribeOptions(max_seconds=60), meter=usage, asr="coze")
    await service.aclose()
    assert len(coze.calls_to("transcriptions")) == 2
    assert usage.by_provider == {"coze": pytest.approx(6.0, abs=0.05)}


async def test_audio_beyond_the_allowance_never_reaches_the_provider(coze: FakeCoze, fast_retrier: Retrier) -> None:
    service = coze_service(coze, fast_retrier)
    usage = AudioUsage()
    for asr in ("coze-stream", "coze"):
        with pytest.raises(AllowanceExceeded):
            await service.transcribe(AudioClip(data=make_tone("ogg", 440.0, 3.0), declared_seconds=1.0),
                                     TranscribeOptions(max_seconds=60, allowance_seconds=2.0), meter=usage, asr=asr)
    await service.aclose()
    assert coze.ws_sessions == [] and coze.rest_calls == []
    assert usage.seconds == 0


async def test_a_retry_may_not_spend_more_than_the_allowance(coze: FakeCoze, fast_retrier: Retrier) -> None:
    """Two seconds went out before the first attempt broke; a second whole attempt of the
    five-second note would pass the six-second allowance, so it is refused, not sent."""
    coze.fail_next("ws_transcriptions", code=5000, after_appends=2)
    service = coze_service(coze, fast_retrier)
    usage = AudioUsage()
    with pytest.raises(AllowanceExceeded):
        await service.transcribe(AudioClip(data=make_tone("ogg", 440.0, 5.0)),
                                 TranscribeOptions(max_seconds=60, allowance_seconds=6.0), meter=usage, asr="coze-stream")
    await service.aclose()
    heard = sum(session.audio_bytes for session in coze.ws_sessions) / BYTES_PER_SECOND
    assert len(coze.ws_sessions) == 1 and heard <= usage.seconds <= 6.0


# ----------------------------------------------------------------------------- through the plugin


@pytest.mark.parametrize("asr", ["coze", "coze-stream"])
async def test_a_note_lying_about_its_length_is_billed_for_its_real_length(coze: FakeCoze, fast_retrier: Retrier,
                                                                           asr: str) -> None:
    plugin = make_plugin(coze, fast_retrier, VOICEBRIDGE_ASR=asr, VOICEBRIDGE_DAILY_MINUTES="1")
    harness = Harness(coze, plugin)
    chat = MemoryChat()
    await plugin.handle_voice_note(harness.note(make_tone("ogg", 440.0, 8.0), seconds=1), chat)
    await plugin.bookkeeper.flush()  # usage is settled in the background
    usage = await plugin.store.usage(PRIVATE.platform, PRIVATE.id, today())
    await plugin.aclose()
    await plugin.service.aclose()
    assert chat.visible_texts() == ["tone 440 hz 8.0 s"]
    assert usage.audio_seconds == pytest.approx(8.0, abs=0.1)


async def test_a_note_beyond_the_rest_of_the_days_allowance_is_refused_unheard(coze: FakeCoze, fast_retrier: Retrier) -> None:
    plugin = make_plugin(coze, fast_retrier, VOICEBRIDGE_ASR="coze-stream", VOICEBRIDGE_DAILY_MINUTES="1")
    harness = Harness(coze, plugin)
    chat = MemoryChat()
    await plugin.handle_voice_note(harness.note(make_tone("ogg", 440.0, 50.0), seconds=50, key="first"), chat)
    # Declares 5 s (fits the 10 s left), holds 30 s: refused before a sample is sent.
    await plugin.handle_voice_note(harness.note(make_tone("ogg", 500.0, 30.0), seconds=5, key="second", message_id="8"), chat)
    await plugin.bookkeeper.flush()  # usage is settled in the background
    usage = await plugin.store.usage(PRIVATE.platform, PRIVATE.id, today())
    await plugin.aclose()
    await plugin.service.aclose()
    first, second = chat.visible_texts()
    assert first == "tone 440 hz 50.0 s"
    assert second.startswith("Daily transcription limit: this chat has used 50 seconds of its 1 minute today")
    assert len(coze.ws_sessions) == 1
    assert usage.audio_seconds == pytest.approx(50.0, abs=0.1)
