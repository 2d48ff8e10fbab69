"""Shared fixtures: fast retries, ready-made clips, a PostgreSQL database."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import authlib.deprecate  # noqa: F401
import pytest
from _pytest.nodeid import coerce_node_id

# cozepy (test-only) imports a deprecated authlib module. authlib installs an "always" warning
# filter when first imported, which would override pytest's; importing it here, before any test
# module is collected, keeps the filter in pyproject.toml in charge.

from tests import violations
from tests.postgres_tools import reset_postgres, worker_database
from voicebridge.speech.retry import Retrier, RetryPolicy
from voicebridge.voice_notes.store import SQLiteStore


# Modules whose tests start real processes (voicebridge ingress/worker/run/doctor, a wheel build)
# and wait on them: the longest tests of the suite (10-30 s each on a quiet machine). Under
# pytest-xdist they are handed out first, so the many short tests fill the end of the run instead
# of one worker finishing a long test alone while the other cores idle. Most waited-on first.
LONGEST_FIRST = ("test_scale_out.py", "test_recovery.py", "test_runner.py", "test_operations.py", "test_preflight.py",
                 "test_packaging.py", "test_guest_discord.py", "test_guest_telegram.py", "test_cli.py")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup`` (scripts/test): the longest tests first (LONGEST_FIRST; every
    worker collects, so every worker sorts the same way), and each ``xdist_group`` kept on one
    worker. pytest-xdist 3.8 names a test's group by appending ``@group`` to its node id, but it
    writes the attribute older pytest kept the id in; pytest 9.2 keeps a structured id (``_id``),
    so the suffix was lost and grouped tests ran on every worker, each building what the group
    shares (pytest-xdist issue 1386, fix not released). This sets the suffix through the new field."""
    if not getattr(config.option, "loadgroup", False):  # set on xdist workers under --dist loadgroup
        return
    items.sort(key=lambda item: LONGEST_FIRST.index(item.path.name) if item.path.name in LONGEST_FIRST
               else len(LONGEST_FIRST))
    for item in items:
        groups = {str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                  for mark in item.iter_markers("xdist_group")}
        suffix = "@" + "_".join(sorted(groups))
        if groups and not item.nodeid.endswith(suffix):
            item._id = coerce_node_id(item.nodeid + suffix)


@pytest.fixture(autouse=True)
def no_violations(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails the test when a test double or fake recorded a broken platform or provider rule
    (tests/violations.py): the plugin swallows the exceptions such a send raises. Tests of the
    fakes themselves break rules on purpose (marked ``breaks_rules``)."""
    violations.forget()
    yield
    try:
        if request.node.get_closest_marker("breaks_rules") is None:
            violations.fail_if_any()
    finally:
        violations.forget()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """An embedded store of the test's own, closed after it (test files may override it)."""
    store = SQLiteStore(tmp_path / "state.db")
    try:
        yield store
    finally:
        await store.aclose()


@pytest.fixture
def fast_retrier() -> Retrier:
    """The real retry logic with millisecond pauses, so tests exercise it without waiting."""
    return Retrier(RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, max_retry_after=2.0))


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The PostgreSQL database the tests may use (``VOICEBRIDGE_TEST_DATABASE_URL``). scripts/test
    (the README's test command, which CI runs) starts a server and sets it; under CI a missing
    one is a failure, never a skip."""
    url = os.environ.get("VOICEBRIDGE_TEST_DATABASE_URL", "").strip()
    if not url:
        message = "VOICEBRIDGE_TEST_DATABASE_URL is not set (scripts/test starts PostgreSQL and sets it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:  # scripts/test runs the suite in parallel (pytest-xdist): one database per worker
        # A fixture of an async test runs inside its event loop: create the database on a loop of its own.
        with ThreadPoolExecutor(1) as thread:
            url = thread.submit(asyncio.run, worker_database(url, worker)).result()
    return url


@pytest.fixture
async def postgres_url(postgres_server_url: str) -> str:
    """The test database, without voicebridge's schema."""
    return await reset_postgres(postgres_server_url)
