"""The bot under measurement, in a process of its own: voicebridge's Telegram bot wired as
``voicebridge run`` wires it (``voicebridge.adapters.runner``: metrics, retrier observers, plugin, polling),
configured from the environment only (no ``.env``), logging at its usual level to stderr.

Two samplers watch it: an asyncio task that sleeps 10 ms at a time and records how late each
wake-up is (event-loop lag: what every other update waits when the loop is busy), and a thread
that samples the resident set every 10 ms; the collector's pauses are timed too (a full collection
stops the loop). Speaks the line protocol of
``bench.common.LineProcess``: prints ``{"pid"}`` once polling, then answers

* ``reset`` (``sample_lag``, default true): start new lag samples (or stop sampling: the
  sampler's own wake-ups cost CPU that a per-note CPU figure must not include), a new RSS peak
  and a new count of notes;
* ``wait_done`` (``notes``, ``timeout``): answers once that many notes arrived since the reset
  and none is in flight any more;
* ``cpu``: this process's CPU seconds (``own``) and its reaped children's (``children``: ffmpeg),
  from ``getrusage``, which is exact to the microsecond where /proc counts 10 ms ticks;
* ``stats``: lag percentiles, garbage-collector pauses, RSS now / at the reset / peak since it, notes received,
  and the event-loop thread's time on a CPU and waiting for one since the reset
  (``/proc/thread-self/schedstat``): lag with little running and much waiting is the machine's, not the bot's.

Started by ``bench/pipeline.py``; ``--peer`` runs the typical peer bot of ``bench/peer_bot.py``
instead; ``--max-concurrent-notes`` sets the plugin's cap (the memory benchmark lifts it so that
a hundred notes really are in flight); ``--profile FILE`` writes cProfile data of the whole run
(CPU time of the event loop's thread).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, Protocol

from voicebridge.adapters.runner import TelegramRunner
from bench.common import PeakSampler, percentile, resident_mb
from bench.peer_bot import PeerBot
from voicebridge.config import RunnerSettings
from voicebridge.logs import configure_logging
from voicebridge.metrics import Metrics
from voicebridge.speech.audio import AudioConverter
from voicebridge.speech.retry import LoggingObserver, Observers, Retrier
from voicebridge.speech.service import SpeechService
from voicebridge.voice_notes.plugin import MAX_CONCURRENT_NOTES, VoiceNotesPlugin
from voicebridge.voice_notes.store import SQLiteStore

LAG_INTERVAL_SECONDS = 0.01
DONE_POLL_SECONDS = 0.05
SHUTDOWN_GRACE_SECONDS = 30.0
RECEIVED = "voicebridge_notes_received_total"


class LoopLagSampler:
    """How late the event loop wakes a task that sleeps ``interval``: every note's work that
    blocks the loop shows up here as lag for everything else."""

    def __init__(self, interval: float = LAG_INTERVAL_SECONDS) -> None:
        self.interval = interval
        self.lags: list[float] = []
        self.sampling = asyncio.Event()
        self.sampling.set()

    async def run(self) -> None:
        while True:
            await self.sampling.wait()
            started = time.perf_counter()
            await asyncio.sleep(self.interval)
            self.lags.append(time.perf_counter() - started - self.interval)

    def stats(self) -> dict[str, float]:
        if not self.lags:
            return {"samples": 0}
        return {"samples": len(self.lags), "p50": percentile(self.lags, 0.5), "p99": percentile(self.lags, 0.99),
                "max": max(self.lags)}


class GcPauses:
    """How long each of the collector's passes held the interpreter, per generation: a full
    collection walks every tracked object, and the loop waits for it."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self._started = 0.0
        gc.callbacks.append(self._observe)

    def _observe(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._started))

    def stats(self) -> dict[str, Any]:
        full = [seconds for generation, seconds in self.pauses if generation == 2]
        return {"collections": len(self.pauses), "full": len(full), "full_max": max(full, default=0.0),
                "total": sum(seconds for _, seconds in self.pauses)}


