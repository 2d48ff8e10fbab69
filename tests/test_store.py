"""Both stores behind the one ``voicebridge.Store`` protocol: SQLite (a file) and PostgreSQL (a
real server, ``VOICEBRIDGE_TEST_DATABASE_URL``), held to the same behaviour."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from voicebridge.postgres import MIGRATIONS, Database, PostgresStore
from tests.postgres_tools import reset_postgres
from voicebridge.voice_notes.store import SQLITE_MIGRATIONS, SQLiteStore, Store, StoreError, migrate_sqlite, open_store, today, use_wal

DAY = "2030-01-02"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Store, Clock]]:
    clock = Clock()
    store: SQLiteStore | PostgresStore
    if request.param == "sqlite":
        store = SQLiteStore(tmp_path / "state.db", clock=clock)
    else:
        url = await reset_postgres(request.getfixturevalue("postgres_server_url"))
        store = PostgresStore(Database(url), owns_database=True, clock=clock)
    try:
        yield store, clock
    finally:
        await store.aclose()


async def test_settings_are_per_chat_and_none_restores_the_default(backend: tuple[Store, Clock]) -> None:
    store, _ = backend
    await store.set_chat_setting("telegram", "1", "reply_mode", "voice")
    await store.set_chat_setting("telegram", "1", "language", "en")
    await store.set_chat_setting("telegram", "1", "reply_mode", "both")
    await store.set_chat_setting("discord", "1", "language", "zh")
    await store.set_chat_setting("telegram", "1", "language", None)
    assert await store.chat_settings("telegram", "1") == {"reply_mode": "both"}
    assert await store.chat_settings("discord", "1") == {"language": "zh"}
    assert await store.chat_settings("telegram", "2") == {}


async def test_transcripts_expire_are_swept_and_forgotten(backend: tuple[Store, Clock]) -> None:
    store, clock = backend
    await store.cache_transcript("old", "telegram", "1", "old text", 3.0)
    clock.now += 100
    await store.cache_transcript("new", "telegram", "1", "new text", None)
    await store.cache_transcript("other", "telegram", "2", "other chat", 1.5)
    await store.set_chat_setting("telegram", "1", "mode", "voice")
    cached = await store.cached_transcript("old", max_age_seconds=150)
    assert (cached.text, cached.seconds) == ("old text", 3.0) if cached else False
    assert await store.cached_transcript("old", max_age_seconds=50) is None
    assert await store.sweep(max_age_seconds=50) == 1
    assert await store.cached_transcript("old", max_age_seconds=1000) is None
    assert await store.forget_chat("telegram", "1") == 1
    assert await store.cached_transcript("new", max_age_seconds=1000) is None
    assert await store.chat_settings("telegram", "1") == {}
    assert (await store.cached_transcript("other", 1000)) is not None


async def test_usage_adds_up_per_chat_since_a_day(backend: tuple[Store, Clock]) -> None:
    store, _ = backend
    await store.add_usage("telegram", "1", audio_seconds=30.5)
    await store.add_usage("telegram", "1", tts_characters=12)
    await store.add_usage("telegram", "1", audio_seconds=-10.5)
    usage = await store.usage("telegram", "1", "2000-01-01")
    assert (usage.audio_seconds, usage.tts_characters) == (20.0, 12)
    assert (await store.usage("telegram", "1", "2999-01-01")).audio_seconds == 0


async def test_reservations_stop_at_the_limit(backend: tuple[Store, Clock]) -> None:
    store, _ = backend
    assert not await store.reserve_usage("telegram", "1", DAY, 61, 60)  # a first note larger than the limit
    assert await store.reserve_usage("telegram", "1", DAY, 40, 60)
    assert not await store.reserve_usage("telegram", "1", DAY, 30, 60)
    assert await store.reserve_usage("telegram", "1", DAY, 20, 60)  # exactly the limit
    assert not await store.reserve_usage("telegram", "1", DAY, 0, 60)  # nothing left, even for an undeclared length
    assert await store.reserve_usage("telegram", "1", "2030-01-03", 0, 60)  # a new day
    assert await store.reserve_usage("telegram", "2", DAY, 60, 60)  # another chat
    assert (await store.usage("telegram", "1", DAY)).audio_seconds == 60


async def test_character_reservations_stop_at_the_limit_and_keep_to_their_own_counter(backend: tuple[Store, Clock]) -> None:
    store, _ = backend
    assert await store.reserve_usage("telegram", "1", DAY, 50, 60)
    assert not await store.reserve_characters("telegram", "1", DAY, 2001, 2000)
    assert await store.reserve_characters("telegram", "1", DAY, 1500, 2000)
    assert not await store.reserve_characters("telegram", "1", DAY, 501, 2000)  # 2001 would pass the limit
    assert await store.reserve_characters("telegram", "1", DAY, 500, 2000)  # exactly the limit
    assert not await store.reserve_characters("telegram", "1", DAY, 1, 2000)
    usage = await store.usage("telegram", "1", DAY)
    assert (usage.audio_seconds, usage.tts_characters) == (50, 2000)


async def test_records_by_key_and_prefix(backend: tuple[Store, Clock]) -> None:
    store, _ = backend
    await store.set_marker("discord:command:1:speak", '{"id": "10"}')
    await store.set_marker("discord:command:1:usage", '{"id": "11"}')
    await store.set_marker("discord:command:10:speak", "other application")
    await store.set_marker("language:telegram:5", "en")
    await store.set_marker("language:telegram:5", "zh")
    assert await store.marker("language:telegram:5") == "zh"
    assert await store.markers("discord:command:1:") == {"discord:command:1:speak": '{"id": "10"}',
                                                         "discord:command:1:usage": '{"id": "11"}'}
    await store.set_marker("discord:command:1:speak", None)
    assert await store.marker("discord:command:1:speak") is None
    assert await store.markers("discord:command:1:") == {"discord:command:1:usage": '{"id": "11"}'}
    assert await store.markers("%") == {}  # a prefix is literal, not a pattern


async def test_concurrent_reservations_from_many_connections_never_overspend(postgres_url: str) -> None:
    """Three stores with their own connection pools, as three worker processes would have."""
    stores = [PostgresStore(Database(postgres_url), owns_database=True) for _ in range(3)]
    try:
        results = await asyncio.gather(*(stores[index % 3].reserve_usage("telegram", "7", DAY, 7.0, 100.0)
                                         for index in range(60)))
        usage = await stores[0].usage("telegram", "7", DAY)
    finally:
        for store in stores:
            await store.aclose()
    assert results.count(True) == 14  # 14 × 7 s = 98 s; a 15th would pass 100
    assert usage.audio_seconds == 98.0


def test_concurrent_sqlite_reservations_from_two_files_handles(tmp_path: Path) -> None:
    """Two connections to one file (as two processes): each reservation is one statement."""
    path = tmp_path / "state.db"

    results: list[bool] = []
    errors: list[BaseException] = []

    async def reserve_many() -> None:
        store = SQLiteStore(path, timeout=30)
        try:
            for _ in range(20):
                results.append(await store.reserve_usage("telegram", "7", DAY, 7.0, 100.0))
        except BaseException as error:  # collected: a thread's exception would vanish
            errors.append(error)
        finally:
            await store.aclose()

    threads = [threading.Thread(target=lambda: asyncio.run(reserve_many())) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == [] and len(results) == 60
    assert results.count(True) == 14


async def test_migrations_run_concurrently_apply_once(postgres_url: str) -> None:
    databases = [Database(postgres_url) for _ in range(6)]
    try:
        await asyncio.gather(*(database.pool() for database in databases))
        rows = await databases[0].fetch("SELECT version FROM voicebridge.schema_version ORDER BY version")
        store = PostgresStore(databases[3])
        await store.set_marker("k", "v")
        assert await PostgresStore(databases[5]).marker("k") == "v"
    finally:
        for database in databases:
            await database.aclose()
    assert [row["version"] for row in rows] == list(range(1, len(MIGRATIONS) + 1))


async def test_a_newer_schema_is_refused_with_a_clear_error(postgres_url: str) -> None:
    database = Database(postgres_url)
    await database.pool()
    await database.execute("INSERT INTO voicebridge.schema_version (version) VALUES ($1)", len(MIGRATIONS) + 5)
    await database.aclose()
    with pytest.raises(StoreError, match="newer than this voicebridge knows"):
        await Database(postgres_url).pool()


def test_sqlite_migrations_in_parallel_and_over_an_old_file(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)  # a database from before versioning: the tables, user_version 0
    old.executescript("CREATE TABLE markers (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                      "INSERT INTO markers VALUES ('kept', 'yes');")
    old.close()
    errors: list[BaseException] = []

    def open_and_migrate() -> None:
        connection = sqlite3.connect(path, timeout=30)
        try:
            migrate_sqlite(connection)
        except BaseException as error:  # collected: a thread's exception would vanish
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=open_and_migrate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    check = sqlite3.connect(path)
    assert errors == []
    assert check.execute("PRAGMA user_version").fetchone()[0] == len(SQLITE_MIGRATIONS)
    assert check.execute("SELECT value FROM markers WHERE key = 'kept'").fetchone() == ("yes",)
    check.close()


async def test_open_store_picks_the_backend_and_hides_the_password(tmp_path: Path, postgres_url: str) -> None:
    sqlite_store = open_store(str(tmp_path / "x.db"))
    memory = open_store(":memory:")
    postgres = open_store(postgres_url)
    unreachable = open_store("postgresql://voicebridge:s3cret-pass@127.0.0.1:9/nowhere", timeout=2)
    try:
        assert isinstance(sqlite_store, SQLiteStore) and isinstance(memory, SQLiteStore)
        assert isinstance(postgres, PostgresStore)
        await postgres.set_chat_setting("telegram", "1", "language", "en")
        with pytest.raises(StoreError) as raised:
            await unreachable.chat_settings("telegram", "1")
    finally:
        for store in (sqlite_store, memory, postgres, unreachable):
            await store.aclose()
    assert "VOICEBRIDGE_DB" in str(raised.value) and "127.0.0.1:9/nowhere" in str(raised.value)
    assert "s3cret-pass" not in str(raised.value)


async def test_the_host_database_keeps_its_own_tables(postgres_url: str) -> None:
    """voicebridge's tables live in their own schema: a host table named ``usage`` is untouched."""
    connection = await asyncpg.connect(postgres_url)
    try:
        await connection.execute("DROP TABLE IF EXISTS public.usage")
        await connection.execute("CREATE TABLE public.usage (host_column text)")
        store = PostgresStore(Database(postgres_url), owns_database=True)
        await store.add_usage("telegram", "1", audio_seconds=5)
        await store.aclose()
        columns = await connection.fetch("SELECT column_name FROM information_schema.columns "
                                         "WHERE table_schema = 'public' AND table_name = 'usage'")
        await connection.execute("DROP TABLE public.usage")
    finally:
        await connection.close()
    assert [row["column_name"] for row in columns] == ["host_column"]


