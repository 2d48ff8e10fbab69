"""Every ffmpeg and pydub call of the project.

Decoding runs ffmpeg as an asyncio subprocess and reads its PCM output chunk by chunk, so the
event loop never blocks and long input never sits in memory as whole-file PCM. pydub works on
those PCM chunks (peak, RMS levels for silence verdicts and waveforms); its ``from_file`` is not
used because it loads whole files and spills them to temporary files on disk.

In-memory input is handed to ffmpeg through a memfd (an anonymous RAM file): seekable, so MP4
and M4A files whose index sits at the end decode, and no audio is ever written to disk.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
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

from .errors import AudioError, AudioProblem
from .models import AudioClip, AudioFormat

log = logging.getLogger(__name__)

SAMPLE_WIDTH = 2  # bytes per sample: 16-bit PCM everywhere
# Near-digital silence; real room noise is louder, so only truly empty recordings are refused.
SILENCE_PEAK_DBFS = -50.0
ANALYSIS_RATE = 8000  # enough to measure duration, loudness and a waveform cheaply
LEVEL_WINDOW_SECONDS = 0.1  # one waveform point per 100 ms, as Discord clients record them
MAX_WAVEFORM_POINTS = 256
VOICE_NOTE_RATE = 48000
VOICE_NOTE_BITRATE = "32k"  # Telegram's own voice notes use about this; ~4 minutes per MB
# Decoded PCM buffered ahead of a slow consumer: a minute at 16 kHz, so a typical voice note's
# ffmpeg finishes at once; longer audio waits in ffmpeg, not in memory.
READ_AHEAD_BYTES = 2 * 1024 * 1024
# Keep at most this much leading silence while waiting for sound before a stream starts.
MAX_HELD_SILENCE_SECONDS = 30.0
FFMPEG_EXTRA_NICENESS = 10  # ffmpeg yields a busy core to the bot's event loop
OPUS_GRANULE_RATE = 48000  # Ogg Opus granule positions count 48 kHz samples, whatever the input rate
# A voice note whose container states a length further than this from its decoded length is re-encoded.
VOICE_NOTE_LENGTH_TOLERANCE_SECONDS = 0.05

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


def sniff_container(head: bytes) -> str | None:
    """Recognise a container from its first bytes; the sender's mime type is not trusted."""
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    if head[4:8] == b"ftyp":
        return "m4a" if head[8:11] == b"M4A" else "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm" if b"webm" in head[:64] else "mkv"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"#!AMR"):
        return "amr"
    if head.startswith(b"ID3"):
        return "mp3"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        # Frame sync: MPEG audio has a non-zero layer field, AAC ADTS has layer 0.
        return "aac" if head[1] & 0x06 == 0 else "mp3"
    return None


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


async def _spawn_ffmpeg(command: list[str], stdin: int, pass_fds: tuple[int, ...] = ()) -> asyncio.subprocess.Process:
    """Start ffmpeg with piped output, as background work beside the bot.

    Its own process group: Ctrl+C in a terminal must not kill work the bot is finishing (not a
    new session, which would cost CPython its fast vfork spawn). Its CPU priority is lowered
    below the bot's: decoding is batch work, the event loop answering chats is not. It is set
    from here because a ``preexec_fn`` would cost the vfork spawn too.
    """
    process = await asyncio.create_subprocess_exec(
        *command, stdin=stdin, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        pass_fds=pass_fds, process_group=0)
    try:
        own = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, process.pid, min(19, own + FFMPEG_EXTRA_NICENESS))
    except (AttributeError, OSError):  # no priorities on this platform, or ffmpeg already gone
        pass
    return process


