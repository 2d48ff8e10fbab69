"""Retries and call reporting, in one place for every provider.

The service retries whole operations; a streaming protocol that sends thousands of requests
(Feishu) retries each request with the same policy rather than restarting an hour of audio.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from .errors import RETRYABLE_KINDS, SpeechError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3  # first try included
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 30.0  # a server asking for a longer pause is not waited for

    def delay(self, attempt: int, error: SpeechError, retry_transient: bool = True) -> float | None:
        """Seconds to wait before the next attempt, or None to give up. Without
        ``retry_transient`` (another provider is waiting in the chain), only a refused token
        that was just renewed is tried again."""
        if not error.retryable or attempt >= self.attempts:
            return None
        if not retry_transient and error.kind in RETRYABLE_KINDS:
            return None
        backoff = min(self.max_delay, self.base_delay * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)
        if error.retry_after is not None:
            if error.retry_after > self.max_retry_after:
                return None
            backoff = max(backoff, error.retry_after)
        return backoff


class SpeechObserver(Protocol):
    """Receives one report per provider call and per retry (metrics live behind this)."""

    def call_finished(self, provider: str, operation: str, seconds: float, error: SpeechError | None) -> None: ...

    def retrying(self, provider: str, operation: str, attempt: int, delay: float, error: SpeechError) -> None: ...


class LoggingObserver:
    def call_finished(self, provider: str, operation: str, seconds: float, error: SpeechError | None) -> None:
        if error is None:
            log.debug("%s %s succeeded in %.2fs", provider, operation, seconds)
        else:  # an attempt; whoever gives up reports the final failure
            log.info("%s %s failed after %.2fs: %s (%s)", provider, operation, seconds, error, error.kind)

    def retrying(self, provider: str, operation: str, attempt: int, delay: float, error: SpeechError) -> None:
        log.info("%s %s: retrying in %.1fs after attempt %d (%s)", provider, operation, delay, attempt, error.kind)


class Observers:
    """Several observers heard as one (logs and metrics)."""

    def __init__(self, *observers: SpeechObserver) -> None:
        self.observers = observers

    def call_finished(self, provider: str, operation: str, seconds: float, error: SpeechError | None) -> None:
        for observer in self.observers:
            observer.call_finished(provider, operation, seconds, error)

    def retrying(self, provider: str, operation: str, attempt: int, delay: float, error: SpeechError) -> None:
        for observer in self.observers:
            observer.retrying(provider, operation, attempt, delay, error)


class Retrier:
    """A retry policy plus the observer that hears about every attempt."""

    def __init__(self, policy: RetryPolicy | None = None, observer: SpeechObserver | None = None) -> None:
        self.policy = policy or RetryPolicy()
        self.observer = observer or LoggingObserver()

    def next_delay(self, provider: str, operation: str, attempt: int, started: float, error: SpeechError,
                   retry_transient: bool = True) -> float | None:
        """Report a failed attempt; the pause before the next one, or None when it is time to give up."""
        self.observer.call_finished(provider, operation, time.monotonic() - started, error)
        delay = self.policy.delay(attempt, error, retry_transient)
        if delay is not None:
            self.observer.retrying(provider, operation, attempt, delay, error)
        return delay

    def succeeded(self, provider: str, operation: str, started: float) -> None:
        self.observer.call_finished(provider, operation, time.monotonic() - started, None)

    async def call(self, provider: str, operation: str, call: Callable[[], Awaitable[T]], retry_transient: bool = True) -> T:
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                result = await call()
            except SpeechError as error:
                delay = self.next_delay(provider, operation, attempt, started, error, retry_transient)
                if delay is None:
                    raise
                await asyncio.sleep(delay)
                continue
            self.succeeded(provider, operation, started)
            return result
