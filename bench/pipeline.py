"""The whole bot, end to end: voice notes pushed into a fake Telegram, answered by the real bot.

Three processes per ASR provider, so that no fake's CPU is billed to the bot: the fake Telegram
Bot API and the fake speech provider (``bench/fake_server.py``), and the bot
(``bench/bot_server.py``: ``TelegramRunner`` + plugin + ``SpeechService``, as ``voicebridge run``
builds them, long polling the fake). Times come from the fakes: "arrival" is when getUpdates
handed the update to the bot; "reply" is the Bot API request carrying the final text (the last
edit, for providers that stream partials); "feedback" is the first chat action or reply after
arrival; "provider time" is what the fake provider spent answering (see ``ProviderClock``).
Every note has its own bytes, so the transcript cache never answers (``voice_note_copies``).

The primary figure is **CPU per note relative to bare ffmpeg**: the bot's CPU (its process and
its reaped children, from ``getrusage`` inside the bot; the fakes excluded) divided by the CPU the
ffmpeg CLI needs to decode the same note to 16 kHz PCM, measured in the same run. A ratio of
two CPU times on the same machine means much the same on any machine.

Measurements (``--measure``), per provider (``--providers``: coze = file ASR, coze-stream, feishu;
also coze-stream-pcm: coze-stream with ``COZE_STREAM_INPUT=pcm``, every note decoded and streamed
as PCM, as before Ogg/Opus notes went as they are):

* ``overhead``: one note at a time, 5 s, 10 s, 60 s, 10 min: CPU per note relative to ffmpeg
  (targets: coze and coze-stream <= 0.6x at 10 s and <= 0.9x at 60 s; feishu <= 1.0x at 10 s and
  60 s), and the latency overhead (reply - arrival) - provider time.
* ``burst``: 40 notes of 10 s from 40 chats at once: CPU per note relative to ffmpeg, event-loop
  lag p99 (target <= 20 ms), first feedback p95 (target <= 150 ms), latency.
* ``peer``: the same burst through the typical peer bot of ``bench/peer_bot.py`` (PTB + pydub
  export to a temporary MP3 + cozepy upload, on Coze file ASR) next to voicebridge on Coze file
  ASR: targets <= 0.25x its CPU per note and <= 0.5x its median latency.
* ``throughput``: 200 notes of 10 s from 20 chats at once, against 200 ffmpeg decodes 2 at a time.
* ``memory``: peak RSS of the bot with 100 notes of 60 s really in flight: the bot runs with its
  note cap lifted to 100 for this (target <= 250 MB).
* ``placeholder``: 40 notes of 5 s one at a time, each from a chat of its own: time from the
  update's arrival to the first visible message, the "Transcribing…" placeholder (target p95
  <= 300 ms); with ``burst`` also measured for the burst's 40 chats at once.
* ``long-note``: one 60-minute note (16 kbps OGG/Opus, 8 MB: under Telegram's 20 MB download
  cap) sent as an audio document; RSS growth (target <= 60 MB).

``--profile`` runs the bot under cProfile (CPU time of its event-loop thread) and prints the top
functions; profiled timings are not results. The bot's log and SQLite file stay in a temporary
directory, printed per provider.

    PYTHONPATH=. .venv/bin/python bench/pipeline.py [--measure overhead burst peer throughput memory long-note]
        [--providers coze coze-stream coze-stream-pcm feishu] [--lengths 5 10 60 600] [--edit-interval 1.0]
        [--feishu-latency 0] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import pstats
import resource
import re
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    CpuTimes,
    FakeServerProcess,
    LineProcess,
    decode_with_cli,
    percentile,
    print_environment,
    print_table,
    verdict,
    voice_note,
    voice_note_copies,
)
from tests.fakes.coze import DEFAULT_TOKEN
from tests.fakes.feishu import DEFAULT_APP_ID, DEFAULT_APP_SECRET

BOT_SERVER_SCRIPT = Path(__file__).resolve().parent / "bot_server.py"
PROVIDERS = ("coze", "coze-stream", "feishu")
PCM_STREAM = "coze-stream-pcm"  # coze-stream with COZE_STREAM_INPUT=pcm (not measured unless asked for)
MEASUREMENTS = ("overhead", "burst", "peer", "throughput", "memory", "long-note", "placeholder")
DEFAULT_MEASUREMENTS = ("overhead", "burst", "peer", "memory", "long-note")
# The fakes describe what they heard ("tone 450 hz 10.0 s"): anything else is an error message.
TRANSCRIPT = re.compile(r"^(tone \d+ hz [\d.]+ s ?)+$")
DONE_TIMEOUT_SECONDS = 900.0
FAKE_NICENESS = 15  # the fakes, and the ffmpeg the Coze fake runs per upload, yield the CPU to the bot

OVERHEAD_FACTOR, OVERHEAD_ALLOWANCE = 1.5, 0.030
REPEATS = {5: 10, 10: 10, 60: 5, 600: 3}  # runs per note length; others get 3
FLOOR_RUNS = 5
# CPU per note relative to bare ffmpeg: provider -> {note seconds: target}.
CPU_TARGETS = {"coze": {10: 0.6, 60: 0.9}, "coze-stream": {10: 0.6, 60: 0.9}, PCM_STREAM: {10: 0.6, 60: 0.9},
               "feishu": {10: 1.0, 60: 1.0}}
BURST_NOTES, BURST_SECONDS, BURST_LAG_TARGET, BURST_FEEDBACK_TARGET = 40, 10, 0.020, 0.150
PEER_CPU_TARGET, PEER_LATENCY_TARGET = 0.25, 0.5
THROUGHPUT_NOTES, THROUGHPUT_CHATS, THROUGHPUT_SECONDS, CEILING_PROCESSES = 200, 20, 10, 2
THROUGHPUT_TARGET, LAG_TARGET, FEEDBACK_TARGET = 0.70, 0.050, 0.300
# The first visible message (the "Transcribing…" placeholder) after the update arrived: notes one
# at a time from chats of their own, as users send them, and in the burst.
PLACEHOLDER_NOTES, PLACEHOLDER_SECONDS, PLACEHOLDER_TARGET = 40, 5, 0.300
MEMORY_NOTES, MEMORY_SECONDS, MEMORY_TARGET_MB = 100, 60, 250.0
LONG_NOTE_SECONDS, LONG_NOTE_KBPS, LONG_NOTE_TARGET_MB = 3600, 16, 60.0
# Chat ids per scenario (private chats: each user is a chat), so scenarios never share a queue.
OVERHEAD_CHAT, THROUGHPUT_CHAT, MEMORY_CHAT, LONG_NOTE_CHAT, BURST_CHAT, PLACEHOLDER_CHAT = 100, 1000, 2000, 3000, 4000, 5000


@dataclass(frozen=True)
class Note:
    """One note as the fake Telegram saw it (times: time.monotonic(), shared by all processes)."""

    arrival: float
    feedback: float  # never later than the reply, which is feedback too
    first_message: float  # the first message replying to the note: its placeholder
    reply: float
    text: str
    text_calls: int

    @property
    def latency(self) -> float:
        return self.reply - self.arrival

    @property
    def feedback_delay(self) -> float:
        return self.feedback - self.arrival

    @property
    def first_message_delay(self) -> float:
        return self.first_message - self.arrival


@dataclass(frozen=True)
class Batch:
    """What one push of notes produced, once the bot had answered them all."""

    notes: list[Note]
    provider: dict[str, Any]  # fake provider's stats (provider_seconds, requests…)
    bot: dict[str, Any]  # bot_server's stats (lag, RSS)
    cpu: dict[str, CpuTimes]  # CPU used during the batch, per process (/proc ticks); the bot's from getrusage

    @property
    def bot_cpu(self) -> float:
        """The bot's CPU seconds for the batch: its process and its reaped children (ffmpeg)."""
        return self.cpu["bot"].own + self.cpu["bot"].children

    @property
    def wall(self) -> float:
        return max(note.reply for note in self.notes) - min(note.arrival for note in self.notes)


