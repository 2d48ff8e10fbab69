"""An in-process speech-to-text provider, for cheap ordering and concurrency tests (like LiveKit's
``FakeSTT``): no server, no socket. It consumes the PCM the real service decodes, hears it with
the same listener as the fake servers (``"tone 440 hz 2.0 s"``), and lets a test hold a note in
"the provider" until it releases it, so orderings are set by conditions, never by timing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from voicebridge.speech.models import ProviderAudio, PcmStream, TranscribeOptions, Transcript, TranscriberCapabilities
from tests.fakes.recognition import PcmListener
from tests.violations import watch

SAMPLE_RATE = 16_000


@dataclass
class Recognition:
    """One call: what was heard, and the gate it waits on before answering."""

    heard: str
    released: asyncio.Event = field(default_factory=asyncio.Event)


class FakeTranscriber:
    """A :class:`~voicebridge.speech.providers.Transcriber`. ``hold`` (a transcript, e.g.
    ``"tone 300 hz 8.0 s"``) keeps every call that heard it waiting until :meth:`release`."""

    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.capabilities = TranscriberCapabilities(pcm_sample_rate=SAMPLE_RATE)
        self.calls: list[Recognition] = []
        self.hold: set[str] = set()
        self.in_flight = 0
        self.most_in_flight = 0
        self.violations: list[str] = []  # any left at the end of a test fails it (tests/violations.py)
        watch(self)

    async def transcribe(self, audio: ProviderAudio, options: TranscribeOptions) -> Transcript:
        if not isinstance(audio, PcmStream) or audio.sample_rate != SAMPLE_RATE:
            self.violations.append(f"{self.name}: asked for {SAMPLE_RATE} Hz PCM, got {audio!r}")
            raise AssertionError(self.violations[-1])
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            listener = PcmListener(SAMPLE_RATE)
            async for chunk in audio.chunks:
                listener.feed(chunk)
            call = Recognition(listener.transcript())
            self.calls.append(call)
            if call.heard in self.hold:
                await call.released.wait()
            return Transcript(call.heard, provider=self.name, seconds=listener.seconds)
        finally:
            self.in_flight -= 1

    def heard(self) -> list[str]:
        return [call.heard for call in self.calls]

    def release(self, heard: str) -> None:
        self.hold.discard(heard)
        for call in self.calls:
            if call.heard == heard:
                call.released.set()

    async def check(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
