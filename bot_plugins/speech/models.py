"""Plain data passed between the speech service, the providers and the plugins."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from .languages import AUTO


@dataclass(frozen=True)
class AudioClip:
    """Encoded audio as it arrived: bytes in memory or a file on disk, plus what the sender claimed.

    ``mime_type``, ``filename`` and ``declared_seconds`` come from the platform or the user and
    are hints only; the audio itself is inspected before anything relies on it.
    """

    data: bytes | None = None
    path: Path | None = None
    mime_type: str | None = None
    filename: str | None = None
    declared_seconds: float | None = None

    def __post_init__(self) -> None:
        if (self.data is None) == (self.path is None):
            raise ValueError("an AudioClip needs exactly one of data or path")

    @classmethod
    def from_path(cls, path: str | Path, **hints: object) -> AudioClip:
        path = Path(path)
        return cls(path=path, filename=path.name, **hints)  # type: ignore[arg-type]

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.path.stat().st_size  # type: ignore[union-attr]

    async def read(self) -> bytes:
        if self.data is not None:
            return self.data
        return await asyncio.to_thread(self.path.read_bytes)  # type: ignore[union-attr]

    async def head(self, count: int = 64) -> bytes:
        """The first bytes, enough to recognise the container."""
        if self.data is not None:
            return self.data[:count]

        def read_head() -> bytes:
            with self.path.open("rb") as file:  # type: ignore[union-attr]
                return file.read(count)

        return await asyncio.to_thread(read_head)


@dataclass(frozen=True)
class EncodedAudio:
    """A whole file a provider accepts as-is (upload-style providers)."""

    data: bytes
    container: str  # "ogg", "mp3", "wav", "m4a", "mp4", …
    seconds: float

    @property
    def filename(self) -> str:
        return f"audio.{self.container}"


@dataclass
class PcmStream:
    """Mono 16-bit little-endian PCM at ``sample_rate``, delivered chunk by chunk (streaming providers)."""

    sample_rate: int
    chunks: AsyncIterator[bytes]
    channels: int = 1
    bit_depth: int = 16


@dataclass
class OggOpusStream:
    """An Ogg/Opus note's own pages, in order and unchanged, chunk by chunk (streaming providers
    that take Ogg/Opus as it is, see ``TranscriberCapabilities.stream_formats``): nothing decoded.
    ``sample_rate`` is Opus's decoding rate, 48 kHz, whatever rate the recording came from."""

    channels: int
    seconds: float
    chunks: AsyncIterator[bytes]
    sample_rate: int = 48000


ProviderAudio = EncodedAudio | PcmStream | OggOpusStream


@dataclass(frozen=True)
class TranscribeOptions:
    """Per-request recognition settings; ``None`` leaves the provider's default."""

    language: str | None = None  # a neutral code (languages.py); None: the configured default
    hot_words: tuple[str, ...] = ()
    context: str | None = None
    remove_disfluencies: bool | None = None
    inverse_text_normalization: bool | None = None
    punctuation: bool | None = None
    max_seconds: float | None = None  # longer audio is refused, whatever its sender declared
    # Audio this request may hand to providers in all, attempts and fallbacks included (a
    # chat's remaining daily allowance); see ``voicebridge.speech.metering``.
    allowance_seconds: float | None = None


@dataclass(frozen=True)
class Transcript:
    text: str
    final: bool = True
    provider: str | None = None
    seconds: float | None = None  # duration of the audio it covers, when known


class AudioFormat(StrEnum):
    """Synthesis output formats (Coze's ``response_format`` names)."""

    OGG_OPUS = "ogg_opus"  # a voice note: what Telegram and Discord render as a voice bubble
    MP3 = "mp3"
    WAV = "wav"
    PCM = "pcm"  # mono s16le


@dataclass(frozen=True)
class SynthesizeOptions:
    voice_id: str | None = None
    speed: float = 1.0
    format: AudioFormat = AudioFormat.OGG_OPUS
    sample_rate: int = 24000


@dataclass(frozen=True)
class SpeechAudio:
    data: bytes
    format: AudioFormat
    sample_rate: int
    seconds: float | None = None  # None: the provider could not tell (compressed output)


@dataclass(frozen=True)
class Voice:
    id: str
    name: str
    language_code: str = ""
    language_name: str = ""
    is_system: bool = True
    model_type: str = ""


@dataclass(frozen=True)
class TranscriberCapabilities:
    """What a transcriber accepts; the service checks these before calling it."""

    containers: frozenset[str] = frozenset()  # encoded containers uploaded as-is
    pcm_sample_rate: int | None = None  # when set, the provider consumes a PcmStream at this rate…
    pcm_chunk_seconds: float = 0.2  # …in chunks of this much audio
    # Encoded input such a provider also takes as it is, instead of decoded PCM (an Ogg/Opus
    # voice note's own pages: no decoding in the bot at all), in chunks of pcm_chunk_seconds.
    stream_formats: frozenset[AudioFormat] = frozenset()
    max_bytes: int | None = None
    max_seconds: float | None = None
    streaming: bool = False  # yields partial transcripts while audio is sent
    hot_words: bool = False
    languages: frozenset[str] = frozenset({AUTO})  # neutral codes it honours (languages.py)

    @property
    def takes_pcm(self) -> bool:
        return self.pcm_sample_rate is not None


@dataclass(frozen=True)
class SynthesizerCapabilities:
    formats: frozenset[AudioFormat] = field(default_factory=lambda: frozenset({AudioFormat.PCM}))
    sample_rates: frozenset[int] = frozenset({8000, 16000, 22050, 24000, 32000, 44100, 48000})
    max_text_bytes: int = 1024  # UTF-8 bytes per request
    streaming: bool = False
    lists_voices: bool = False