class Stack:
    """Fake Telegram + fake provider + the bot, each in its own process, for one ASR provider."""

    def __init__(self, provider: str, telegram: FakeServerProcess, speech: FakeServerProcess, bot: LineProcess) -> None:
        self.provider = provider
        self.telegram = telegram
        self.speech = speech
        self.bot = bot
        self._copies_used: dict[tuple[int, int], int] = {}

    def fresh_notes(self, seconds: int, count: int, kbps: int = 32) -> list[Path]:
        """Copies this bot has not heard yet (it would answer a repeat from its transcript cache)."""
        used = self._copies_used.get((seconds, kbps), 0)
        self._copies_used[(seconds, kbps)] = used + count
        return voice_note_copies(seconds, used + count, kbps)[used:]

    async def bot_cpu(self) -> CpuTimes:
        answer = await self.bot.command("cpu")
        return CpuTimes(answer["own"], answer["children"])

    async def send(self, notes: Sequence[tuple[int, Path, int]], kind: str = "voice", sample_lag: bool = True) -> Batch:
        """Push (chat, file, seconds) notes at once, wait until all are answered, collect."""
        for process in (self.telegram, self.speech):
            await process.command("reset")
        await self.bot.command("reset", sample_lag=sample_lag)
        fakes = {"telegram fake": self.telegram, "provider fake": self.speech}
        cpu_before = {name: process.cpu() for name, process in fakes.items()}
        bot_before = await self.bot_cpu()
        await self.telegram.command("push_voices", notes=[
            {"chat": chat, "path": str(path), "seconds": seconds, "kind": kind} for chat, path, seconds in notes])
        await self.bot.command("wait_done", notes=len(notes), timeout=DONE_TIMEOUT_SECONDS)
        cpu = {"bot": await self.bot_cpu() - bot_before, **{name: process.cpu() - cpu_before[name] for name, process in fakes.items()}}
        timeline = (await self.telegram.command("timeline"))["notes"]
        answered = [Note(row["arrival"], row["feedback"], row["first_message"], row["reply"], row["text"], row["text_calls"])
                    for row in timeline if row["arrival"] is not None and row["reply"] is not None]
        wrong = [note.text for note in answered if not TRANSCRIPT.match(note.text)]
        if len(answered) != len(notes) or wrong:
            raise SystemExit(f"{self.provider}: {len(answered)} of {len(notes)} notes answered; "
                             f"not transcripts: {wrong[:3]}")
        return Batch(answered, await self.speech.stats(), await self.bot.command("stats"), cpu)


