"""The two ways a clip becomes PCM: in this process with PyAV (the default), or through the
ffmpeg CLI (the fallback where PyAV is not installed).

Both obey the same rules, because a public bot decodes whatever strangers send it:

- only the demuxer pinned from the sniffed container (:data:`~.containers.DEMUXERS`) reads the
  input, and no protocol but the one carrying it is open: PyAV reads from a Python file object
  (no protocol at all; nested opens are refused), ffmpeg gets ``-protocol_whitelist``;
- each decode has a CPU budget, and the caller bounds its output (see ``AudioConverter.pcm``);
- ffmpeg runs with a minimal environment: no token of the bot's ever reaches a child process.

In-process decoding runs in a small thread pool, one slice (about one chunk of output) at a
time, and every slice queues behind the slices already waiting: a file that decodes to hours
cannot hold a worker while a one-second note from another chat waits.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import resource
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO, TypeVar

from .containers import DEMUXERS
from .errors import AudioError, AudioProblem
from .models import AudioClip

try:  # PyAV: decoding without a process per note (about a quarter of the CPU for a voice note)
    import av
    import av.error
except ImportError:  # pragma: no cover - exercised where PyAV has no wheel
    av = None

log = logging.getLogger(__name__)
T = TypeVar("T")

SAMPLE_WIDTH = 2  # bytes per sample: 16-bit PCM everywhere
# CPU one decode may use: hours of audio decode in a few seconds, so only a pathological file
# (or a lie about its length that the output bound has not caught yet) comes near it.
DECODE_CPU_BUDGET_SECONDS = 20.0
# Decoded PCM buffered ahead of a slow consumer by the ffmpeg CLI path: a minute at 16 kHz, so a
# typical voice note's ffmpeg finishes at once; longer audio waits in ffmpeg, not in memory.
READ_AHEAD_BYTES = 2 * 1024 * 1024
RESAMPLE_BATCH_SECONDS = 1.0  # decoded audio resampled per call (in process)
# Audio one in-process slice decodes before the worker goes to the next decode in line: a few
# milliseconds of CPU, and few enough thread hand-offs that they cost nothing next to decoding.
SLICE_SECONDS = 1.0
FFMPEG_EXTRA_NICENESS = 10  # decoders (ffmpeg, worker threads) yield a busy core to the bot's event loop
# A protocol no demuxer can name: every nested open (a playlist entry, a reference) is refused.
NO_PROTOCOL = "none"


def pyav_available() -> bool:
    return av is not None


def demuxer_for(container: str | None) -> str:
    """The pinned demuxer of a sniffed container; anything else is not read at all."""
    if container is None or container not in DEMUXERS:
        raise AudioError(AudioProblem.UNDECODABLE, "not an audio file of a known kind")
    return DEMUXERS[container]


def child_environment() -> dict[str, str]:
    """What a child process inherits: a PATH and nothing else (no tokens, no proxies)."""
    return {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C"}


# ----------------------------------------------------------------------------- in process (PyAV)


class DecodeWorkers:
    """A fixed pool of decoding threads, shared by every decode of one converter.

    Work is submitted one slice at a time, first come first served: a long decode goes back to
    the end of the queue after each slice.
    """

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="voicebridge-decode", initializer=_yield_to_the_loop)

    def submit(self, work: Callable[[], T]) -> Future[T]:
        return self._pool.submit(work)

    async def run(self, work: Callable[[], T]) -> T:
        return await asyncio.wrap_future(self.submit(work))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _yield_to_the_loop() -> None:
    """Run this worker thread below the event loop's priority, as ffmpeg processes run: decoding
    is batch work, answering chats is not (Linux threads have a nice value of their own)."""
    try:
        own = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, own + FFMPEG_EXTRA_NICENESS))
    except (AttributeError, OSError):  # no per-thread priorities on this platform
        pass


def _source(clip: AudioClip) -> BinaryIO:
    # A Python file object: libavformat reads through it, so no protocol (file, http…) is used.
    return clip.path.open("rb") if clip.path is not None else io.BytesIO(clip.data or b"")  # type: ignore[union-attr]


def _open(clip: AudioClip, demuxer: str) -> tuple[Any, BinaryIO]:
    source = _source(clip)
    try:
        return av.open(source, format=demuxer, options={"protocol_whitelist": NO_PROTOCOL}), source
    except (av.error.FFmpegError, ValueError) as error:  # ValueError: PyAV's own checks
        source.close()
        raise AudioError(AudioProblem.UNDECODABLE, f"cannot decode audio: {error.__class__.__name__}") from None


class InProcessPcm:
    """One PyAV decode: container, first audio stream, resampler to mono s16 at ``sample_rate``.

    :meth:`next_chunks` runs in a worker; every call (a slice) decodes about a second of audio
    (or to the end), checks the CPU budget, and returns it in chunks of ``chunk_bytes``. The
    caller must not run two calls at once, and :meth:`close` only after the last one returned.
    """

    def __init__(self, clip: AudioClip, demuxer: str, sample_rate: int, chunk_bytes: int, cpu_budget: float) -> None:
        self.clip = clip
        self.demuxer = demuxer
        self.sample_rate = sample_rate
        self.chunk_bytes = chunk_bytes
        self.cpu_budget = cpu_budget
        self.slice_bytes = int(sample_rate * SLICE_SECONDS) * SAMPLE_WIDTH
        self._container: Any = None
        self._source: BinaryIO | None = None
        self._packets: Any = None
        self._resampler: Any = None
        self._resampler_shape: tuple[str, str, int] | None = None  # the input format it is set up for
        self._pending = bytearray()
        self._batch: list[list[bytes]] = []  # decoded audio per plane, waiting to be resampled
        self._batch_samples = 0
        self._batch_shape: tuple[str, str, int] | None = None
        self._produced = False
        self._ended = False
        self._cpu_used = 0.0

    def next_chunks(self) -> list[bytes]:
        """The next chunks of PCM, about a second of audio (at least one chunk); none at the end."""
        started = time.thread_time()
        wanted = max(self.chunk_bytes, self.slice_bytes - self.slice_bytes % self.chunk_bytes)
        try:
            if self._container is None:
                self._start()
            while not self._ended and len(self._pending) < wanted:
                self._decode_packet()
                if self._cpu_used + time.thread_time() - started > self.cpu_budget:
                    raise AudioError(AudioProblem.UNDECODABLE, "the audio takes too long to decode")
        finally:
            self._cpu_used += time.thread_time() - started
        if not self._pending and not self._produced:
            raise AudioError(AudioProblem.EMPTY, "the file contains no audio samples")
        taken = min(len(self._pending), wanted)
        chunks = [bytes(self._pending[start:min(start + self.chunk_bytes, taken)]) for start in range(0, taken, self.chunk_bytes)]
        del self._pending[:taken]
        self._produced = self._produced or bool(chunks)
        return chunks

    def _start(self) -> None:
        self._container, self._source = _open(self.clip, self.demuxer)
        if not self._container.streams.audio:
            raise AudioError(AudioProblem.UNDECODABLE, "cannot decode audio: the file has no audio stream")
        stream = self._container.streams.audio[0]
        self._packets = self._container.demux(stream)

    def _decode_packet(self) -> None:
        try:
            packet = next(self._packets)
            frames = packet.decode()
        except StopIteration:
            frames = None
        except (av.error.FFmpegError, ValueError) as error:
            if not self._pending and not self._produced and not self._batch_samples:
                raise AudioError(AudioProblem.UNDECODABLE, f"cannot decode audio: {error.__class__.__name__}") from None
            # A truncated or partly damaged file: what decoded is still worth transcribing.
            log.warning("audio decoded only in part: %s", error.__class__.__name__)
            frames = None
        if frames is None:  # the end: resample what is left, then flush the resampler's delay line
            self._ended = True
            self._resample_batch()
            if self._resampler is not None:
                self._append(self._resampler.resample(None))
            return
        for frame in frames:
            self._collect(frame)

    def _collect(self, frame: Any) -> None:
        """Gather decoded frames into about a second of audio, resampled at once: the
        resampler's cost is mostly per call, and a voice note has fifty frames a second."""
        shape = (frame.format.name, frame.layout.name, frame.sample_rate)
        if self._batch_shape is not None and shape != self._batch_shape:
            self._resample_batch()
        self._batch_shape = shape
        plane_bytes = frame.samples * frame.format.bytes * (1 if frame.format.is_planar else len(frame.layout.channels))
        if not self._batch:
            self._batch = [[] for _ in frame.planes]
        for parts, plane in zip(self._batch, frame.planes):
            parts.append(bytes(memoryview(plane)[:plane_bytes]))
        self._batch_samples += frame.samples
        if self._batch_samples >= frame.sample_rate * RESAMPLE_BATCH_SECONDS:
            self._resample_batch()

    def _resample_batch(self) -> None:
        if not self._batch_samples or self._batch_shape is None:
            return
        if self._resampler_shape != self._batch_shape:
            # A resampler converts the one input format it first saw: at a change mid-stream
            # (concatenated MP3s, a chained Ogg) the old one is flushed and a new one set up.
            if self._resampler is not None:
                self._append(self._resampler.resample(None))
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=self.sample_rate)
            self._resampler_shape = self._batch_shape
        sample_format, layout, rate = self._batch_shape
        batch = av.AudioFrame(format=sample_format, layout=layout, samples=self._batch_samples, align=1)
        batch.sample_rate = rate
        for plane, parts in zip(batch.planes, self._batch):
            plane.update(b"".join(parts))
        self._batch, self._batch_samples = [], 0
        self._append(self._resampler.resample(batch))

    def _append(self, frames: list[Any]) -> None:
        for frame in frames:
            self._pending += memoryview(frame.planes[0])[:frame.samples * SAMPLE_WIDTH]

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        if self._source is not None:
            self._source.close()


