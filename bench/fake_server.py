"""Serve FakeCoze, FakeFeishu or FakeTelegram (from tests/fakes) in a process of its own, for the benchmarks.

Prints one JSON line ``{"base_url", "ws_base_url", "pid", ...}`` once listening, then answers
commands on stdin, one JSON line each. A command is a JSON object ``{"command": NAME, ...}`` or,
typed by hand, a bare NAME:

* ``stats``: what the fake saw since the last reset (Feishu requests and streams, Coze sessions
  and audio, Bot API calls), and for Coze and Feishu the time the fake itself spent answering
  ("provider time", see :class:`ProviderClock`);
* ``reset``: forget recorded requests, so memory and counters start afresh;
* Telegram only: ``push_voices`` (``notes``: a list of ``{"chat", "path", "seconds", "kind"}``, all
  queued at once), ``wait_polling`` (until the bot's first getUpdates) and ``timeline`` (per note
  pushed since the reset: when getUpdates handed it out, the first feedback, the final reply);
* end of input (or ``quit``): stop.

Every time is ``time.monotonic()``, which on Linux is one clock for all processes.

Usually started by ``bench.common.FakeServerProcess``; by hand:
``PYTHONPATH=. .venv/bin/python bench/fake_server.py feishu --latency 0.02``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

import bench.common  # noqa: F401  (first: it silences cozepy's import-time warning)
from tests.fakes.coze import FakeCoze, _AsrSocket
from tests.fakes.feishu import FakeFeishu
from tests.fakes.telegram import Call, Chat, FakeTelegram, JsonDict, User

# Bot API calls a user sees in the chat: the reply being written, or a "typing…" status.
TEXT_METHODS = frozenset({"sendMessage", "editMessageText"})
FEEDBACK_METHODS = TEXT_METHODS | {"sendChatAction"}


# ----------------------------------------------------------------------------- provider time


class ProviderClock:
    """When the fake provider was busy answering: one (start, end) interval per answer.

    HTTP (Coze file ASR, every Feishu request): from the handler taking the request to its
    response being returned for sending. Coze WebSocket ASR: from ``input_audio_buffer.complete``
    to ``transcriptions.message.completed`` having been sent (the audio itself is the client's
    work: it streams while the client decodes).
    """

    def __init__(self) -> None:
        self.intervals: list[tuple[float, float]] = []

    @web.middleware
    async def time_http(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await handler(request)  # a socket's handler lives as long as the connection
        started = time.monotonic()
        try:
            return await handler(request)
        finally:
            self.intervals.append((started, time.monotonic()))

    async def time(self, call: Awaitable[None]) -> None:
        started = time.monotonic()
        try:
            await call
        finally:
            self.intervals.append((started, time.monotonic()))

    def stats(self) -> dict[str, float | None]:
        """``provider_seconds``: the time at least one answer was in progress (parallel Feishu
        streams overlap, so the plain sum would count the same wall time several times);
        ``provider_seconds_sum``: the sum of all answers' times; ``last_answer_end``: when the
        last answer had gone out (the bot has its final transcript from then on)."""
        busy, end = 0.0, float("-inf")
        for start, stop in sorted(self.intervals):
            if stop > end:
                busy += stop - max(start, end)
                end = stop
        return {"provider_seconds": busy, "provider_seconds_sum": sum(stop - start for start, stop in self.intervals),
                "provider_answers": len(self.intervals), "last_answer_end": end if self.intervals else None}


class TimedFakeCoze(FakeCoze):
    def __init__(self) -> None:
        super().__init__()
        self.provider_clock = ProviderClock()
        self.app.middlewares.append(self.provider_clock.time_http)

    async def _ws_transcriptions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve_socket(request, "ws_transcriptions", _TimedAsrSocket)


class _TimedAsrSocket(_AsrSocket):
    """The fake's ASR socket, timing the answer to each ``complete``."""

    async def _complete(self, data: Any, origin: str) -> None:
        assert isinstance(self.fake, TimedFakeCoze)
        await self.fake.provider_clock.time(super()._complete(data, origin))