def bot_environment(provider: str, telegram: FakeServerProcess, speech: FakeServerProcess, workdir: Path) -> dict[str, str]:
    values = {
        "TELEGRAM_BOT_TOKEN": telegram.ready["token"],
        "TELEGRAM_BASE_URL": telegram.ready["api_base_url"],
        "TELEGRAM_BASE_FILE_URL": telegram.ready["file_base_url"],
        "VOICEBRIDGE_ASR": "coze-stream" if provider == PCM_STREAM else provider,
        "VOICEBRIDGE_DB": str(workdir / f"{provider}.db"),
        "VOICEBRIDGE_MAX_DURATION": str(LONG_NOTE_SECONDS + 60),  # the hour-long note is a little over 3600 s
    }
    if provider == PCM_STREAM:
        values["COZE_STREAM_INPUT"] = "pcm"
    if provider.startswith("coze"):
        return values | {"COZE_API_TOKEN": DEFAULT_TOKEN, "COZE_API_BASE": speech.base_url, "COZE_WS_BASE": speech.ws_base_url}
    return values | {"FEISHU_APP_ID": DEFAULT_APP_ID, "FEISHU_APP_SECRET": DEFAULT_APP_SECRET, "FEISHU_BASE_URL": speech.base_url}


@asynccontextmanager
async def running_stack(provider: str, workdir: Path, edit_interval: float, feishu_latency: float,
                        profile: Path | None, bot_arguments: Sequence[str] = (), label: str | None = None) -> AsyncIterator[Stack]:
    label = label or provider
    async with AsyncExitStack() as processes:
        # The fakes stand for remote services: they run below the bot's priority, so that on this
        # machine's shared cores they take the CPU the bot leaves rather than the bot's own.
        telegram = await processes.enter_async_context(FakeServerProcess("telegram", niceness=FAKE_NICENESS))
        kind = "coze" if provider.startswith("coze") else "feishu"
        speech = await processes.enter_async_context(FakeServerProcess(kind, latency=feishu_latency if kind == "feishu" else 0.0,
                                                                       niceness=FAKE_NICENESS))
        arguments = ["--edit-interval", str(edit_interval), *bot_arguments] + (["--profile", str(profile)] if profile else [])
        bot = LineProcess(BOT_SERVER_SCRIPT, arguments, environment=bot_environment(provider, telegram, speech, workdir),
                          stderr=workdir / f"{label}.log")
        await processes.enter_async_context(bot)
        await telegram.command("wait_polling")
        print(f"\n{label}: bot pid {bot.pid} (log {workdir / f'{label}.log'}); {telegram.description}; "
              f"{speech.description}", flush=True)
        stack = Stack(provider, telegram, speech, bot)
        await stack.send([(OVERHEAD_CHAT, path, 5) for path in stack.fresh_notes(5, 1)])  # warm-up, not measured
        yield stack


# ----------------------------------------------------------------------------- ffmpeg baselines


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Floor:
    """Bare ffmpeg decoding a note to 16 kHz PCM: median wall time and median CPU seconds."""

    wall: float
    cpu: float


def decode_floor(paths: Sequence[Path], runs: int = FLOOR_RUNS) -> Floor:
    """The ffmpeg CLI decoding each of ``paths`` (cycled, ``runs`` decodes at least), one at a time."""
    walls, cpus = [], []
    for index in range(max(runs, len(paths))):
        cpu, started = children_cpu(), time.perf_counter()
        decode_with_cli(paths[index % len(paths)])
        walls.append(time.perf_counter() - started)
        cpus.append(children_cpu() - cpu)
    return Floor(statistics.median(walls), statistics.median(cpus))


