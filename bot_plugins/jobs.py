"""Durable work: the job queue in PostgreSQL, and the delivery records that keep a job that
runs twice from answering twice.

The queue is PostgreSQL's documented ``SELECT … FOR UPDATE SKIP LOCKED`` pattern on one table
(docs/scaling.md says why not a library):

- A job is inserted by the ingress with a ``source`` unique per platform event (a Telegram
  update id, a Discord message or interaction id), so an event delivered twice is one job.
- A worker claims the oldest *ready* job whose chat has no older ready job, and takes a lease on
  it (``VOICEBRIDGE_JOB_LEASE``) that it renews while it works. A job whose worker died is
  claimable again once its lease has expired. The head-of-chat rule keeps each chat's jobs in
  the order they were received, whichever worker runs them.
- Each message a job sends is its ``part`` n (the n-th send of the job): the record is checked
  before sending and written right after, so a job run again after a crash skips what was
  already delivered — at most the one message in flight at the crash is sent twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from .postgres import DRIVER_ERRORS, SCHEMA, Database
from .voice_notes.model import Activity, Button, ChatPort, NoticePort, VoiceReply
from .voice_notes.store import SQLiteStore, StoreError

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "voicebridge_jobs"
MAX_ATTEMPTS = 3  # a job whose worker died this often is given up (and apologised for)
# A delivery record or receipt may hold up an answer this long; then the answer goes without it.
RECORD_PATIENCE_SECONDS = 1.0
FINISHED_RETENTION_SECONDS = 24 * 3600  # done jobs are kept this long: a late redelivery stays a duplicate


@dataclass(frozen=True)
class NewJob:
    source: str  # unique per platform event: the same update received twice is one job
    chat: str  # jobs of one chat run one at a time, in the order received
    payload: dict[str, Any]


@dataclass(frozen=True)
class Job:
    id: int
    source: str
    chat: str
    payload: dict[str, Any]
    attempts: int  # this run included


class DeliveryLog(Protocol):
    """Where a job's sent messages are recorded."""

    async def delivered(self, job_id: int, part: int) -> str | None:
        """The platform message id of part ``part`` of job ``job_id``, if it was sent."""
        ...

    async def record_delivery(self, job_id: int, part: int, message_id: str) -> None: ...


