"""``voicebridge worker``: takes jobs from the PostgreSQL queue, downloads, transcribes and
answers over the platforms' HTTP APIs. Any number of workers, on any machines.

Each job is leased (``VOICEBRIDGE_JOB_LEASE``) and the lease renewed while the job runs; a job
whose worker died is taken by another once the lease has run out, and its delivery records keep
it from answering twice. On SIGTERM a worker takes no new job, gives the running ones
``VOICEBRIDGE_SHUTDOWN_GRACE`` seconds, and hands back the rest for another worker at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
from collections.abc import Mapping
from contextlib import AsyncExitStack, suppress
from typing import Protocol

from voicebridge.config import RunnerSettings
from voicebridge.jobs import MAX_ATTEMPTS, DeliveryLog, Job, PostgresQueue
from voicebridge.liveness import Liveness
from voicebridge.metrics import Metrics, serve_status
from voicebridge.postgres import PostgresSlots, PostgresStore
from voicebridge.speech.retry import LoggingObserver, Observers, Retrier
from voicebridge.speech.service import SpeechService
from voicebridge.voice_notes.plugin import ALL_COMMANDS, MAX_CONCURRENT_NOTES, VoiceNotesPlugin
from voicebridge.voice_notes.store import StoreError

from .discord_jobs import discord_job_runner
from .runner import check_telegram_token, open_database, telegram_application
from .telegram_jobs import TelegramJobRunner

log = logging.getLogger("voicebridge.worker")

POLL_INTERVAL = 1.0  # seconds between looks at the queue when no notification came
FINISH_ATTEMPTS = 3  # a job's completion is written this often before its lease is left to expire
JOB_SWEEP_INTERVAL = 3600.0


class JobRunner(Protocol):
    """Answers one platform's jobs."""

    async def run(self, job: Job, deliveries: DeliveryLog) -> None: ...

    async def give_up(self, job: Job, deliveries: DeliveryLog) -> None:
        """Apologise for a job that failed too often to be tried again."""
        ...


