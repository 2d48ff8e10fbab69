"""Every decode, encode and level measurement of the project.

Decoding turns a clip into mono 16-bit PCM chunk by chunk (:mod:`.decoders`: PyAV in worker
threads, or the ffmpeg CLI as a subprocess), so the event loop never blocks and long input never
sits in memory as whole-file PCM. Every decode is bounded: the container is sniffed and its
demuxer pinned, a duration the container states beyond the limit is refused before decoding,
and output past the limit stops the decode. pydub works on the PCM chunks (peak, RMS levels for
silence verdicts and waveforms); its ``from_file`` is not used because it loads whole files and
spills them to temporary files on disk. Encoding (synthesized speech) uses the ffmpeg CLI.

In-memory input is handed to ffmpeg through a memfd (an anonymous RAM file): seekable, so MP4
and M4A files whose index sits at the end decode, and no audio is ever written to disk.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import mmap
import os
import shutil
import warnings
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

with warnings.catch_warnings():
    # pydub warns on stderr at import when ffmpeg is missing; start-up checks say so properly.
    warnings.simplefilter("ignore", RuntimeWarning)
    from pydub import AudioSegment

from .containers import sniff_container, stated_seconds
from .decoders import (
    DECODE_CPU_BUDGET_SECONDS,
    SAMPLE_WIDTH,
    DecodeWorkers,
    FfmpegRun,
    InProcessPcm,
    InProcessRun,
    demuxer_for,
    packet_seconds,
    pyav_available,
    reap,
    spawn_ffmpeg,
)
from .errors import AudioError, AudioProblem
from .models import AudioClip, AudioFormat

log = logging.getLogger(__name__)

# Near-digital silence; real room noise is louder, so only truly empty recordings are refused.
SILENCE_PEAK_DBFS = -50.0
ANALYSIS_RATE = 8000  # enough to measure duration, loudness and a waveform cheaply
LEVEL_WINDOW_SECONDS = 0.1  # one waveform point per 100 ms, as Discord clients record them
MAX_WAVEFORM_POINTS = 256
VOICE_NOTE_RATE = 48000
VOICE_NOTE_BITRATE = "32k"  # Telegram's own voice notes use about this; ~4 minutes per MB
# Keep at most this much leading silence while waiting for sound before a stream starts.
MAX_HELD_SILENCE_SECONDS = 30.0
OPUS_GRANULE_RATE = 48000  # Ogg Opus granule positions count 48 kHz samples, whatever the input rate
# A voice note whose container states a length further than this from its decoded length is re-encoded.
VOICE_NOTE_LENGTH_TOLERANCE_SECONDS = 0.05
# Decoded audio may run this much past a stated duration (codec padding) before it counts as
# longer than the limit; the limit itself is checked on the stated or measured duration.
DECODE_SLACK_SECONDS = 1.0
# Containers whose packets carry durations computed from the codec's own frame headers (Opus
# TOC, Vorbis modes, FLAC and MPEG frame headers, PCM sizes): summing them measures the audio
# without decoding it. Elsewhere (MP4 sample tables, Matroska blocks) durations are what the
# muxer wrote, a claim like any header, so those clips are measured by decoding them.
PACKET_TIMED_CONTAINERS = frozenset({"ogg", "flac", "mp3", "wav"})
OPEN_DECODERS_PER_WORKER = 8

_ENCODER_ARGS: dict[AudioFormat, list[str]] = {
    AudioFormat.OGG_OPUS: [
        "-c:a", "libopus", "-b:a", VOICE_NOTE_BITRATE, "-application", "voip",
        "-ar", str(VOICE_NOTE_RATE), "-ac", "1", "-f", "ogg",
    ],
    AudioFormat.MP3: ["-c:a", "libmp3lame", "-b:a", "64k", "-ac", "1", "-f", "mp3"],
}


def find_ffmpeg() -> str | None:
    """The ffmpeg binary pydub is configured with, or the one on PATH."""
    configured = AudioSegment.converter
    return shutil.which(configured) or shutil.which("ffmpeg")


def ogg_opus_layout(data: bytes) -> tuple[int, float | None]:
    """How many logical streams an Ogg file chains, and the length the first one states (its last
    granule position less the Opus pre-skip), which is what players show; None when unstated."""
    serials: list[int] = []
    pre_skip = 0
    last_granule = -1
    offset = 0
    while offset + 27 <= len(data) and data[offset:offset + 4] == b"OggS":
        header_type, segments = data[offset + 5], data[offset + 26]
        granule = int.from_bytes(data[offset + 6:offset + 14], "little", signed=True)
        serial = int.from_bytes(data[offset + 14:offset + 18], "little")
        body = offset + 27 + segments
        if header_type & 0x02:  # beginning of a logical stream
            serials.append(serial)
            if len(serials) == 1 and data[body:body + 8] == b"OpusHead":
                pre_skip = int.from_bytes(data[body + 10:body + 12], "little")
        if serials and serial == serials[0] and granule >= 0:
            last_granule = granule
        offset = body + sum(data[offset + 27:body])
    if last_granule < 0:
        return len(serials), None
    return len(serials), max(0, last_granule - pre_skip) / OPUS_GRANULE_RATE


def peak_dbfs(pcm: bytes) -> float:
    peak = AudioSegment(data=pcm, sample_width=SAMPLE_WIDTH, frame_rate=ANALYSIS_RATE, channels=1).max
    return 20 * math.log10(peak / 32768) if peak else -math.inf


def wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(SAMPLE_WIDTH)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)
    return buffer.getvalue()


def pcm_seconds(pcm_length: int, sample_rate: int) -> float:
    return pcm_length / (SAMPLE_WIDTH * sample_rate)


@dataclass(frozen=True)
class AudioInfo:
    """What decoding a clip revealed."""

    seconds: float
    peak_dbfs: float
    container: str | None
    levels: tuple[int, ...]  # RMS per 100 ms window, on the s16 scale

    @property
    def silent(self) -> bool:
        return self.peak_dbfs < SILENCE_PEAK_DBFS

    def waveform(self) -> bytes:
        """A Discord-style waveform: at most 256 points of 0–255, about 10 per second."""
        levels = self.levels or (0,)
        points = min(MAX_WAVEFORM_POINTS, len(levels))
        buckets = [levels[len(levels) * i // points: max(len(levels) * (i + 1) // points, len(levels) * i // points + 1)]
                   for i in range(points)]
        averaged = [sum(bucket) / len(bucket) for bucket in buckets]
        loudest = max(averaged) or 1.0
        return bytes(min(255, round(255 * level / loudest)) for level in averaged)


@dataclass(frozen=True)
class AudioFacts:
    """A clip's container and duration, known before any provider sees it."""

    container: str
    seconds: float