def decode_ceiling(paths: Sequence[Path], processes: int = CEILING_PROCESSES) -> tuple[float, float]:
    """(notes per second, ffmpeg CPU seconds per note) decoding every file, ``processes`` at a time."""
    cpu_before = CpuTimes.of_self()
    started = time.perf_counter()
    with ThreadPoolExecutor(processes) as pool:
        list(pool.map(decode_with_cli, paths))
    wall = time.perf_counter() - started
    return len(paths) / wall, (CpuTimes.of_self() - cpu_before).children / len(paths)


# ----------------------------------------------------------------------------- measurements


@dataclass(frozen=True)
class OverheadRow:
    provider: str
    seconds: int
    runs: int
    end_to_end: float
    provider_time: float
    provider_time_sum: float
    overhead: float
    after_last_answer: float  # reply - the provider's last answer: the bot's work once it has the final text
    floor: Floor
    text_calls: float
    bot_cpu: float  # CPU seconds per note, bot process + its children

    @property
    def target(self) -> float:
        return OVERHEAD_FACTOR * self.floor.wall + OVERHEAD_ALLOWANCE

    @property
    def cpu_ratio(self) -> float:
        return self.bot_cpu / self.floor.cpu

    @property
    def cpu_target(self) -> float | None:
        return CPU_TARGETS.get(self.provider, {}).get(self.seconds)


async def measure_overhead(stack: Stack, lengths: Sequence[int]) -> list[OverheadRow]:
    rows = []
    for seconds in lengths:
        paths = stack.fresh_notes(seconds, REPEATS.get(seconds, 3))
        floor = decode_floor(paths, FLOOR_RUNS if seconds < 600 else 3)
        batches = [await stack.send([(OVERHEAD_CHAT, path, seconds)], sample_lag=False) for path in paths]
        notes = [batch.notes[0] for batch in batches]
        busy = [batch.provider["provider_seconds"] for batch in batches]
        rows.append(OverheadRow(
            stack.provider, seconds, len(batches), statistics.median(note.latency for note in notes),
            statistics.median(busy), statistics.median(batch.provider["provider_seconds_sum"] for batch in batches),
            statistics.median(note.latency - provider for note, provider in zip(notes, busy)),
            statistics.median(note.reply - batch.provider["last_answer_end"] for note, batch in zip(notes, batches)), floor,
            statistics.median(note.text_calls for note in notes),
            sum(batch.bot_cpu for batch in batches) / len(batches)))
        row = rows[-1]
        print(f"  {seconds} s: CPU {row.bot_cpu * 1000:.1f} ms = {row.cpu_ratio:.2f}x ffmpeg ({floor.cpu * 1000:.1f} ms); "
              f"overhead {row.overhead * 1000:.0f} ms", flush=True)
    return rows


@dataclass(frozen=True)
class BurstRow:
    label: str
    batch: Batch
    floor: Floor

    @property
    def cpu_per_note(self) -> float:
        return self.batch.bot_cpu / len(self.batch.notes)

    @property
    def cpu_ratio(self) -> float:
        return self.cpu_per_note / self.floor.cpu

    @property
    def median_latency(self) -> float:
        return statistics.median(note.latency for note in self.batch.notes)

    def feedback(self, fraction: float) -> float:
        return percentile([note.feedback_delay for note in self.batch.notes], fraction)

    def first_message(self, fraction: float) -> float:
        return percentile([note.first_message_delay for note in self.batch.notes], fraction)


@dataclass(frozen=True)
class PlaceholderRow:
    provider: str
    delays: list[float]  # update arrival → first visible message, per note

    def first_message(self, fraction: float) -> float:
        return percentile(self.delays, fraction)


async def measure_placeholder(stack: Stack) -> PlaceholderRow:
    """Notes one at a time, each from a chat of its own: how soon the placeholder shows."""
    delays = []
    for index, path in enumerate(stack.fresh_notes(PLACEHOLDER_SECONDS, PLACEHOLDER_NOTES)):
        batch = await stack.send([(PLACEHOLDER_CHAT + index, path, PLACEHOLDER_SECONDS)], sample_lag=False)
        delays.append(batch.notes[0].first_message_delay)
    row = PlaceholderRow(stack.provider, delays)
    print(f"  placeholder: first message p50 {row.first_message(0.5) * 1000:.0f} ms, p95 "
          f"{row.first_message(0.95) * 1000:.0f} ms", flush=True)
    return row