class MeasuredBot(Protocol):
    @property
    def received(self) -> float: ...

    @property
    def in_flight(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Bot:
    """The objects ``voicebridge.adapters.runner.run_bot`` builds for Telegram, kept at hand for the commands."""

    def __init__(self, settings: RunnerSettings, edit_interval: float, max_concurrent_notes: int, decoder: str) -> None:
        self.metrics = Metrics()
        retrier = Retrier(observer=Observers(LoggingObserver(), self.metrics))
        converter = AudioConverter(in_process=decoder == "pyav")
        self.service = SpeechService.from_settings(settings.speech, retrier=retrier, converter=converter)
        self.plugin = VoiceNotesPlugin(self.service, SQLiteStore(settings.plugin.database), settings.plugin,
                                       observer=self.metrics, edit_interval=edit_interval,
                                       max_concurrent_notes=max_concurrent_notes)
        self.runner = TelegramRunner(settings.telegram, self.plugin)

    @property
    def received(self) -> float:
        return self.metrics.value(RECEIVED, platform="telegram")

    @property
    def in_flight(self) -> int:
        return self.plugin.in_flight

    async def start(self) -> None:
        await self.runner.start()

    async def stop(self) -> None:
        await self.runner.stop_intake(SHUTDOWN_GRACE_SECONDS)
        await self.plugin.drain(SHUTDOWN_GRACE_SECONDS)
        await self.runner.close()
        await self.plugin.aclose()
        await self.service.aclose()
        self.service.converter.close()


def peer_bot(environment: dict[str, str]) -> PeerBot:
    return PeerBot(environment["TELEGRAM_BOT_TOKEN"], environment["TELEGRAM_BASE_URL"], environment["TELEGRAM_BASE_FILE_URL"],
                   environment["COZE_API_TOKEN"], environment["COZE_API_BASE"])


def loop_thread_schedule() -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) of the calling thread (Linux)."""
    try:
        running, waiting, _ = Path("/proc/thread-self/schedstat").read_text().split()
    except OSError:
        return 0.0, 0.0
    return int(running) / 1e9, int(waiting) / 1e9


def cpu_seconds() -> dict[str, float]:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"own": own.ru_utime + own.ru_stime, "children": children.ru_utime + children.ru_stime}


def reply(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


async def serve(edit_interval: float, max_concurrent_notes: int, peer: bool, decoder: str) -> None:
    settings = RunnerSettings.from_values(dict(os.environ))
    configure_logging(settings.log_level or "INFO", settings.secrets(), settings.log_format)
    bot: MeasuredBot = peer_bot(dict(os.environ)) if peer else Bot(settings, edit_interval, max_concurrent_notes, decoder)
    lag = LoopLagSampler()
    collector = GcPauses()
    with PeakSampler() as memory:
        await bot.start()
        sampler = asyncio.create_task(lag.run())
        reply({"pid": os.getpid()})
        baseline = {"rss_mb": resident_mb(), "received": bot.received}
        schedule = loop_thread_schedule()
        commands = asyncio.StreamReader()
        await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
        while line := (await commands.readline()).strip():
            command = json.loads(line)
            name = command["command"]
            if name == "reset":
                if command.get("sample_lag", True):
                    lag.sampling.set()
                else:
                    lag.sampling.clear()
                lag.lags.clear()
                collector.pauses.clear()
                memory.reset()
                baseline = {"rss_mb": resident_mb(), "received": bot.received}
                schedule = loop_thread_schedule()
                reply({"reset": True})
            elif name == "wait_done":
                reply(await wait_done(bot, baseline["received"] + command["notes"], command.get("timeout", 600)))
            elif name == "cpu":
                reply(cpu_seconds())
            elif name == "stats":
                running, waiting = (now - then for now, then in zip(loop_thread_schedule(), schedule))
                reply({"lag": lag.stats(), "gc": collector.stats(), "rss_mb": resident_mb(), "baseline_rss_mb": baseline["rss_mb"],
                       "peak_rss_mb": memory.peak, "received": bot.received - baseline["received"],
                       "loop_running_s": running, "loop_waiting_s": waiting})
            else:
                reply({"error": f"unknown command {name!r}"})
        sampler.cancel()
        await bot.stop()


async def wait_done(bot: MeasuredBot, received: float, timeout: float) -> dict[str, Any]:
    """Every expected note taken in, and none still being worked on (its reply has been sent)."""
    deadline = time.monotonic() + timeout
    while bot.received < received or bot.in_flight:
        if time.monotonic() > deadline:
            return {"error": f"timeout: {bot.received:.0f} of {received:.0f} notes received, {bot.in_flight} in flight"}
        await asyncio.sleep(DONE_POLL_SECONDS)
    return {"done": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edit-interval", type=float, default=1.0,
                        help="seconds between live edits of a streaming transcript (default 1.0, as voicebridge run)")
    parser.add_argument("--max-concurrent-notes", type=int, default=MAX_CONCURRENT_NOTES,
                        help=f"the plugin's cap on notes handled at once (default {MAX_CONCURRENT_NOTES}, as voicebridge run)")
    parser.add_argument("--peer", action="store_true", help="run the typical peer bot (bench/peer_bot.py) instead")
    parser.add_argument("--decoder", choices=["pyav", "ffmpeg"], default="pyav",
                        help="decode in process (PyAV, the default) or with ffmpeg processes (the fallback)")
    parser.add_argument("--profile", metavar="FILE", help="write cProfile statistics (event-loop thread CPU) of the whole run to FILE")
    arguments = parser.parse_args()
    run = serve(arguments.edit_interval, arguments.max_concurrent_notes, arguments.peer, arguments.decoder)
    if not arguments.profile:
        asyncio.run(run)
        return
    # CPU time of the event loop's thread: wall-clock timings would also count the time the OS
    # gave the fakes and ffmpeg, which share the cores.
    profiler = cProfile.Profile(time.thread_time)
    profiler.runcall(asyncio.run, run)
    profiler.dump_stats(arguments.profile)


if __name__ == "__main__":
    main()