class TimedFakeFeishu(FakeFeishu):
    def __init__(self, latency: float) -> None:
        super().__init__(latency_seconds=latency)
        self.provider_clock = ProviderClock()
        self.app.middlewares.append(self.provider_clock.time_http)


def coze_stats(fake: TimedFakeCoze) -> dict[str, Any]:
    sessions = fake.sessions_to("ws_transcriptions")
    return {
        "sessions": len(sessions),
        "audio_bytes": sum(session.audio_bytes for session in sessions),
        "file_transcriptions": len(fake.calls_to("transcriptions")),
        **fake.provider_clock.stats(),
    }


def feishu_stats(fake: TimedFakeFeishu) -> dict[str, Any]:
    requests = fake.requests_to("stream_recognize")
    return {
        "stream_recognize": fake.request_counts["stream_recognize"],
        "streams": len({record.body["config"]["stream_id"] for record in requests
                        if record.status == 200 and record.body["config"]["action"] == 1}),
        "failed": sum(1 for record in requests if record.status != 200),
        "audio_bytes": sum(record.audio_bytes or 0 for record in requests if record.status == 200),
        "max_open_streams": fake.max_open_streams_observed,
        "token_fetches": fake.token_fetches,
        **fake.provider_clock.stats(),
    }


# ----------------------------------------------------------------------------- Telegram


@dataclass(frozen=True)
class NoteTimeline:
    """One note as the chat saw it; times are time.monotonic(), None when it never happened."""

    chat: int
    message_id: int
    arrival: float | None  # getUpdates handed the update to the bot
    feedback: float | None  # first chat action in the chat, or first reply to the note, after arrival
    first_message: float | None  # the first message replying to the note (the "Transcribing…" placeholder)
    reply: float | None  # the last sendMessage / editMessageText of the note's reply: its final text
    text: str  # that final text
    text_calls: int  # sendMessage + editMessageText calls of the note's reply


class TimedFakeTelegram(FakeTelegram):
    """FakeTelegram that remembers when getUpdates first handed out each update."""

    def __init__(self) -> None:
        super().__init__()
        self.handed_out: dict[tuple[int, int], float] = {}  # (chat, message id) -> first getUpdates answer with it
        self.pushed: list[tuple[int, int]] = []  # (chat, message id) of the notes pushed since the reset
        self._audio: dict[str, bytes] = {}  # path -> bytes, read once

    async def _get_updates(self, params: JsonDict, uploads: dict[str, Any]) -> list[JsonDict]:
        updates = await super()._get_updates(params, uploads)
        now = time.monotonic()
        for update in updates:
            message = update.get("message") or {}
            self.handed_out.setdefault((message.get("chat", {}).get("id"), message.get("message_id")), now)
        return updates

    async def push_voices(self, notes: list[dict[str, Any]]) -> int:
        """Queue every note before the bot can poll (nothing here awaits a real wait)."""
        for note in notes:
            if note["path"] not in self._audio:
                self._audio[note["path"]] = Path(note["path"]).read_bytes()
            data = self._audio[note["path"]]
            user = User(int(note["chat"]), f"user{note['chat']}", language_code="en")
            document = note.get("kind") == "document"
            message = await self.push_voice(
                Chat.private(user), user, data, kind=note.get("kind", "voice"),
                duration=None if document else int(note["seconds"]),
                file_name=Path(note["path"]).name if document else None, mime_type="audio/ogg")
            self.pushed.append((user.id, message["message_id"]))
        return len(notes)

    def timeline(self) -> list[NoteTimeline]:
        calls_by_chat: dict[int, list[Call]] = defaultdict(list)
        for call in self.calls:
            if call.method in FEEDBACK_METHODS and call.status == 200:
                calls_by_chat[int(call.params["chat_id"])].append(call)
        return [self._note_timeline(chat, message_id, calls_by_chat[chat]) for chat, message_id in self.pushed]

    def _note_timeline(self, chat: int, message_id: int, chat_calls: list[Call]) -> NoteTimeline:
        arrival = self.handed_out.get((chat, message_id))
        replies = [call for call in chat_calls if call.method == "sendMessage"
                   and (call.params.get("reply_parameters") or {}).get("message_id") == message_id]
        reply_ids = {call.response["result"]["message_id"] for call in replies if call.response}
        text_calls = replies + [call for call in chat_calls
                                if call.method == "editMessageText" and call.params.get("message_id") in reply_ids]
        final = max(text_calls, key=lambda call: call.timestamp, default=None)
        feedback = min((call.timestamp for call in chat_calls
                        if arrival is not None and call.timestamp >= arrival
                        and (call.method == "sendChatAction" or call in replies)), default=None)
        first_message = min((call.timestamp for call in replies), default=None)
        return NoteTimeline(chat, message_id, arrival, feedback, first_message, final.timestamp if final else None,
                            str(final.params.get("text", "")) if final else "", len(text_calls))

    def reset(self) -> None:
        self.calls.clear()
        self.pushed.clear()
        self.handed_out.clear()