def packet_seconds(clip: AudioClip, demuxer: str, limit_seconds: float, cpu_budget: float) -> float:
    """The clip's length from its packets' own durations, without decoding them; stops counting
    once past ``limit_seconds`` (the caller refuses the clip then). Runs in a worker."""
    started = time.thread_time()
    container, source = _open(clip, demuxer)
    try:
        if not container.streams.audio:
            raise AudioError(AudioProblem.UNDECODABLE, "cannot decode audio: the file has no audio stream")
        stream = container.streams.audio[0]
        base = stream.time_base
        ticks = 0
        limit_ticks = limit_seconds / base
        try:
            for packet in container.demux(stream):
                if packet.duration:
                    ticks += packet.duration
                if ticks > limit_ticks:
                    break
                if time.thread_time() - started > cpu_budget:
                    raise AudioError(AudioProblem.UNDECODABLE, "the audio takes too long to read")
        except (av.error.FFmpegError, ValueError):
            if not ticks:
                raise AudioError(AudioProblem.UNDECODABLE, "cannot decode audio: no readable packet") from None
        # Samples the decoder drops at the start (Opus pre-skip) are in the packets, not the audio.
        padding = stream.codec_context.delay / stream.codec_context.sample_rate if stream.codec_context.sample_rate else 0.0
        return max(0.0, float(ticks * base) - padding)
    finally:
        container.close()
        source.close()


