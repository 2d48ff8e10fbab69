"""The bookkeeping behind answers (bounded store reads, background writes retried until they
land) and the daily audio allowances, on a real SQLite store that can be made to fail or hang."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from voicebridge.voice_notes import quota
from voicebridge.voice_notes.quota import Account, AudioQuota, Bookkeeper, DailyLimitReached
from voicebridge.voice_notes.store import SQLiteStore, StoreError, today

PLATFORM = "telegram"


class FlakyStore:
    """A real store whose named operations fail (``failures`` times each, or always) or hang
    until released; it counts the calls."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.failures: dict[str, int] = {}  # operation → failures left (-1: always)
        self.hanging: set[str] = set()
        self.release = asyncio.Event()
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        operation = getattr(self.store, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            if name in self.hanging:
                await self.release.wait()
            left = self.failures.get(name, 0)
            if left:
                self.failures[name] = left - 1 if left > 0 else left
                raise StoreError(f"{name}: locked")
            return await operation(*args, **kwargs)

        return call


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[FlakyStore]:
    sqlite = SQLiteStore(tmp_path / "state.db")
    try:
        yield FlakyStore(sqlite)
    finally:
        await sqlite.aclose()


@pytest.fixture(autouse=True)
def quick_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    # The tests wait on conditions (a store that never answers until released), never on these.
    monkeypatch.setattr(quota, "STORE_WAIT_ON_ANSWER", 0.05)
    monkeypatch.setattr(quota, "WRITE_RETRY_SECONDS", (0.0, 0.0, 0.0, 0.0))


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the operator reads in the log (the reason and the figures included)."""
    return [record.getMessage() for record in caplog.records]


async def used(store: FlakyStore, account: str) -> float:
    return (await store.store.usage(PLATFORM, account, today())).audio_seconds


async def test_a_read_gives_the_stores_answer_or_the_fallback_when_it_fails(store: FlakyStore,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    books = Bookkeeper()
    await store.store.set_marker("k", "stored")
    assert await books.read(store.marker("k"), "the record", "fallback") == "stored"
    store.failures["marker"] = 1
    assert await books.read(store.marker("k"), "the record", "fallback") == "fallback"
    assert messages(caplog) == ["the record unavailable, answering without it: marker: locked"] and books.pending == 0


async def test_a_slow_read_falls_back_yet_still_lands_and_is_waited_for(store: FlakyStore,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    books = Bookkeeper()
    store.hanging.add("set_marker")
    assert await books.read(store.set_marker("k", "late"), "the reservation", None) is None
    assert "the reservation: the store did not answer" in caplog.text
    assert books.pending == 1  # not cancelled: a reservation still lands
    store.release.set()
    await asyncio.wait_for(books.flush(), timeout=30)
    assert books.pending == 0 and await store.store.marker("k") == "late"
    assert messages(caplog) == ["the reservation: the store did not answer within 0.05s; answering without it"]  # landed: no failure


async def test_a_late_read_that_fails_is_logged_not_left_unretrieved(store: FlakyStore,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    books = Bookkeeper()
    store.hanging.add("marker")
    store.failures["marker"] = 1
    assert await books.read(store.marker("k"), "the record", "fallback") == "fallback"
    store.release.set()
    await asyncio.wait_for(books.flush(), timeout=30)
    assert "a late store operation failed: marker: locked" in caplog.text


async def test_writes_are_retried_until_they_land(store: FlakyStore, caplog: pytest.LogCaptureFixture) -> None:
    books = Bookkeeper()
    store.failures["add_usage"] = quota.WRITE_ATTEMPTS - 1
    books.write(lambda: store.add_usage(PLATFORM, "1", audio_seconds=3.0), "usage")
    assert books.pending == 1
    await asyncio.wait_for(books.flush(), timeout=30)
    assert store.calls["add_usage"] == quota.WRITE_ATTEMPTS and await used(store, "1") == 3.0
    assert messages(caplog) == ["usage not recorded yet (add_usage: locked); trying again in 0s"] * (quota.WRITE_ATTEMPTS - 1)


async def test_a_write_that_never_lands_is_given_up_after_its_attempts_and_logged(
        store: FlakyStore, caplog: pytest.LogCaptureFixture) -> None:
    books = Bookkeeper()
    store.failures["add_usage"] = -1
    with caplog.at_level(logging.WARNING):
        books.write(lambda: store.add_usage(PLATFORM, "1", audio_seconds=3.0), "usage")
        await asyncio.wait_for(books.flush(), timeout=30)
    assert store.calls["add_usage"] == quota.WRITE_ATTEMPTS
    errors = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
    assert errors == [f"usage not recorded after {quota.WRITE_ATTEMPTS} attempts: add_usage: locked"]


async def test_settle_waits_for_writes_and_shutdown_gives_up_the_rest(store: FlakyStore,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    books = Bookkeeper()
    books.write(lambda: store.add_usage(PLATFORM, "1", audio_seconds=1.0), "usage")
    await books.settle(30)
    assert books.pending == 0 and await used(store, "1") == 1.0
    store.hanging.add("add_usage")
    books.write(lambda: store.add_usage(PLATFORM, "1", audio_seconds=1.0), "usage")
    await books.settle(0.01)
    assert "1 store writes still under way after 0.01s" in caplog.text and books.pending == 1
    await books.aclose()
    assert "1 store writes given up at shutdown" in caplog.text and books.pending == 0
    store.release.set()
    assert await used(store, "1") == 1.0  # the given-up write never landed


def test_the_refusal_says_how_much_was_used_and_whose_allowance() -> None:
    assert str(DailyLimitReached(61.4, 120.0)) == "61 of 120 seconds used today"
    refusal = DailyLimitReached(30.0, 60.0, per_user=True)
    assert str(refusal) == "30 of 60 seconds used today by this user"
    assert (refusal.used_seconds, refusal.limit_seconds, refusal.per_user) == (30.0, 60.0, True)


async def test_a_reservation_gives_the_tightest_allowance_and_settles_to_the_audio_handed_over(store: FlakyStore) -> None:
    books = Bookkeeper()
    await store.store.add_usage(PLATFORM, "chat", audio_seconds=100.0)
    await store.store.add_usage(PLATFORM, "user", audio_seconds=10.0)
    accounts = [Account("chat", 300.0), Account("user", 60.0, per_user=True), Account("free", None)]
    note = AudioQuota(store, books, PLATFORM, accounts, declared=20.0)  # type: ignore[arg-type]
    assert await note.reserve() == 50.0  # the user's 60 less the 10 used: the chat's 200 left is looser
    assert [await used(store, name) for name in ("chat", "user", "free")] == [120.0, 30.0, 20.0]
    refusal = note.exceeded(50.0)
    assert (refusal.used_seconds, refusal.limit_seconds, refusal.per_user) == (10.0, 60.0, True)
    note.settle(15.0)  # less audio than declared reached the providers
    await asyncio.wait_for(books.flush(), timeout=30)
    assert [await used(store, name) for name in ("chat", "user", "free")] == [115.0, 25.0, 15.0]


async def test_the_first_tightest_allowance_binds_and_no_limit_gives_none(store: FlakyStore) -> None:
    books = Bookkeeper()
    await store.store.add_usage(PLATFORM, "chat", audio_seconds=250.0)
    accounts = [Account("chat", 300.0), Account("user", 100.0, per_user=True)]
    note = AudioQuota(store, books, PLATFORM, accounts, declared=20.0)  # type: ignore[arg-type]
    assert await note.reserve() == 50.0  # the chat's 50 left binds, not the user's 100
    assert note.exceeded(50.0).per_user is False and note.exceeded(50.0).used_seconds == 250.0
    unlimited = AudioQuota(store, books, PLATFORM, [Account("free", None)], declared=20.0)  # type: ignore[arg-type]
    assert await unlimited.reserve() is None  # nothing limits this note


async def test_a_later_account_refusing_gives_the_earlier_reservations_back(store: FlakyStore) -> None:
    books = Bookkeeper()
    await store.store.add_usage(PLATFORM, "user", audio_seconds=50.0)
    accounts = [Account("free", None), Account("chat", 300.0), Account("user", 60.0, per_user=True)]
    note = AudioQuota(store, books, PLATFORM, accounts, declared=20.0)  # type: ignore[arg-type]
    with pytest.raises(DailyLimitReached) as refused:
        await note.reserve()
    assert (refused.value.used_seconds, refused.value.limit_seconds, refused.value.per_user) == (50.0, 60.0, True)
    note.settle(0.0)  # the refused note handed nothing over
    await asyncio.wait_for(books.flush(), timeout=30)
    assert [await used(store, name) for name in ("free", "chat", "user")] == [0.0, 0.0, 50.0]


async def test_a_chat_over_its_limit_is_refused_as_the_chats(store: FlakyStore) -> None:
    await store.store.add_usage(PLATFORM, "chat", audio_seconds=290.0)
    note = AudioQuota(store, Bookkeeper(), PLATFORM, [Account("chat", 300.0)], declared=20.0)  # type: ignore[arg-type]
    with pytest.raises(DailyLimitReached) as refused:
        await note.reserve()
    assert (refused.value.used_seconds, refused.value.per_user) == (290.0, False)


async def test_a_store_that_fails_or_hangs_leaves_the_limit_unchecked(store: FlakyStore,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    books = Bookkeeper()
    store.failures["reserve_usage"] = 1
    failing = AudioQuota(store, books, PLATFORM, [Account("chat", 300.0)], declared=20.0)  # type: ignore[arg-type]
    assert await failing.reserve() is None
    assert messages(caplog) == ["usage unavailable, daily limit not checked: reserve_usage: locked"]
    failing.settle(20.0)  # nothing was reserved: all that was handed over is counted
    await asyncio.wait_for(books.flush(), timeout=30)
    assert await used(store, "chat") == 20.0
    store.hanging.add("reserve_usage")
    slow = AudioQuota(store, books, PLATFORM, [Account("chat", 300.0)], declared=20.0)  # type: ignore[arg-type]
    assert await slow.reserve() is None
    assert messages(caplog)[-1] == "the store did not answer within 0.05s: this note's daily limit is not checked"
    slow.settle(20.0)  # settles once the late reservation is known
    store.release.set()
    await asyncio.wait_for(books.flush(), timeout=30)
    assert await used(store, "chat") == 40.0


async def test_equal_allowances_bind_the_first_account_and_a_fraction_of_a_second_is_left_as_it_is(store: FlakyStore) -> None:
    books = Bookkeeper()
    await store.store.add_usage(PLATFORM, "chat", audio_seconds=100.0)
    accounts = [Account("chat", 160.0), Account("user", 60.0, per_user=True)]
    note = AudioQuota(store, books, PLATFORM, accounts, declared=10.0)  # type: ignore[arg-type]
    assert await note.reserve() == 60.0  # 60 left in each: the chat's, first, is the one named
    assert note.exceeded(60.0).per_user is False
    await store.store.add_usage(PLATFORM, "nearly", audio_seconds=59.5)
    undeclared = AudioQuota(store, books, PLATFORM, [Account("nearly", 60.0)], declared=0.0)  # type: ignore[arg-type]
    assert await undeclared.reserve() == 0.5
