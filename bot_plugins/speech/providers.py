"""The two narrow interfaces every provider implements, one per direction.

Providers contain protocol code only: no retries, no audio conversion, no fallbacks — the
:class:`~voicebridge.speech.service.SpeechService` does those once for all of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

from .models import (
    ProviderAudio,
    SpeechAudio,
    SynthesizeOptions,
    SynthesizerCapabilities,
    TranscribeOptions,
    TranscriberCapabilities,
    Transcript,
    Voice,
)


@runtime_checkable
class Transcriber(Protocol):
    name: str
    capabilities: TranscriberCapabilities

    async def transcribe(self, audio: ProviderAudio, options: TranscribeOptions) -> Transcript:
        """Recognise the whole clip; ``audio`` has the shape ``capabilities`` asked for."""
        ...

    async def check(self) -> None:
        """Prove the service answers and accepts the credentials, without real work; raise
        :class:`SpeechError` otherwise."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class StreamingTranscriber(Transcriber, Protocol):
    def stream(self, audio: ProviderAudio, options: TranscribeOptions) -> AsyncIterator[Transcript]:
        """Partial transcripts (each the full text so far) as they arrive, then one final."""
        ...


@runtime_checkable
class Synthesizer(Protocol):
    name: str
    capabilities: SynthesizerCapabilities

    async def synthesize(self, text: str, options: SynthesizeOptions) -> SpeechAudio:
        """Speak ``text`` (at most ``capabilities.max_text_bytes``) in ``options.format``,
        which is always one of ``capabilities.formats``."""
        ...

    async def voices(self) -> list[Voice]: ...

    async def check(self) -> None:
        """As :meth:`Transcriber.check`."""
        ...

    async def aclose(self) -> None: ...


async def last_transcript(stream: AsyncIterator[Transcript]) -> Transcript:
    """Drain a transcript stream and return its final element."""
    final: Transcript | None = None
    async for transcript in stream:
        final = transcript
    if final is None:
        raise RuntimeError("transcript stream ended without a result")
    return final


def as_dict(value: object) -> dict[str, Any]:
    """``value`` if it is a JSON object, else empty: a malformed field never crashes a client."""
    return value if isinstance(value, dict) else {}
