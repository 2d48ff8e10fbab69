"""Persistent state: per-chat settings, the transcript cache, usage counters, small records.

:class:`Store` is the protocol the plugin uses (``voicebridge.Store``: a host may pass its own
object). Two implementations ship: :class:`SQLiteStore` (the default, one file, no server) and
``voicebridge.postgres.PostgresStore`` (shared by any number of processes, for ``voicebridge
ingress`` / ``worker``). :func:`open_store` picks one from ``VOICEBRIDGE_DB``. No audio is ever
stored.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from ..postgres import PostgresStore

T = TypeVar("T")
log = logging.getLogger(__name__)

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class StoreError(Exception):
    """The store could not be read or written (locked, disk full, corrupt, unreachable)."""


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


class Store(Protocol):
    """What voicebridge keeps, behind one async interface. Every method raises
    :class:`StoreError` when the store cannot be reached; the plugin then carries on without
    (defaults, no cache) where it safely can."""

    async def chat_settings(self, platform: str, chat_id: str) -> dict[str, str]:
        """The settings a chat changed (key → value); defaults are not stored."""
        ...

    async def set_chat_setting(self, platform: str, chat_id: str, key: str, value: str | None) -> None:
        """Store a chat's choice; ``None`` returns the setting to its default."""
        ...

    async def cached_transcript(self, cache_key: str, max_age_seconds: float) -> CachedTranscript | None: ...

    async def cache_transcript(self, cache_key: str, platform: str, chat_id: str, text: str, seconds: float | None) -> None: ...

    async def sweep(self, max_age_seconds: float) -> int:
        """Delete transcripts older than the retention period; returns how many."""
        ...

    async def forget_chat(self, platform: str, chat_id: str) -> int:
        """Delete a chat's transcripts and settings, so that their text cannot be read back from
        the database's files; returns how many transcripts went. Usage totals stay: the daily
        limits rely on them (and they hold no content)."""
        ...

    async def sweep_usage(self, before_day: str) -> int:
        """Delete the usage totals of days before ``before_day``; returns how many rows went."""
        ...

    async def add_usage(self, platform: str, chat_id: str, *, audio_seconds: float = 0.0, tts_characters: int = 0) -> None:
        """Add to today's counters (negative amounts give a reservation back)."""
        ...

    async def reserve_usage(self, platform: str, chat_id: str, day: str, seconds: float, limit: float) -> bool:
        """Add ``seconds`` to the chat's audio seconds of ``day`` if the total stays within
        ``limit`` (and something is left), as one atomic step: concurrent reservations from any
        number of processes never spend more than ``limit``. False: nothing was added."""
        ...

    async def reserve_characters(self, platform: str, chat_id: str, day: str, characters: int, limit: int) -> bool:
        """As :meth:`reserve_usage`, for the characters of text read aloud (speech synthesis)."""
        ...

    async def usage(self, platform: str, chat_id: str, since_day: str) -> Usage: ...

    async def marker(self, key: str) -> str | None:
        """A small named record (a user's language, the Discord command-sync state)."""
        ...

    async def set_marker(self, key: str, value: str | None) -> None:
        """Write a record; ``None`` deletes it."""
        ...

    async def markers(self, prefix: str) -> dict[str, str]:
        """Every record whose key starts with ``prefix``."""
        ...


def is_postgres_url(value: str | os.PathLike[str]) -> bool:
    return isinstance(value, str) and value.strip().lower().startswith(POSTGRES_SCHEMES)


def open_store(value: str | os.PathLike[str], *, timeout: float = 5.0) -> SQLiteStore | PostgresStore:
    """The store ``VOICEBRIDGE_DB`` names: a ``postgresql://`` URL gives PostgreSQL, anything else
    is a SQLite path (``":memory:"`` included). Connections open on first use."""
    if is_postgres_url(value):
        from ..postgres import PostgresStore  # asyncpg is an optional dependency

        return PostgresStore.from_url(str(value).strip(), timeout=timeout)
    return SQLiteStore(value, timeout=timeout)


