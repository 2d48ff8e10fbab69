"""Fault injection, end to end through the real Telegram adapter: for every fault the user gets
the transcript or one clear message, nothing crashes, retries stay bounded, the next note works."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from voicebridge.speech.decoders import DecodeWorkers
from voicebridge.speech.retry import Retrier
from tests.audio_tools import make_tone
from tests.fakes.coze import FakeCoze
from tests.fakes.feishu import FakeFeishu
from tests.fakes.telegram import Chat, FakeTelegram, User
from tests.harness import replies_to, speech_values, telegram_bot, transcript_reply

ALICE = User(1001, "Alice", language_code="en")
CHAT = Chat.private(ALICE)
FIRST = make_tone("ogg", 440.0, 1.0)
SECOND = make_tone("ogg", 600.0, 1.0)


@dataclass
class Fakes:
    telegram: FakeTelegram
    coze: FakeCoze
    feishu: FakeFeishu
    tmp: Path
    monkeypatch: pytest.MonkeyPatch


@dataclass(frozen=True)
class Cell:
    asr: str
    inject: Callable[[Fakes], Any]
    answer: str  # what the user reads for the first note
    bounded: Callable[[Fakes], bool] = lambda fakes: True  # the calls the fault cost, bounded
    env: dict[str, str] = field(default_factory=dict)


def crashing_decoder(fakes: Fakes) -> None:
    """The in-process decoder fails inside its worker, as a bug in the decoding library would,
    for the first decoding job only."""
    real = DecodeWorkers.submit

    def crashing_once(self: DecodeWorkers, work: Callable[[], Any]) -> Any:
        fakes.monkeypatch.setattr(DecodeWorkers, "submit", real)

        def crash() -> None:
            raise RuntimeError("decoder crashed")

        return real(self, crash)

    fakes.monkeypatch.setattr(DecodeWorkers, "submit", crashing_once)


def locked_store(fakes: Fakes) -> None:
    """Another process holds an exclusive lock on the database for the whole first note."""
    holder = sqlite3.connect(fakes.tmp / "bot.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    fakes.monkeypatch.setattr(Fakes, "lock_holder", holder, raising=False)


TRANSCRIPT = "tone 440 hz 1.0 s"
# A held answer comes only when the fake stops: the bot's timeout fires first however loaded the
# machine. The timeout is still long enough for the answers that are not held (the second note's).
HELD = 3600.0
SLOW_TIMEOUT = "3"
SERVER_TROUBLE = "The speech service had a problem. Please try again later."
CELLS: dict[str, Cell] = {
    "coze 5000, then recovers": Cell("coze", lambda f: f.coze.fail_next("transcriptions", code=5000, times=2), TRANSCRIPT,
                                     lambda f: len(f.coze.calls_to("transcriptions")) == 3 + 1),
    "coze 5000 that persists": Cell("coze", lambda f: f.coze.fail_next("transcriptions", code=5000, times=3), SERVER_TROUBLE,
                                    lambda f: len(f.coze.calls_to("transcriptions")) == 3 + 1),
    "coze HTTP 502 page": Cell("coze", lambda f: f.coze.fail_next("transcriptions", raw_body="<html>502</html>", http_status=502),
                               TRANSCRIPT),
    "coze 4009 rate limit": Cell("coze", lambda f: f.coze.fail_next("transcriptions", code=4009), TRANSCRIPT),
    "coze 4020 rate limit": Cell("coze", lambda f: f.coze.fail_next("transcriptions", code=4020, times=2), TRANSCRIPT),
    "coze 4008 daily quota": Cell("coze", lambda f: f.coze.fail_next("transcriptions", code=4008),
                                  "The speech service quota is used up for now. Please try again later.",
                                  lambda f: len(f.coze.calls_to("transcriptions")) == 1 + 1),
    "coze socket dropped mid-stream": Cell("coze-stream", lambda f: f.coze.drop_next("ws_transcriptions", after_appends=1),
                                           TRANSCRIPT, lambda f: len(f.coze.sessions_to("ws_transcriptions")) == 2 + 1),
    "coze slow past the timeout": Cell("coze", lambda f: f.coze.delay_next("transcriptions", HELD), TRANSCRIPT,
                                       env={"VOICEBRIDGE_PROVIDER_TIMEOUT": SLOW_TIMEOUT}),
    "coze always too slow": Cell("coze", lambda f: f.coze.delay_next("transcriptions", HELD, times=3),
                                 "The speech service took too long to answer. Please try again.",
                                 lambda f: len(f.coze.calls_to("transcriptions")) == 3 + 1,
                                 env={"VOICEBRIDGE_PROVIDER_TIMEOUT": SLOW_TIMEOUT}),
    "coze streaming auth refused": Cell("coze-stream", lambda f: f.coze.fail_next("ws_transcriptions", code=4100),
                                        "The speech service rejected the bot's credentials. The bot owner needs to check its token.",
                                        lambda f: len(f.coze.sessions_to("ws_transcriptions")) == 1 + 1),
    "feishu 99991400 with HTTP 429": Cell("feishu", lambda f: f.feishu.fail_next(
        "stream_recognize", http_status=429, code=99991400, msg="request trigger frequency limit",
        headers={"x-ogw-ratelimit-reset": "0.3"}), TRANSCRIPT),
    "feishu bare HTTP 429": Cell("feishu", lambda f: f.feishu.fail_next("stream_recognize", http_status=429, raw_body="busy"),
                                 TRANSCRIPT),
    "feishu 1040102 network anomaly": Cell("feishu", lambda f: f.feishu.fail_next(
        "stream_recognize", http_status=500, code=1040102, msg="network anomaly", times=2), TRANSCRIPT),
    # The bot's cached token is refused as expired on its first use: refreshed once, request repeated.
    "feishu expired token": Cell("feishu", lambda f: f.feishu.fail_next(
        "stream_recognize", http_status=400, code=99991663, msg="Invalid access token for authorization"), TRANSCRIPT,
        lambda f: f.feishu.token_fetches == 2),
    "fallback coze-stream to feishu": Cell("coze-stream,feishu", lambda f: f.coze.fail_next("ws_transcriptions", code=4101),
                                           TRANSCRIPT, lambda f: len(f.feishu.requests_to("stream_recognize")) > 0),
    "telegram flood control": Cell("coze", lambda f: f.telegram.fail_next(
        "sendMessage", error_code=429, description="Too Many Requests: retry after 1", retry_after=1), TRANSCRIPT),
    "decoder crashing": Cell("coze", crashing_decoder, "Something went wrong while handling this message. Please try again.",
                             lambda f: f.coze.rest_calls == [] or len(f.coze.calls_to("transcriptions")) == 1),
    "store locked": Cell("coze", locked_store, TRANSCRIPT),
}


@pytest.fixture
async def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Fakes]:
    async with FakeTelegram() as telegram, FakeCoze() as coze, FakeFeishu() as feishu:
        yield Fakes(telegram, coze, feishu, tmp_path, monkeypatch)


@pytest.mark.parametrize("name", list(CELLS))
async def test_fault(name: str, fakes: Fakes, fast_retrier: Retrier) -> None:
    cell = CELLS[name]
    values = {**speech_values(fakes.coze, fakes.feishu), "VOICEBRIDGE_ASR": cell.asr, **cell.env}
    db = str(fakes.tmp / "bot.db")
    async with telegram_bot(fakes.telegram, values, fast_retrier, db=db, store_timeout=0.2):
        cell.inject(fakes)
        first = await fakes.telegram.push_voice(CHAT, ALICE, FIRST, duration=1)
        await fakes.telegram.wait_for_call("sendMessage", lambda call: call.status == 200 and replies_to(first)(call), timeout=30)
        holder = getattr(Fakes, "lock_holder", None)
        if holder is not None:
            holder.execute("ROLLBACK")
            holder.close()
        second = await fakes.telegram.push_voice(CHAT, ALICE, SECOND, duration=1)
        # Notes of a chat are answered in order, so once the second is answered, the first is final.
        await fakes.telegram.wait_for(lambda: answers_to(fakes, second) == ["tone 600 hz 1.0 s"], timeout=30)
    assert answers_to(fakes, first) == [cell.answer]  # one message (edits applied): nothing lost, nothing twice
    assert cell.bounded(fakes)


def answers_to(fakes: Fakes, note: dict[str, Any]) -> list[str]:
    """The texts the bot's replies to ``note`` show now, edits applied."""
    return [message["text"] for message in fakes.telegram.messages_sent(note["chat"]["id"])
            if (message.get("reply_to_message") or {}).get("message_id") == note["message_id"] and "text" in message]


