"""Shared plumbing for the local fake servers: an aiohttp app on a random loopback port.

Each fake subclasses :class:`FakeServer`, fills ``self.app`` with routes in ``__init__`` and is
used as ``async with FakeX() as fake: ...``. Waiting for something the code under test does is
done with :meth:`FakeServer.wait_for` (an event with a timeout), never with sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Self

from aiohttp import web

from tests.violations import watch


class FakeServer:
    """An aiohttp application served on 127.0.0.1 with an OS-assigned port."""

    def __init__(self) -> None:
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._changed = asyncio.Condition()
        # Rules of the real service the client broke (each fake says which); any left at the end
        # of a test fails it (tests/violations.py).
        self.violations: list[str] = []
        watch(self)

    def take_violations(self) -> list[str]:
        """The violations recorded so far, no longer failing the test: for tests that break a
        rule on purpose and assert on it."""
        taken, self.violations = self.violations, []
        return taken

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def notify(self) -> None:
        """Wake every :meth:`wait_for` caller; call after recording anything observable."""
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Wait until ``predicate()`` returns something truthy and return it."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                result = predicate()
                while not result:
                    await self._changed.wait()
                    result = predicate()
                return result