class AudioConverter:
    """Decodes (bounded, fairly scheduled) and encodes; one instance per service.

    ``in_process``: decode with PyAV in worker threads (default when PyAV is installed) or with
    the ffmpeg CLI. ``max_processes``: decoding workers, and concurrent ffmpeg processes.
    """

    def __init__(self, ffmpeg: str | None = None, max_processes: int | None = None, *, in_process: bool | None = None,
                 cpu_budget_seconds: float = DECODE_CPU_BUDGET_SECONDS) -> None:
        self.ffmpeg = ffmpeg or find_ffmpeg()
        self.in_process = pyav_available() if in_process is None else in_process
        if self.in_process and not pyav_available():
            raise RuntimeError("in-process decoding needs PyAV: pip install av")
        self.cpu_budget_seconds = cpu_budget_seconds
        # One worker per core: more only queue for CPU and starve the event loop (measured: p99
        # loop lag 30% lower than with two per core, same throughput).
        workers = max_processes or (os.cpu_count() or 1)
        self._slots = asyncio.Semaphore(workers)
        self._workers: DecodeWorkers | None = DecodeWorkers(workers) if self.in_process else None
        # Decodes open at once in process: each holds a demuxer, a decoder and a resampler (about
        # 2 MB of native memory), so a hundred notes in flight must not all hold one; enough that
        # a short note rarely waits for long ones, whose slices it overtakes anyway.
        self._open_decoders = asyncio.Semaphore(OPEN_DECODERS_PER_WORKER * workers)

    def _require_ffmpeg(self) -> str:
        if not self.ffmpeg:
            raise RuntimeError("ffmpeg was not found on PATH; install it (Debian/Ubuntu: apt-get install ffmpeg)")
        return self.ffmpeg

    @asynccontextmanager
    async def pcm(self, clip: AudioClip, sample_rate: int, chunk_seconds: float = 0.2,
                  max_seconds: float | None = None) -> AsyncIterator[AsyncIterator[bytes]]:
        """Decode ``clip`` to mono s16le at ``sample_rate``, yielded in chunks of ``chunk_seconds``.

        Raises :class:`AudioError` for empty, undecodable or (with ``max_seconds``) too long
        input: refused before decoding when the container states a longer duration, else as
        soon as the decoded audio passes the limit. Leaving the context stops the decode, even
        when the consumer gave up half-way.
        """
        if clip.size == 0:
            raise AudioError(AudioProblem.EMPTY, "the audio file is empty")
        container = sniff_container(await clip.head())
        demuxer = demuxer_for(container)
        if max_seconds is not None:
            stated = await self._stated_seconds(clip, container)
            if stated is not None and stated > max_seconds:
                raise _too_long(stated, max_seconds)
        chunk_bytes = max(SAMPLE_WIDTH, int(sample_rate * chunk_seconds) * SAMPLE_WIDTH)
        if self._workers is not None:
            async with self._open_decoders:
                run = InProcessRun(self._workers, InProcessPcm(clip, demuxer, sample_rate, chunk_bytes, self.cpu_budget_seconds))
                try:
                    yield _bounded(run.chunks(), sample_rate, max_seconds)
                finally:
                    await run.aclose()
            return
        # -flush_packets 0: ffmpeg fills its 32 KB output buffer before writing, where it would
        # write each 20 ms frame (about 500 event-loop wake-ups per 10 s of audio instead of 10).
        output = ["-vn", "-map", "0:a:0", "-ac", "1", "-ar", str(sample_rate), "-f", "s16le", "-acodec", "pcm_s16le",
                  "-flush_packets", "0"]
        if max_seconds is not None:
            output[:0] = ["-t", f"{max_seconds + DECODE_SLACK_SECONDS + 1:.3f}"]  # ffmpeg stops by itself past the bound
        async with FfmpegRun(self._require_ffmpeg(), clip, demuxer, output, self._slots, chunk_bytes,
                             self.cpu_budget_seconds) as ffmpeg_run:
            yield _bounded(ffmpeg_run.chunks(), sample_rate, max_seconds)

    async def decode(self, clip: AudioClip, sample_rate: int, max_seconds: float | None = None) -> bytes:
        """The whole clip as PCM; for bounded input only (use :meth:`pcm` for long audio)."""
        async with self.pcm(clip, sample_rate, chunk_seconds=1.0, max_seconds=max_seconds) as chunks:
            pcm = b"".join([chunk async for chunk in chunks])
        if not pcm:
            raise AudioError(AudioProblem.EMPTY, "the file contains no audio samples")
        return pcm

    async def analyse(self, clip: AudioClip, max_seconds: float | None = None) -> AudioInfo:
        """Decode once at a low rate: true duration, peak level, 100 ms RMS levels.

        Raises :class:`AudioError` for empty, undecodable or too long input (not for silence:
        callers decide, using :attr:`AudioInfo.silent`).
        """
        container = sniff_container(await clip.head())
        samples = 0
        peak = 0
        levels: list[int] = []
        window_ms = int(LEVEL_WINDOW_SECONDS * 1000)
        async with self.pcm(clip, ANALYSIS_RATE, chunk_seconds=1.0, max_seconds=max_seconds) as chunks:
            async for chunk in chunks:
                segment = AudioSegment(data=chunk, sample_width=SAMPLE_WIDTH, frame_rate=ANALYSIS_RATE, channels=1)
                samples += len(chunk) // SAMPLE_WIDTH
                peak = max(peak, segment.max)
                levels.extend(segment[start:start + window_ms].rms for start in range(0, len(segment), window_ms))
        if samples == 0:
            raise AudioError(AudioProblem.EMPTY, "the file contains no audio samples")
        return AudioInfo(
            seconds=samples / ANALYSIS_RATE,
            peak_dbfs=20 * math.log10(peak / 32768) if peak else -math.inf,
            container=container,
            levels=tuple(levels),
        )

    async def inspect(self, clip: AudioClip, max_seconds: float) -> AudioFacts:
        """Container and duration, before any provider call; :class:`AudioError` when the clip
        is unusable or longer than ``max_seconds``.

        The duration is the clip's own: summed from codec-timed packets without decoding them
        (PyAV), else measured by a bounded decode. A duration the container states beyond the
        limit refuses the clip before either.
        """
        if clip.size == 0:
            raise AudioError(AudioProblem.EMPTY, "the audio file is empty")
        container = sniff_container(await clip.head())
        demuxer = demuxer_for(container)
        assert container is not None
        stated = await self._stated_seconds(clip, container)
        if stated is not None and stated > max_seconds:
            raise _too_long(stated, max_seconds)
        if self._workers is not None and container in PACKET_TIMED_CONTAINERS:
            seconds = await self._workers.run(lambda: packet_seconds(clip, demuxer, max_seconds, self.cpu_budget_seconds))
            if seconds <= 0:
                raise AudioError(AudioProblem.EMPTY, "the file contains no audio samples")
        else:
            seconds = (await self.analyse(clip, max_seconds=max_seconds)).seconds
        if seconds > max_seconds:  # counting stopped there: the true length may be far more
            raise AudioError(AudioProblem.TOO_LONG, f"the audio is longer than {max_seconds:.0f} s")
        return AudioFacts(container, seconds)

    async def has_sound(self, clip: AudioClip, max_seconds: float | None = None) -> bool:
        """Whether the clip is louder than near-digital silence anywhere; decoding stops at the
        first loud second, so a voice note is decided from its first moments."""
        async with self.pcm(clip, ANALYSIS_RATE, chunk_seconds=1.0, max_seconds=max_seconds) as chunks:
            async for chunk in chunks:
                if peak_dbfs(chunk) >= SILENCE_PEAK_DBFS:
                    return True
        return False

    @staticmethod
    async def _stated_seconds(clip: AudioClip, container: str | None) -> float | None:
        if clip.data is not None:
            return stated_seconds(container, clip.data)

        def from_file() -> float | None:
            with clip.path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:  # type: ignore[union-attr]
                return stated_seconds(container, mapped)

        return await asyncio.to_thread(from_file)

    async def encode(self, pcm: bytes, sample_rate: int, target: AudioFormat) -> bytes:
        """Encode mono s16le PCM; OGG/Opus output is a 48 kHz mono voice note."""
        if target is AudioFormat.PCM:
            return pcm
        if target is AudioFormat.WAV:
            return wav_bytes(pcm, sample_rate)
        command = [
            self._require_ffmpeg(), "-hide_banner", "-loglevel", "error", "-protocol_whitelist", "pipe",
            "-f", "s16le", "-ar", str(sample_rate), "-ac", "1", "-i", "pipe:0",
            *_ENCODER_ARGS[target], "pipe:1",
        ]
        async with self._slots:
            process = await spawn_ffmpeg(command, stdin=asyncio.subprocess.PIPE, cpu_budget=self.cpu_budget_seconds)
            try:
                encoded, errors = await process.communicate(pcm)
            except BaseException:  # cancelled: do not leave ffmpeg behind
                await reap(process)
                raise
        if process.returncode != 0 or not encoded:
            raise RuntimeError(f"ffmpeg could not encode {target}: {errors.decode(errors='replace')[-300:]}")
        return encoded

    async def single_stream_voice_note(self, data: bytes) -> tuple[bytes, float]:
        """An OGG/Opus voice note whose container states its decoded length, and that length.

        ``data`` itself when it already is one; otherwise (a chained Ogg, as multi-segment TTS
        output is, whose players show one link's length) it is re-encoded as a single stream.
        """
        seconds = (await self.analyse(AudioClip(data=data))).seconds
        streams, stated = ogg_opus_layout(data)
        if streams == 1 and stated is not None and abs(stated - seconds) <= VOICE_NOTE_LENGTH_TOLERANCE_SECONDS:
            return data, seconds
        log.info("re-encoding a voice note of %.2f s: %d Ogg stream(s) stating %s s", seconds, streams, stated)
        pcm = await self.decode(AudioClip(data=data), VOICE_NOTE_RATE)
        return await self.encode(pcm, VOICE_NOTE_RATE, AudioFormat.OGG_OPUS), pcm_seconds(len(pcm), VOICE_NOTE_RATE)


    def close(self) -> None:
        """Stop the decoding workers (idle ones exit; none is left behind)."""
        if self._workers is not None:
            self._workers.close()


