"""PostgreSQL helpers for the tests."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import asyncpg


async def reset_postgres(url: str) -> str:
    """Drop voicebridge's schema in ``url``'s database: a test starts from nothing."""
    connection = await asyncpg.connect(url, timeout=10)
    try:
        await connection.execute("DROP SCHEMA IF EXISTS voicebridge CASCADE")
    finally:
        await connection.close()
    return url


async def worker_database(url: str, worker: str) -> str:
    """The URL of a database of its own for pytest-xdist worker ``worker`` (``gw0``, ``gw1`` …),
    next to ``url``'s database and created on first use: workers running PostgreSQL tests at the
    same time would otherwise drop each other's schema."""
    parts = urlsplit(url)
    name = f"{parts.path.lstrip('/')}_{worker}"
    connection = await asyncpg.connect(url, timeout=10)
    try:
        if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            try:
                await connection.execute(f'CREATE DATABASE "{name}"')
            except asyncpg.DuplicateDatabaseError:
                pass  # an earlier run of the same worker name got there while we looked
    finally:
        await connection.close()
    return urlunsplit(parts._replace(path=f"/{name}"))
