"""The speech service: the one object the plugins call.

It picks providers by name, prepares audio the way each provider's capabilities ask for,
retries transient failures with bounded exponential backoff, walks the fallback chain (skipping
providers that are unhealthy, see health.py), and reports every call to an observer (metrics).
Providers themselves only speak their protocol.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace

from .audio import DECODE_SLACK_SECONDS, SAMPLE_WIDTH, VOICE_NOTE_RATE, AudioConverter, AudioFacts, require_sound, wav_bytes
from .config import SpeechSettings
from .containers import OPUS_RATE, OggOpusLayout, ogg_opus_pages
from .coze_asr import CozeFileTranscriber
from .coze_asr_stream import CozeStreamTranscriber
from .coze_auth import CozeCredentials, JwtApp, StaticToken
from .coze_common import CozeEndpoint
from .coze_tts import CozeSpeechSynthesizer
from .coze_tts_stream import CozeStreamSynthesizer
from .errors import AudioError, AudioProblem, ErrorKind, InputFormatRefused, SpeechError
from .feishu_asr import FeishuStreamSettings, FeishuStreamTranscriber, TextMode
from .feishu_auth import FeishuClient
from .health import CredentialAlarm, ProviderHealth
from .languages import AUTO, first_refusal, honoured_by_all, language_code
from .metering import AllowanceExceeded, AudioMeter, MeteredRequest
from .models import (
    AudioClip,
    AudioFormat,
    EncodedAudio,
    OggOpusStream,
    PcmStream,
    SpeechAudio,
    SynthesizeOptions,
    TranscribeOptions,
    Transcript,
    Voice,
)
from .providers import StreamingTranscriber, Synthesizer, Transcriber
from .retry import Retrier
from .slots import StreamSlots
from .text import split_text

log = logging.getLogger(__name__)

# When a clip is beyond an upload provider's limits, the provider that takes it instead.
OVERSIZE_ROUTES = {"coze": "coze-stream"}
# Converted uploads (containers a provider does not take as-is) are 16 kHz mono WAV.
UPLOAD_CONVERSION_RATE = 16000
# Pieces of one long text synthesized at the same time.
SYNTHESIS_PARALLELISM = 3
# The bound on every decode when a request sets no max_seconds: nothing decodes unbounded.
CEILING_SECONDS = 6 * 3600.0
# Refusals that no retry or other provider would change.
FINAL_REFUSALS = (AudioError, AllowanceExceeded)


class SpeechService:
    def __init__(
        self,
        *,
        transcribers: Iterable[Transcriber] = (),
        synthesizers: Iterable[Synthesizer] = (),
        asr_chain: Sequence[str] = (),
        tts_chain: Sequence[str] = (),
        converter: AudioConverter | None = None,
        retrier: Retrier | None = None,
        default_language: str = AUTO,
        oversize_routes: Mapping[str, str] = OVERSIZE_ROUTES,
        health: ProviderHealth | None = None,
        credential_variables: Mapping[str, str] | None = None,
        closing: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        self.transcribers = {provider.name: provider for provider in transcribers}
        self.synthesizers = {provider.name: provider for provider in synthesizers}
        for name in asr_chain:
            if name not in self.transcribers:
                raise ValueError(f"ASR provider {name!r} is not available")
        for name in tts_chain:
            if name not in self.synthesizers:
                raise ValueError(f"TTS provider {name!r} is not available")
        self.asr_chain = tuple(asr_chain)
        self.tts_chain = tuple(tts_chain)
        self._owns_converter = converter is None
        self.converter = converter or AudioConverter()
        self.retrier = retrier or Retrier()
        self.default_language = default_language
        self.oversize_routes = dict(oversize_routes)
        self.health = health or ProviderHealth()
        # provider → the variables holding its credentials, for the operator when they are refused
        self.credentials = CredentialAlarm(credential_variables or {})
        self._closing = tuple(closing)  # what the providers share (Coze credentials), closed last
        # Providers that refused encoded input (Ogg/Opus) in this process: they get PCM from then on.
        self.pcm_only: set[str] = set()

    @classmethod
    def from_settings(cls, settings: SpeechSettings, *, retrier: Retrier | None = None,
                      converter: AudioConverter | None = None, stream_slots: StreamSlots | None = None) -> SpeechService:
        """Every provider the credentials allow (so ``--asr`` can pick any), chains from settings.
        ``stream_slots``: Feishu's tenant stream limit shared with other processes (default: this one's)."""
        retrier = retrier or Retrier()
        transcribers: list[Transcriber] = []
        synthesizers: list[Synthesizer] = []
        variables: dict[str, str] = {}
        closing: list[Callable[[], Awaitable[None]]] = []
        timeout = settings.provider_timeout
        if settings.has_coze_credentials:
            credentials = coze_credentials(settings)
            closing.append(credentials.aclose)
            endpoint = CozeEndpoint(credentials, settings.coze_api_base, settings.coze_ws_base,
                                    connect_timeout=min(10.0, timeout), read_timeout=timeout)
            transcribers += [CozeFileTranscriber(endpoint),
                             CozeStreamTranscriber(endpoint, result_timeout=timeout,
                                                   ogg_opus=settings.coze_stream_input == "ogg")]
            synthesizers += [CozeSpeechSynthesizer(endpoint, settings.coze_voice_id),
                             CozeStreamSynthesizer(endpoint, settings.coze_voice_id, audio_timeout=timeout)]
            variables |= {name: credentials.provider_variables for name in ("coze", "coze-stream")}
        if settings.feishu_app_id and settings.feishu_app_secret:
            client = FeishuClient(settings.feishu_app_id, settings.feishu_app_secret, settings.feishu_base_url,
                                  timeout=timeout, max_connections=settings.feishu_max_streams + 2)
            stream_settings = FeishuStreamSettings(chunk_ms=settings.feishu_chunk_ms, max_streams=settings.feishu_max_streams,
                                                   text_mode=TextMode(settings.feishu_text_mode))
            transcribers.append(FeishuStreamTranscriber(client, stream_settings, retrier, stream_slots))
            variables["feishu"] = "FEISHU_APP_ID / FEISHU_APP_SECRET"
        return cls(
            transcribers=transcribers,
            synthesizers=synthesizers,
            asr_chain=settings.asr_chain,
            tts_chain=settings.tts_chain,
            default_language=settings.language,
            retrier=retrier,
            converter=converter,
            credential_variables=variables,
            closing=closing,
        )

    @property
    def can_synthesize(self) -> bool:
        return bool(self.tts_chain)

    def _chain_languages(self) -> dict[str, frozenset[str]]:
        return {name: self.transcribers[name].capabilities.languages for name in self.asr_chain}

    @property
    def recognition_languages(self) -> tuple[str, ...]:
        """The language codes every provider of the ASR chain honours (``auto`` at least)."""
        return honoured_by_all(self._chain_languages())

    def language_refusal(self, language: str) -> tuple[str, tuple[str, ...]] | None:
        """``(provider, the languages it honours)`` for the first provider of the ASR chain that
        does not honour ``language`` (a neutral code); None when every one does."""
        return first_refusal(language, self._chain_languages())

    @property
    def streams_partials(self) -> bool:
        """Whether the primary ASR provider reports partial transcripts."""
        return bool(self.asr_chain) and self.transcribers[self.asr_chain[0]].capabilities.streaming

    # ----------------------------------------------------------------- transcription

    async def transcribe(self, clip: AudioClip, options: TranscribeOptions | None = None, *, asr: str | None = None,
                         meter: AudioMeter | None = None) -> Transcript:
        final: Transcript | None = None
        async for transcript in self.stream(clip, options, asr=asr, meter=meter):
            final = transcript
        assert final is not None and final.final
        return final

    async def stream(self, clip: AudioClip, options: TranscribeOptions | None = None, *,
                     asr: str | None = None, meter: AudioMeter | None = None) -> AsyncIterator[Transcript]:
        """Partial transcripts (streaming providers only), then exactly one final transcript.

        The clip's duration is known before any provider is called. Raises :class:`AudioError`
        for unusable or too long input and :class:`AllowanceExceeded` for audio beyond
        ``options.allowance_seconds``, both before the audio concerned leaves the machine; else
        the last provider's :class:`SpeechError` once the whole fallback chain failed.
        ``meter`` hears of every second handed to a provider, in every attempt.
        """
        options = replace(options or TranscribeOptions(), language=_neutral_language(options, self.default_language))
        chain = self._chain(asr, self.asr_chain, self.transcribers, "ASR")
        if asr is None:
            chain = self.health.order(chain)
        clip_facts = _ClipFacts(self.converter, clip, options.max_seconds or CEILING_SECONDS)
        request = MeteredRequest(meter, options.allowance_seconds)
        request.require((await clip_facts.facts()).seconds)
        failure: SpeechError | None = None
        for index, name in enumerate(chain):
            fallback_left = index < len(chain) - 1
            provider = self.transcribers[name]
            try:
                provider = await self._fitting_transcriber(provider, clip_facts)
                async for transcript in self._transcribe_with_retries(provider, clip_facts, options, request, fallback_left):
                    yield transcript
                self._outcome(provider, None)
                return
            except FINAL_REFUSALS:
                raise  # the input itself is unusable, or the allowance spent: no other provider would do better
            except SpeechError as error:
                self._outcome(provider, error)
                failure = error
                if fallback_left:
                    log.warning("ASR %s failed (%s); falling back", name, error.kind)
        assert failure is not None
        raise failure

    async def _fitting_transcriber(self, provider: Transcriber, clip: _ClipFacts) -> Transcriber:
        """``provider`` if the clip is within its limits, else its oversize route."""
        caps = provider.capabilities
        if caps.max_bytes is None and caps.max_seconds is None:
            return provider
        info = await clip.facts()
        upload_bytes = (clip.clip.size if info.container in caps.containers
                        else int(info.seconds * UPLOAD_CONVERSION_RATE * 2) + 44)
        too_long = caps.max_seconds is not None and info.seconds > caps.max_seconds
        too_big = caps.max_bytes is not None and upload_bytes > caps.max_bytes
        if not (too_long or too_big):
            return provider
        route = self.oversize_routes.get(provider.name)
        if route in self.transcribers:
            log.info("clip of %.0fs / %d bytes is beyond %s's limits; using %s", info.seconds, upload_bytes, provider.name, route)
            return self.transcribers[route]
        raise SpeechError(ErrorKind.TOO_LARGE, f"{info.seconds:.0f}s / {upload_bytes} bytes is beyond {provider.name}'s limits",
                          provider=provider.name, retryable=False)

    async def _transcribe_with_retries(self, provider: Transcriber, clip: _ClipFacts, options: TranscribeOptions,
                                       request: MeteredRequest, fallback_left: bool) -> AsyncIterator[Transcript]:
        """With another provider left in the chain, a transient failure moves on at once: a hung
        provider costs a note one provider timeout, not a timeout per retry."""
        options = self._supported_options(provider, options)
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                async for transcript in self._transcribe_once(provider, clip, options, request):
                    yield transcript
            except FINAL_REFUSALS:
                raise
            except SpeechError as error:
                delay = self.retrier.next_delay(provider.name, "transcribe", attempt, started, error,
                                                retry_transient=not fallback_left)
                if delay is None:
                    raise
                await asyncio.sleep(delay)
                continue
            self.retrier.succeeded(provider.name, "transcribe", started)
            return

    async def _transcribe_once(self, provider: Transcriber, clip: _ClipFacts, options: TranscribeOptions,
                               request: MeteredRequest) -> AsyncIterator[Transcript]:
        caps = provider.capabilities
        facts = await clip.facts()
        request.require(facts.seconds)
        if caps.pcm_sample_rate is not None:
            refusal: InputFormatRefused | None = None
            if self._takes_ogg_opus(provider, facts):
                try:
                    async with _clip_bytes(clip.clip) as data:
                        layout = await asyncio.to_thread(ogg_opus_pages, data, caps.pcm_chunk_seconds)
                        if layout is not None:
                            async for transcript in self._stream_ogg_opus(provider, clip, data, layout, options, request):
                                yield transcript
                            return
                except InputFormatRefused as error:
                    refusal = error
                    log.info("%s refused this note as Ogg/Opus (%s); sending it again as PCM", provider.name, error)
                    if error.refused_config:
                        self._refused_ogg_opus(provider, error)
                    request.require(facts.seconds)
            final: Transcript | None = None
            async with self.converter.pcm(clip.clip, caps.pcm_sample_rate, caps.pcm_chunk_seconds,
                                          max_seconds=clip.max_seconds) as decoded:
                heard = await require_sound(decoded, caps.pcm_sample_rate)
                audio = PcmStream(sample_rate=caps.pcm_sample_rate,
                                  chunks=_metered(heard, request, provider.name, caps.pcm_sample_rate))
                if caps.streaming and isinstance(provider, StreamingTranscriber):
                    async for final in provider.stream(audio, options):
                        yield final
                else:
                    yield (final := await provider.transcribe(audio, options))
            if refusal is not None and (not refusal.empty_answer or (final is not None and final.text)):
                # PCM got through (or was heard) where Ogg/Opus was not: the form's fault, not the note's.
                self._refused_ogg_opus(provider, refusal)
            return
        if not await clip.has_sound():
            raise AudioError(AudioProblem.SILENT, "the audio is silent")
        if facts.container in caps.containers:
            encoded = EncodedAudio(await clip.clip.read(), facts.container, facts.seconds)
        else:
            pcm = await self.converter.decode(clip.clip, UPLOAD_CONVERSION_RATE, max_seconds=clip.max_seconds)
            encoded = EncodedAudio(wav_bytes(pcm, UPLOAD_CONVERSION_RATE), "wav", facts.seconds)
        request.hand(provider.name, facts.seconds)  # sent as a whole from here on, whatever the answer
        yield await provider.transcribe(encoded, options)

    def _takes_ogg_opus(self, provider: Transcriber, facts: AudioFacts) -> bool:
        """Whether ``provider`` gets this clip's own Ogg pages rather than decoded PCM."""
        return (facts.container == "ogg" and AudioFormat.OGG_OPUS in provider.capabilities.stream_formats
                and provider.capabilities.streaming and isinstance(provider, StreamingTranscriber)
                and provider.name not in self.pcm_only)

    async def _stream_ogg_opus(self, provider: Transcriber, clip: _ClipFacts, data: bytes | mmap.mmap,
                               layout: OggOpusLayout, options: TranscribeOptions,
                               request: MeteredRequest) -> AsyncIterator[Transcript]:
        """An Ogg/Opus note handed over as it is: duration and sound are known before the call,
        exactly as for an upload (packets counted, decoded only to the first loud second). An
        empty answer for audio with sound is not taken as the truth: PCM gets a chance."""
        assert isinstance(provider, StreamingTranscriber)
        if layout.seconds > clip.max_seconds + DECODE_SLACK_SECONDS:  # its packets say more than its demuxer did
            raise AudioError(AudioProblem.TOO_LONG, f"the audio is longer than {clip.max_seconds:.0f} s")
        if not await clip.has_sound():
            raise AudioError(AudioProblem.SILENT, "the audio is silent")
        audio = OggOpusStream(channels=layout.channels, seconds=layout.seconds,
                              chunks=_metered_pages(data, layout, request, provider.name))
        final: Transcript | None = None
        async for transcript in provider.stream(audio, options):
            if transcript.final:
                final = transcript
            else:
                yield transcript
        if final is None or not final.text:
            raise InputFormatRefused(f"{provider.name} heard nothing in Ogg/Opus audio that has sound",
                                     provider=provider.name, empty_answer=True)
        yield final

    def _refused_ogg_opus(self, provider: Transcriber, refusal: InputFormatRefused) -> None:
        if provider.name in self.pcm_only:
            return
        self.pcm_only.add(provider.name)
        log.warning("ASR %s does not take Ogg/Opus input (%s): notes go to it as PCM until restart, decoded by the "
                    "bot (more CPU per note). Set COZE_STREAM_INPUT=pcm to skip the first attempt.", provider.name, refusal)

    @staticmethod
    def _supported_options(provider: Transcriber, options: TranscribeOptions) -> TranscribeOptions:
        caps = provider.capabilities
        if options.language not in caps.languages:
            honoured = ", ".join(sorted(caps.languages))
            raise SpeechError(ErrorKind.INVALID_INPUT, f"{provider.name} does not recognise language {options.language!r} "
                                                       f"(it honours only {honoured})", provider=provider.name, retryable=False)
        if options.hot_words and not caps.hot_words:
            log.debug("%s takes no hot words; sending without them", provider.name)
            options = replace(options, hot_words=())
        return options

    # ----------------------------------------------------------------- synthesis

    async def synthesize(self, text: str, options: SynthesizeOptions | None = None, *, tts: str | None = None) -> SpeechAudio:
        """Speak ``text`` of any length: split to the provider's limit, synthesized, joined."""
        options = options or SynthesizeOptions()
        text = text.strip()
        if not text:
            raise SpeechError(ErrorKind.INVALID_INPUT, "there is no text to speak", retryable=False)
        chain = self._chain(tts, self.tts_chain, self.synthesizers, "TTS")
        if tts is None:
            chain = self.health.order(chain)
        failure: SpeechError | None = None
        for index, name in enumerate(chain):
            fallback_left = index < len(chain) - 1
            provider = self.synthesizers[name]
            try:
                audio = await self._synthesize_with(provider, text, options, fallback_left)
            except SpeechError as error:
                self._outcome(provider, error)
                failure = error
                if fallback_left:
                    log.warning("TTS %s failed (%s); falling back", name, error.kind)
                continue
            self._outcome(provider, None)
            return audio
        assert failure is not None
        raise failure

    async def _synthesize_with(self, provider: Synthesizer, text: str, options: SynthesizeOptions,
                               fallback_left: bool) -> SpeechAudio:
        caps = provider.capabilities
        if options.sample_rate not in caps.sample_rates:
            options = replace(options, sample_rate=24000)
        pieces = split_text(text, caps.max_text_bytes)
        if len(pieces) == 1 and options.format in caps.formats:
            audio = await self.retrier.call(provider.name, "synthesize", lambda: provider.synthesize(pieces[0], options),
                                            retry_transient=not fallback_left)
            _require_audio(audio, provider.name)
            if audio.format is AudioFormat.OGG_OPUS:
                # Whatever form the provider returned (chained Ogg, say): one stream whose stated
                # length is its real length, or players show the wrong duration.
                data, seconds = await self.converter.single_stream_voice_note(audio.data)
                return replace(audio, data=data, sample_rate=VOICE_NOTE_RATE, seconds=seconds)
            if audio.seconds is None:
                info = await self.converter.analyse(AudioClip(data=audio.data))
                audio = replace(audio, seconds=info.seconds)
            return audio
        # Several pieces, or a format the provider cannot make: ask for PCM, join, encode once.
        pcm_options = replace(options, format=AudioFormat.PCM)
        slots = asyncio.Semaphore(SYNTHESIS_PARALLELISM)

        async def speak(piece: str) -> SpeechAudio:
            async with slots:
                part = await self.retrier.call(provider.name, "synthesize", lambda: provider.synthesize(piece, pcm_options),
                                               retry_transient=not fallback_left)
                _require_audio(part, provider.name)
                return part

        parts = await asyncio.gather(*(speak(piece) for piece in pieces))
        pcm = b"".join(part.data for part in parts)
        data = await self.converter.encode(pcm, options.sample_rate, options.format)
        rate = VOICE_NOTE_RATE if options.format is AudioFormat.OGG_OPUS else options.sample_rate
        return SpeechAudio(data=data, format=options.format, sample_rate=rate, seconds=len(pcm) / 2 / options.sample_rate)

    async def voices(self, *, tts: str | None = None) -> list[Voice]:
        chain = self._chain(tts, self.tts_chain, self.synthesizers, "TTS")
        provider = self.synthesizers[chain[0]]
        try:
            voices = await self.retrier.call(provider.name, "voices", provider.voices)
        except SpeechError as error:
            self._outcome(provider, error)
            raise
        self._outcome(provider, None)
        return voices

    # ----------------------------------------------------------------- shared

    def _outcome(self, provider: Transcriber | Synthesizer, error: SpeechError | None) -> None:
        """How a provider's call ended, after its retries: its health and its credentials."""
        if error is None:
            self.health.succeeded(provider.name)
        else:
            self.health.failed(provider.name, error, provider.check)
        self.credentials.outcome(provider.name, error)

    @staticmethod
    def _chain(requested: str | None, configured: Sequence[str], available: Mapping[str, object], kind: str) -> Sequence[str]:
        if requested is not None:
            if requested not in available:
                names = ", ".join(available) or "none"
                raise SpeechError(ErrorKind.INVALID_INPUT, f"{kind} provider {requested!r} is not configured (available: {names})",
                                  retryable=False)
            return (requested,)
        if not configured:
            raise SpeechError(ErrorKind.INVALID_INPUT, f"no {kind} provider is configured", retryable=False)
        return configured

    async def check(self) -> dict[str, SpeechError | None]:
        """Probe every provider in the chains: ``{"ASR coze": None, "TTS coze": error, …}``."""
        probes: dict[str, Transcriber | Synthesizer] = {f"ASR {name}": self.transcribers[name] for name in self.asr_chain}
        probes.update({f"TTS {name}": self.synthesizers[name] for name in self.tts_chain})

        async def outcome(provider: Transcriber | Synthesizer) -> SpeechError | None:
            try:
                await provider.check()
            except SpeechError as error:
                return error
            return None

        results = await asyncio.gather(*(outcome(provider) for provider in probes.values()))
        return dict(zip(probes, results))

    async def aclose(self) -> None:
        await self.health.aclose()
        providers: list[Transcriber | Synthesizer] = [*self.transcribers.values(), *self.synthesizers.values()]
        for provider in providers:
            await provider.aclose()
        for close in self._closing:
            await close()
        if self._owns_converter:
            self.converter.close()