def _too_long(seconds: float, max_seconds: float) -> AudioError:
    return AudioError(AudioProblem.TOO_LONG, f"{seconds:.0f} s is longer than {max_seconds:.0f} s")


async def _bounded(chunks: AsyncIterator[bytes], sample_rate: int, max_seconds: float | None) -> AsyncIterator[bytes]:
    """Pass PCM through until it runs past ``max_seconds`` (plus codec slack), then refuse: a
    decode stops there, whatever the container claimed."""
    if max_seconds is None:
        async for chunk in chunks:
            yield chunk
        return
    limit = int((max_seconds + DECODE_SLACK_SECONDS) * sample_rate) * SAMPLE_WIDTH
    passed = 0
    async for chunk in chunks:
        passed += len(chunk)
        if passed > limit:
            raise AudioError(AudioProblem.TOO_LONG, f"the audio is longer than {max_seconds:.0f} s")
        yield chunk


async def require_sound(chunks: AsyncIterator[bytes], sample_rate: int) -> AsyncIterator[bytes]:
    """Pass PCM through once sound is heard; raise :class:`AudioError` if there never is any.

    Lets a streaming provider be called only for audio worth transcribing, without decoding
    twice: leading silence is held (up to a bound) until the first loud chunk arrives.
    """
    held: list[bytes] = []
    held_bytes = 0
    limit = int(MAX_HELD_SILENCE_SECONDS * sample_rate * SAMPLE_WIDTH)
    async for chunk in chunks:
        held.append(chunk)
        held_bytes += len(chunk)
        if peak_dbfs(chunk) >= SILENCE_PEAK_DBFS:
            break
        while held_bytes > limit and len(held) > 1:
            held_bytes -= len(held.pop(0))
    else:
        if held_bytes == 0:
            raise AudioError(AudioProblem.EMPTY, "the file contains no audio samples")
        raise AudioError(AudioProblem.SILENT, "the audio is silent")
    return _chain(held, chunks)