class InProcessRun:
    """Async face of :class:`InProcessPcm`: each slice runs in the shared workers."""

    def __init__(self, workers: DecodeWorkers, decode: InProcessPcm) -> None:
        self.workers = workers
        self.decode = decode
        self._in_flight: Future[list[bytes]] | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            self._in_flight = self.workers.submit(self.decode.next_chunks)
            chunks = await asyncio.wrap_future(self._in_flight)
            if not chunks:
                return
            for chunk in chunks:
                yield chunk

    async def aclose(self) -> None:
        # A slice still running in a worker uses the container: close it only afterwards.
        if self._in_flight is not None and not self._in_flight.cancel():
            await asyncio.gather(asyncio.wrap_future(self._in_flight), return_exceptions=True)
        await asyncio.to_thread(self.decode.close)


# ----------------------------------------------------------------------------- the ffmpeg CLI


async def spawn_ffmpeg(command: list[str], stdin: int, pass_fds: tuple[int, ...] = (),
                       cpu_budget: float | None = None) -> asyncio.subprocess.Process:
    """Start ffmpeg with piped output, as background work beside the bot.

    Its own process group: Ctrl+C in a terminal must not kill work the bot is finishing (not a
    new session, which would cost CPython its fast vfork spawn). A minimal environment. Its CPU
    priority is lowered below the bot's and its CPU time capped from here, because a
    ``preexec_fn`` would cost the vfork spawn too.
    """
    process = await asyncio.create_subprocess_exec(
        *command, stdin=stdin, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        pass_fds=pass_fds, process_group=0, env=child_environment())
    try:
        own = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, process.pid, min(19, own + FFMPEG_EXTRA_NICENESS))
        if cpu_budget is not None:
            seconds = int(cpu_budget) + 1
            os.prlimit(process.pid, resource.RLIMIT_CPU, (seconds, seconds + 1))  # SIGXCPU, then SIGKILL
    except (AttributeError, OSError):  # no priorities or limits on this platform, or ffmpeg already gone
        pass
    return process


