"""What the fake ASR servers "hear": a transcript derived from the audio they actually received.

A fake that returned a fixed string would let a client pass while sending the wrong audio. Here
the default transcript describes the received audio — ``"tone 440 hz 2.0 s"`` — so a test can
assert that the right samples, at the declared rate, reached the server. A scripted transcript
(any language) can be set instead; it is revealed word by word as audio arrives, which gives the
streaming fakes realistic growing partials.

The listener works incrementally and keeps no audio: a 60-minute stream costs constant memory.
"""

from __future__ import annotations

from array import array

# Frequency is measured on the first seconds only: enough for a tone, cheap for an hour of audio.
_FREQUENCY_WINDOW_SECONDS = 10.0
_VOICED_THRESHOLD = 200  # |sample| above this counts as sound (s16 scale)


class PcmListener:
    """Consumes mono s16le PCM at ``sample_rate`` and describes it."""

    def __init__(self, sample_rate: int, script: str | None = None, seconds_per_word: float = 0.5) -> None:
        self.sample_rate = sample_rate
        self.script_words = script.split() if script else None
        self.script = script
        self.seconds_per_word = seconds_per_word
        self.samples = 0
        self.heard_sound = False
        self._pending = b""
        self._crossings = 0
        self._voiced_first: int | None = None
        self._voiced_last = 0
        self._previous_negative: bool | None = None

    def feed(self, pcm: bytes) -> None:
        data = self._pending + pcm
        usable = len(data) - len(data) % 2
        self._pending = data[usable:]
        chunk = array("h")
        chunk.frombytes(data[:usable])
        if not chunk:
            return
        if not self.heard_sound:  # once sound is heard, no need to scan every later chunk
            self.heard_sound = max(chunk) > _VOICED_THRESHOLD or -min(chunk) > _VOICED_THRESHOLD
        window_end = int(_FREQUENCY_WINDOW_SECONDS * self.sample_rate)
        if self.samples < window_end:
            self._count_crossings(chunk[: window_end - self.samples], self.samples)
        self.samples += len(chunk)

    def _count_crossings(self, chunk: array, offset: int) -> None:
        previous = self._previous_negative
        for index, sample in enumerate(chunk):
            if abs(sample) <= _VOICED_THRESHOLD:
                continue
            negative = sample < 0
            if self._voiced_first is None:
                self._voiced_first = offset + index
            self._voiced_last = offset + index
            if previous is not None and negative != previous:
                self._crossings += 1
            previous = negative
        self._previous_negative = previous

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate

    @property
    def frequency(self) -> float:
        if self._voiced_first is None or self._voiced_last <= self._voiced_first:
            return 0.0
        span = (self._voiced_last - self._voiced_first) / self.sample_rate
        return self._crossings / 2 / span

    @property
    def silent(self) -> bool:
        return not self.heard_sound

    def transcript(self, final: bool = True) -> str:
        """The full text heard so far (a partial when ``final`` is false)."""
        if self.script_words is not None:
            if final:
                return self.script or ""
            shown = min(len(self.script_words), int(self.seconds / self.seconds_per_word))
            return " ".join(self.script_words[:shown])
        if self.silent:
            return ""
        return f"tone {round(self.frequency / 10) * 10} hz {self.seconds:.1f} s"