def quietest_offset(pcm: bytes, sample_rate: int, start: int, end: int) -> int:
    """Byte offset (sample-aligned) of the middle of the quietest 100 ms window within
    ``pcm[start:end]``; ``end`` itself when nothing there is clearly quieter (no pause to use)."""
    window = int(LEVEL_WINDOW_SECONDS * sample_rate) * SAMPLE_WIDTH
    levels = [
        (AudioSegment(data=pcm[offset:offset + window], sample_width=SAMPLE_WIDTH, frame_rate=sample_rate, channels=1).rms, offset)
        for offset in range(start - start % SAMPLE_WIDTH, max(start, end - window) + 1, window)
    ]
    if not levels:
        return end
    quietest, offset = min(levels)
    typical = sorted(level for level, _ in levels)[len(levels) // 2]
    if quietest > typical / 2:
        return end
    middle = offset + window // 2
    return middle - middle % SAMPLE_WIDTH


async def split_at_pauses(chunks: AsyncIterator[bytes], sample_rate: int, segment_seconds: float,
                          search_seconds: float = 3.0) -> AsyncIterator[bytes]:
    """Regroup a PCM stream into segments of about ``segment_seconds``, each cut at the quietest
    moment of its last ``search_seconds`` so that words are rarely split. Holds one segment."""
    target = int(segment_seconds * sample_rate) * SAMPLE_WIDTH
    search = min(target, int(search_seconds * sample_rate) * SAMPLE_WIDTH)
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        while len(buffer) >= target:
            cut = quietest_offset(bytes(buffer[:target]), sample_rate, target - search, target) or target
            yield bytes(buffer[:cut])
            del buffer[:cut]
    if buffer:
        yield bytes(buffer)


async def _chain(first: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in first:
        yield chunk
    async for chunk in rest:
        yield chunk