def coze_credentials(settings: SpeechSettings) -> CozeCredentials:
    """The Coze credentials the settings name (the agent responder uses them too)."""
    if settings.coze_jwt is not None:
        app = settings.coze_jwt
        return JwtApp(app.client_id, app.private_key, app.public_key_id, settings.coze_api_base,
                      timeout=settings.provider_timeout)
    assert settings.coze_api_token is not None
    return StaticToken(settings.coze_api_token)


def _neutral_language(options: TranscribeOptions | None, default: str) -> str:
    """The request's language as a neutral code (older names such as ``common`` are understood)."""
    requested = (options and options.language) or default
    language = language_code(requested)
    if language is None:
        raise SpeechError(ErrorKind.INVALID_INPUT, f"unknown recognition language {requested!r}", retryable=False)
    return language


def _require_audio(audio: SpeechAudio, provider: str) -> None:
    if not audio.data:
        raise SpeechError(ErrorKind.SERVER, "the provider returned no audio", provider=provider, retryable=False)


async def _metered(chunks: AsyncIterator[bytes], request: MeteredRequest, provider: str,
                   sample_rate: int) -> AsyncIterator[bytes]:
    """PCM as a provider takes it, each chunk reported to the request's meter. At the allowance
    the stream is cut: codec padding past it is dropped, more audio refuses the request."""
    bytes_per_second = sample_rate * SAMPLE_WIDTH
    overflow, slack = 0, int(DECODE_SLACK_SECONDS * sample_rate) * SAMPLE_WIDTH
    async for chunk in chunks:
        remaining = request.remaining()
        if remaining is not None and len(chunk) > (room := int(remaining * sample_rate) * SAMPLE_WIDTH):
            overflow += len(chunk) - room
            if overflow > slack:
                raise AllowanceExceeded(request.allowance_seconds or 0.0,
                                        request.handed_seconds + overflow / bytes_per_second)
            chunk = chunk[:room]
            if not chunk:
                continue
        request.hand(provider, len(chunk) / bytes_per_second)
        yield chunk