def print_placeholder(rows: list[PlaceholderRow], bursts: list[BurstRow]) -> None:
    print_table(f"First visible message (the placeholder) after the update arrived (target p95 <= "
                f"{PLACEHOLDER_TARGET * 1000:.0f} ms): {PLACEHOLDER_NOTES} notes of {PLACEHOLDER_SECONDS} s one at a time, "
                f"and in the burst of {BURST_NOTES} chats at once",
                ["provider", "one at a time p50 ms", "p95 ms", "max ms", "target", "burst p50 ms", "burst p95 ms",
                 "burst target"],
                [[row.provider, f"{row.first_message(0.5) * 1000:.0f}", f"{row.first_message(0.95) * 1000:.0f}",
                  f"{max(row.delays) * 1000:.0f}", verdict(row.first_message(0.95), PLACEHOLDER_TARGET),
                  *next(([f"{burst.first_message(0.5) * 1000:.0f}", f"{burst.first_message(0.95) * 1000:.0f}",
                          verdict(burst.first_message(0.95), PLACEHOLDER_TARGET)]
                         for burst in bursts if burst.label == row.provider), ["-", "-", "-"])] for row in rows])


async def measure_burst(stack: Stack, label: str | None = None) -> BurstRow:
    paths = stack.fresh_notes(BURST_SECONDS, BURST_NOTES)
    floor = decode_floor(paths)
    batch = await stack.send([(BURST_CHAT + index, path, BURST_SECONDS) for index, path in enumerate(paths)])
    row = BurstRow(label or stack.provider, batch, floor)
    print(f"  burst: CPU {row.cpu_per_note * 1000:.1f} ms per note = {row.cpu_ratio:.2f}x ffmpeg; median latency "
          f"{row.median_latency * 1000:.0f} ms; lag p99 {batch.bot['lag']['p99'] * 1000:.1f} ms; feedback p95 "
          f"{row.feedback(0.95) * 1000:.0f} ms; first message p95 {row.first_message(0.95) * 1000:.0f} ms", flush=True)
    return row


@dataclass(frozen=True)
class ThroughputRow:
    provider: str
    batch: Batch
    ceiling: float  # notes/s
    ceiling_cpu: float  # ffmpeg CPU seconds per note in the ceiling run

    @property
    def rate(self) -> float:
        return len(self.batch.notes) / self.batch.wall

    @property
    def first_notes(self) -> list[Note]:
        """Each chat's first note (notes were pushed one chat after the other, round after round)."""
        return self.batch.notes[:THROUGHPUT_CHATS]

    def feedback(self, fraction: float, first_per_chat: bool = False) -> float:
        return percentile([note.feedback_delay for note in (self.first_notes if first_per_chat else self.batch.notes)], fraction)

    @property
    def chats_without_early_feedback(self) -> int:
        return sum(1 for note in self.first_notes if note.feedback_delay > FEEDBACK_TARGET)


async def measure_throughput(stack: Stack) -> ThroughputRow:
    paths = stack.fresh_notes(THROUGHPUT_SECONDS, THROUGHPUT_NOTES)
    ceiling, ceiling_cpu = decode_ceiling(paths)
    batch = await stack.send([(THROUGHPUT_CHAT + index % THROUGHPUT_CHATS, path, THROUGHPUT_SECONDS)
                              for index, path in enumerate(paths)])
    row = ThroughputRow(stack.provider, batch, ceiling, ceiling_cpu)
    print(f"  throughput: {row.rate:.1f} notes/s (ceiling {ceiling:.1f})", flush=True)
    return row


@dataclass(frozen=True)
class MemoryRow:
    provider: str
    scenario: str
    batch: Batch
    target: float
    growth_counts: bool  # the target limits the growth (else the peak itself)

    @property
    def measured(self) -> float:
        bot = self.batch.bot
        return bot["peak_rss_mb"] - bot["baseline_rss_mb"] if self.growth_counts else bot["peak_rss_mb"]


async def measure_memory(stack: Stack) -> MemoryRow:
    paths = stack.fresh_notes(MEMORY_SECONDS, MEMORY_NOTES)
    batch = await stack.send([(MEMORY_CHAT + index, path, MEMORY_SECONDS) for index, path in enumerate(paths)])
    print(f"  memory: peak {batch.bot['peak_rss_mb']:.0f} MB", flush=True)
    return MemoryRow(stack.provider, f"{MEMORY_NOTES} x {MEMORY_SECONDS} s at once", batch, MEMORY_TARGET_MB, False)


async def measure_long_note(stack: Stack) -> MemoryRow:
    [path] = stack.fresh_notes(LONG_NOTE_SECONDS, 1, LONG_NOTE_KBPS)
    batch = await stack.send([(LONG_NOTE_CHAT, path, LONG_NOTE_SECONDS)], kind="document")
    print(f"  long note: +{batch.bot['peak_rss_mb'] - batch.bot['baseline_rss_mb']:.0f} MB in "
          f"{batch.notes[0].latency:.1f} s", flush=True)
    size = path.stat().st_size / 1e6
    return MemoryRow(stack.provider, f"{LONG_NOTE_SECONDS // 60} min document, {size:.1f} MB", batch, LONG_NOTE_TARGET_MB, True)