async def test_a_locked_store_never_holds_up_an_answer_and_its_bookkeeping_lands_afterwards(fakes: Fakes,
                                                                                          fast_retrier: Retrier) -> None:
    """Another process holds the SQLite file locked, and the store would wait for it for ten
    minutes: the answer goes out while the lock is still held; the usage and the transcript
    cache are written once it is let go."""
    database = fakes.tmp / "bot.db"
    values = {**speech_values(fakes.coze), "VOICEBRIDGE_DAILY_MINUTES": "60"}
    async with telegram_bot(fakes.telegram, values, fast_retrier, db=str(database), store_timeout=600):
        first = await fakes.telegram.push_voice(CHAT, ALICE, FIRST, duration=1)  # the store is set up and used once
        await transcript_reply(fakes.telegram, first)
        holder = sqlite3.connect(database, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            second = await fakes.telegram.push_voice(CHAT, ALICE, SECOND, duration=1)
            reply = await transcript_reply(fakes.telegram, second)
        finally:
            holder.execute("ROLLBACK")
            holder.close()

        def recorded() -> tuple[float, int]:
            with sqlite3.connect(database) as reader:
                seconds = reader.execute("SELECT COALESCE(SUM(audio_seconds), 0) FROM usage").fetchone()[0]
                return seconds, reader.execute("SELECT COUNT(*) FROM transcripts").fetchone()[0]

        async with asyncio.timeout(30):
            while recorded() != (pytest.approx(2.0, abs=0.05), 2):
                await asyncio.sleep(0.05)
    assert reply["text"] == "tone 600 hz 1.0 s"
