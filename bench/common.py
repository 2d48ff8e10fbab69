"""What the benchmark scripts share: test audio on disk, timing statistics, result tables, the
machine description, process memory and CPU readings, and helper processes (the fake servers,
the bot under measurement) that speak one JSON line per command.

Run every script from the project root: ``PYTHONPATH=. .venv/bin/python bench/<script>.py``.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

# cozepy (imported by the Coze fake and by the cozepy baseline) imports a deprecated authlib
# module, and authlib forces that warning on ("always") when first imported: so import authlib
# first, then silence it. Scripts import this module before anything that imports cozepy.
import authlib.deprecate  # noqa: F401, I001

warnings.filterwarnings("ignore", message="authlib.jose module is deprecated")

from voicebridge.speech.coze_asr_stream import CozeStreamTranscriber  # noqa: E402
from voicebridge.speech.coze_auth import StaticToken  # noqa: E402
from voicebridge.speech.coze_common import CozeEndpoint  # noqa: E402
from voicebridge.speech.feishu_asr import FeishuStreamSettings, FeishuStreamTranscriber  # noqa: E402
from voicebridge.speech.feishu_auth import FeishuClient  # noqa: E402
from voicebridge.speech.retry import Retrier  # noqa: E402
from voicebridge.speech.service import SpeechService  # noqa: E402
from tests.fakes.coze import DEFAULT_TOKEN  # noqa: E402
from tests.fakes.feishu import DEFAULT_APP_ID, DEFAULT_APP_SECRET  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FAKE_SERVER_SCRIPT = Path(__file__).resolve().parent / "fake_server.py"
# Generated audio is kept between runs: an hour of Opus takes ~15 s to encode.
AUDIO_CACHE = Path(tempfile.gettempdir()) / "voicebridge-bench"
FFMPEG = shutil.which("ffmpeg") or "ffmpeg"
T = TypeVar("T")

PCM_RATE = 16000  # what both streaming providers take
SAMPLE_WIDTH = 2
CHUNK_SECONDS = 0.2  # 200 ms chunks, the providers' default
CHUNK_BYTES = int(PCM_RATE * CHUNK_SECONDS) * SAMPLE_WIDTH

# Speech-like rhythm: 1.2 s bursts of three alternating pitches, separated by 0.4 s pauses, so
# pause-seeking code (Feishu segment cuts) has pauses to find. One period is 4.8 s; aloop repeats
# it, which is much cheaper than evaluating the expression for an hour of samples.
_BURSTS = "0.5*sin(2*PI*(300+150*mod(floor(t/1.6),3))*t)*lt(mod(t,1.6),1.2)"
_VOICE_NOTE_RATE = 48000
_PERIOD_SAMPLES = int(4.8 * _VOICE_NOTE_RATE)


def _voice_note_args(kbps: int) -> list[str]:
    """Telegram-style voice note: mono 48 kHz Opus in Ogg (the project's own encoder args, 32 kbps)."""
    return ["-c:a", "libopus", "-b:a", f"{kbps}k", "-application", "voip", "-ar", str(_VOICE_NOTE_RATE), "-ac", "1", "-f", "ogg"]


def voice_note(seconds: int, kbps: int = 32) -> Path:
    """A speech-like OGG/Opus voice note of ``seconds`` at ``kbps`` on disk, generated once and cached."""
    path = AUDIO_CACHE / (f"speechlike-{seconds}s.ogg" if kbps == 32 else f"speechlike-{seconds}s-{kbps}k.ogg")
    if not path.exists():
        AUDIO_CACHE.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        source = f"aevalsrc='{_BURSTS}':s={_VOICE_NOTE_RATE}:d=4.8,aloop=loop=-1:size={_PERIOD_SAMPLES}"
        subprocess.run([FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", source,
                        "-t", str(seconds), *_voice_note_args(kbps), str(partial)], check=True)
        partial.rename(path)  # never leave a half-written file under the cached name
    return path


def voice_note_copies(seconds: int, count: int, kbps: int = 32) -> list[Path]:
    """``count`` copies of :func:`voice_note` with different bytes but the same audio.

    A bot answers a re-sent file from its transcript cache (same bytes, same Telegram
    ``file_unique_id``); every copy differs in one Ogg comment, so each one is really transcribed.
    """
    original = voice_note(seconds, kbps)
    copies = [original.with_name(f"{original.stem}-copy{index}.ogg") for index in range(count)]
    for index, copy in enumerate(copies):
        if not copy.exists():
            partial = copy.with_suffix(".part")
            subprocess.run([FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(original),
                            "-c", "copy", "-metadata", f"comment=copy {index}", "-f", "ogg", str(partial)], check=True)
            partial.rename(copy)
    return copies


def ffmpeg_pcm_command(source: str, sample_rate: int = PCM_RATE) -> list[str]:
    """The bare ffmpeg CLI equivalent of ``AudioConverter.pcm``: same input flags, same output args."""
    return [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-i", source,
            "-vn", "-map", "0:a:0", "-ac", "1", "-ar", str(sample_rate), "-f", "s16le", "-acodec", "pcm_s16le",
            "-flush_packets", "0", "pipe:1"]


def decode_with_cli(path: Path, sample_rate: int = PCM_RATE) -> bytes:
    return subprocess.run(ffmpeg_pcm_command(str(path), sample_rate), check=True, capture_output=True).stdout


def pcm_chunks(pcm: bytes, chunk_bytes: int = CHUNK_BYTES) -> list[bytes]:
    return [pcm[start:start + chunk_bytes] for start in range(0, len(pcm), chunk_bytes)]


async def replay(chunks: Sequence[bytes]) -> AsyncIterator[bytes]:
    """Pre-decoded chunks as the async stream a ``PcmStream`` carries (decoding left out)."""
    for chunk in chunks:
        yield chunk


# ----------------------------------------------------------------------------- services as the plugins build them


def coze_endpoint(base_url: str, ws_base_url: str) -> CozeEndpoint:
    return CozeEndpoint(StaticToken(DEFAULT_TOKEN), base_url, ws_base_url)


def coze_stream_service(base_url: str, ws_base_url: str) -> SpeechService:
    """A service whose only ASR is Coze streaming, with production timeouts and retries."""
    return SpeechService(transcribers=[CozeStreamTranscriber(coze_endpoint(base_url, ws_base_url))],
                         asr_chain=["coze-stream"])


def feishu_transcriber(base_url: str, settings: FeishuStreamSettings = FeishuStreamSettings(),
                       retrier: Retrier | None = None) -> FeishuStreamTranscriber:
    """Feishu streaming ASR wired as ``SpeechService.from_settings`` wires it."""
    client = FeishuClient(DEFAULT_APP_ID, DEFAULT_APP_SECRET, base_url, max_connections=settings.max_streams + 2)
    return FeishuStreamTranscriber(client, settings, retrier)


def feishu_service(base_url: str, settings: FeishuStreamSettings = FeishuStreamSettings()) -> SpeechService:
    """A service whose only ASR is Feishu."""
    retrier = Retrier()
    return SpeechService(transcribers=[feishu_transcriber(base_url, settings, retrier)], asr_chain=["feishu"], retrier=retrier)


# ----------------------------------------------------------------------------- statistics and output


@dataclass
class Timings:
    """Wall and CPU seconds of repeated runs of one contender."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # this process only: what the client itself costs

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        gc.collect()  # garbage left by the previous run is not this run's cost
        wall, cpu = time.perf_counter(), time.process_time()
        result = await call()
        self.cpu.append(time.process_time() - cpu)
        self.wall.append(time.perf_counter() - wall)
        return result


@dataclass(frozen=True)
class Summary:
    """Median and 90th percentile of repeated timings, in seconds."""

    median: float
    p90: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        if len(samples) < 2:
            raise ValueError("a summary needs at least two samples")
        return cls(statistics.median(samples), statistics.quantiles(samples, n=10, method="inclusive")[-1])


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (0.95 for p95), interpolated between the nearest samples."""
    ordered = sorted(samples)
    position = fraction * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def verdict(value: float, target: float) -> str:
    """'met' or 'MISSED' for a lower-is-better measurement against its target."""
    return "met" if value <= target else "MISSED"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(header), *(len(row[column]) for row in cells)) for column, header in enumerate(headers)]
    print(f"\n{title}")
    print("  ".join(header.ljust(width) for header, width in zip(headers, widths)))
    print("  ".join("-" * width for width in widths))
    for row in cells:
        print("  ".join(cell.rjust(width) if _numeric(cell) else cell.ljust(width) for cell, width in zip(row, widths)))