class Worker:
    """The claim loop: up to ``concurrency`` jobs at once, each under a renewed lease."""

    def __init__(self, queue: PostgresQueue, runners: Mapping[str, JobRunner], *,
                 concurrency: int = MAX_CONCURRENT_NOTES, poll_interval: float = POLL_INTERVAL) -> None:
        self.queue = queue
        self.runners = dict(runners)
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self._running: dict[int, tuple[Job, asyncio.Task[None]]] = {}
        self._changed = asyncio.Event()

    @property
    def busy(self) -> int:
        return len(self._running)

    async def run(self, stop: asyncio.Event, grace: float) -> None:
        """Work until ``stop`` is set, then finish (or hand back) the jobs in flight."""
        async with AsyncExitStack() as background, self.queue.notifications() as queued:
            renewer = asyncio.create_task(self._renew_forever())
            sweeper = asyncio.create_task(self._sweep_forever())
            background.callback(renewer.cancel)
            background.callback(sweeper.cancel)
            while not stop.is_set():
                queued.clear()
                self._changed.clear()
                await self._claim_while_free()
                waits = [asyncio.create_task(event.wait()) for event in (stop, queued, self._changed)]
                await asyncio.wait(waits, timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED)
                for wait in waits:
                    wait.cancel()
            await self._stop_running(grace)
            for task in (renewer, sweeper):
                task.cancel()
            await asyncio.gather(renewer, sweeper, return_exceptions=True)

    async def _claim_while_free(self) -> None:
        while len(self._running) < self.concurrency:
            try:
                job = await self.queue.claim()
            except StoreError as error:
                log.warning("cannot take jobs: %s", error)
                return
            if job is None:
                return
            task = asyncio.create_task(self._run(job))
            self._running[job.id] = (job, task)

    async def _run(self, job: Job) -> None:
        try:
            runner = self.runners.get(str(job.payload.get("platform")))
            if runner is None:
                log.error("job %d is for %s, which this worker does not serve (no token); given up",
                          job.id, job.payload.get("platform"))
                await self._finish(job, failed=True)
                return
            if job.attempts > MAX_ATTEMPTS:
                log.error("job %d was started %d times without finishing; apologising and giving it up", job.id,
                          job.attempts - 1)
                await runner.give_up(job, self.queue)
                await self._finish(job, failed=True)
                return
            log.info("job %d (%s) started, attempt %d", job.id, job.source, job.attempts)
            try:
                await runner.run(job, self.queue)
            except Exception:
                log.exception("job %d failed", job.id)
                await self._finish(job, failed=True)
                return
            await self._finish(job)
        finally:
            self._running.pop(job.id, None)
            self._changed.set()

    async def _finish(self, job: Job, *, failed: bool = False) -> None:
        for attempt in range(1, FINISH_ATTEMPTS + 1):
            try:
                await self.queue.finish(job, failed=failed)
                return
            except StoreError as error:
                log.warning("job %d: completion not written (%s)%s", job.id, error,
                            "; trying again" if attempt < FINISH_ATTEMPTS else "; its lease will run out")
                if attempt < FINISH_ATTEMPTS:
                    await asyncio.sleep(attempt)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.queue.lease_seconds / 3)
            ids = set(self._running)
            try:
                kept = await self.queue.renew(ids)
            except StoreError as error:
                log.warning("leases not renewed: %s", error)
                continue
            for lost in ids - kept:
                entry = self._running.get(lost)
                if entry is not None and not entry[1].done():
                    log.warning("job %d was taken over by another worker; stopping it here", lost)
                    entry[1].cancel()

    async def _sweep_forever(self) -> None:
        while True:
            try:
                removed = await self.queue.sweep()
                if removed:
                    log.info("removed %d finished jobs", removed)
            except StoreError as error:
                log.warning("job sweep failed: %s", error)
            await asyncio.sleep(JOB_SWEEP_INTERVAL)

    async def _stop_running(self, grace: float) -> None:
        if not self._running:
            return
        log.info("stopping: %d jobs in flight get %.0fs", len(self._running), grace)
        tasks = [task for _, task in self._running.values()]
        _, late = await asyncio.wait(tasks, timeout=grace) if tasks else (set(), set())
        unfinished = [job for job, task in self._running.values() if task in late]
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        for job in unfinished:
            with suppress(StoreError):
                await self.queue.release(job)  # another worker takes it now, not after the lease
        if unfinished:
            log.warning("handed back %d unfinished jobs", len(unfinished))


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def serve_worker(settings: RunnerSettings, stop: asyncio.Event) -> None:
    """Run a worker until ``stop`` is set."""
    metrics = Metrics()
    async with AsyncExitStack() as cleanup:
        database = await open_database(settings.plugin.database, cleanup)
        queue = PostgresQueue(database, worker=worker_name(), lease_seconds=settings.job_lease_seconds)
        slots = PostgresSlots(database, settings.speech.feishu_max_streams)
        cleanup.push_async_callback(slots.aclose)
        service = SpeechService.from_settings(settings.speech, retrier=Retrier(observer=Observers(LoggingObserver(), metrics)),
                                              stream_slots=slots)
        # No live partial transcripts from workers: a job run again after a crash could not
        # tell a partial already on screen from the answer.
        plugin = VoiceNotesPlugin(service, PostgresStore(database), settings.plugin, commands=ALL_COMMANDS,
                                  closes=(service,), edit_interval=math.inf, observer=metrics)
        cleanup.push_async_callback(plugin.aclose)
        await plugin.start()
        runners: dict[str, JobRunner] = {}
        if settings.telegram.token:
            # A worker does not poll: the liveness given to getUpdates is never consulted.
            application = telegram_application(settings.telegram, Liveness(settings.liveness_timeout))
            await check_telegram_token(application.initialize)
            cleanup.push_async_callback(application.shutdown)
            runners["telegram"] = TelegramJobRunner(application, plugin)
        if settings.discord.token:
            runners["discord"] = await discord_job_runner(settings.discord, plugin, cleanup)
        worker = Worker(queue, runners)
        metrics.gauge("voicebridge_jobs_running", lambda: worker.busy)
        if settings.metrics_port is not None:
            status = await serve_status(settings.metrics_port, metrics, lambda: not stop.is_set())
            cleanup.callback(status.close)
        log.info("worker %s is running (%s); stop with Ctrl+C", queue.worker, ", ".join(runners) or "no platform")
        await worker.run(stop, settings.plugin.shutdown_grace_seconds)
    log.info("stopped")