async def test_buttons_are_found_in_their_own_chat_only_and_expire(backend: tuple[Store, Clock]) -> None:
    from voicebridge.voice_notes.buttons import ButtonAction, ButtonBook
    from voicebridge.voice_notes.model import ChatKind, ChatRef

    store, clock = backend
    here, there = ChatRef("telegram", "-100123", ChatKind.GROUP), ChatRef("telegram", "-1001234", ChatKind.GROUP)
    book = ButtonBook(store, clock=clock)
    speak, english = await book.issue(here, [("Speak", ButtonAction("speak")), ("English", ButtonAction("recognise", "en"))],
                                      transcript_key="k1", note_id="7")
    assert all(len(button.data.encode()) <= 64 for button in (speak, english)) and speak.data != english.data
    # Another book on the same store: what a restarted process (or another worker) sees.
    found = await ButtonBook(store, clock=clock).look_up(here, english.data, 3600)
    assert found is not None and found[1] == ButtonAction("recognise", "en")
    assert found[0].transcript_key == "k1" and found[0].note_id == "7"
    assert await book.look_up(there, english.data, 3600) is None  # copied into another chat: nothing
    assert await book.look_up(here, english.data[:-1] + "9", 3600) is None  # an action the record has not
    assert await book.look_up(here, "vb:" + "A" * 12 + ":0", 3600) is None  # made up
    assert await book.look_up(here, "host:order", 3600) is None
    clock.now += 7200
    assert await book.look_up(here, speak.data, 3600) is None  # expired
    assert await book.sweep(3600) == 1 and await store.markers("button:") == {}
    other = await book.issue(there, [("Voice", ButtonAction("mode", "voice"))])
    await book.forget_chat("telegram", "-100123")  # a chat id that prefixes the other's: untouched
    assert await book.look_up(there, other[0].data, 3600) is not None