def _numeric(cell: str) -> bool:
    return cell.rstrip("x%").replace(".", "", 1).lstrip("-").isdigit()


def print_environment() -> None:
    """The facts a result depends on, printed at the top of every script's output."""
    ffmpeg_version = subprocess.run([FFMPEG, "-version"], capture_output=True, text=True).stdout.split("\n", 1)[0]
    print(f"date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}   cpus: {os.cpu_count()}   "
          f"python: {platform.python_version()}   {' '.join(ffmpeg_version.split()[:3])}")


# ----------------------------------------------------------------------------- processes: memory and CPU


def resident_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class PeakSampler:
    """The highest resident set of this process, sampled from a thread every 10 ms while the
    ``with`` block runs; :meth:`reset` starts a new peak from the current size."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.peak = resident_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def reset(self) -> None:
        self.peak = resident_mb()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, resident_mb())

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, resident_mb())


@dataclass(frozen=True)
class CpuTimes:
    """CPU seconds of one process (user + system) and of the children it has reaped (ffmpeg)."""

    own: float
    children: float

    @classmethod
    def of(cls, pid: int) -> CpuTimes:
        # /proc/<pid>/stat: after the ")" closing the command name, utime, stime, cutime and
        # cstime are fields 11 to 14 (counting the state field as 0), in clock ticks.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return cls((int(fields[11]) + int(fields[12])) / ticks, (int(fields[13]) + int(fields[14])) / ticks)

    @classmethod
    def of_self(cls) -> CpuTimes:
        return cls.of(os.getpid())

    def __sub__(self, earlier: CpuTimes) -> CpuTimes:
        return CpuTimes(self.own - earlier.own, self.children - earlier.children)


# ----------------------------------------------------------------------------- helper processes


FakeKind = Literal["coze", "feishu", "telegram"]


class LineProcess:
    """A helper script as a child process speaking one JSON object per line: it prints one line
    once ready, then answers each command written to its stdin with one line; end of input
    stops it. ``bench/fake_server.py`` and ``bench/bot_server.py`` speak it."""

    def __init__(self, script: Path, arguments: Sequence[str], *, environment: dict[str, str] | None = None,
                 stderr: Path | None = None) -> None:
        self.script = script
        self.arguments = list(arguments)
        self.environment = environment or {}
        self.stderr = stderr  # None: the child's stderr is this process's
        self.ready: dict[str, Any] = {}
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def cpu(self) -> CpuTimes:
        return CpuTimes.of(self.pid)

    async def __aenter__(self) -> LineProcess:
        environment = {**os.environ, **self.environment, "PYTHONPATH": str(PROJECT_ROOT)}
        stderr = self.stderr.open("ab") if self.stderr is not None else None
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, str(self.script), *self.arguments,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr, env=environment,
                limit=64 * 1024 * 1024,  # a timeline of hundreds of notes is one long line
            )
        finally:
            if stderr is not None:
                stderr.close()  # the child holds its own descriptor
        self.ready = await self._reply()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.close()  # end of input stops the child
        try:
            await asyncio.wait_for(self._process.wait(), timeout=60)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()

    async def command(self, name: str, **arguments: Any) -> dict[str, Any]:
        """Send one command and return its answer; an ``error`` answer raises."""
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(json.dumps({"command": name, **arguments}).encode() + b"\n")
        await self._process.stdin.drain()
        answer = await self._reply()
        if "error" in answer:
            raise RuntimeError(f"{self.script.name} {name}: {answer['error']}")
        return answer

    async def _reply(self) -> dict[str, Any]:
        assert self._process is not None and self._process.stdout is not None
        line = await self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.script.name} exited (status {await self._process.wait()})")
        return json.loads(line)


class FakeServerProcess(LineProcess):
    """``bench/fake_server.py`` as a child process, so the fake's CPU work never shares the event
    loop (or the GIL) of the client being measured.

    ``async with FakeServerProcess("feishu", latency=0.02) as fake: ...`` then ``fake.base_url``,
    ``fake.ws_base_url``, ``await fake.stats()`` and ``await fake.reset()``; a Telegram fake also
    has ``fake.ready["api_base_url"]``, ``["file_base_url"]`` and ``["token"]``.
    """

    def __init__(self, kind: FakeKind, latency: float = 0.0, niceness: int = 0) -> None:
        super().__init__(FAKE_SERVER_SCRIPT, [kind, "--latency", str(latency), "--niceness", str(niceness)])
        self.kind = kind
        self.latency = latency
        self.niceness = niceness

    @property
    def base_url(self) -> str:
        return str(self.ready["base_url"])

    @property
    def ws_base_url(self) -> str:
        return str(self.ready["ws_base_url"])

    @property
    def description(self) -> str:
        latency = f", {self.latency * 1000:.0f} ms simulated latency per request" if self.latency else ""
        niceness = f", nice +{self.niceness}" if self.niceness else ""
        return f"fake {self.kind} server in a separate process (pid {self.pid}{latency}{niceness})"

    async def __aenter__(self) -> FakeServerProcess:
        await super().__aenter__()
        return self

    async def stats(self) -> dict[str, Any]:
        """What the fake saw since the last reset (see fake_server.py)."""
        return await self.command("stats")

    async def reset(self) -> None:
        await self.command("reset")
