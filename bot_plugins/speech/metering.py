"""Metering: how much audio was handed to providers, and the allowance a request may not pass.

Every attempt counts, whatever its outcome: a provider that received 100 s and then failed,
timed out or was refused has processed (and billed) 100 s. The service reports what it hands
over, as it hands it over — PCM chunks as a streaming provider takes them, a whole file's
measured duration as it is uploaded — so a meter never reads less than what left the machine.

    usage = AudioUsage()
    options = TranscribeOptions(max_seconds=1800, allowance_seconds=remaining_today)
    try:
        transcript = await service.transcribe(clip, options, meter=usage)
    finally:
        record(usage.seconds)  # success, failure or refusal alike
"""

from __future__ import annotations

from collections import defaultdict
from typing import Protocol

from .errors import ErrorKind, SpeechError


class AudioMeter(Protocol):
    def handed(self, provider: str, seconds: float) -> None:
        """``seconds`` of audio were just handed to ``provider`` (called once per upload attempt,
        or once per PCM chunk a streaming provider takes)."""
        ...


class AudioUsage:
    """A meter that adds everything up, in total and per provider."""

    def __init__(self) -> None:
        self.by_provider: dict[str, float] = defaultdict(float)

    def handed(self, provider: str, seconds: float) -> None:
        self.by_provider[provider] += seconds

    @property
    def seconds(self) -> float:
        return sum(self.by_provider.values())


class AllowanceExceeded(SpeechError):
    """The request would hand providers more audio than its allowance: refused before the
    first byte beyond it leaves the machine. Not the input's fault, so distinct from
    ``AudioError`` (too long for the bot at all): the chat may simply have used up its day."""

    def __init__(self, allowance_seconds: float, needed_seconds: float) -> None:
        super().__init__(ErrorKind.QUOTA, f"{needed_seconds:.1f} s of audio would pass the allowance of "
                                          f"{allowance_seconds:.1f} s", retryable=False)
        self.allowance_seconds = allowance_seconds
        self.needed_seconds = needed_seconds


class MeteredRequest:
    """One request's audio: what it has handed over so far, its allowance, and its meter."""

    def __init__(self, meter: AudioMeter | None, allowance_seconds: float | None) -> None:
        self.meter = meter
        self.allowance_seconds = allowance_seconds
        self.handed_seconds = 0.0

    def remaining(self) -> float | None:
        if self.allowance_seconds is None:
            return None
        return max(0.0, self.allowance_seconds - self.handed_seconds)

    def require(self, seconds: float) -> None:
        """Refuse, before anything is sent, an attempt that would pass the allowance."""
        remaining = self.remaining()
        if remaining is not None and seconds > remaining:
            raise AllowanceExceeded(self.allowance_seconds or 0.0, self.handed_seconds + seconds)

    def hand(self, provider: str, seconds: float) -> None:
        self.handed_seconds += seconds
        if self.meter is not None:
            self.meter.handed(provider, seconds)