# ----------------------------------------------------------------------------- report


def print_overhead(rows: list[OverheadRow]) -> None:
    print_table("CPU per note, one note at a time: the bot (process + children) against bare ffmpeg decoding the same "
                "note to 16 kHz PCM, same run (targets: coze, coze-stream <= 0.6x at 10 s and <= 0.9x at 60 s; "
                "feishu <= 1.0x at 10 s and 60 s)",
                ["provider", "note s", "runs", "bot CPU ms", "ffmpeg CPU ms", "ratio", "target", "result"],
                [[row.provider, row.seconds, row.runs, f"{row.bot_cpu * 1000:.1f}", f"{row.floor.cpu * 1000:.1f}",
                  f"{row.cpu_ratio:.2f}x", f"{row.cpu_target:.1f}x" if row.cpu_target else "-",
                  verdict(row.cpu_ratio, row.cpu_target) if row.cpu_target else "-"] for row in rows])
    print_table(f"Latency overhead per note: (reply - arrival) - provider time, median (target: <= "
                f"{OVERHEAD_FACTOR}x ffmpeg floor + {OVERHEAD_ALLOWANCE * 1000:.0f} ms)",
                ["provider", "note s", "runs", "end to end ms", "provider ms", "provider sum ms", "overhead ms",
                 "reply after last answer ms", "ffmpeg floor ms", "target ms", "overhead/floor", "text calls", "target"],
                [[row.provider, row.seconds, row.runs, f"{row.end_to_end * 1000:.0f}", f"{row.provider_time * 1000:.0f}",
                  f"{row.provider_time_sum * 1000:.0f}", f"{row.overhead * 1000:.0f}", f"{row.after_last_answer * 1000:.0f}",
                  f"{row.floor.wall * 1000:.0f}",
                  f"{row.target * 1000:.0f}", f"{row.overhead / row.floor.wall:.2f}x", f"{row.text_calls:.0f}",
                  verdict(row.overhead, row.target)] for row in rows])


def print_burst(rows: list[BurstRow]) -> None:
    print_table(f"Burst: {BURST_NOTES} notes of {BURST_SECONDS} s from {BURST_NOTES} chats at once (targets: lag p99 <= "
                f"{BURST_LAG_TARGET * 1000:.0f} ms, first feedback p95 <= {BURST_FEEDBACK_TARGET * 1000:.0f} ms)",
                ["bot", "CPU per note ms", "ffmpeg CPU ms", "ratio", "p50 latency ms", "p95 latency ms", "lag p99 ms",
                 "lag max ms", "lag", "feedback p95 ms", "feedback", "GCs (full)", "longest full GC ms",
                 "loop on CPU s", "loop waiting for CPU s"],
                [[row.label, f"{row.cpu_per_note * 1000:.1f}", f"{row.floor.cpu * 1000:.1f}", f"{row.cpu_ratio:.2f}x",
                  f"{row.median_latency * 1000:.0f}", f"{percentile([note.latency for note in row.batch.notes], 0.95) * 1000:.0f}",
                  f"{row.batch.bot['lag']['p99'] * 1000:.1f}", f"{row.batch.bot['lag']['max'] * 1000:.0f}",
                  verdict(row.batch.bot["lag"]["p99"], BURST_LAG_TARGET), f"{row.feedback(0.95) * 1000:.0f}",
                  verdict(row.feedback(0.95), BURST_FEEDBACK_TARGET),
                  f"{row.batch.bot['gc']['collections']} ({row.batch.bot['gc']['full']})",
                  f"{row.batch.bot['gc']['full_max'] * 1000:.0f}", f"{row.batch.bot['loop_running_s']:.2f}",
                  f"{row.batch.bot['loop_waiting_s']:.2f}"] for row in rows])


def print_peer(ours: BurstRow, peer: BurstRow) -> None:
    cpu, latency = ours.cpu_per_note / peer.cpu_per_note, ours.median_latency / peer.median_latency
    print_table(f"voicebridge vs the typical peer bot, Coze file ASR, {BURST_NOTES} concurrent {BURST_SECONDS} s notes "
                f"(targets: <= {PEER_CPU_TARGET}x its CPU per note, <= {PEER_LATENCY_TARGET}x its median latency)",
                ["bot", "CPU per note ms", "median latency ms", "CPU vs peer", "latency vs peer", "CPU", "latency"],
                [[peer.label, f"{peer.cpu_per_note * 1000:.1f}", f"{peer.median_latency * 1000:.0f}", "1.00x", "1.00x", "", ""],
                 [ours.label, f"{ours.cpu_per_note * 1000:.1f}", f"{ours.median_latency * 1000:.0f}", f"{cpu:.2f}x",
                  f"{latency:.2f}x", verdict(cpu, PEER_CPU_TARGET), verdict(latency, PEER_LATENCY_TARGET)]])


