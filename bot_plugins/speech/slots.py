"""A limit on how many provider streams are open at once.

Feishu allows a tenant 20 streams at once, across every process of every app of the tenant. In
one process an :class:`asyncio.Semaphore` holds that limit; workers spread over machines need a
shared one, which the application injects (PostgreSQL advisory locks in
``voicebridge.postgres``): the speech core knows only this protocol, a semaphore's own.
"""

from __future__ import annotations

from typing import Protocol


class StreamSlots(Protocol):
    async def acquire(self) -> bool:
        """Wait for a free slot and take it."""
        ...

    def release(self) -> None:
        """Give back one slot this process holds (any: they are interchangeable)."""
        ...
