"""What the benchmark scripts share: test audio on disk, timing statistics, result tables, the
machine description, and the fake servers run in a process of their own.

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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

# cozepy (imported by the Coze fake and by the cozepy baseline) imports a deprecated authlib
# module, and authlib forces that warning on ("always") when first imported: so import authlib
# first, then silence it. Scripts import this module before anything that imports cozepy.
import authlib.deprecate  # noqa: F401, I001

warnings.filterwarnings("ignore", message="authlib.jose module is deprecated")

from bot_plugins.speech.coze_asr_stream import CozeStreamTranscriber  # noqa: E402
from bot_plugins.speech.coze_common import CozeEndpoint  # noqa: E402
from bot_plugins.speech.feishu_asr import FeishuStreamSettings, FeishuStreamTranscriber  # noqa: E402
from bot_plugins.speech.feishu_auth import FeishuClient  # noqa: E402
from bot_plugins.speech.retry import Retrier  # noqa: E402
from bot_plugins.speech.service import SpeechService  # noqa: E402
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
            "-vn", "-map", "0:a:0", "-ac", "1", "-ar", str(sample_rate), "-f", "s16le", "-acodec", "pcm_s16le", "pipe:1"]


def decode_with_cli(path: Path, sample_rate: int = PCM_RATE) -> bytes:
    return subprocess.run(ffmpeg_pcm_command(str(path), sample_rate), check=True, capture_output=True).stdout


def pcm_chunks(pcm: bytes, chunk_bytes: int = CHUNK_BYTES) -> list[bytes]:
    return [pcm[start:start + chunk_bytes] for start in range(0, len(pcm), chunk_bytes)]


# ----------------------------------------------------------------------------- services as the plugins build them


def coze_endpoint(base_url: str, ws_base_url: str) -> CozeEndpoint:
    return CozeEndpoint(DEFAULT_TOKEN, base_url, ws_base_url)


def coze_stream_service(base_url: str, ws_base_url: str) -> SpeechService:
    """A service whose only ASR is Coze streaming, with production timeouts and retries."""
    return SpeechService(transcribers=[CozeStreamTranscriber(coze_endpoint(base_url, ws_base_url))],
                         asr_chain=["coze-stream"])


def feishu_service(base_url: str, settings: FeishuStreamSettings = FeishuStreamSettings()) -> SpeechService:
    """A service whose only ASR is Feishu, wired as ``SpeechService.from_settings`` wires it."""
    retrier = Retrier()
    client = FeishuClient(DEFAULT_APP_ID, DEFAULT_APP_SECRET, base_url, max_connections=settings.max_streams + 2)
    return SpeechService(transcribers=[FeishuStreamTranscriber(client, settings, retrier)], asr_chain=["feishu"],
                         retrier=retrier)


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


# ----------------------------------------------------------------------------- fakes in their own process


FakeKind = Literal["coze", "feishu"]


class FakeServerProcess:
    """``bench/fake_server.py`` as a child process, so the fake's CPU work never shares the event
    loop (or the GIL) of the client being measured.

    ``async with FakeServerProcess("feishu", latency=0.02) as fake: ...`` then ``fake.base_url``,
    ``fake.ws_base_url``, ``await fake.stats()`` and ``await fake.reset()``.
    """

    def __init__(self, kind: FakeKind, latency: float = 0.0) -> None:
        self.kind = kind
        self.latency = latency
        self.base_url = ""
        self.ws_base_url = ""
        self._process: asyncio.subprocess.Process | None = None

    @property
    def description(self) -> str:
        assert self._process is not None
        latency = f", {self.latency * 1000:.0f} ms simulated latency per request" if self.latency else ""
        return f"fake {self.kind} server in a separate process (pid {self._process.pid}{latency})"

    async def __aenter__(self) -> FakeServerProcess:
        environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, str(FAKE_SERVER_SCRIPT), self.kind, "--latency", str(self.latency),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=environment,
        )
        ready = await self._reply()
        self.base_url, self.ws_base_url = ready["base_url"], ready["ws_base_url"]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.close()  # end of input stops the server
        try:
            await asyncio.wait_for(self._process.wait(), timeout=10)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()

    async def stats(self) -> dict[str, Any]:
        """What the fake saw since the last reset (counters per kind, see fake_server.py)."""
        return await self._command("stats")

    async def reset(self) -> None:
        await self._command("reset")

    async def _command(self, command: str) -> dict[str, Any]:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(f"{command}\n".encode())
        await self._process.stdin.drain()
        return await self._reply()

    async def _reply(self) -> dict[str, Any]:
        assert self._process is not None and self._process.stdout is not None
        line = await self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the fake {self.kind} server exited (status {await self._process.wait()})")
        return json.loads(line)
