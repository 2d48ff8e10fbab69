"""Bookkeeping that never holds up an answer, and the daily audio allowances it keeps.

The store can be slow or locked (another process holding the SQLite file, a PostgreSQL failover).
An answer waits for it at most :data:`STORE_WAIT_ON_ANSWER` seconds: reads on the answer's path
fall back (defaults, no cache, limits unchecked) and writes happen afterwards, in the background,
retried, and reported in the log if they never land.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from .store import Store, StoreError, today

log = logging.getLogger(__name__)
T = TypeVar("T")

STORE_WAIT_ON_ANSWER = 1.0  # seconds an answer may wait for the store
WRITE_ATTEMPTS = 5
WRITE_RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0)  # pauses between the attempts


class DailyLimitReached(Exception):
    def __init__(self, used_seconds: float, limit_seconds: float, *, per_user: bool = False) -> None:
        super().__init__(f"{used_seconds:.0f} of {limit_seconds:.0f} seconds used today" + (" by this user" if per_user else ""))
        self.used_seconds = used_seconds
        self.limit_seconds = limit_seconds
        self.per_user = per_user


class Bookkeeper:
    """Store work on behalf of answers: bounded reads, background writes."""

    def __init__(self) -> None:
        self._writes: set[asyncio.Task[Any]] = set()

    async def read(self, operation: Coroutine[Any, Any, T], what: str, fallback: T) -> T:
        """``operation``'s result, or ``fallback`` when the store fails or takes longer than
        :data:`STORE_WAIT_ON_ANSWER`. A slow operation is not cancelled: one that writes (a
        reservation) still lands, and shutdown waits for it with the writes."""
        task = asyncio.create_task(operation)
        done, _ = await asyncio.wait({task}, timeout=STORE_WAIT_ON_ANSWER)
        if not done:
            log.warning("%s: the store did not answer within %gs; answering without it", what, STORE_WAIT_ON_ANSWER)
            self._track(task)
            return fallback
        try:
            return task.result()
        except StoreError as error:
            log.warning("%s unavailable, answering without it: %s", what, error)
            return fallback

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        task.add_done_callback(_consume_result)

    def write(self, operation: Callable[[], Coroutine[Any, Any, object]], what: str) -> None:
        """Run ``operation`` (a new coroutine per attempt) in the background until it lands."""
        self._track(asyncio.create_task(self._until_written(operation, what)))

    async def _until_written(self, operation: Callable[[], Coroutine[Any, Any, object]], what: str) -> None:
        for attempt, pause in enumerate((*WRITE_RETRY_SECONDS, None), start=1):
            try:
                await operation()
                return
            except StoreError as error:
                if pause is None:
                    log.error("%s not recorded after %d attempts: %s", what, attempt, error)
                    return
                log.warning("%s not recorded yet (%s); trying again in %gs", what, error, pause)
                await asyncio.sleep(pause)

    @property
    def pending(self) -> int:
        return len(self._writes)

    async def flush(self) -> None:
        """Wait for the writes under way (the caller bounds the wait)."""
        while self._writes:
            # Not gather: a caller's timeout (settle, drain) must end the wait, not cancel the writes.
            await asyncio.wait(set(self._writes))

    async def settle(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the writes under way."""
        try:
            async with asyncio.timeout(timeout):
                await self.flush()
        except TimeoutError:
            log.warning("%d store writes still under way after %gs", self.pending, timeout)

    async def aclose(self) -> None:
        """Give up the writes still under way, saying so."""
        if self._writes:
            log.error("%d store writes given up at shutdown", len(self._writes))
        for task in self._writes:
            task.cancel()
        await asyncio.gather(*self._writes, return_exceptions=True)


def _consume_result(task: asyncio.Task[Any]) -> None:
    """A late store answer nobody waits for any more: its failure is logged, not left unretrieved."""
    if not task.cancelled() and isinstance(task.exception(), StoreError):
        log.warning("a late store operation failed: %s", task.exception())


@dataclass(frozen=True)
class Account:
    """One daily allowance: a chat's, or one user's within a group chat."""

    id: str
    limit_seconds: float | None
    per_user: bool = False


class AudioQuota:
    """A note's claim on its daily allowances: reserved (atomically, in the store) by the declared
    duration before any provider call, settled later to the audio really handed over."""

    def __init__(self, store: Store, bookkeeper: Bookkeeper, platform: str, accounts: list[Account], declared: float) -> None:
        self.store = store
        self.bookkeeper = bookkeeper
        self.platform = platform
        self.accounts = accounts
        self.declared = declared
        self._claim: asyncio.Task[list[Account]] | None = None
        self._allowance: float | None = None  # the seconds left to spend, where limited
        self._binding: Account | None = None  # the allowance the note may spend is this one's

    async def reserve(self) -> float | None:
        """Reserve; the seconds this note may hand to providers (None: no limit, or the store
        could not tell in time). Raises :class:`DailyLimitReached`."""
        self._claim = asyncio.create_task(self._claim_all())
        done, _ = await asyncio.wait({self._claim}, timeout=STORE_WAIT_ON_ANSWER)
        if not done:
            log.warning("the store did not answer within %gs: this note's daily limit is not checked", STORE_WAIT_ON_ANSWER)
            return None
        try:
            self._claim.result()
        except StoreError as error:
            log.warning("usage unavailable, daily limit not checked: %s", error)
            return None
        return self._allowance

    async def _claim_all(self) -> list[Account]:
        reserved: list[Account] = []
        try:
            for account in self.accounts:
                if account.limit_seconds is None:
                    await self.store.add_usage(self.platform, account.id, audio_seconds=self.declared)
                else:
                    # One atomic step: notes handled at once, in any process, never overspend.
                    if not await self.store.reserve_usage(self.platform, account.id, today(), self.declared,
                                                          account.limit_seconds):
                        used = (await self.store.usage(self.platform, account.id, today())).audio_seconds
                        raise DailyLimitReached(used, account.limit_seconds, per_user=account.per_user)
                    used = (await self.store.usage(self.platform, account.id, today())).audio_seconds
                    left = max(0.0, account.limit_seconds - used + self.declared)
                    if self._allowance is None or left < self._allowance:
                        self._allowance, self._binding = left, account
                reserved.append(account)
        except BaseException:
            for account in reserved:  # a later account refused: the earlier ones are given back
                self.bookkeeper.write(lambda account=account: self.store.add_usage(
                    self.platform, account.id, audio_seconds=-self.declared), "usage given back")
            raise
        return reserved

    def exceeded(self, allowance_seconds: float) -> DailyLimitReached:
        """The refusal for a note cut at its allowance."""
        account = self._binding
        assert account is not None and account.limit_seconds is not None
        return DailyLimitReached(account.limit_seconds - allowance_seconds, account.limit_seconds, per_user=account.per_user)

    def settle(self, handed_seconds: float) -> None:
        """Count what was really handed to providers, in the background (the reservation itself
        may still be on its way when the store was slow); one write per account, so a retried
        write never counts twice."""
        for account in self.accounts:
            self.bookkeeper.write(lambda account=account: self._settle(account, handed_seconds), "usage")

    async def _settle(self, account: Account, handed_seconds: float) -> None:
        assert self._claim is not None
        try:
            reserved = await asyncio.shield(self._claim)
        except (DailyLimitReached, StoreError):
            reserved = []  # nothing was taken
        delta = handed_seconds - (self.declared if account in reserved else 0.0)
        if delta:
            await self.store.add_usage(self.platform, account.id, audio_seconds=delta)