class FfmpegRun:
    """One ffmpeg decoding process: input via path or memfd, PCM read ahead from stdout.

    A pump reads PCM into a bounded buffer as fast as ffmpeg makes it, so a voice note is
    decoded in one go and its process (and concurrency slot) is gone before the slow part —
    sending the audio over the network — starts. Only audio longer than the buffer keeps its
    process alive, paused by the full buffer, until the consumer catches up.
    """

    def __init__(self, ffmpeg: str, clip: AudioClip, demuxer: str, output_args: list[str], slots: asyncio.Semaphore,
                 chunk_bytes: int, cpu_budget: float) -> None:
        self.ffmpeg = ffmpeg
        self.clip = clip
        self.demuxer = demuxer
        self.output_args = output_args
        self.slots = slots
        self.chunk_bytes = chunk_bytes
        self.cpu_budget = cpu_budget
        self.process: asyncio.subprocess.Process | None = None
        self.source = ""
        self._holds_slot = False
        self._stderr_tail = b""
        self._buffer: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(
            maxsize=max(2, READ_AHEAD_BYTES // chunk_bytes))
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> FfmpegRun:
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
        protocol = "file"
        if self.clip.path is not None:
            self.source = f"file:{self.clip.path}"  # never read as a URL or a device name
        elif hasattr(os, "memfd_create"):
            memfd = await asyncio.to_thread(_memfd_with, self.clip.data or b"")
            self.source = f"file:/dev/fd/{memfd}"
        else:  # no memfd (not Linux): stream through stdin; MP4 with a trailing index may fail
            self.source, protocol = "pipe:0", "pipe"
            stdin = asyncio.subprocess.PIPE
        command = [self.ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error",
                   "-protocol_whitelist", protocol, "-f", self.demuxer, "-i", self.source, *self.output_args, "pipe:1"]
        if stdin is asyncio.subprocess.PIPE:
            command.remove("-nostdin")
        try:
            self.process = await spawn_ffmpeg(command, stdin, pass_fds=(memfd,) if memfd is not None else (),
                                              cpu_budget=self.cpu_budget)
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
            await reap(self.process)
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
        if returncode in (-signal.SIGXCPU, -signal.SIGKILL):  # its CPU budget ran out
            return AudioError(AudioProblem.UNDECODABLE, "the audio takes too long to decode")
        if returncode < 0:  # killed by another signal: ffmpeg crashed, whatever the input was
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


async def reap(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        try:
            process.kill()
        except ProcessLookupError:
            pass
    # Read the pipes to their end: asyncio reports the exit only once they are closed, and a
    # reader paused on a full buffer would never see the end otherwise.
    await process.communicate()