def print_throughput(rows: list[ThroughputRow]) -> None:
    def latency(row: ThroughputRow, fraction: float) -> str:
        return f"{percentile([note.latency for note in row.batch.notes], fraction) * 1000:.0f}"

    print_table(f"Throughput: {THROUGHPUT_NOTES} notes of {THROUGHPUT_SECONDS} s from {THROUGHPUT_CHATS} chats at once "
                f"(target: >= {THROUGHPUT_TARGET:.0%} of {THROUGHPUT_NOTES} ffmpeg decodes, {CEILING_PROCESSES} at a time)",
                ["provider", "wall s", "notes/s", "ceiling notes/s", "of ceiling", "p50 latency ms", "p95 latency ms", "target"],
                [[row.provider, f"{row.batch.wall:.2f}", f"{row.rate:.1f}", f"{row.ceiling:.1f}",
                  f"{row.rate / row.ceiling:.0%}", latency(row, 0.5), latency(row, 0.95),
                  "met" if row.rate >= THROUGHPUT_TARGET * row.ceiling else "MISSED"] for row in rows])
    print_table(f"Under that load: event-loop lag in the bot (10 ms sleeps; target p99 <= {LAG_TARGET * 1000:.0f} ms) and "
                f"first feedback after arrival (target p95 <= {FEEDBACK_TARGET * 1000:.0f} ms)",
                ["provider", "lag samples", "lag p50 ms", "lag p99 ms", "lag max ms", "lag target", "feedback p50 ms",
                 "feedback p95 ms", "p95, first note per chat ms", "chats waiting > target", "feedback target",
                 "full GCs", "longest GC ms"],
                [[row.provider, row.batch.bot["lag"]["samples"], f"{row.batch.bot['lag']['p50'] * 1000:.1f}",
                  f"{row.batch.bot['lag']['p99'] * 1000:.1f}", f"{row.batch.bot['lag']['max'] * 1000:.0f}",
                  verdict(row.batch.bot["lag"]["p99"], LAG_TARGET), f"{row.feedback(0.5) * 1000:.0f}",
                  f"{row.feedback(0.95) * 1000:.0f}", f"{row.feedback(0.95, first_per_chat=True) * 1000:.0f}",
                  f"{row.chats_without_early_feedback} of {THROUGHPUT_CHATS}", verdict(row.feedback(0.95), FEEDBACK_TARGET),
                  row.batch.bot["gc"]["full"], f"{row.batch.bot['gc']['full_max'] * 1000:.0f}"]
                 for row in rows])

    def per_note(row: ThroughputRow, seconds: float) -> str:
        return f"{seconds / len(row.batch.notes) * 1000:.1f}"

    # The fakes share the two cores with the bot; "bot alone" projects the share of the ceiling the
    # bot's own CPU (Python + its ffmpeg) would allow if they did not, as if CPU were the only limit.
    print_table("CPU per note during the throughput run, ms (own = the process; ffmpeg = its ffmpeg children)",
                ["provider", "bot own", "bot ffmpeg", "telegram fake", "provider fake own", "provider fake ffmpeg",
                 "all", "ceiling run: ffmpeg per note", "bot alone: projected share of ceiling"],
                [[row.provider, per_note(row, row.batch.cpu["bot"].own), per_note(row, row.batch.cpu["bot"].children),
                  per_note(row, row.batch.cpu["telegram fake"].own + row.batch.cpu["telegram fake"].children),
                  per_note(row, row.batch.cpu["provider fake"].own), per_note(row, row.batch.cpu["provider fake"].children),
                  per_note(row, sum(cpu.own + cpu.children for cpu in row.batch.cpu.values())),
                  f"{row.ceiling_cpu * 1000:.1f}",
                  f"{row.ceiling_cpu * len(row.batch.notes) / (row.batch.cpu['bot'].own + row.batch.cpu['bot'].children):.0%}"]
                 for row in rows])


def print_memory(rows: list[MemoryRow]) -> None:
    print_table(f"Bot resident memory, MB (targets: peak <= {MEMORY_TARGET_MB:.0f} with {MEMORY_NOTES} notes at once; "
                f"growth <= {LONG_NOTE_TARGET_MB:.0f} for the {LONG_NOTE_SECONDS // 60}-minute note)",
                ["provider", "scenario", "RSS before", "peak RSS", "growth", "wall s", "target", "result"],
                [[row.provider, row.scenario, f"{row.batch.bot['baseline_rss_mb']:.1f}", f"{row.batch.bot['peak_rss_mb']:.1f}",
                  f"{row.batch.bot['peak_rss_mb'] - row.batch.bot['baseline_rss_mb']:.1f}", f"{row.batch.wall:.1f}",
                  f"{'growth' if row.growth_counts else 'peak'} <= {row.target:.0f}", verdict(row.measured, row.target)]
                 for row in rows])


