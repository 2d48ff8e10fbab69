"""Capacity and recovery of the scale-out: ``voicebridge ingress`` + N ``voicebridge worker``
processes sharing PostgreSQL, fed by the fake Telegram Bot API, transcribing with the fake Coze
file ASR at a simulated provider latency.

- ``capacity``: notes per minute for each worker count (``--workers 1 2``): ``--notes`` 1 s notes
  from ``--chats`` chats pushed at once; from the first push to the last answer.
- ``kill``: ``--notes`` notes with 2 workers; one worker is killed with SIGKILL once a fifth of
  the notes are answered. Every note must get its own transcript; reported: duplicates, and the
  recovery time (from the kill until the last of the jobs the killed worker held is answered,
  which is bounded by ``VOICEBRIDGE_JOB_LEASE``).

The fakes run in this process (their CPU is shared with the measured processes: 2 cores here).
Needs PostgreSQL: ``VOICEBRIDGE_TEST_DATABASE_URL`` (scripts/test-database prints one); the
schema ``voicebridge`` in it is dropped first.

    VOICEBRIDGE_TEST_DATABASE_URL=$(scripts/test-database) PYTHONPATH=. .venv/bin/python bench/scale_out.py \\
        [--measure capacity kill] [--workers 1 2] [--notes 100] [--chats 40] [--latency 2.0] [--lease 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import print_environment
from tests.audio_tools import make_tone
from tests.fakes.coze import DEFAULT_TOKEN, FakeCoze
from tests.fakes.telegram import Chat, FakeTelegram, User

VOICEBRIDGE = str(Path(sys.executable).with_name("voicebridge"))


def answers(telegram: FakeTelegram, note: dict[str, Any]) -> list[tuple[float, str]]:
    return [(call.timestamp, call.params["text"]) for call in telegram.calls_to("sendMessage")
            if int(call.params["chat_id"]) == note["chat"]["id"]
            and (call.params.get("reply_parameters") or {}).get("message_id") == note["message_id"]]


class Run:
    """One ingress and ``workers`` workers against fresh fakes and a fresh schema."""

    def __init__(self, url: str, workers: int, latency: float, lease: float, logs: Path) -> None:
        self.url, self.workers, self.latency, self.lease, self.logs = url, workers, latency, lease, logs
        self.processes: list[asyncio.subprocess.Process] = []

    async def __aenter__(self) -> Run:
        connection = await asyncpg.connect(self.url)
        await connection.execute("DROP SCHEMA IF EXISTS voicebridge CASCADE")
        await connection.close()
        self.telegram = await FakeTelegram().__aenter__()
        self.coze = await FakeCoze().__aenter__()
        env = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
        env |= {"VOICEBRIDGE_DB": self.url, "VOICEBRIDGE_JOB_LEASE": str(self.lease), "VOICEBRIDGE_LOG_LEVEL": "WARNING",
                "TELEGRAM_BOT_TOKEN": self.telegram.token, "TELEGRAM_BASE_URL": self.telegram.api_base_url,
                "TELEGRAM_BASE_FILE_URL": self.telegram.file_base_url, "COZE_API_TOKEN": DEFAULT_TOKEN,
                "COZE_API_BASE": self.coze.base_url, "COZE_WS_BASE": self.coze.ws_base_url, "VOICEBRIDGE_ASR": "coze"}
        for index, command in enumerate(["ingress"] + ["worker"] * self.workers):
            with (self.logs / f"{command}-{index}.log").open("wb") as output:
                self.processes.append(await asyncio.create_subprocess_exec(
                    VOICEBRIDGE, command, env=env, stdout=output, stderr=output))
        await self.telegram.wait_for_call("getUpdates", timeout=60)
        await asyncio.sleep(2)  # the workers connect and listen (their first poll would find the notes anyway)
        self.coze.delay_next("transcriptions", self.latency, times=100_000)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            await process.wait()
        await self.coze.__aexit__(None, None, None)
        await self.telegram.__aexit__(None, None, None)

    async def push(self, notes: int, chats: int) -> list[tuple[dict[str, Any], str, float]]:
        users = [User(10_000 + number, f"User{number}") for number in range(chats)]
        pushed = []
        for index in range(notes):
            frequency = 200 + 10 * (index % 80)
            data = make_tone("ogg", float(frequency), 1.0 + (index // 80) * 0.5)
            seconds = 1.0 + (index // 80) * 0.5
            user = users[index % chats]
            note = await self.telegram.push_voice(Chat.private(user), user, data, duration=round(seconds))
            pushed.append((note, f"tone {frequency} hz {seconds:.1f} s", time.monotonic()))
        return pushed

    async def all_answered(self, pushed: list[tuple[dict[str, Any], str, float]], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(answers(self.telegram, note) for note, _, _ in pushed):
            if time.monotonic() > deadline:
                missing = sum(not answers(self.telegram, note) for note, _, _ in pushed)
                raise SystemExit(f"{missing} notes not answered within {timeout:.0f}s; logs in {self.logs}")
            await asyncio.sleep(0.1)


def check(run: Run, pushed: list[tuple[dict[str, Any], str, float]]) -> int:
    """Every note answered with its own transcript; returns the number of duplicate answers."""
    duplicates = 0
    for note, transcript, _ in pushed:
        texts = [text for _, text in answers(run.telegram, note)]
        if set(texts) != {transcript}:
            raise SystemExit(f"note {note['message_id']}: expected {transcript!r}, got {texts!r}")
        duplicates += len(texts) - 1
    return duplicates


async def capacity(url: str, args: argparse.Namespace, logs: Path) -> None:
    print(f"\ncapacity: {args.notes} notes of 1 s from {args.chats} chats, provider latency {args.latency:g} s")
    print(f"{'workers':>8} {'notes/min':>10} {'p50 s':>7} {'p95 s':>7} {'wall s':>7}")
    rates = {}
    for workers in args.workers:
        async with Run(url, workers, args.latency, args.lease, logs) as run:
            pushed = await run.push(args.notes, args.chats)
            await run.all_answered(pushed, timeout=600)
            check(run, pushed)
            first_push = pushed[0][2]
            done = [min(at for at, _ in answers(run.telegram, note)) for note, _, _ in pushed]
            latencies = sorted(end - pushed_at for end, (_, _, pushed_at) in zip(done, pushed))
            wall = max(done) - first_push
            rates[workers] = args.notes / wall * 60
            print(f"{workers:>8} {rates[workers]:>10.0f} {statistics.median(latencies):>7.2f} "
                  f"{latencies[int(len(latencies) * 0.95) - 1]:>7.2f} {wall:>7.1f}")
    if len(rates) > 1:
        base = min(rates)
        for workers, rate in rates.items():
            if workers != base:
                print(f"ratio {workers} workers / {base}: {rate / rates[base]:.2f}x")


async def kill(url: str, args: argparse.Namespace, logs: Path) -> None:
    print(f"\nkill -9: {args.notes} notes, 2 workers, provider latency {args.latency:g} s, lease {args.lease:g} s")
    async with Run(url, 2, args.latency, args.lease, logs) as run:
        pushed = await run.push(args.notes, args.chats)
        while sum(bool(answers(run.telegram, note)) for note, _, _ in pushed) < args.notes // 5:
            await asyncio.sleep(0.05)
        doomed = run.processes[1]
        connection = await asyncpg.connect(url)
        held = {(int(row["chat"]), int(row["message"])) for row in await connection.fetch(
            "SELECT payload #>> '{update,message,chat,id}' AS chat, payload #>> '{update,message,message_id}' AS message "
            "FROM voicebridge.jobs WHERE state = 'ready' AND lease_owner LIKE $1", f"%:{doomed.pid}")}
        await connection.close()
        doomed.kill()
        killed_at = time.monotonic()
        await run.all_answered(pushed, timeout=600)
        duplicates = check(run, pushed)
        held_notes = [note for note, _, _ in pushed if (note["chat"]["id"], note["message_id"]) in held]
        recovered = max((max(at for at, _ in answers(run.telegram, note)) for note in held_notes), default=killed_at)
        print(f"answered: {len(pushed)}/{len(pushed)} with their own transcripts; duplicates: {duplicates} "
              f"(bound: 1 per killed worker)")
        print(f"jobs held by the killed worker: {len(held)}; recovery (kill → last of them answered): "
              f"{recovered - killed_at:.1f} s; all answered {max(max(at for at, _ in answers(run.telegram, n)) for n, _, _ in pushed) - killed_at:.1f} s after the kill")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measure", nargs="+", choices=("capacity", "kill"), default=["capacity", "kill"])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--notes", type=int, default=100)
    parser.add_argument("--chats", type=int, default=40)
    parser.add_argument("--latency", type=float, default=2.0, help="seconds the fake provider takes per note")
    parser.add_argument("--lease", type=float, default=30.0, help="VOICEBRIDGE_JOB_LEASE")
    args = parser.parse_args()
    url = os.environ.get("VOICEBRIDGE_TEST_DATABASE_URL")
    if not url:
        raise SystemExit("set VOICEBRIDGE_TEST_DATABASE_URL (scripts/test-database prints one)")
    print_environment()
    logs = Path(tempfile.mkdtemp(prefix="voicebridge-scale-"))
    if "capacity" in args.measure:
        await capacity(url, args, logs)
    if "kill" in args.measure:
        await kill(url, args, logs)


if __name__ == "__main__":
    asyncio.run(main())