# Each step brings a database from the version before it to its own (PRAGMA user_version).
# Version 1 is the schema of the releases before versioning, so it is written to be idempotent.
SQLITE_MIGRATIONS: Sequence[Sequence[str]] = (
    (
        "CREATE TABLE IF NOT EXISTS chat_settings (platform TEXT NOT NULL, chat_id TEXT NOT NULL, key TEXT NOT NULL, "
        "value TEXT NOT NULL, PRIMARY KEY (platform, chat_id, key))",
        "CREATE TABLE IF NOT EXISTS transcripts (cache_key TEXT PRIMARY KEY, platform TEXT NOT NULL, chat_id TEXT NOT NULL, "
        "text TEXT NOT NULL, seconds REAL, created REAL NOT NULL)",
        "CREATE INDEX IF NOT EXISTS transcripts_created ON transcripts (created)",
        "CREATE TABLE IF NOT EXISTS usage (platform TEXT NOT NULL, chat_id TEXT NOT NULL, day TEXT NOT NULL, "
        "audio_seconds REAL NOT NULL DEFAULT 0, tts_characters INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (platform, chat_id, day))",
        "CREATE TABLE IF NOT EXISTS markers (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ),
    (  # the embedded mode's receipts (voicebridge.jobs.SQLiteJournal)
        "CREATE TABLE receipts (id INTEGER PRIMARY KEY, source TEXT NOT NULL UNIQUE, chat TEXT NOT NULL, "
        "payload TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, received REAL NOT NULL, "
        "answered INTEGER NOT NULL DEFAULT 0)",
        "CREATE TABLE receipt_deliveries (receipt_id INTEGER NOT NULL REFERENCES receipts (id) ON DELETE CASCADE, "
        "part INTEGER NOT NULL, message_id TEXT NOT NULL, PRIMARY KEY (receipt_id, part))",
    ),
)


def migrate_sqlite(connection: sqlite3.Connection, migrations: Sequence[Sequence[str]] = SQLITE_MIGRATIONS) -> int:
    """Apply the missing migrations in one write transaction (``BEGIN IMMEDIATE`` makes a second
    process starting at the same time wait, then find nothing left to do); returns the version."""
    isolation = connection.isolation_level
    connection.isolation_level = None  # transactions by hand: BEGIN IMMEDIATE … COMMIT
    try:
        connection.execute("BEGIN IMMEDIATE")
        try:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            for number, statements in enumerate(migrations[version:], start=version + 1):
                for statement in statements:
                    connection.execute(statement)
                connection.execute(f"PRAGMA user_version = {number:d}")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
    finally:
        connection.isolation_level = isolation
    return len(migrations)


def use_wal(connection: sqlite3.Connection, timeout: float) -> None:
    """Switch the file to write-ahead logging (readers never wait for a writer). The switch
    needs the file to itself and SQLite does not wait for that, so a process opening the file
    while another migrates it tries again for up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while connection.execute("PRAGMA journal_mode").fetchone()[0].lower() not in ("wal", "memory"):
        try:
            connection.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # on the store's own thread, never the event loop


class SQLiteStore:
    """The default store: one SQLite file. Calls run on one dedicated thread: they never block
    the event loop and never run concurrently."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 5.0, clock: Callable[[], float] = time.time) -> None:
        self.path = os.fspath(path)
        self.timeout = timeout
        self.clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voicebridge-store")
        self._connection: sqlite3.Connection | None = None
        self._opening = asyncio.Lock()

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work`` on the store's thread, in one transaction."""
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
                    try:
                        # Deleted rows are overwritten with zeros, not merely unlinked: a forgotten
                        # transcript cannot be read back from the file's free pages.
                        connection.execute("PRAGMA secure_delete = ON")
                        use_wal(connection, self.timeout)
                        # With a write-ahead log, NORMAL loses nothing when the process dies (kill -9:
                        # the receipts' case), only on a power cut; FULL syncs the disk at every commit.
                        connection.execute("PRAGMA synchronous = NORMAL")
                        migrate_sqlite(connection)
                    except BaseException:
                        connection.close()
                        raise
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
        rows = await self.run(lambda db: db.execute(
            "SELECT key, value FROM chat_settings WHERE platform = ? AND chat_id = ?", (platform, chat_id)).fetchall())
        return dict(rows)

    async def set_chat_setting(self, platform: str, chat_id: str, key: str, value: str | None) -> None:
        if value is None:
            await self.run(lambda db: db.execute(
                "DELETE FROM chat_settings WHERE platform = ? AND chat_id = ? AND key = ?", (platform, chat_id, key)))
        else:
            await self.run(lambda db: db.execute(
                "INSERT INTO chat_settings VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET value = excluded.value",
                (platform, chat_id, key, value)))

    # ------------------------------------------------------------------ transcript cache

    async def cached_transcript(self, cache_key: str, max_age_seconds: float) -> CachedTranscript | None:
        oldest = self.clock() - max_age_seconds
        row = await self.run(lambda db: db.execute(
            "SELECT text, seconds FROM transcripts WHERE cache_key = ? AND created >= ?", (cache_key, oldest)).fetchone())
        return CachedTranscript(row[0], row[1]) if row else None

    async def cache_transcript(self, cache_key: str, platform: str, chat_id: str, text: str, seconds: float | None) -> None:
        now = self.clock()
        await self.run(lambda db: db.execute(
            "INSERT INTO transcripts VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET text = excluded.text, "
            "seconds = excluded.seconds, created = excluded.created", (cache_key, platform, chat_id, text, seconds, now)))

    async def sweep(self, max_age_seconds: float) -> int:
        oldest = self.clock() - max_age_seconds
        removed = await self.run(lambda db: db.execute("DELETE FROM transcripts WHERE created < ?", (oldest,)).rowcount)
        if removed:
            await self._truncate_wal()
        return removed

    async def _truncate_wal(self) -> None:
        """Copy the write-ahead log into the database and empty it: the log still holds the pages
        of deleted rows as they were before the deletion."""
        busy = await self.run(lambda db: db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0])
        if busy:
            log.warning("store %s: another connection is reading; deleted text stays in the write-ahead log "
                        "until the next checkpoint", self.path)

    async def forget_chat(self, platform: str, chat_id: str) -> int:
        def forget(db: sqlite3.Connection) -> int:
            db.execute("DELETE FROM chat_settings WHERE platform = ? AND chat_id = ?", (platform, chat_id))
            return db.execute("DELETE FROM transcripts WHERE platform = ? AND chat_id = ?", (platform, chat_id)).rowcount

        removed = await self.run(forget)
        await self._truncate_wal()
        return removed

    async def sweep_usage(self, before_day: str) -> int:
        return await self.run(lambda db: db.execute("DELETE FROM usage WHERE day < ?", (before_day,)).rowcount)

    # ------------------------------------------------------------------ usage

    async def add_usage(self, platform: str, chat_id: str, *, audio_seconds: float = 0.0, tts_characters: int = 0) -> None:
        day = today()
        await self.run(lambda db: db.execute(
            "INSERT INTO usage VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
            "audio_seconds = audio_seconds + excluded.audio_seconds, "
            "tts_characters = tts_characters + excluded.tts_characters",
            (platform, chat_id, day, audio_seconds, tts_characters)))

    async def reserve_usage(self, platform: str, chat_id: str, day: str, seconds: float, limit: float) -> bool:
        # One statement: a first row only if it fits, else an update only if the sum still fits.
        return await self.run(lambda db: db.execute(
            "INSERT INTO usage (platform, chat_id, day, audio_seconds, tts_characters) SELECT ?, ?, ?, ?, 0 "
            "WHERE ? <= ? AND ? > 0 "
            "ON CONFLICT (platform, chat_id, day) DO UPDATE SET audio_seconds = audio_seconds + excluded.audio_seconds "
            "WHERE audio_seconds + excluded.audio_seconds <= ? AND audio_seconds < ?",
            (platform, chat_id, day, seconds, seconds, limit, limit, limit, limit)).rowcount == 1)

    async def reserve_characters(self, platform: str, chat_id: str, day: str, characters: int, limit: int) -> bool:
        return await self.run(lambda db: db.execute(
            "INSERT INTO usage (platform, chat_id, day, audio_seconds, tts_characters) SELECT ?, ?, ?, 0, ? "
            "WHERE ? <= ? AND ? > 0 "
            "ON CONFLICT (platform, chat_id, day) DO UPDATE SET tts_characters = tts_characters + excluded.tts_characters "
            "WHERE tts_characters + excluded.tts_characters <= ? AND tts_characters < ?",
            (platform, chat_id, day, characters, characters, limit, limit, limit, limit)).rowcount == 1)

    async def usage(self, platform: str, chat_id: str, since_day: str) -> Usage:
        row = await self.run(lambda db: db.execute(
            "SELECT COALESCE(SUM(audio_seconds), 0), COALESCE(SUM(tts_characters), 0) FROM usage "
            "WHERE platform = ? AND chat_id = ? AND day >= ?", (platform, chat_id, since_day)).fetchone())
        return Usage(float(row[0]), int(row[1]))

    # ------------------------------------------------------------------ records

    async def marker(self, key: str) -> str | None:
        row = await self.run(lambda db: db.execute("SELECT value FROM markers WHERE key = ?", (key,)).fetchone())
        return row[0] if row else None

    async def set_marker(self, key: str, value: str | None) -> None:
        if value is None:
            await self.run(lambda db: db.execute("DELETE FROM markers WHERE key = ?", (key,)))
        else:
            await self.run(lambda db: db.execute(
                "INSERT INTO markers VALUES (?, ?) ON CONFLICT DO UPDATE SET value = excluded.value", (key, value)))

    async def markers(self, prefix: str) -> dict[str, str]:
        rows = await self.run(lambda db: db.execute(
            "SELECT key, value FROM markers WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)).fetchall())
        return dict(rows)
