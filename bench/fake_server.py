"""Serve FakeCoze or FakeFeishu (from tests/fakes) in a process of its own, for the benchmarks.

Prints one JSON line ``{"base_url", "ws_base_url", "pid"}`` once listening, then answers line
commands on stdin, one JSON line each:

* ``stats``: what the fake saw since the last reset (Feishu requests and streams, Coze sessions and audio);
* ``reset``: forget recorded requests, so memory and counters start afresh;
* end of input (or ``quit``): stop.

Usually started by ``bench.common.FakeServerProcess``; by hand:
``PYTHONPATH=. .venv/bin/python bench/fake_server.py feishu --latency 0.02``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

import bench.common  # noqa: F401  (first: it silences cozepy's import-time warning)
from tests.fakes.coze import FakeCoze
from tests.fakes.feishu import FakeFeishu


def coze_stats(fake: FakeCoze) -> dict[str, Any]:
    sessions = fake.sessions_to("ws_transcriptions")
    return {
        "sessions": len(sessions),
        "audio_bytes": sum(session.audio_bytes for session in sessions),
    }


def feishu_stats(fake: FakeFeishu) -> dict[str, Any]:
    requests = fake.requests_to("stream_recognize")
    return {
        "stream_recognize": fake.request_counts["stream_recognize"],
        "streams": len({record.body["config"]["stream_id"] for record in requests
                        if record.status == 200 and record.body["config"]["action"] == 1}),
        "failed": sum(1 for record in requests if record.status != 200),
        "audio_bytes": sum(record.audio_bytes or 0 for record in requests if record.status == 200),
        "max_open_streams": fake.max_open_streams_observed,
        "token_fetches": fake.token_fetches,
    }


def reset(fake: FakeCoze | FakeFeishu) -> None:
    if isinstance(fake, FakeCoze):
        fake.ws_sessions.clear()
        fake.rest_calls.clear()
    else:
        fake.records.clear()
        fake.request_counts.clear()
        fake.max_open_streams_observed = 0


def reply(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


async def serve(kind: str, latency: float) -> None:
    fake: FakeCoze | FakeFeishu = FakeCoze() if kind == "coze" else FakeFeishu(latency_seconds=latency)
    async with fake:
        reply({"base_url": fake.base_url, "ws_base_url": fake.ws_base_url, "pid": os.getpid()})
        commands = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
        while (line := (await commands.readline()).decode().strip()) not in ("", "quit"):
            if line == "stats":
                reply(coze_stats(fake) if isinstance(fake, FakeCoze) else feishu_stats(fake))
            elif line == "reset":
                reset(fake)
                reply({"reset": True})
            else:
                reply({"error": f"unknown command {line!r}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["coze", "feishu"])
    parser.add_argument("--latency", type=float, default=0.0,
                        help="Feishu only: seconds each speech request is held before its answer (default 0)")
    arguments = parser.parse_args()
    asyncio.run(serve(arguments.kind, arguments.latency))


if __name__ == "__main__":
    main()