async def test_usage_of_days_before_a_day_is_swept(backend: tuple[Store, Clock]) -> None:
    store, _ = backend
    for day, seconds in (("2030-01-01", 10.0), ("2030-01-02", 20.0), ("2030-01-03", 30.0)):
        assert await store.reserve_usage("telegram", "1", day, seconds, 100)
    assert await store.sweep_usage("2030-01-02") == 1
    assert (await store.usage("telegram", "1", "2000-01-01")).audio_seconds == 50.0
    assert await store.sweep_usage("2030-01-02") == 0


async def test_the_timeout_given_reaches_the_store_opened(tmp_path: Path) -> None:
    sqlite_store = open_store(str(tmp_path / "x.db"), timeout=7)
    postgres = open_store("postgresql://voicebridge@127.0.0.1:9/nowhere", timeout=3)
    assert isinstance(sqlite_store, SQLiteStore) and sqlite_store.timeout == 7
    assert isinstance(postgres, PostgresStore) and postgres.database.timeout == 3
    await sqlite_store.aclose()
    await postgres.aclose()


def wal_pages(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


async def test_sqlite_keeps_a_write_ahead_log_and_empties_it_of_forgotten_text(tmp_path: Path,
                                                                              caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    try:
        await store.cache_transcript("k1", "telegram", "1", "a secret transcript", 3.0)
        check = sqlite3.connect(path)
        assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # readers never wait for a writer
        check.close()
        assert wal_pages(path) > 0
        assert await store.forget_chat("telegram", "1") == 1
        assert wal_pages(path) == 0 and b"a secret transcript" not in path.read_bytes()
        assert "another connection is reading" not in caplog.text
        await store.cache_transcript("k2", "telegram", "1", "another secret", 3.0)
        reader = sqlite3.connect(path, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM transcripts").fetchone()  # holds a snapshot: the log cannot be emptied
        try:
            assert await store.forget_chat("telegram", "1") == 1
        finally:
            reader.close()
        assert f"store {path}: another connection is reading; deleted text stays in the write-ahead log" in caplog.text
    finally:
        await store.aclose()


def test_switching_to_the_write_ahead_log_waits_for_a_file_another_process_holds(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")  # as a process migrating the file (migrate_sqlite)
    holder.execute("INSERT INTO t VALUES (1)")
    outcome: list[object] = []

    def switch() -> None:
        connection = sqlite3.connect(path, timeout=0, check_same_thread=False)
        try:
            use_wal(connection, timeout=60)
            outcome.append(connection.execute("PRAGMA journal_mode").fetchone()[0])
        except BaseException as error:  # collected: a thread's exception would vanish
            outcome.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=switch)
    thread.start()
    thread.join(timeout=0.3)  # it keeps trying while the file is held (a wait, not a condition: nothing to see)
    holder.execute("COMMIT")
    holder.close()
    thread.join(timeout=60)
    assert outcome == ["wal"]


@pytest.mark.parametrize("zone", ["Etc/GMT-14", "Etc/GMT+12"])  # a day ahead of UTC, and one behind
def test_a_day_is_a_utc_day_whatever_the_servers_time_zone(monkeypatch: pytest.MonkeyPatch, zone: str) -> None:
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        assert today() == datetime.now(UTC).strftime("%Y-%m-%d")
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_failed_migration_is_rolled_back_with_its_own_error(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "state.db")
    isolation = connection.isolation_level
    broken = (("CREATE TABLE first (x)",), ("CREATE TABLE second (x)", "INSERT INTO nowhere VALUES (1)"))
    with pytest.raises(sqlite3.OperationalError, match="no such table: nowhere"):
        migrate_sqlite(connection, broken)
    assert connection.execute("PRAGMA user_version").fetchone()[0] == 0 and not connection.in_transaction
    assert connection.execute("SELECT name FROM sqlite_master").fetchall() == []  # the first step went too
    assert connection.isolation_level == isolation
    assert migrate_sqlite(connection, broken[:1]) == 1 and connection.isolation_level == isolation
    connection.close()


async def test_a_sqlite_store_makes_its_folder_names_itself_in_errors_and_closes_its_file(tmp_path: Path) -> None:
    path = tmp_path / "new" / "folder" / "state.db"
    store = SQLiteStore(path)
    await store.set_marker("k", "v")
    with pytest.raises(StoreError, match=f"^store {path}: no such table: nowhere$"):
        await store.run(lambda db: db.execute("SELECT * FROM nowhere"))
    assert path.with_name("state.db-wal").exists()
    await store.aclose()
    assert not path.with_name("state.db-wal").exists()  # the last connection closed: the log went with it
    await store.aclose()  # twice is harmless
    unopenable = SQLiteStore(tmp_path)  # a folder, not a file
    with pytest.raises(StoreError, match=f"^cannot open store {tmp_path}: unable to open database file$"):
        await unopenable.marker("k")
    await unopenable.aclose()