async def _metered_pages(data: bytes | mmap.mmap, layout: OggOpusLayout, request: MeteredRequest,
                        provider: str) -> AsyncIterator[bytes]:
    """An Ogg/Opus file's pages as a provider takes them, each chunk's audio (counted from its
    packets) reported to the request's meter first. Pages cannot be cut: past the allowance by
    more than the codec slack, the request is refused before the chunk leaves."""
    pre_skip = layout.pre_skip
    for start, end, samples in layout.chunks:
        seconds = max(0, samples - pre_skip) / OPUS_RATE
        pre_skip = max(0, pre_skip - samples)
        allowance, needed = request.allowance_seconds, request.handed_seconds + seconds
        if allowance is not None and needed > allowance + DECODE_SLACK_SECONDS:
            raise AllowanceExceeded(allowance, needed)
        request.hand(provider, seconds)
        yield data[start:end]


@asynccontextmanager
async def _clip_bytes(clip: AudioClip) -> AsyncIterator[bytes | mmap.mmap]:
    """The clip's encoded bytes: in memory as they are, a file mapped (read as pages are sent)."""
    if clip.data is not None:
        yield clip.data
        return
    assert clip.path is not None
    file = await asyncio.to_thread(clip.path.open, "rb")
    try:
        mapped = await asyncio.to_thread(mmap.mmap, file.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            yield mapped
        finally:
            mapped.close()
    finally:
        file.close()


class _ClipFacts:
    """A clip plus what is known of it, each fact found at most once per request and only when
    needed; every decode bounded by ``max_seconds``."""

    def __init__(self, converter: AudioConverter, clip: AudioClip, max_seconds: float) -> None:
        self.converter = converter
        self.clip = clip
        self.max_seconds = max_seconds
        self._facts: AudioFacts | None = None
        self._sound: bool | None = None

    async def facts(self) -> AudioFacts:
        if self._facts is None:
            self._facts = await self.converter.inspect(self.clip, self.max_seconds)
        return self._facts

    async def has_sound(self) -> bool:
        if self._sound is None:
            self._sound = await self.converter.has_sound(self.clip, self.max_seconds)
        return self._sound