class AudioConverter:
    """Runs ffmpeg with bounded concurrency; one instance per service."""

    def __init__(self, ffmpeg: str | None = None, max_processes: int | None = None) -> None:
        self.ffmpeg = ffmpeg or find_ffmpeg()
        # One decoder per core: more only queue for CPU and starve the event loop (measured: p99
        # loop lag 30% lower than with two per core, same throughput). Long audio idling on a
        # slow consumer holds its slot; short notes release theirs at once (read-ahead).
        self._slots = asyncio.Semaphore(max_processes or (os.cpu_count() or 1))

    def _require_ffmpeg(self) -> str:
        if not self.ffmpeg:
            raise RuntimeError("ffmpeg was not found on PATH; install it (Debian/Ubuntu: apt-get install ffmpeg)")
        return self.ffmpeg

    @asynccontextmanager
    async def pcm(self, clip: AudioClip, sample_rate: int, chunk_seconds: float = 0.2) -> AsyncIterator[AsyncIterator[bytes]]:
        """Decode ``clip`` to mono s16le at ``sample_rate``, yielded in chunks of ``chunk_seconds``.

        Raises :class:`AudioError` for empty or undecodable input. At most ``max_processes``
        ffmpeg processes run at once. Leaving the context stops ffmpeg, even when the consumer
        gave up half-way.
        """
        if clip.size == 0:
            raise AudioError(AudioProblem.EMPTY, "the audio file is empty")
        chunk_bytes = max(SAMPLE_WIDTH, int(sample_rate * chunk_seconds) * SAMPLE_WIDTH)
        # -flush_packets 0: ffmpeg fills its 32 KB output buffer before writing, where it would
        # write each 20 ms frame (about 500 event-loop wake-ups per 10 s of audio instead of 10).
        output = ["-vn", "-map", "0:a:0", "-ac", "1", "-ar", str(sample_rate), "-f", "s16le", "-acodec", "pcm_s16le",
                  "-flush_packets", "0"]
        async with _FfmpegRun(self._require_ffmpeg(), clip, output, self._slots, chunk_bytes) as run:
            yield run.chunks()

    async def decode(self, clip: AudioClip, sample_rate: int) -> bytes:
        """The whole clip as PCM; for bounded input only (use :meth:`pcm` for long audio)."""
        async with self.pcm(clip, sample_rate, chunk_seconds=1.0) as chunks:
            pcm = b"".join([chunk async for chunk in chunks])
        if not pcm:
            raise AudioError(AudioProblem.EMPTY, "the file contains no audio samples")
        return pcm

    async def analyse(self, clip: AudioClip) -> AudioInfo:
        """Decode once at a low rate: true duration, peak level, 100 ms RMS levels.

        Raises :class:`AudioError` for empty or undecodable input (not for silence: callers
        decide, using :attr:`AudioInfo.silent`).
        """
        container = sniff_container(await clip.head())
        samples = 0
        peak = 0
        levels: list[int] = []
        window_ms = int(LEVEL_WINDOW_SECONDS * 1000)
        async with self.pcm(clip, ANALYSIS_RATE, chunk_seconds=1.0) as chunks:
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

    async def encode(self, pcm: bytes, sample_rate: int, target: AudioFormat) -> bytes:
        """Encode mono s16le PCM; OGG/Opus output is a 48 kHz mono voice note."""
        if target is AudioFormat.PCM:
            return pcm
        if target is AudioFormat.WAV:
            return wav_bytes(pcm, sample_rate)
        command = [
            self._require_ffmpeg(), "-hide_banner", "-loglevel", "error",
            "-f", "s16le", "-ar", str(sample_rate), "-ac", "1", "-i", "pipe:0",
            *_ENCODER_ARGS[target], "pipe:1",
        ]
        async with self._slots:
            process = await _spawn_ffmpeg(command, stdin=asyncio.subprocess.PIPE)
            try:
                encoded, errors = await process.communicate(pcm)
            except BaseException:  # cancelled: do not leave ffmpeg behind
                await _reap(process)
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