def telegram_stats(fake: TimedFakeTelegram) -> dict[str, Any]:
    return {"calls": dict(Counter(call.method for call in fake.calls))}


# ----------------------------------------------------------------------------- the command loop


def reset(fake: TimedFakeCoze | TimedFakeFeishu | TimedFakeTelegram) -> None:
    if isinstance(fake, TimedFakeTelegram):
        fake.reset()
        return
    fake.provider_clock.intervals.clear()
    if isinstance(fake, TimedFakeCoze):
        fake.ws_sessions.clear()
        fake.rest_calls.clear()
    else:
        fake.records.clear()
        fake.request_counts.clear()
        fake.max_open_streams_observed = 0
        fake.token_fetches = 0


def reply(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


def build(kind: str, latency: float) -> TimedFakeCoze | TimedFakeFeishu | TimedFakeTelegram:
    if kind == "coze":
        return TimedFakeCoze()
    if kind == "feishu":
        return TimedFakeFeishu(latency)
    return TimedFakeTelegram()


async def answer(fake: TimedFakeCoze | TimedFakeFeishu | TimedFakeTelegram, command: dict[str, Any]) -> dict[str, Any]:
    name = command["command"]
    if name == "stats":
        if isinstance(fake, TimedFakeTelegram):
            return telegram_stats(fake)
        return coze_stats(fake) if isinstance(fake, TimedFakeCoze) else feishu_stats(fake)
    if name == "reset":
        reset(fake)
        return {"reset": True}
    if isinstance(fake, TimedFakeTelegram):
        if name == "push_voices":
            return {"pushed": await fake.push_voices(command["notes"])}
        if name == "wait_polling":
            await fake.wait_for(lambda: fake.calls_to("getUpdates"), timeout=60)
            return {"polling": True}
        if name == "timeline":
            return {"notes": [asdict(note) for note in fake.timeline()]}
    return {"error": f"unknown command {name!r}"}


async def serve(kind: str, latency: float) -> None:
    fake = build(kind, latency)
    async with fake:
        ready: dict[str, Any] = {"base_url": fake.base_url, "ws_base_url": fake.ws_base_url, "pid": os.getpid()}
        if isinstance(fake, TimedFakeTelegram):
            ready |= {"api_base_url": fake.api_base_url, "file_base_url": fake.file_base_url, "token": fake.token}
        reply(ready)
        commands = asyncio.StreamReader(limit=64 * 1024 * 1024)  # a push of hundreds of notes is one line
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
        while (line := (await commands.readline()).decode().strip()) not in ("", "quit"):
            command = json.loads(line) if line.startswith("{") else {"command": line}
            try:
                reply(await answer(fake, command))
            except Exception as error:  # the benchmark gets one line either way, never a hang
                reply({"error": f"{type(error).__name__}: {error}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["coze", "feishu", "telegram"])
    parser.add_argument("--latency", type=float, default=0.0,
                        help="Feishu only: seconds each speech request is held before its answer (default 0)")
    parser.add_argument("--niceness", type=int, default=0,
                        help="run at this many nice levels below normal, with the ffmpeg the fake starts (default 0)")
    arguments = parser.parse_args()
    if arguments.niceness:
        os.nice(arguments.niceness)  # inherited by the fake's own ffmpeg processes
    asyncio.run(serve(arguments.kind, arguments.latency))


if __name__ == "__main__":
    main()
