"""The speech service against in-process providers: audio prepared as each provider's
capabilities ask, oversize routes, retries and fallbacks, options, synthesis splitting and
joining, probes and closing.

No server, no socket, no subprocess: clips are WAV (decoded in process) and providers are
scripted objects that record what they were given (issue 17: cheap tests that kill the
mutants of service.py that only the slow end-to-end tests, or none, reached).
"""

from __future__ import annotations

import asyncio
import io
import logging
import wave
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import av
import pytest

from voicebridge.speech.audio import DECODE_SLACK_SECONDS, AudioConverter
from voicebridge.speech.config import SpeechSettings
from voicebridge.speech.coze_auth import JwtApp, StaticToken
from voicebridge.speech.errors import AudioError, AudioProblem, ErrorKind, SpeechError
from voicebridge.speech.feishu_asr import TextMode
from voicebridge.speech.health import ProviderHealth
from voicebridge.speech.metering import AllowanceExceeded, AudioUsage, MeteredRequest
from voicebridge.speech.models import (
    AudioClip,
    AudioFormat,
    EncodedAudio,
    PcmStream,
    ProviderAudio,
    SpeechAudio,
    SynthesizeOptions,
    SynthesizerCapabilities,
    TranscribeOptions,
    TranscriberCapabilities,
    Transcript,
    Voice,
)
from voicebridge.speech.retry import Retrier, RetryPolicy
from voicebridge.speech.service import SpeechService, _metered, coze_credentials
from tests.audio_tools import tone_pcm, tone_wav
from tests.test_speech_core import RecordingObserver

TONE = tone_wav(440.0, 1.0)  # 16 kHz mono WAV: 32,044 bytes
TONE_8K = tone_wav(440.0, 1.0, sample_rate=8000)  # 16,044 bytes; 32,044 once converted for upload
SILENCE = tone_wav(0.0, 1.0)
TRANSIENT = SpeechError(ErrorKind.SERVER, "scripted server error")
PERMANENT = SpeechError(ErrorKind.INVALID_INPUT, "scripted refusal", retryable=False)


def instant_retrier(observer: RecordingObserver | None = None) -> Retrier:
    return Retrier(RetryPolicy(attempts=3, base_delay=0.0, max_delay=0.0), observer)