class PostgresQueue:
    """The job queue and delivery records in one PostgreSQL database."""

    def __init__(self, database: Database, *, worker: str = "", lease_seconds: float = 30.0) -> None:
        self.database = database
        self.worker = worker
        self.lease_seconds = lease_seconds

    async def enqueue(self, job: NewJob) -> bool:
        """Commit ``job``; False when its source was already queued (a redelivery)."""
        async with self.database.transaction() as connection:
            inserted = await connection.fetchval(
                f"INSERT INTO {SCHEMA}.jobs (source, chat, payload) VALUES ($1, $2, $3::jsonb) "
                "ON CONFLICT (source) DO NOTHING RETURNING id", job.source, job.chat, json.dumps(job.payload))
            if inserted is not None:
                await connection.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)  # sent at commit
        return inserted is not None

    async def claim(self) -> Job | None:
        """Take the next job this worker may run, or None."""
        row = await self.database.fetchrow(
            f"""
            WITH next AS (
                SELECT job.id FROM {SCHEMA}.jobs AS job
                WHERE job.state = 'ready' AND (job.lease_until IS NULL OR job.lease_until < now())
                  AND NOT EXISTS (SELECT 1 FROM {SCHEMA}.jobs AS earlier
                                  WHERE earlier.chat = job.chat AND earlier.state = 'ready' AND earlier.id < job.id)
                ORDER BY job.id
                LIMIT 1
                FOR UPDATE SKIP LOCKED)
            UPDATE {SCHEMA}.jobs AS job SET lease_owner = $1, lease_until = now() + make_interval(secs => $2),
                attempts = job.attempts + 1
            FROM next WHERE job.id = next.id
            RETURNING job.id, job.source, job.chat, job.payload, job.attempts
            """, self.worker, self.lease_seconds)
        if row is None:
            return None
        return Job(row["id"], row["source"], row["chat"], json.loads(row["payload"]), row["attempts"])

    async def renew(self, job_ids: Iterable[int]) -> set[int]:
        """Extend this worker's leases; returns the ids still this worker's (a job missing from
        it was taken over after the lease ran out, and its work must stop)."""
        ids = list(job_ids)
        if not ids:
            return set()
        rows = await self.database.fetch(
            f"UPDATE {SCHEMA}.jobs SET lease_until = now() + make_interval(secs => $3) "
            "WHERE id = ANY($1::bigint[]) AND lease_owner = $2 AND state = 'ready' RETURNING id",
            ids, self.worker, self.lease_seconds)
        return {row["id"] for row in rows}

    async def finish(self, job: Job, *, failed: bool = False) -> None:
        await self.database.execute(
            # The payload (the user's message) goes now; the row stays a day without it, so that a
            # late redelivery of the same event is still known.
            f"UPDATE {SCHEMA}.jobs SET state = $3, finished = now(), lease_until = NULL, payload = '{{}}'::jsonb "
            "WHERE id = $1 AND lease_owner = $2 AND state = 'ready'", job.id, self.worker, "failed" if failed else "done")

    async def release(self, job: Job) -> None:
        """Give a job back unfinished (a worker stopping): another worker takes it at once."""
        await self.database.execute(
            f"UPDATE {SCHEMA}.jobs SET lease_until = NULL, lease_owner = NULL, attempts = greatest(attempts - 1, 0) "
            "WHERE id = $1 AND lease_owner = $2 AND state = 'ready'", job.id, self.worker)

    async def sweep(self, older_than_seconds: float = FINISHED_RETENTION_SECONDS) -> int:
        """Delete finished jobs (and their delivery records) older than that."""
        status = await self.database.execute(
            f"DELETE FROM {SCHEMA}.jobs WHERE state <> 'ready' AND finished < now() - make_interval(secs => $1)",
            older_than_seconds)
        return int(status.rsplit(" ", 1)[-1])

    async def pending(self) -> int:
        """Jobs not finished yet (a gauge for operators and tests)."""
        count = await self.database.fetchrow(f"SELECT count(*) AS pending FROM {SCHEMA}.jobs WHERE state = 'ready'")
        return int(count["pending"]) if count else 0

    @asynccontextmanager
    async def notifications(self) -> AsyncIterator[asyncio.Event]:
        """An event set whenever a job is queued (PostgreSQL LISTEN): workers wake at once
        instead of at their next poll. Without it (the connection failed) polling still works."""
        event = asyncio.Event()
        pool = await self.database.pool()
        try:
            connection = await pool.acquire(timeout=self.database.timeout)
        except DRIVER_ERRORS as error:
            log.warning("no job notifications, polling only: %s", error)
            yield event
            return

        def wake(*_: object) -> None:
            event.set()

        try:
            await connection.add_listener(NOTIFY_CHANNEL, wake)
            yield event
        finally:
            try:
                await connection.remove_listener(NOTIFY_CHANNEL, wake)
            except DRIVER_ERRORS as error:
                log.debug("could not stop listening: %s", error)  # the connection is given back anyway
            await pool.release(connection)

    # ------------------------------------------------------------------ delivery records

    async def delivered(self, job_id: int, part: int) -> str | None:
        row = await self.database.fetchrow(f"SELECT message_id FROM {SCHEMA}.deliveries WHERE job_id = $1 AND part = $2",
                                           job_id, part)
        return row["message_id"] if row else None

    async def record_delivery(self, job_id: int, part: int, message_id: str) -> None:
        await self.database.execute(f"INSERT INTO {SCHEMA}.deliveries VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                                    job_id, part, message_id)


class RecordedChat:
    """A :class:`ChatPort` that sends each part of a job's answer at most once, across runs.

    Parts are numbered in the order the plugin sends them; the plugin answers a job the same
    way when it runs again (the transcript then comes from the cache), so part n is the same
    message both times. A record that cannot be read or written within ``patience`` seconds (a
    locked or unreachable store) costs at most a duplicate, never the answer or its time.
    """

    def __init__(self, chat: ChatPort, log_: DeliveryLog, job_id: int, *, patience: float = RECORD_PATIENCE_SECONDS) -> None:
        self.chat = chat
        self.deliveries = log_
        self.job_id = job_id
        self.patience = patience
        self._next_part = 0
        self.max_text_length = chat.max_text_length
        self.needs_waveform = chat.needs_waveform
        self.min_edit_interval = chat.min_edit_interval

    def text_length(self, text: str) -> int:
        return self.chat.text_length(text)

    async def send_text(self, text: str, reply_to: str | None, buttons: Sequence[Button] = ()) -> str:
        return await self._once(lambda: self.chat.send_text(text, reply_to, buttons))

    async def edit_text(self, message_id: str, text: str, buttons: Sequence[Button] = ()) -> None:
        await self.chat.edit_text(message_id, text, buttons)

    async def send_notice(self, text: str, reply_to: str | None) -> str:
        """Only to whoever asked where the chat can do that, else as any text; a part like the others."""
        chat = self.chat
        if isinstance(chat, NoticePort):
            return await self._once(lambda: chat.send_notice(text, reply_to))
        return await self._once(lambda: chat.send_text(text, reply_to))

    async def send_voice(self, voice: VoiceReply, reply_to: str | None) -> str:
        return await self._once(lambda: self.chat.send_voice(voice, reply_to))

    async def send_audio(self, voice: VoiceReply, reply_to: str | None) -> str:
        return await self._once(lambda: self.chat.send_audio(voice, reply_to))

    def activity(self, kind: Activity) -> AbstractAsyncContextManager[None]:
        return self.chat.activity(kind)

    async def is_admin(self, user_id: str) -> bool:
        return await self.chat.is_admin(user_id)

    async def report_error(self, error: BaseException) -> None:
        await self.chat.report_error(error)

    async def _once(self, send: Callable[[], Awaitable[str]]) -> str:
        part = self._next_part
        self._next_part += 1
        try:
            async with asyncio.timeout(self.patience):
                already = await self.deliveries.delivered(self.job_id, part)
        except (StoreError, TimeoutError) as error:
            log.warning("delivery record of job %d unavailable, sending: %s", self.job_id, error or "too slow")
            already = None
        if already is not None:
            log.info("job %d part %d was delivered before; not sent again", self.job_id, part)
            return already
        message_id: str = await send()
        try:
            async with asyncio.timeout(self.patience):
                await self.deliveries.record_delivery(self.job_id, part, message_id)
        except (StoreError, TimeoutError) as error:
            log.warning("delivery of job %d part %d not recorded: %s", self.job_id, part, error or "too slow")
        return message_id


class SQLiteJournal:
    """The embedded mode's durability: a note (or command) is written down when it is received
    and crossed out when it has been answered. After a ``kill -9`` and a restart, what is still
    written down is answered then — or apologised for, if its file can no longer be downloaded —
    with its delivery records keeping what was already sent from being sent again."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self._next_sweep = 0.0

    async def receive(self, job: NewJob) -> Job | None:
        """Write ``job`` down; None when it already was (the same update delivered twice)."""
        now = self.store.clock()

        def insert(db: sqlite3.Connection) -> int | None:
            cursor = db.execute("INSERT INTO receipts (source, chat, payload, attempts, received) VALUES (?, ?, ?, 1, ?) "
                                "ON CONFLICT (source) DO NOTHING", (job.source, job.chat, json.dumps(job.payload), now))
            return cursor.lastrowid if cursor.rowcount == 1 else None

        row_id = await self.store.run(insert)
        return Job(row_id, job.source, job.chat, job.payload, 1) if row_id is not None else None

    async def unanswered(self, received_before: float) -> list[Job]:
        """What was received before ``received_before`` (this process's start: what it receives
        itself, it answers itself) but not answered, oldest first; each counts as one more attempt."""
        def take(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            db.execute("UPDATE receipts SET attempts = attempts + 1 WHERE answered = 0 AND received < ?", (received_before,))
            return db.execute("SELECT id, source, chat, payload, attempts FROM receipts WHERE answered = 0 "
                              "AND received < ? ORDER BY id", (received_before,)).fetchall()

        return [Job(row[0], row[1], row[2], json.loads(row[3]), row[4]) for row in await self.store.run(take)]

    async def answered(self, job: Job) -> None:
        """Cross ``job`` out. Its receipt stays for a day without its content, so that the same
        update delivered again (Telegram had not yet heard it was received) is not answered again."""
        now = self.store.clock()
        sweep = now >= self._next_sweep  # old receipts go at most once an hour
        if sweep:
            self._next_sweep = now + 3600

        def cross_out(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM receipt_deliveries WHERE receipt_id = ?", (job.id,))
            db.execute("UPDATE receipts SET answered = 1, payload = '{}' WHERE id = ?", (job.id,))
            if sweep:
                db.execute("DELETE FROM receipts WHERE answered = 1 AND received < ?", (now - FINISHED_RETENTION_SECONDS,))

        await self.store.run(cross_out)

    async def delivered(self, job_id: int, part: int) -> str | None:
        row = await self.store.run(lambda db: db.execute(
            "SELECT message_id FROM receipt_deliveries WHERE receipt_id = ? AND part = ?", (job_id, part)).fetchone())
        return row[0] if row else None

    async def record_delivery(self, job_id: int, part: int, message_id: str) -> None:
        await self.store.run(lambda db: db.execute(
            "INSERT INTO receipt_deliveries VALUES (?, ?, ?) ON CONFLICT DO NOTHING", (job_id, part, message_id)))