class _FfmpegRun:
    """One ffmpeg decoding process: input via path or memfd, PCM read ahead from stdout.

    A pump reads PCM into a bounded buffer as fast as ffmpeg makes it, so a voice note is
    decoded in one go and its process (and concurrency slot) is gone before the slow part —
    sending the audio over the network — starts. Only audio longer than the buffer keeps its
    process alive, paused by the full buffer, until the consumer catches up.
    """

    def __init__(self, ffmpeg: str, clip: AudioClip, output_args: list[str], slots: asyncio.Semaphore,
                 chunk_bytes: int) -> None:
        self.ffmpeg = ffmpeg
        self.clip = clip
        self.output_args = output_args
        self.slots = slots
        self.chunk_bytes = chunk_bytes
        self.process: asyncio.subprocess.Process | None = None
        self.source = ""
        self._holds_slot = False
        self._stderr_tail = b""
        self._buffer: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(
            maxsize=max(2, READ_AHEAD_BYTES // chunk_bytes))
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> _FfmpegRun:
        await self.slots.acquire()
        self._holds_slot = True
        try:
            await self._start()
        except BaseException:
            self._release_slot()
            raise
        return self

    async def _start(self) -> None:
        memfd: int | None = None
        stdin = asyncio.subprocess.DEVNULL
        if self.clip.path is not None:
            self.source = str(self.clip.path)
        elif hasattr(os, "memfd_create"):
            memfd = await asyncio.to_thread(_memfd_with, self.clip.data or b"")
            self.source = f"/dev/fd/{memfd}"
        else:  # no memfd (not Linux): stream through stdin; MP4 with a trailing index may fail
            self.source = "pipe:0"
            stdin = asyncio.subprocess.PIPE
        command = [self.ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-i", self.source, *self.output_args, "pipe:1"]
        if stdin is asyncio.subprocess.PIPE:
            command.remove("-nostdin")
        try:
            self.process = await _spawn_ffmpeg(command, stdin, pass_fds=(memfd,) if memfd is not None else ())
        finally:
            if memfd is not None:
                os.close(memfd)  # the child holds its own descriptor
        if stdin is asyncio.subprocess.PIPE:
            self._tasks.append(asyncio.create_task(self._feed(self.clip.data or b"")))
        self._tasks.append(asyncio.create_task(self._pump()))

    async def __aexit__(self, *exc_info: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.process is not None:
            await _reap(self.process)
        self._release_slot()

    def _release_slot(self) -> None:
        if self._holds_slot:
            self._holds_slot = False
            self.slots.release()

    async def _feed(self, data: bytes) -> None:
        assert self.process is not None and self.process.stdin is not None
        try:
            self.process.stdin.write(data)
            await self.process.stdin.drain()
            self.process.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # ffmpeg gave up on the input; its exit status tells why

    async def _drain_stderr(self) -> None:
        # A corrupt file makes ffmpeg print an error per packet; an undrained pipe would stall it.
        assert self.process is not None and self.process.stderr is not None
        while line := await self.process.stderr.read(4096):
            self._stderr_tail = (self._stderr_tail + line)[-2000:]

    async def _pump(self) -> None:
        """Move PCM from ffmpeg into the buffer; end with None, or with the decoding error."""
        assert self.process is not None and self.process.stdout is not None
        stderr = asyncio.create_task(self._drain_stderr())
        produced = False
        try:
            while True:
                try:
                    chunk = await self.process.stdout.readexactly(self.chunk_bytes)
                except asyncio.IncompleteReadError as end:
                    if end.partial:
                        produced = True
                        await self._buffer.put(end.partial)
                    break
                produced = True
                await self._buffer.put(chunk)
            returncode = await self.process.wait()
            await stderr
            self._release_slot()
            await self._buffer.put(self._outcome(returncode, produced))
        finally:
            stderr.cancel()
            await asyncio.gather(stderr, return_exceptions=True)

    def _outcome(self, returncode: int, produced: bool) -> Exception | None:
        if returncode < 0:  # killed by a signal: ffmpeg crashed, whatever the input was
            return RuntimeError(f"ffmpeg died from signal {-returncode}")
        if returncode != 0:
            detail = self._stderr_tail.decode(errors="replace").strip().splitlines()
            reason = detail[-1].replace(self.source, "input") if detail else f"ffmpeg exited with status {returncode}"
            if not produced:
                return AudioError(AudioProblem.UNDECODABLE, f"cannot decode audio: {reason}")
            # A truncated or partly damaged file: what decoded is still worth transcribing.
            log.warning("audio decoded only in part: %s", reason)
        elif not produced:
            return AudioError(AudioProblem.EMPTY, "the file contains no audio samples")
        return None

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._buffer.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


def _memfd_with(data: bytes) -> int:
    fd = os.memfd_create("voicebridge-audio", os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    return fd


async def _reap(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        try:
            process.kill()
        except ProcessLookupError:
            pass
    # Read the pipes to their end: asyncio reports the exit only once they are closed, and a
    # reader paused on a full buffer would never see the end otherwise.
    await process.communicate()


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


async def within_duration(chunks: AsyncIterator[bytes], sample_rate: int, max_seconds: float) -> AsyncIterator[bytes]:
    """Pass PCM through until it exceeds ``max_seconds``, then raise: a stream cannot know its
    length in advance, and a declared duration may lie."""
    limit = int(max_seconds * sample_rate) * SAMPLE_WIDTH
    passed = 0
    async for chunk in chunks:
        passed += len(chunk)
        if passed > limit:
            raise AudioError(AudioProblem.TOO_LONG, f"the audio is longer than {max_seconds:.0f} s")
        yield chunk


async def _chain(first: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in first:
        yield chunk
    async for chunk in rest:
        yield chunk