def ogg_opus_tone(seconds: float) -> bytes:
    """A one-stream Ogg/Opus voice note, encoded in process (PyAV), as a TTS provider returns it."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=48000, layout="mono")
        pcm = tone_pcm(440.0, seconds, 48000)
        frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
        frame.planes[0].update(pcm)
        frame.sample_rate, frame.pts = 48000, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return buffer.getvalue()


def wav_rate_and_seconds(data: bytes) -> tuple[int, float]:
    with wave.open(io.BytesIO(data)) as reader:
        return reader.getframerate(), reader.getnframes() / reader.getframerate()


@dataclass
class Received:
    audio: ProviderAudio
    options: TranscribeOptions
    pcm: bytes = b""
    chunk_sizes: list[int] = field(default_factory=list)


@dataclass
class ScriptedTranscriber:
    """Raises ``failures`` in turn, then answers; records what it was handed."""

    name: str
    capabilities: TranscriberCapabilities = field(
        default_factory=lambda: TranscriberCapabilities(containers=frozenset({"wav"})))
    failures: list[SpeechError] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    checks: int = 0
    closed: bool = False

    async def _take(self, audio: ProviderAudio, options: TranscribeOptions) -> Received:
        received = Received(audio, options)
        self.received.append(received)
        if isinstance(audio, PcmStream):
            async for chunk in audio.chunks:
                received.chunk_sizes.append(len(chunk))
                received.pcm += chunk
        if self.failures:
            raise self.failures.pop(0)
        return received

    async def transcribe(self, audio: ProviderAudio, options: TranscribeOptions) -> Transcript:
        await self._take(audio, options)
        return Transcript(f"{self.name} heard it", provider=self.name)

    async def check(self) -> None:
        self.checks += 1
        if self.failures:
            raise self.failures[0]

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class StreamingScriptedTranscriber(ScriptedTranscriber):
    partials: tuple[str, ...] = ("he", "hello")

    def stream(self, audio: ProviderAudio, options: TranscribeOptions) -> AsyncIterator[Transcript]:
        async def transcripts() -> AsyncIterator[Transcript]:
            await self._take(audio, options)
            for text in self.partials:
                yield Transcript(text, final=False, provider=self.name)
            yield Transcript(f"{self.name} streamed it", provider=self.name)

        return transcripts()


def pcm_capabilities(**extra: object) -> TranscriberCapabilities:
    return TranscriberCapabilities(pcm_sample_rate=16000, pcm_chunk_seconds=0.25, **extra)  # type: ignore[arg-type]


@dataclass
class ScriptedSynthesizer:
    """Speaks each text as ``len(text) × 10 ms`` of a tone in the asked format; records the requests."""

    name: str
    capabilities: SynthesizerCapabilities = field(default_factory=lambda: SynthesizerCapabilities(
        formats=frozenset({AudioFormat.PCM, AudioFormat.WAV}), sample_rates=frozenset({16000, 24000})))
    failures: list[SpeechError] = field(default_factory=list)
    requests: list[tuple[str, SynthesizeOptions]] = field(default_factory=list)
    states_seconds: bool = True
    in_flight: int = 0
    most_in_flight: int = 0
    empty: bool = False
    voice_list: list[Voice] = field(default_factory=lambda: [Voice("v1", "Voice one")])
    closed: bool = False
    answer: SpeechAudio | None = None  # given: returned as it is

    async def synthesize(self, text: str, options: SynthesizeOptions) -> SpeechAudio:
        self.requests.append((text, options))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            for _ in range(5):  # let every piece that may run at once start
                await asyncio.sleep(0)
        finally:
            self.in_flight -= 1
        if self.failures:
            raise self.failures.pop(0)
        if self.answer is not None:
            return self.answer
        seconds = len(text) * 0.01
        pcm = b"" if self.empty else tone_pcm(440.0, seconds, options.sample_rate)
        data = pcm if options.format is AudioFormat.PCM else tone_wav(440.0, seconds, options.sample_rate)
        return SpeechAudio(b"" if self.empty else data, options.format, options.sample_rate,
                           seconds if self.states_seconds else None)

    async def voices(self) -> list[Voice]:
        if self.failures:
            raise self.failures.pop(0)
        return self.voice_list

    async def check(self) -> None:
        if self.failures:
            raise self.failures[0]

    async def aclose(self) -> None:
        self.closed = True


@pytest.fixture
def converter() -> Iterator[AudioConverter]:
    shared = AudioConverter()
    yield shared
    shared.close()


def service_of(converter: AudioConverter, transcribers: list[ScriptedTranscriber] = [],
               synthesizers: list[ScriptedSynthesizer] = [], **extra: object) -> SpeechService:
    extra.setdefault("retrier", instant_retrier())
    return SpeechService(transcribers=transcribers, synthesizers=synthesizers,
                         asr_chain=[provider.name for provider in transcribers],
                         tts_chain=[provider.name for provider in synthesizers],
                         converter=converter, **extra)  # type: ignore[arg-type]


def service_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "voicebridge.speech.service"]


# ----------------------------------------------------------------------------- construction and description


def test_chains_may_only_name_providers_the_service_has() -> None:
    with pytest.raises(ValueError, match="ASR provider 'feishu'"):
        SpeechService(transcribers=[ScriptedTranscriber("coze")], asr_chain=["coze", "feishu"])
    with pytest.raises(ValueError, match="TTS provider 'coze'"):
        SpeechService(synthesizers=[ScriptedSynthesizer("coze-stream")], tts_chain=["coze"])


async def test_the_service_describes_its_chains(converter: AudioConverter) -> None:
    english_too = ScriptedTranscriber("first", TranscriberCapabilities(languages=frozenset({"auto", "en", "zh"})))
    streaming = StreamingScriptedTranscriber("second", pcm_capabilities(streaming=True, languages=frozenset({"auto", "en"})))
    service = service_of(converter, [english_too, streaming])
    assert not service.can_synthesize and not service.streams_partials
    assert service.recognition_languages == ("auto", "en")
    assert service.language_refusal("en") is None
    assert service.language_refusal("zh") == ("second", ("auto", "en"))
    streaming_first = service_of(converter, [streaming], [ScriptedSynthesizer("tts")])
    assert streaming_first.can_synthesize and streaming_first.streams_partials
    assert not service_of(converter).streams_partials


def test_from_settings_builds_every_provider_the_credentials_allow() -> None:
    problems: list[str] = []
    settings = SpeechSettings.from_values({"COZE_API_TOKEN": "pat_x", "FEISHU_APP_ID": "cli_a", "FEISHU_APP_SECRET": "s",
                                           "VOICEBRIDGE_ASR": "feishu,coze", "COZE_WS_BASE": "wss://ws.coze.com",
                                           "VOICEBRIDGE_PROVIDER_TIMEOUT": "5", "FEISHU_MAX_STREAMS": "7",
                                           "FEISHU_CHUNK_MS": "100", "FEISHU_TEXT_MODE": "delta"}, problems)
    assert not problems
    retrier = instant_retrier()
    slots = asyncio.Semaphore(3)  # Feishu's tenant limit, shared with other processes
    lent = AudioConverter()
    service = SpeechService.from_settings(settings, retrier=retrier, converter=lent, stream_slots=slots)
    try:
        assert service.converter is lent and not service._owns_converter
        assert set(service.transcribers) == {"coze", "coze-stream", "feishu"}
        assert set(service.synthesizers) == {"coze", "coze-stream"}
        assert (service.asr_chain, service.tts_chain, service.default_language) == (("feishu", "coze"), ("coze",), "auto")
        assert service.retrier is retrier
        assert service.credentials.variables == {"coze": "COZE_API_TOKEN", "coze-stream": "COZE_API_TOKEN",
                                                 "feishu": "FEISHU_APP_ID / FEISHU_APP_SECRET"}
        # VOICEBRIDGE_PROVIDER_TIMEOUT reaches every provider (connecting: at most 10 s).
        stream_asr, stream_tts = service.transcribers["coze-stream"], service.synthesizers["coze-stream"]
        endpoint = stream_asr.endpoint  # type: ignore[attr-defined]
        assert (endpoint.connect_timeout, endpoint.read_timeout, endpoint.api_base, endpoint.ws_base) == (
            5.0, 5.0, "https://api.coze.cn", "wss://ws.coze.com")
        assert isinstance(endpoint.credentials, StaticToken) and asyncio.run(endpoint.credentials.token()) == "pat_x"
        assert stream_asr.result_timeout == 5.0 and stream_tts.audio_timeout == 5.0  # type: ignore[attr-defined]
        assert service.transcribers["coze"].rest.endpoint == endpoint  # type: ignore[attr-defined]
        assert service.synthesizers["coze"].catalogue.default_voice_id is None  # type: ignore[attr-defined]
        feishu = service.transcribers["feishu"]
        assert feishu.settings.max_streams == 7 and feishu.settings.chunk_ms == 100  # type: ignore[attr-defined]
        assert feishu.settings.text_mode is TextMode.DELTA and feishu.retrier is retrier  # type: ignore[attr-defined]
        # Wiring only the objects can show (private): the credentials, the timeout, the shared limit.
        client = feishu.client  # type: ignore[attr-defined]
        assert (client.app_id, client.app_secret, client._timeouts["read"]) == ("cli_a", "s", 5.0)
        assert feishu._stream_slots is slots  # type: ignore[attr-defined]
    finally:
        asyncio.run(service.aclose())
        lent.close()


def test_half_of_the_feishu_credentials_builds_no_feishu_provider() -> None:
    problems: list[str] = []
    settings = SpeechSettings.from_values({"COZE_API_TOKEN": "pat_x", "FEISHU_APP_ID": "cli_a"}, problems)
    assert problems  # refused at start-up; a service built from such settings anyway has no Feishu
    service = SpeechService.from_settings(settings)
    try:
        assert "feishu" not in service.transcribers
    finally:
        asyncio.run(service.aclose())


def test_a_long_provider_timeout_still_connects_within_ten_seconds() -> None:
    problems: list[str] = []
    settings = SpeechSettings.from_values({"COZE_API_TOKEN": "pat_x", "COZE_VOICE_ID": "v7",
                                           "VOICEBRIDGE_PROVIDER_TIMEOUT": "90", "VOICEBRIDGE_LANGUAGE": "en",
                                           "VOICEBRIDGE_ASR": "coze-stream"}, problems)
    service = SpeechService.from_settings(settings)
    try:
        endpoint = service.transcribers["coze-stream"].endpoint  # type: ignore[attr-defined]
        assert (endpoint.connect_timeout, endpoint.read_timeout) == (10.0, 90.0)
        assert service.synthesizers["coze-stream"].catalogue.default_voice_id == "v7"  # type: ignore[attr-defined]
        assert service.synthesizers["coze"].catalogue.default_voice_id == "v7"  # type: ignore[attr-defined]
        assert "feishu" not in service.transcribers and isinstance(service.retrier, Retrier)
        assert not problems and service.default_language == "en"
    finally:
        asyncio.run(service.aclose())


def test_coze_credentials_are_the_static_token_or_the_jwt_app() -> None:
    problems: list[str] = []
    static = coze_credentials(SpeechSettings.from_values({"COZE_API_TOKEN": "pat_x"}, problems))
    assert isinstance(static, StaticToken) and asyncio.run(static.token()) == "pat_x"
    from tests.fakes.coze import FakeJwtApp
    app, private_key = FakeJwtApp.generate()
    jwt_settings = SpeechSettings.from_values({"COZE_JWT_CLIENT_ID": app.client_id, "COZE_JWT_PRIVATE_KEY": private_key,
                                               "COZE_JWT_PUBLIC_KEY_ID": app.public_key_id,
                                               "VOICEBRIDGE_PROVIDER_TIMEOUT": "7"}, problems)
    jwt = coze_credentials(jwt_settings)
    assert not problems
    assert isinstance(jwt, JwtApp) and (jwt.client_id, jwt.public_key_id) == (app.client_id, app.public_key_id)
    assert jwt._client.timeout.read == 7.0  # the token endpoint is held to the provider timeout too
    asyncio.run(jwt.aclose())
    # The service closes the credentials its providers share, after the providers.
    service = SpeechService.from_settings(jwt_settings)
    credentials = service.transcribers["coze"].rest.endpoint.credentials  # type: ignore[attr-defined]
    asyncio.run(service.aclose())
    assert credentials._client.is_closed


# ----------------------------------------------------------------------------- audio as each provider takes it


async def test_an_upload_provider_gets_the_file_itself_when_it_takes_its_container(converter: AudioConverter) -> None:
    provider = ScriptedTranscriber("upload")
    usage = AudioUsage()
    transcript = await service_of(converter, [provider]).transcribe(AudioClip(data=TONE), meter=usage)
    assert transcript.text == "upload heard it" and transcript.final
    [received] = provider.received
    assert isinstance(received.audio, EncodedAudio)
    assert (received.audio.data, received.audio.container) == (TONE, "wav")
    assert received.audio.seconds == pytest.approx(1.0, abs=0.01)
    assert usage.by_provider == {"upload": pytest.approx(1.0, abs=0.01)}


async def test_an_upload_provider_gets_16_khz_wav_for_a_container_it_does_not_take(converter: AudioConverter) -> None:
    provider = ScriptedTranscriber("upload", TranscriberCapabilities(containers=frozenset({"mp3"})))
    await service_of(converter, [provider]).transcribe(AudioClip(data=TONE_8K))
    [received] = provider.received
    assert isinstance(received.audio, EncodedAudio) and received.audio.container == "wav"
    rate, seconds = wav_rate_and_seconds(received.audio.data)
    assert rate == 16000 and seconds == pytest.approx(1.0, abs=0.02)
    assert received.audio.seconds == pytest.approx(1.0, abs=0.01)


async def test_a_pcm_provider_gets_the_decoded_audio_at_its_rate_in_its_chunks(converter: AudioConverter) -> None:
    provider = ScriptedTranscriber("pcm", pcm_capabilities())
    usage = AudioUsage()
    await service_of(converter, [provider]).transcribe(AudioClip(data=TONE_8K), meter=usage)
    [received] = provider.received
    assert isinstance(received.audio, PcmStream) and received.audio.sample_rate == 16000
    assert len(received.pcm) == pytest.approx(32000, abs=320)
    assert received.chunk_sizes[0] == 8000  # 0.25 s at 16 kHz
    assert usage.by_provider == {"pcm": pytest.approx(len(received.pcm) / 32000)}
    assert received.options == TranscribeOptions(language="auto")


async def test_a_streaming_provider_reports_partials_then_one_final(converter: AudioConverter) -> None:
    provider = StreamingScriptedTranscriber("live", pcm_capabilities(streaming=True))
    service = service_of(converter, [provider])
    texts = [(transcript.text, transcript.final) async for transcript in service.stream(AudioClip(data=TONE))]
    assert texts == [("he", False), ("hello", False), ("live streamed it", True)]
    [received] = provider.received
    assert isinstance(received.audio, PcmStream) and received.options == TranscribeOptions(language="auto")
    assert len(received.pcm) == pytest.approx(32000, abs=320)
    assert (await service.transcribe(AudioClip(data=TONE))).text == "live streamed it"


async def test_a_provider_that_does_not_stream_is_asked_for_the_whole_transcript(converter: AudioConverter) -> None:
    provider = StreamingScriptedTranscriber("batch", pcm_capabilities(streaming=False))
    texts = [transcript.text async for transcript in service_of(converter, [provider]).stream(AudioClip(data=TONE))]
    assert texts == ["batch heard it"]
    assert provider.received[0].options == TranscribeOptions(language="auto")


@pytest.mark.parametrize("capabilities", [TranscriberCapabilities(containers=frozenset({"wav"})), pcm_capabilities()],
                         ids=["upload", "pcm"])
async def test_silence_is_refused_before_any_provider_hears_it(converter: AudioConverter,
                                                               capabilities: TranscriberCapabilities) -> None:
    first, second = ScriptedTranscriber("first", capabilities), ScriptedTranscriber("second")
    usage = AudioUsage()
    with pytest.raises(AudioError) as caught:
        await service_of(converter, [first, second]).transcribe(AudioClip(data=SILENCE), meter=usage)
    assert caught.value.problem is AudioProblem.SILENT
    if not capabilities.takes_pcm:
        assert caught.value.message == "the audio is silent"  # the detail the operator's log shows
    assert (len(first.received), len(second.received), usage.seconds) == (0, 0, 0.0)


# ----------------------------------------------------------------------------- limits and oversize routes


@pytest.mark.parametrize(("capabilities", "clip", "fits"), [
    (TranscriberCapabilities(containers=frozenset({"wav"}), max_seconds=1.0), TONE, True),
    (TranscriberCapabilities(containers=frozenset({"wav"}), max_seconds=0.9), TONE, False),
    (TranscriberCapabilities(containers=frozenset({"wav"}), max_bytes=len(TONE)), TONE, True),
    (TranscriberCapabilities(containers=frozenset({"wav"}), max_bytes=len(TONE) - 1), TONE, False),
    # Not taken as it is: measured as the 16 kHz WAV it is converted to, not the file.
    (TranscriberCapabilities(containers=frozenset({"mp3"}), max_bytes=32044), TONE_8K, True),
    (TranscriberCapabilities(containers=frozenset({"mp3"}), max_bytes=32043), TONE_8K, False),
    (TranscriberCapabilities(containers=frozenset({"wav"}), max_bytes=20000), TONE_8K, True),
])
async def test_a_clip_beyond_the_limits_goes_to_the_oversize_route(converter: AudioConverter, capabilities: TranscriberCapabilities,
                                                                   clip: bytes, fits: bool,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="voicebridge.speech.service")
    limited, route = ScriptedTranscriber("coze", capabilities), ScriptedTranscriber("coze-stream", pcm_capabilities())
    service = SpeechService(transcribers=[limited, route], asr_chain=["coze"], converter=converter, retrier=instant_retrier())
    transcript = await service.transcribe(AudioClip(data=clip))
    assert transcript.provider == ("coze" if fits else "coze-stream")
    assert (len(limited.received), len(route.received)) == ((1, 0) if fits else (0, 1))
    if not fits:  # the operator learns why another provider served the note
        upload = len(clip) if clip is TONE else 32044
        assert service_log(caplog) == [
            f"clip of 1s / {upload} bytes is beyond coze's limits; using coze-stream"]


async def test_without_a_route_a_clip_beyond_the_limits_is_too_large(converter: AudioConverter) -> None:
    limited = ScriptedTranscriber("feishu", TranscriberCapabilities(containers=frozenset({"wav"}), max_seconds=0.5))
    with pytest.raises(SpeechError) as caught:
        await service_of(converter, [limited]).transcribe(AudioClip(data=TONE))
    assert (caught.value.kind, caught.value.provider, caught.value.retryable) == (ErrorKind.TOO_LARGE, "feishu", False)
    assert "1s / 32044 bytes is beyond feishu's limits" in str(caught.value) and not limited.received
    other_routes = SpeechService(transcribers=[limited], asr_chain=["feishu"], converter=converter,
                                 oversize_routes={"feishu": "coze-stream"})  # a route to a provider it lacks
    with pytest.raises(SpeechError, match="beyond feishu's limits"):
        await other_routes.transcribe(AudioClip(data=TONE))


async def test_a_clip_longer_than_the_request_allows_is_refused_unheard(converter: AudioConverter) -> None:
    provider = ScriptedTranscriber("upload")
    with pytest.raises(AudioError) as caught:
        await service_of(converter, [provider]).transcribe(AudioClip(data=TONE), TranscribeOptions(max_seconds=0.5))
    assert caught.value.problem is AudioProblem.TOO_LONG and not provider.received


async def test_a_clip_beyond_the_allowance_is_refused_and_no_other_provider_tries(converter: AudioConverter) -> None:
    first, second = ScriptedTranscriber("first"), ScriptedTranscriber("second")
    with pytest.raises(AllowanceExceeded):
        await service_of(converter, [first, second]).transcribe(AudioClip(data=TONE),
                                                                TranscribeOptions(allowance_seconds=0.5))
    assert not first.received and not second.received


async def test_a_retry_beyond_what_is_left_of_the_allowance_is_refused(converter: AudioConverter) -> None:
    first = ScriptedTranscriber("first", failures=[TRANSIENT])
    second = ScriptedTranscriber("second")
    usage = AudioUsage()
    with pytest.raises(AllowanceExceeded):
        await service_of(converter, [first]).transcribe(AudioClip(data=TONE), TranscribeOptions(allowance_seconds=1.5),
                                                        meter=usage)
    assert len(first.received) == 1 and usage.seconds == pytest.approx(1.0, abs=0.01)
    assert not second.received


# ----------------------------------------------------------------------------- the metered PCM stream


async def chunks_of(*sizes: int) -> AsyncIterator[bytes]:
    for size in sizes:
        yield b"\x01\x00" * (size // 2)


async def test_the_pcm_stream_is_cut_at_the_allowance_and_padding_past_it_is_dropped() -> None:
    rate = 16000
    request = MeteredRequest(AudioUsage(), 1.0)  # 32,000 bytes
    slack = int(DECODE_SLACK_SECONDS * rate) * 2
    sizes = [sum(len(chunk) for chunk in [c]) async for c in _metered(chunks_of(20000, 12000 + slack), request, "p", rate)]
    assert sizes == [20000, 12000] and request.handed_seconds == pytest.approx(1.0)
    request_empty_room = MeteredRequest(None, 0.5)
    kept = [c async for c in _metered(chunks_of(16000, 100), request_empty_room, "p", rate)]
    assert [len(c) for c in kept] == [16000]  # the chunk with no room left is dropped, not sent empty


async def test_more_than_codec_padding_past_the_allowance_refuses_the_request() -> None:
    rate = 16000
    slack = int(DECODE_SLACK_SECONDS * rate) * 2
    request = MeteredRequest(None, 1.0)
    with pytest.raises(AllowanceExceeded) as caught:
        async for _ in _metered(chunks_of(32000, slack + 2), request, "p", rate):
            pass
    assert caught.value.allowance_seconds == 1.0
    assert caught.value.needed_seconds == pytest.approx(1.0 + (slack + 2) / (rate * 2))
    unlimited = MeteredRequest(None, None)
    assert len([c async for c in _metered(chunks_of(32000, 32000), unlimited, "p", rate)]) == 2


async def drain(chunks: AsyncIterator[bytes]) -> int:
    return sum([len(chunk) async for chunk in chunks])


async def test_padding_past_the_allowance_is_added_up_over_chunks() -> None:
    rate = 16000
    slack = int(DECODE_SLACK_SECONDS * rate) * 2
    half = slack // 2 // 2 * 2 + 2  # two of these pass the slack, one does not
    with pytest.raises(AllowanceExceeded):
        await drain(_metered(chunks_of(32000, half, half), MeteredRequest(None, 1.0), "p", rate))
    # Chunks past the allowance are dropped but still counted: the stream goes on to the end.
    with pytest.raises(AllowanceExceeded):
        await drain(_metered(chunks_of(16000, 100, slack), MeteredRequest(None, 0.5), "p", rate))
    assert await drain(_metered(chunks_of(16000, 100, 100), MeteredRequest(None, 0.5), "p", rate)) == 16000


async def test_an_allowance_of_zero_is_reported_as_zero() -> None:
    slack = int(DECODE_SLACK_SECONDS * 16000) * 2
    with pytest.raises(AllowanceExceeded) as caught:
        await drain(_metered(chunks_of(slack + 2), MeteredRequest(None, 0.0), "p", 16000))
    assert caught.value.allowance_seconds == 0.0


# ----------------------------------------------------------------------------- retries and fallbacks


async def test_the_last_provider_left_is_retried_and_the_result_reported(converter: AudioConverter) -> None:
    provider = ScriptedTranscriber("only", failures=[TRANSIENT, TRANSIENT])
    observer = RecordingObserver()
    service = service_of(converter, [provider], retrier=instant_retrier(observer))
    assert (await service.transcribe(AudioClip(data=TONE))).provider == "only"
    assert len(provider.received) == 3 and service.health.healthy("only")
    assert [(name, operation, error) for name, operation, _, error in observer.finished] == [
        ("only", "transcribe", TRANSIENT), ("only", "transcribe", TRANSIENT), ("only", "transcribe", None)]
    assert [(name, operation, attempt) for name, operation, attempt, _, _ in observer.retries] == [
        ("only", "transcribe", 1), ("only", "transcribe", 2)]


async def test_the_last_provider_left_gives_up_after_the_policys_attempts(converter: AudioConverter) -> None:
    provider = ScriptedTranscriber("only", failures=[TRANSIENT] * 5)
    with pytest.raises(SpeechError) as caught:
        await service_of(converter, [provider]).transcribe(AudioClip(data=TONE))
    assert caught.value is TRANSIENT and len(provider.received) == 3


async def test_with_a_fallback_left_a_transient_failure_moves_on_at_once(converter: AudioConverter,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="voicebridge.speech.service")
    first, second = ScriptedTranscriber("first", failures=[TRANSIENT] * 3), ScriptedTranscriber("second")
    service = service_of(converter, [first, second])
    assert (await service.transcribe(AudioClip(data=TONE))).provider == "second"
    assert service_log(caplog) == ["ASR first failed (server); falling back"]
    assert (len(first.received), len(second.received)) == (1, 1)
    assert not service.health.healthy("first")
    assert (await service.transcribe(AudioClip(data=TONE))).provider == "second"  # skipped while it cools down
    assert len(first.received) == 1
    # Asked for by name, an unhealthy provider is still tried.
    assert (await service.transcribe(AudioClip(data=TONE), asr="first")).provider == "first"
    assert service.health.healthy("first")  # and its success ends the cool-down
    await service.aclose()


async def test_when_every_provider_fails_the_last_error_is_raised(converter: AudioConverter) -> None:
    last = SpeechError(ErrorKind.QUOTA, "out of quota", retryable=False)
    first, second = ScriptedTranscriber("first", failures=[PERMANENT]), ScriptedTranscriber("second", failures=[last])
    service = service_of(converter, [first, second])
    with pytest.raises(SpeechError) as caught:
        await service.transcribe(AudioClip(data=TONE))
    assert caught.value is last and service.health.healthy("first") and service.health.healthy("second")


async def test_an_unhealthy_provider_is_probed_with_its_own_check(converter: AudioConverter) -> None:
    first, second = ScriptedTranscriber("first", failures=[TRANSIENT]), ScriptedTranscriber("second")
    service = service_of(converter, [first, second], health=ProviderHealth(cool_down=0.0))
    await service.transcribe(AudioClip(data=TONE))
    async with asyncio.timeout(30):  # the probe runs at the end of a cool-down of 0 s
        while not service.health.healthy("first"):
            await asyncio.sleep(0.01)
    assert first.checks == 1
    await service.aclose()


async def test_refused_credentials_are_reported_and_cleared_by_a_success(converter: AudioConverter) -> None:
    refused = SpeechError(ErrorKind.AUTH, "bad token", retryable=False)
    first, second = ScriptedTranscriber("coze", failures=[refused]), ScriptedTranscriber("feishu")
    service = service_of(converter, [first, second], credential_variables={"coze": "COZE_API_TOKEN"})
    assert (await service.transcribe(AudioClip(data=TONE))).provider == "feishu"
    problem = service.credentials.problem()
    assert problem is not None and problem.startswith("coze refused the credentials (COZE_API_TOKEN)")
    await service.transcribe(AudioClip(data=TONE), asr="coze")
    assert service.credentials.problem() is None


async def test_a_provider_that_does_not_honour_the_language_hands_over_to_one_that_does(converter: AudioConverter) -> None:
    auto_only = ScriptedTranscriber("auto-only")
    english = ScriptedTranscriber("english", TranscriberCapabilities(containers=frozenset({"wav"}),
                                                                     languages=frozenset({"auto", "en"})))
    service = service_of(converter, [auto_only, english])
    transcript = await service.transcribe(AudioClip(data=TONE), TranscribeOptions(language="EN"))
    assert transcript.provider == "english" and not auto_only.received
    assert english.received[0].options.language == "en"
    with pytest.raises(SpeechError) as caught:
        await service.transcribe(AudioClip(data=TONE), TranscribeOptions(language="en"), asr="auto-only")
    assert (caught.value.kind, caught.value.retryable, caught.value.provider) == (ErrorKind.INVALID_INPUT, False, "auto-only")
    assert caught.value.message == "auto-only does not recognise language 'en' (it honours only auto)"
    with pytest.raises(SpeechError) as caught:
        await service.transcribe(AudioClip(data=TONE), TranscribeOptions(language="zh"), asr="english")
    assert caught.value.message == "english does not recognise language 'zh' (it honours only auto, en)"


async def test_the_configured_language_is_the_default_and_unknown_ones_are_refused(converter: AudioConverter) -> None:
    provider = ScriptedTranscriber("zh", TranscriberCapabilities(containers=frozenset({"wav"}), languages=frozenset({"auto", "zh"})))
    service = service_of(converter, [provider], default_language="zh")
    await service.transcribe(AudioClip(data=TONE))
    await service.transcribe(AudioClip(data=TONE), TranscribeOptions(hot_words=("voicebridge",)))
    assert [received.options.language for received in provider.received] == ["zh", "zh"]
    with pytest.raises(SpeechError) as caught:
        await service.transcribe(AudioClip(data=TONE), TranscribeOptions(language="klingon"))
    assert (caught.value.kind, caught.value.retryable) == (ErrorKind.INVALID_INPUT, False)
    assert caught.value.message == "unknown recognition language 'klingon'"
    assert len(provider.received) == 2


async def test_hot_words_reach_only_providers_that_take_them(converter: AudioConverter,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="voicebridge.speech.service")
    plain = ScriptedTranscriber("plain")
    hinted = ScriptedTranscriber("hinted", TranscriberCapabilities(containers=frozenset({"wav"}), hot_words=True))
    service = service_of(converter, [plain, hinted])
    options = TranscribeOptions(hot_words=("Coze", "Feishu"), context="a call")
    await service.transcribe(AudioClip(data=TONE), options, asr="plain")
    await service.transcribe(AudioClip(data=TONE), options, asr="hinted")
    assert plain.received[0].options.hot_words == () and plain.received[0].options.context == "a call"
    assert hinted.received[0].options.hot_words == ("Coze", "Feishu")
    assert service_log(caplog) == ["plain takes no hot words; sending without them"]


async def test_a_provider_must_be_configured_to_be_asked_for(converter: AudioConverter) -> None:
    service = service_of(converter, [ScriptedTranscriber("coze"), ScriptedTranscriber("feishu")])
    with pytest.raises(SpeechError) as caught:
        await service.transcribe(AudioClip(data=TONE), asr="whisper")
    assert str(caught.value) == "ASR provider 'whisper' is not configured (available: coze, feishu)"
    assert (caught.value.kind, caught.value.retryable) == (ErrorKind.INVALID_INPUT, False)
    with pytest.raises(SpeechError, match=r"TTS provider 'coze' is not configured \(available: none\)"):
        await service.synthesize("hello", tts="coze")
    with pytest.raises(SpeechError, match="no TTS provider is configured"):
        await service.synthesize("hello")
    with pytest.raises(SpeechError, match="no TTS provider is configured"):
        await service.voices()
    with pytest.raises(SpeechError) as caught:
        await service_of(converter).transcribe(AudioClip(data=TONE))
    assert (caught.value.message, caught.value.kind, caught.value.retryable) == (
        "no ASR provider is configured", ErrorKind.INVALID_INPUT, False)


# ----------------------------------------------------------------------------- synthesis


async def test_a_short_text_is_spoken_in_one_request_in_the_asked_format(converter: AudioConverter) -> None:
    provider = ScriptedSynthesizer("tts")
    audio = await service_of(converter, synthesizers=[provider]).synthesize(
        "  hello there  ", SynthesizeOptions(format=AudioFormat.WAV, sample_rate=16000))
    assert [text for text, _ in provider.requests] == ["hello there"]
    assert (audio.format, audio.sample_rate, audio.seconds) == (AudioFormat.WAV, 16000, pytest.approx(0.11))
    assert wav_rate_and_seconds(audio.data) == (16000, pytest.approx(0.11, abs=0.001))


async def test_a_voice_note_from_the_provider_is_given_as_one_stream_with_its_measured_length(converter: AudioConverter) -> None:
    note = ogg_opus_tone(1.0)
    provider = ScriptedSynthesizer("tts", SynthesizerCapabilities(formats=frozenset({AudioFormat.OGG_OPUS})),
                                   answer=SpeechAudio(note, AudioFormat.OGG_OPUS, 24000, None))
    audio = await service_of(converter, synthesizers=[provider]).synthesize("hello")
    assert provider.requests[0][1].format is AudioFormat.OGG_OPUS
    assert (audio.data, audio.format, audio.sample_rate) == (note, AudioFormat.OGG_OPUS, 48000)  # already one stream: kept
    assert audio.seconds == pytest.approx(1.0, abs=0.03)


async def test_audio_of_unstated_length_is_measured(converter: AudioConverter) -> None:
    provider = ScriptedSynthesizer("tts", states_seconds=False)
    audio = await service_of(converter, synthesizers=[provider]).synthesize(
        "x" * 50, SynthesizeOptions(format=AudioFormat.WAV, sample_rate=16000))
    assert audio.seconds == pytest.approx(0.5, abs=0.02)


async def test_a_sample_rate_the_provider_lacks_becomes_24_khz(converter: AudioConverter) -> None:
    provider = ScriptedSynthesizer("tts")
    audio = await service_of(converter, synthesizers=[provider]).synthesize(
        "hello", SynthesizeOptions(format=AudioFormat.WAV, sample_rate=44100))
    assert provider.requests[0][1].sample_rate == 24000 and audio.sample_rate == 24000


async def test_a_long_text_is_spoken_in_pieces_at_most_three_at_once_and_joined_in_order(converter: AudioConverter) -> None:
    provider = ScriptedSynthesizer("tts", SynthesizerCapabilities(formats=frozenset({AudioFormat.PCM, AudioFormat.WAV}),
                                                                  sample_rates=frozenset({16000}), max_text_bytes=12))
    sentences = ["One two.", "Three four.", "Five six.", "Seven.", "Eight nine.", "Ten."]
    audio = await service_of(converter, synthesizers=[provider]).synthesize(
        " ".join(sentences), SynthesizeOptions(format=AudioFormat.WAV, sample_rate=16000))
    pieces = [text for text, _ in provider.requests]
    assert len(pieces) > 3 and " ".join(pieces).split() == " ".join(sentences).split()
    assert all(options.format is AudioFormat.PCM for _, options in provider.requests)
    assert provider.most_in_flight == 3
    expected_seconds = sum(len(piece) * 0.01 for piece in pieces)
    assert audio.format is AudioFormat.WAV and audio.sample_rate == 16000
    assert audio.seconds == pytest.approx(expected_seconds, abs=0.001)
    rate, seconds = wav_rate_and_seconds(audio.data)
    assert rate == 16000 and seconds == pytest.approx(expected_seconds, abs=0.001)
    expected_pcm = b"".join(tone_pcm(440.0, len(piece) * 0.01, 16000) for piece in pieces)
    assert audio.data[44:] == expected_pcm  # the pieces' audio, in the text's order


PIECES = SynthesizerCapabilities(formats=frozenset({AudioFormat.PCM, AudioFormat.WAV}), sample_rates=frozenset({16000}),
                                 max_text_bytes=8)
LONG_TEXT = "One two. Three four. Five six."


async def test_a_piece_of_a_long_text_is_retried_by_the_last_provider_left(converter: AudioConverter) -> None:
    observer = RecordingObserver()
    provider = ScriptedSynthesizer("tts", PIECES, failures=[TRANSIENT])
    service = service_of(converter, synthesizers=[provider], retrier=instant_retrier(observer))
    audio = await service.synthesize(LONG_TEXT, SynthesizeOptions(format=AudioFormat.WAV, sample_rate=16000))
    pieces = {text for text, _ in provider.requests}
    assert len(provider.requests) == len(pieces) + 1 and audio.seconds == pytest.approx(
        sum(len(piece) for piece in pieces) * 0.01)
    assert {(name, operation) for name, operation, _, _ in observer.finished} == {("tts", "synthesize")}


async def test_with_a_fallback_left_a_failed_piece_hands_the_text_over_at_once(converter: AudioConverter) -> None:
    first, second = ScriptedSynthesizer("first", PIECES, failures=[TRANSIENT]), ScriptedSynthesizer("second", PIECES)
    service = service_of(converter, synthesizers=[first, second])
    await service.synthesize(LONG_TEXT, SynthesizeOptions(format=AudioFormat.WAV, sample_rate=16000))
    assert second.requests and not service.health.healthy("first")
    await service.aclose()


async def test_a_format_the_provider_cannot_make_is_encoded_from_its_pcm(converter: AudioConverter) -> None:
    provider = ScriptedSynthesizer("tts", SynthesizerCapabilities(formats=frozenset({AudioFormat.PCM}),
                                                                  sample_rates=frozenset({16000})))
    audio = await service_of(converter, synthesizers=[provider]).synthesize(
        "hello", SynthesizeOptions(format=AudioFormat.WAV, sample_rate=16000))
    assert provider.requests[0][1].format is AudioFormat.PCM
    assert audio.format is AudioFormat.WAV and wav_rate_and_seconds(audio.data) == (16000, pytest.approx(0.05, abs=0.001))


async def test_there_must_be_text_to_speak(converter: AudioConverter) -> None:
    provider = ScriptedSynthesizer("tts")
    with pytest.raises(SpeechError) as caught:
        await service_of(converter, synthesizers=[provider]).synthesize(" \n ")
    assert (caught.value.kind, caught.value.retryable) == (ErrorKind.INVALID_INPUT, False) and not provider.requests
    assert caught.value.message == "there is no text to speak"


@pytest.mark.parametrize("pieces", [1, 2], ids=["one piece", "several pieces"])
async def test_no_audio_from_a_provider_is_a_failure_and_the_next_one_speaks(converter: AudioConverter, pieces: int) -> None:
    capabilities = SynthesizerCapabilities(formats=frozenset({AudioFormat.PCM, AudioFormat.WAV}),
                                           sample_rates=frozenset({16000}), max_text_bytes=8)
    mute, voice = ScriptedSynthesizer("mute", capabilities, empty=True), ScriptedSynthesizer("voice", capabilities)
    service = service_of(converter, synthesizers=[mute, voice])
    text = "hello" if pieces == 1 else "hello there"
    audio = await service.synthesize(text, SynthesizeOptions(format=AudioFormat.WAV, sample_rate=16000))
    assert len(mute.requests) == pieces and audio.seconds == pytest.approx(len(text.replace(" ", "")) * 0.01, abs=0.011)
    with pytest.raises(SpeechError) as caught:
        await service.synthesize(text, SynthesizeOptions(format=AudioFormat.WAV, sample_rate=16000), tts="mute")
    assert (caught.value.kind, caught.value.retryable, caught.value.provider) == (ErrorKind.SERVER, False, "mute")
    assert caught.value.message == "the provider returned no audio"  # what the operator's log shows


async def test_synthesis_falls_back_retries_the_last_provider_and_raises_its_error(converter: AudioConverter) -> None:
    refused = SpeechError(ErrorKind.AUTH, "bad token", retryable=False)
    first = ScriptedSynthesizer("coze", failures=[refused])
    second = ScriptedSynthesizer("coze-stream", failures=[TRANSIENT, TRANSIENT])
    observer = RecordingObserver()
    service = service_of(converter, synthesizers=[first, second], credential_variables={"coze": "COZE_API_TOKEN"},
                         retrier=instant_retrier(observer))
    audio = await service.synthesize("hello", SynthesizeOptions(format=AudioFormat.WAV, sample_rate=16000))
    assert audio.seconds == pytest.approx(0.05) and (len(first.requests), len(second.requests)) == (1, 3)
    assert [(name, operation) for name, operation, _, _ in observer.finished] == [("coze", "synthesize")] + [
        ("coze-stream", "synthesize")] * 3
    assert "COZE_API_TOKEN" in (service.credentials.problem() or "")
    await service.synthesize("hello", SynthesizeOptions(format=AudioFormat.WAV, sample_rate=16000), tts="coze")
    assert service.credentials.problem() is None
    last = SpeechError(ErrorKind.QUOTA, "no quota", retryable=False)
    first.failures, second.failures = [PERMANENT], [last]
    with pytest.raises(SpeechError) as caught:
        await service.synthesize("hello")
    assert caught.value is last


async def test_with_a_fallback_left_a_transient_synthesis_failure_moves_on_and_the_provider_cools_down(
        converter: AudioConverter, caplog: pytest.LogCaptureFixture) -> None:
    first, second = ScriptedSynthesizer("first", failures=[TRANSIENT] * 3), ScriptedSynthesizer("second")
    service = service_of(converter, synthesizers=[first, second])
    with caplog.at_level(logging.WARNING, logger="voicebridge.speech.service"):
        await service.synthesize("hello", SynthesizeOptions(format=AudioFormat.WAV, sample_rate=16000))
    assert service_log(caplog) == ["TTS first failed (server); falling back"]
    assert (len(first.requests), len(second.requests)) == (1, 1) and not service.health.healthy("first")
    await service.synthesize("hello", SynthesizeOptions(format=AudioFormat.WAV, sample_rate=16000))
    assert len(first.requests) == 1
    await service.aclose()


async def test_voices_come_from_the_first_synthesizer_and_failures_are_reported(converter: AudioConverter) -> None:
    first, second = ScriptedSynthesizer("coze"), ScriptedSynthesizer("other", voice_list=[Voice("v2", "Two")])
    observer = RecordingObserver()
    service = service_of(converter, synthesizers=[first, second], credential_variables={"coze": "COZE_API_TOKEN"},
                         retrier=instant_retrier(observer))
    assert [voice.id for voice in await service.voices()] == ["v1"]
    assert [(name, operation) for name, operation, _, _ in observer.finished] == [("coze", "voices")]
    assert [voice.id for voice in await service.voices(tts="other")] == ["v2"]
    first.failures = [SpeechError(ErrorKind.AUTH, "bad token", retryable=False)]
    with pytest.raises(SpeechError):
        await service.voices()
    assert service.credentials.problem() is not None
    await service.voices()
    assert service.credentials.problem() is None


# ----------------------------------------------------------------------------- probes and closing


async def test_check_probes_every_provider_of_both_chains(converter: AudioConverter) -> None:
    broken = SpeechError(ErrorKind.AUTH, "bad token")
    transcriber, spare = ScriptedTranscriber("coze", failures=[broken]), ScriptedTranscriber("spare")
    synthesizer = ScriptedSynthesizer("coze")
    service = SpeechService(transcribers=[transcriber, spare], synthesizers=[synthesizer], asr_chain=["coze"],
                            tts_chain=["coze"], converter=converter)
    assert await service.check() == {"ASR coze": broken, "TTS coze": None}
    assert (transcriber.checks, spare.checks) == (1, 0)


async def test_closing_closes_every_provider_what_they_share_and_only_an_owned_converter(converter: AudioConverter) -> None:
    closed: list[str] = []

    async def close_credentials() -> None:
        closed.append("credentials")

    transcriber, synthesizer = ScriptedTranscriber("asr"), ScriptedSynthesizer("tts")
    service = SpeechService(transcribers=[transcriber], synthesizers=[synthesizer], asr_chain=["asr"], tts_chain=["tts"],
                            converter=converter, closing=[close_credentials])
    await service.aclose()
    assert transcriber.closed and synthesizer.closed and closed == ["credentials"]
    # The converter was lent, not owned: it still works.
    assert (await converter.inspect(AudioClip(data=TONE), 60.0)).seconds == pytest.approx(1.0, abs=0.01)
    owner = SpeechService(health=ProviderHealth())
    assert owner._owns_converter
    closing = owner.converter
    await owner.aclose()
    if closing._workers is not None:  # in-process decoding: its workers are stopped
        with pytest.raises(Exception):
            await closing.inspect(AudioClip(data=TONE), 60.0)
