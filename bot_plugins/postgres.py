"""PostgreSQL behind voicebridge: the shared store (``VOICEBRIDGE_DB=postgresql://…``).

Every object lives in the schema ``voicebridge``, so a database the host bot also uses keeps
its own tables untouched. The schema is versioned: :data:`MIGRATIONS` are applied at start in
one transaction under an advisory lock, so any number of processes may start at once — the
first applies what is missing, the others wait for it and find nothing left to do.

asyncpg is imported here only: it is needed only when a PostgreSQL URL is configured.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from .speech.errors import ConfigError, ErrorKind, SpeechError
from .voice_notes.store import CachedTranscript, StoreError, Usage, today

try:
    import asyncpg
except ImportError:  # pragma: no cover - depends on the install
    asyncpg = None

log = logging.getLogger(__name__)

# What the driver raises when the server is unreachable, refuses, or a statement fails.
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) if asyncpg is not None else (OSError, TimeoutError))

SCHEMA = "voicebridge"
# pg_advisory_xact_lock key for migrations: any constant unlikely to be used by the host.
MIGRATION_LOCK = 0x766F6963_62726467  # b"voicbrdg"
STREAM_SLOT_LOCK = 0x76626673  # advisory lock class of the shared stream slots (b"vbfs")
CONNECT_TIMEOUT = 10.0
POOL_SIZE = 10

# Each entry brings the schema from the version before it to its own; never edit one that has
# been released, add a new one.
MIGRATIONS: Sequence[str] = (
    f"""
    CREATE TABLE {SCHEMA}.chat_settings (
        platform text NOT NULL, chat_id text NOT NULL, key text NOT NULL, value text NOT NULL,
        PRIMARY KEY (platform, chat_id, key));
    CREATE TABLE {SCHEMA}.transcripts (
        cache_key text PRIMARY KEY, platform text NOT NULL, chat_id text NOT NULL, text text NOT NULL,
        seconds double precision, created double precision NOT NULL);
    CREATE INDEX transcripts_created ON {SCHEMA}.transcripts (created);
    CREATE INDEX transcripts_chat ON {SCHEMA}.transcripts (platform, chat_id);
    CREATE TABLE {SCHEMA}.usage (
        platform text NOT NULL, chat_id text NOT NULL, day text NOT NULL,
        audio_seconds double precision NOT NULL DEFAULT 0, tts_characters bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (platform, chat_id, day));
    CREATE TABLE {SCHEMA}.markers (key text PRIMARY KEY, value text NOT NULL);
    """,
    # The durable job queue (voicebridge.jobs) and the records of what each job has sent.
    f"""
    CREATE TABLE {SCHEMA}.jobs (
        id bigserial PRIMARY KEY,
        source text NOT NULL UNIQUE,
        chat text NOT NULL,
        payload jsonb NOT NULL,
        state text NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'done', 'failed')),
        attempts integer NOT NULL DEFAULT 0,
        lease_owner text,
        lease_until timestamptz,
        created timestamptz NOT NULL DEFAULT now(),
        finished timestamptz);
    CREATE INDEX jobs_ready ON {SCHEMA}.jobs (chat, id) WHERE state = 'ready';
    CREATE INDEX jobs_finished ON {SCHEMA}.jobs (finished) WHERE state <> 'ready';
    CREATE TABLE {SCHEMA}.deliveries (
        job_id bigint NOT NULL REFERENCES {SCHEMA}.jobs (id) ON DELETE CASCADE,
        part integer NOT NULL,
        message_id text NOT NULL,
        PRIMARY KEY (job_id, part));
    CREATE FUNCTION {SCHEMA}.take_slot(lock_key integer, slots integer, held integer[]) RETURNS integer
        LANGUAGE plpgsql AS $$
        BEGIN
            FOR slot IN 0 .. slots - 1 LOOP
                -- A session's advisory locks stack: slots this session holds are skipped by hand.
                IF NOT slot = ANY(held) AND pg_try_advisory_lock(lock_key, slot) THEN
                    RETURN slot;
                END IF;
            END LOOP;
            RETURN NULL;
        END $$;
    """,
)


def display_url(url: str) -> str:
    """``url`` without its password, for logs and error messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{parts.path}"


