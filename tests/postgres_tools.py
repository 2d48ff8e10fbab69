"""PostgreSQL helpers for the tests."""

from __future__ import annotations

import asyncpg


async def reset_postgres(url: str) -> str:
    """Drop voicebridge's schema in ``url``'s database: a test starts from nothing."""
    connection = await asyncpg.connect(url, timeout=10)
    try:
        await connection.execute("DROP SCHEMA IF EXISTS voicebridge CASCADE")
    finally:
        await connection.close()
    return url
