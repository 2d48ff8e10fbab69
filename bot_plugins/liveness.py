"""Whether ``voicebridge run`` still hears its chats.

Each chat connection (Telegram polling or webhook, a Discord gateway shard) reports when it goes
down and comes back, and the tasks that must run as long as the bot does are watched. A
connection down for longer than ``VOICEBRIDGE_LIVENESS_TIMEOUT``, or a watched task that ended,
is a problem: ``/healthz`` answers 503 with it and the runner exits non-zero, so that systemd or
Docker restart a process that would otherwise be alive but deaf.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class ConnectionLost(Exception):
    """The runner stopped because a chat connection was lost; the message says which and why."""


class Liveness:
    def __init__(self, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self.clock = clock
        self._down: dict[str, tuple[float, str]] = {}  # connection → (down since, why)
        self._ended: dict[str, str] = {}  # watched task → why it ended
        self._watching = True
        self._changed = asyncio.Event()

    def up(self, name: str) -> None:
        if self._down.pop(name, None) is not None:
            log.info("%s is back", name)

    def down(self, name: str, reason: str) -> None:
        """``name`` failed; it counts as down from its first failure until :meth:`up`."""
        if name not in self._down:
            log.warning("%s is down: %s", name, reason)
            self._down[name] = (self.clock(), reason)
        self._changed.set()

    def watch(self, name: str, task: asyncio.Task[object]) -> None:
        """``task`` must run until the bot stops; its end, however it ends, is a problem."""
        task.add_done_callback(lambda done: self._task_ended(name, done))

    def stop_watching(self) -> None:
        """The bot is stopping: connections closing from now on are no problem."""
        self._watching = False

    def _task_ended(self, name: str, task: asyncio.Task[object]) -> None:
        if not self._watching:
            return
        error = None if task.cancelled() else task.exception()
        self._ended.setdefault(name, f"{type(error).__name__}: {error}" if error else "it ended")
        self._changed.set()

    def problem(self) -> str | None:
        """The first reason the bot no longer hears a chat, or None."""
        if self._ended:
            name, reason = next(iter(self._ended.items()))
            return f"{name} stopped ({reason})"
        now = self.clock()
        for name, (since, reason) in self._down.items():
            if now - since >= self.timeout:
                return f"{name} has been down for {now - since:.0f} s ({reason})"
        return None

    async def lost(self) -> str:
        """Wait until there is a problem and return it."""
        while (problem := self.problem()) is None:
            self._changed.clear()
            deadlines = [since + self.timeout for since, _ in self._down.values()]
            wait = max(0.0, min(deadlines) - self.clock()) if deadlines else None
            try:
                await asyncio.wait_for(self._changed.wait(), wait)
            except TimeoutError:
                pass
        return problem