class Database:
    """A connection pool to one PostgreSQL database, opened (and migrated) on first use."""

    def __init__(self, url: str, *, timeout: float = 5.0, pool_size: int = POOL_SIZE,
                 migrations: Sequence[str] = MIGRATIONS) -> None:
        if asyncpg is None:
            raise ConfigError("VOICEBRIDGE_DB is a PostgreSQL URL, but the driver is not installed: "
                              "pip install 'voicebridge[postgres]'")
        self.url = url
        self.name = display_url(url)
        self.timeout = timeout
        self.pool_size = pool_size
        self.migrations = migrations
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    self._pool = await self._open()
        return self._pool

    async def _open(self) -> asyncpg.Pool:
        try:
            pool = await asyncpg.create_pool(self.url, min_size=1, max_size=self.pool_size, timeout=CONNECT_TIMEOUT,
                                             command_timeout=self.timeout)
        except (*DRIVER_ERRORS, ValueError) as error:
            raise StoreError(f"cannot connect to {self.name} (VOICEBRIDGE_DB): {_describe(error)}") from None
        try:
            async with pool.acquire() as connection:
                await migrate(connection, self.migrations)
        except BaseException as error:
            await pool.close()
            if isinstance(error, DRIVER_ERRORS):
                raise StoreError(f"cannot prepare the schema in {self.name}: {_describe(error)}") from None
            raise
        return pool

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; driver and network errors come out as :class:`StoreError`."""
        pool = await self.pool()
        try:
            async with pool.acquire(timeout=self.timeout) as connection:
                yield connection
        except DRIVER_ERRORS as error:
            raise StoreError(f"store {self.name}: {_describe(error)}") from error

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.connection() as connection, connection.transaction():
            yield connection

    async def execute(self, query: str, *args: Any) -> str:
        async with self.connection() as connection:
            return str(await connection.execute(query, *args))

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.connection() as connection:
            return list(await connection.fetch(query, *args))

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        async with self.connection() as connection:
            return await connection.fetchrow(query, *args)

    async def aclose(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), self.timeout)
            except TimeoutError:
                pool.terminate()


async def migrate(connection: asyncpg.Connection, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Bring the schema to the newest version; safe when several processes do it at once."""
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await connection.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        await connection.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_version "
                                 "(version integer PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())")
        current = await connection.fetchval(f"SELECT coalesce(max(version), 0) FROM {SCHEMA}.schema_version")
        if current > len(migrations):
            raise StoreError(f"the database schema is version {current}, newer than this voicebridge knows "
                             f"({len(migrations)}): upgrade voicebridge")
        for version, script in enumerate(migrations[current:], start=current + 1):
            await connection.execute(script)
            await connection.execute(f"INSERT INTO {SCHEMA}.schema_version (version) VALUES ($1)", version)
            log.info("database schema migrated to version %d", version)
    return len(migrations)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class PostgresStore:
    """:class:`voicebridge.Store` in PostgreSQL, shared by every process that uses the database."""

    def __init__(self, database: Database, *, owns_database: bool = False, clock: Callable[[], float] = time.time) -> None:
        self.database = database
        self.owns_database = owns_database
        self.clock = clock

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 5.0) -> PostgresStore:
        return cls(Database(url, timeout=timeout), owns_database=True)

    async def aclose(self) -> None:
        if self.owns_database:
            await self.database.aclose()

    # ------------------------------------------------------------------ settings

    async def chat_settings(self, platform: str, chat_id: str) -> dict[str, str]:
        rows = await self.database.fetch(
            f"SELECT key, value FROM {SCHEMA}.chat_settings WHERE platform = $1 AND chat_id = $2", platform, chat_id)
        return {row["key"]: row["value"] for row in rows}

    async def set_chat_setting(self, platform: str, chat_id: str, key: str, value: str | None) -> None:
        if value is None:
            await self.database.execute(
                f"DELETE FROM {SCHEMA}.chat_settings WHERE platform = $1 AND chat_id = $2 AND key = $3", platform, chat_id, key)
        else:
            await self.database.execute(
                f"INSERT INTO {SCHEMA}.chat_settings VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (platform, chat_id, key) DO UPDATE SET value = EXCLUDED.value", platform, chat_id, key, value)

    # ------------------------------------------------------------------ transcript cache

    async def cached_transcript(self, cache_key: str, max_age_seconds: float) -> CachedTranscript | None:
        row = await self.database.fetchrow(
            f"SELECT text, seconds FROM {SCHEMA}.transcripts WHERE cache_key = $1 AND created >= $2",
            cache_key, self.clock() - max_age_seconds)
        return CachedTranscript(row["text"], row["seconds"]) if row else None

    async def cache_transcript(self, cache_key: str, platform: str, chat_id: str, text: str, seconds: float | None) -> None:
        await self.database.execute(
            f"INSERT INTO {SCHEMA}.transcripts VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (cache_key) DO UPDATE "
            "SET text = EXCLUDED.text, seconds = EXCLUDED.seconds, created = EXCLUDED.created",
            cache_key, platform, chat_id, text, seconds, self.clock())

    async def sweep(self, max_age_seconds: float) -> int:
        status = await self.database.execute(f"DELETE FROM {SCHEMA}.transcripts WHERE created < $1",
                                             self.clock() - max_age_seconds)
        return _row_count(status)

    async def forget_chat(self, platform: str, chat_id: str) -> int:
        async with self.database.transaction() as connection:
            await connection.execute(f"DELETE FROM {SCHEMA}.chat_settings WHERE platform = $1 AND chat_id = $2",
                                     platform, chat_id)
            status = await connection.execute(f"DELETE FROM {SCHEMA}.transcripts WHERE platform = $1 AND chat_id = $2",
                                              platform, chat_id)
        return _row_count(status)

    async def sweep_usage(self, before_day: str) -> int:
        return _row_count(await self.database.execute(f"DELETE FROM {SCHEMA}.usage WHERE day < $1", before_day))

    # ------------------------------------------------------------------ usage

    async def add_usage(self, platform: str, chat_id: str, *, audio_seconds: float = 0.0, tts_characters: int = 0) -> None:
        await self.database.execute(
            f"INSERT INTO {SCHEMA}.usage VALUES ($1, $2, $3, $4, $5) ON CONFLICT (platform, chat_id, day) DO UPDATE SET "
            "audio_seconds = usage.audio_seconds + EXCLUDED.audio_seconds, "
            "tts_characters = usage.tts_characters + EXCLUDED.tts_characters",
            platform, chat_id, today(), float(audio_seconds), int(tts_characters))

    async def reserve_usage(self, platform: str, chat_id: str, day: str, seconds: float, limit: float) -> bool:
        # One statement: concurrent reservations of one chat queue on its row and each sees the
        # sum the one before it left, so together they never pass the limit.
        status = await self.database.execute(
            f"INSERT INTO {SCHEMA}.usage (platform, chat_id, day, audio_seconds) "
            "SELECT $1, $2, $3, $4::double precision WHERE $4 <= $5::double precision AND $5 > 0 "
            "ON CONFLICT (platform, chat_id, day) DO UPDATE SET audio_seconds = usage.audio_seconds + EXCLUDED.audio_seconds "
            "WHERE usage.audio_seconds + EXCLUDED.audio_seconds <= $5 AND usage.audio_seconds < $5",
            platform, chat_id, day, float(seconds), float(limit))
        return _row_count(status) == 1

    async def reserve_characters(self, platform: str, chat_id: str, day: str, characters: int, limit: int) -> bool:
        status = await self.database.execute(
            f"INSERT INTO {SCHEMA}.usage (platform, chat_id, day, tts_characters) "
            "SELECT $1, $2, $3, $4::integer WHERE $4 <= $5::integer AND $5 > 0 "
            "ON CONFLICT (platform, chat_id, day) DO UPDATE SET tts_characters = usage.tts_characters + EXCLUDED.tts_characters "
            "WHERE usage.tts_characters + EXCLUDED.tts_characters <= $5 AND usage.tts_characters < $5",
            platform, chat_id, day, int(characters), int(limit))
        return _row_count(status) == 1

    async def usage(self, platform: str, chat_id: str, since_day: str) -> Usage:
        row = await self.database.fetchrow(
            f"SELECT coalesce(sum(audio_seconds), 0) AS audio, coalesce(sum(tts_characters), 0) AS characters "
            f"FROM {SCHEMA}.usage WHERE platform = $1 AND chat_id = $2 AND day >= $3", platform, chat_id, since_day)
        assert row is not None
        return Usage(float(row["audio"]), int(row["characters"]))

    # ------------------------------------------------------------------ records

    async def marker(self, key: str) -> str | None:
        row = await self.database.fetchrow(f"SELECT value FROM {SCHEMA}.markers WHERE key = $1", key)
        return row["value"] if row else None

    async def set_marker(self, key: str, value: str | None) -> None:
        if value is None:
            await self.database.execute(f"DELETE FROM {SCHEMA}.markers WHERE key = $1", key)
        else:
            await self.database.execute(
                f"INSERT INTO {SCHEMA}.markers VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                key, value)

    async def markers(self, prefix: str) -> dict[str, str]:
        rows = await self.database.fetch(f"SELECT key, value FROM {SCHEMA}.markers WHERE starts_with(key, $1)", prefix)
        return {row["key"]: row["value"] for row in rows}


def _row_count(status: str) -> int:
    """The row count of a command status such as ``DELETE 3`` or ``INSERT 0 1``."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresSlots:
    """Stream slots shared by every process that uses the database (``voicebridge.speech.slots``,
    a semaphore's interface): slot n is the session advisory lock (:data:`STREAM_SLOT_LOCK`, n),
    held on one connection of this process. A process that dies loses its connection, and
    PostgreSQL frees its slots at once: no lease to wait out."""

    def __init__(self, database: Database, count: int, *, provider: str = "feishu") -> None:
        self.database = database
        self.count = count
        self.provider = provider
        self._connection: asyncpg.Connection | None = None
        self._held: set[int] = set()
        self._turn = asyncio.Lock()  # one statement at a time on the connection
        self._releases: set[asyncio.Task[None]] = set()

    async def acquire(self) -> bool:
        pause = 0.02
        while True:
            try:
                async with self._turn:
                    connection = await self._connect()
                    number = await connection.fetchval(f"SELECT {SCHEMA}.take_slot($1, $2, $3::integer[])",
                                                       STREAM_SLOT_LOCK, self.count, sorted(self._held))
                    if number is not None:
                        self._held.add(int(number))
                        return True
            except DRIVER_ERRORS as error:
                await self._forget_connection()
                raise SpeechError(ErrorKind.CONNECTIVITY, f"shared stream slots unavailable ({self.database.name}): "
                                  f"{_describe(error)}", provider=self.provider) from None
            await asyncio.sleep(pause)  # every slot of the tenant is in use: wait for one
            pause = min(pause * 2, 0.25)

    def release(self) -> None:
        """Called where a semaphore's would be (not awaited): the unlock follows in a moment. A slot
        taken again meanwhile by this session stacks on its own lock, so the count stays right."""
        if not self._held:
            return  # the connection went, and its locks with it
        number = self._held.pop()
        task = asyncio.create_task(self._unlock(number))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _unlock(self, number: int) -> None:
        async with self._turn:
            if self._connection is None:
                return
            try:
                await self._connection.execute("SELECT pg_advisory_unlock($1, $2)", STREAM_SLOT_LOCK, number)
            except DRIVER_ERRORS as error:
                log.warning("could not give back stream slot %d: %s", number, _describe(error))
                await self._forget_connection()

    async def _connect(self) -> asyncpg.Connection:
        if self._connection is None or self._connection.is_closed():
            await self.database.pool()  # the schema (take_slot) is in place
            self._held.clear()  # a new session holds nothing
            self._connection = await asyncpg.connect(self.database.url, timeout=CONNECT_TIMEOUT,
                                                     command_timeout=self.database.timeout)
        return self._connection

    async def _forget_connection(self) -> None:
        connection, self._connection = self._connection, None
        self._held.clear()
        if connection is not None:
            connection.terminate()

    async def aclose(self) -> None:
        await asyncio.gather(*self._releases, return_exceptions=True)
        async with self._turn:
            if self._connection is not None:
                connection, self._connection = self._connection, None
                await connection.close(timeout=self.database.timeout)