def print_profile(path: Path, lines: int = 25) -> None:
    print(f"\ncProfile of the bot's event-loop thread, CPU time ({path}); profiled timings are not results:")
    pstats.Stats(str(path)).sort_stats("tottime").print_stats(lines)


async def measure(providers: Sequence[str], measurements: Sequence[str], lengths: Sequence[int], edit_interval: float,
                  feishu_latency: float, profile: bool, decoder: str) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="voicebridge-pipeline-"))
    for seconds in {*lengths, 5, BURST_SECONDS, THROUGHPUT_SECONDS, MEMORY_SECONDS}:
        voice_note(seconds)  # generate (once) before anything is timed
    voice_note(LONG_NOTE_SECONDS, LONG_NOTE_KBPS)
    overhead: list[OverheadRow] = []
    bursts: list[BurstRow] = []
    throughput: list[ThroughputRow] = []
    memory: list[MemoryRow] = []
    placeholders: list[PlaceholderRow] = []
    for provider in providers:
        profile_path = workdir / f"{provider}.prof" if profile else None
        async with running_stack(provider, workdir, edit_interval, feishu_latency, profile_path, ["--decoder", decoder]) as stack:
            if "overhead" in measurements:
                overhead += await measure_overhead(stack, lengths)
            if "placeholder" in measurements:
                placeholders.append(await measure_placeholder(stack))
            if "burst" in measurements or ("peer" in measurements and provider == "coze"):
                bursts.append(await measure_burst(stack))
            if "throughput" in measurements:
                throughput.append(await measure_throughput(stack))
            if "long-note" in measurements:
                memory.append(await measure_long_note(stack))
        if profile_path:
            print_profile(profile_path)
        if "memory" in measurements:  # a bot of its own, with the note cap lifted: 100 notes really in flight
            async with running_stack(provider, workdir, edit_interval, feishu_latency, None,
                                     ["--decoder", decoder, "--max-concurrent-notes", str(MEMORY_NOTES)],
                                     f"{provider}-memory") as stack:
                memory.append(await measure_memory(stack))
    peer: BurstRow | None = None
    if "peer" in measurements:
        async with running_stack("coze", workdir, edit_interval, feishu_latency, None, ["--peer"], "peer") as stack:
            peer = await measure_burst(stack, "typical peer bot")
    print(f"\nsetup: per provider, the fake Telegram Bot API, the fake provider and the bot each in their own process "
          f"(no CPU pinning: all share the machine's cores); bot edit interval {edit_interval:g} s; Feishu fake latency "
          f"{feishu_latency * 1000:.0f} ms per request; notes are speech-like OGG/Opus voice notes, 32 kbps; "
          f"decoder: {'in process (PyAV)' if decoder == 'pyav' else 'ffmpeg processes'}")
    if overhead:
        print_overhead(overhead)
    if bursts:
        print_burst(bursts + ([peer] if peer else []))
    if peer:
        print_peer(next(row for row in bursts if row.label == "coze"), peer)
    if throughput:
        print_throughput(throughput)
    if memory:
        print_memory(memory)
    if placeholders:
        print_placeholder(placeholders, bursts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measure", nargs="+", choices=MEASUREMENTS, default=list(DEFAULT_MEASUREMENTS),
                        help=f"what to measure (default: {' '.join(DEFAULT_MEASUREMENTS)})")
    parser.add_argument("--providers", nargs="+", choices=[*PROVIDERS, PCM_STREAM], default=list(PROVIDERS),
                        help=f"ASR providers (default: all three; {PCM_STREAM}: coze-stream sending PCM only)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[5, 10, 60, 600],
                        help="note lengths in seconds for the overhead measurement (default 5 10 60 600)")
    parser.add_argument("--edit-interval", type=float, default=1.0,
                        help="bot's seconds between live transcript edits (default 1.0, as voicebridge run)")
    parser.add_argument("--feishu-latency", type=float, default=0.0,
                        help="seconds the Feishu fake holds each speech request (default 0: provider time is subtracted anyway)")
    parser.add_argument("--profile", action="store_true", help="run the bot under cProfile and print its top functions")
    parser.add_argument("--decoder", choices=["pyav", "ffmpeg"], default="pyav",
                        help="the bot decodes in process (PyAV, the default) or with ffmpeg processes (the fallback)")
    arguments = parser.parse_args()
    print_environment()
    asyncio.run(measure(arguments.providers, arguments.measure, arguments.lengths, arguments.edit_interval,
                        arguments.feishu_latency, arguments.profile, arguments.decoder))


if __name__ == "__main__":
    main()
