"""Persistent state: per-chat settings, the transcript cache, usage counters, small markers.

SQLite by default, behind a narrow async interface so a shared server-backed store could
replace it without touching behaviour. SQLite calls run on one dedicated thread: they never
block the event loop and never run concurrently. No audio is ever stored.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chat_settings (
    platform TEXT NOT NULL, chat_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (platform, chat_id, key)
);
CREATE TABLE IF NOT EXISTS transcripts (
    cache_key TEXT PRIMARY KEY, platform TEXT NOT NULL, chat_id TEXT NOT NULL,
    text TEXT NOT NULL, seconds REAL, created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS transcripts_created ON transcripts (created);
CREATE TABLE IF NOT EXISTS usage (
    platform TEXT NOT NULL, chat_id TEXT NOT NULL, day TEXT NOT NULL,
    audio_seconds REAL NOT NULL DEFAULT 0, tts_characters INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (platform, chat_id, day)
);
CREATE TABLE IF NOT EXISTS markers (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class StoreError(Exception):
    """The store could not be read or written (locked, disk full, corrupt)."""


@dataclass(frozen=True)
class CachedTranscript:
    text: str
    seconds: float | None


@dataclass(frozen=True)
class Usage:
    audio_seconds: float
    tts_characters: int


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


class Store:
    def __init__(self, path: Path | str, *, timeout: float = 5.0, clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self.timeout = timeout
        self.clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voicebridge-store")
        self._connection: sqlite3.Connection | None = None
        self._opening = asyncio.Lock()

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        connection = self._connection or await self._open()

        def guarded() -> T:
            try:
                with connection:  # one transaction per call
                    return work(connection)
            except sqlite3.Error as error:
                raise StoreError(f"store {self.path}: {error}") from error

        return await asyncio.get_running_loop().run_in_executor(self._executor, guarded)

    async def _open(self) -> sqlite3.Connection:
        async with self._opening:
            if self._connection is None:

                def connect() -> sqlite3.Connection:
                    if self.path != ":memory:":
                        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                    connection = sqlite3.connect(self.path, timeout=self.timeout, check_same_thread=False)
                    connection.execute("PRAGMA journal_mode=WAL")
                    connection.executescript(_SCHEMA)
                    return connection

                try:
                    self._connection = await asyncio.get_running_loop().run_in_executor(self._executor, connect)
                except sqlite3.Error as error:
                    raise StoreError(f"cannot open store {self.path}: {error}") from error
            return self._connection

    async def aclose(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await asyncio.get_running_loop().run_in_executor(self._executor, connection.close)
        self._executor.shutdown(wait=False)

    # ------------------------------------------------------------------ settings

    async def chat_settings(self, platform: str, chat_id: str) -> dict[str, str]:
        rows = await self._run(lambda db: db.execute(
            "SELECT key, value FROM chat_settings WHERE platform = ? AND chat_id = ?", (platform, chat_id)).fetchall())
        return dict(rows)

    async def set_chat_setting(self, platform: str, chat_id: str, key: str, value: str | None) -> None:
        """Store a chat's choice; ``None`` returns the setting to its default."""
        if value is None:
            await self._run(lambda db: db.execute(
                "DELETE FROM chat_settings WHERE platform = ? AND chat_id = ? AND key = ?", (platform, chat_id, key)))
        else:
            await self._run(lambda db: db.execute(
                "INSERT INTO chat_settings VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET value = excluded.value",
                (platform, chat_id, key, value)))

    # ------------------------------------------------------------------ transcript cache

    async def cached_transcript(self, cache_key: str, max_age_seconds: float) -> CachedTranscript | None:
        oldest = self.clock() - max_age_seconds
        row = await self._run(lambda db: db.execute(
            "SELECT text, seconds FROM transcripts WHERE cache_key = ? AND created >= ?", (cache_key, oldest)).fetchone())
        return CachedTranscript(row[0], row[1]) if row else None

    async def cache_transcript(self, cache_key: str, platform: str, chat_id: str, text: str, seconds: float | None) -> None:
        now = self.clock()
        await self._run(lambda db: db.execute(
            "INSERT INTO transcripts VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET text = excluded.text, "
            "seconds = excluded.seconds, created = excluded.created", (cache_key, platform, chat_id, text, seconds, now)))

    async def sweep(self, max_age_seconds: float) -> int:
        """Delete transcripts older than the retention period; returns how many."""
        oldest = self.clock() - max_age_seconds
        return await self._run(lambda db: db.execute("DELETE FROM transcripts WHERE created < ?", (oldest,)).rowcount)

    async def forget_chat(self, platform: str, chat_id: str) -> int:
        """Delete a chat's transcripts and settings; returns how many transcripts went."""

        def forget(db: sqlite3.Connection) -> int:
            db.execute("DELETE FROM chat_settings WHERE platform = ? AND chat_id = ?", (platform, chat_id))
            return db.execute("DELETE FROM transcripts WHERE platform = ? AND chat_id = ?", (platform, chat_id)).rowcount

        return await self._run(forget)

    # ------------------------------------------------------------------ usage

    async def add_usage(self, platform: str, chat_id: str, *, audio_seconds: float = 0.0, tts_characters: int = 0) -> None:
        day = today()
        await self._run(lambda db: db.execute(
            "INSERT INTO usage VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
            "audio_seconds = audio_seconds + excluded.audio_seconds, "
            "tts_characters = tts_characters + excluded.tts_characters",
            (platform, chat_id, day, audio_seconds, tts_characters)))

    async def usage(self, platform: str, chat_id: str, since_day: str) -> Usage:
        row = await self._run(lambda db: db.execute(
            "SELECT COALESCE(SUM(audio_seconds), 0), COALESCE(SUM(tts_characters), 0) FROM usage "
            "WHERE platform = ? AND chat_id = ? AND day >= ?", (platform, chat_id, since_day)).fetchone())
        return Usage(float(row[0]), int(row[1]))

    # ------------------------------------------------------------------ markers

    async def marker(self, key: str) -> str | None:
        row = await self._run(lambda db: db.execute("SELECT value FROM markers WHERE key = ?", (key,)).fetchone())
        return row[0] if row else None

    async def set_marker(self, key: str, value: str) -> None:
        await self._run(lambda db: db.execute(
            "INSERT INTO markers VALUES (?, ?) ON CONFLICT DO UPDATE SET value = excluded.value", (key, value)))
