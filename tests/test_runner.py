"""``voicebridge run`` as a real process against the local Telegram and Coze fakes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.audio_tools import make_tone
from tests.fakes.coze import DEFAULT_TOKEN, FakeCoze
from tests.fakes.discord import FakeDiscord
from tests.fakes.telegram import Chat, FakeTelegram, User
from tests.harness import discord_transcript, transcript_reply

VOICEBRIDGE = str(Path(sys.executable).with_name("voicebridge"))
ALICE = User(1001, "Alice", language_code="en")
# How long a test waits for the bot process to start, answer or stop: a deadline on a condition,
# far beyond what a machine with busy cores takes (20 s was exceeded in loaded full runs).
PROCESS_DEADLINE = 120.0


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeTelegram, FakeCoze]]:
    async with FakeTelegram() as telegram, FakeCoze() as coze:
        yield telegram, coze


def bot_env(telegram: FakeTelegram, coze: FakeCoze, tmp_path: Path, **extra: str) -> dict[str, str]:
    base = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    return {
        **base,
        "TELEGRAM_BOT_TOKEN": telegram.token,
        "TELEGRAM_BASE_URL": telegram.api_base_url,
        "TELEGRAM_BASE_FILE_URL": telegram.file_base_url,
        "COZE_API_TOKEN": DEFAULT_TOKEN,
        "COZE_API_BASE": coze.base_url,
        "COZE_WS_BASE": coze.ws_base_url,
        "VOICEBRIDGE_DB": str(tmp_path / "bot.db"),
        "VOICEBRIDGE_LOG_LEVEL": "DEBUG",  # the most verbose logs must still hold no secret
        **extra,
    }


async def start_bot(env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(VOICEBRIDGE, "run", env=env, cwd=cwd,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def finish(process: asyncio.subprocess.Process) -> tuple[int, str]:
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=PROCESS_DEADLINE)
    return process.returncode or 0, stderr.decode()


def assert_no_secrets(log: str, telegram: FakeTelegram) -> None:
    for secret in (telegram.token, quote(telegram.token, safe=""), DEFAULT_TOKEN):
        assert secret not in log
    assert "Traceback" not in log


async def test_sigterm_finishes_the_note_in_flight_and_updates_are_not_repeated(fakes: tuple[FakeTelegram, FakeCoze],
                                                                               tmp_path: Path) -> None:
    telegram, coze = fakes
    env = bot_env(telegram, coze, tmp_path)
    bot = await start_bot(env, tmp_path)
    await telegram.wait_for_call("getUpdates", timeout=PROCESS_DEADLINE)
    coze.delay_next("transcriptions", 1.5)  # the note is still being transcribed when SIGTERM arrives
    note = await telegram.push_voice(Chat.private(ALICE), ALICE, make_tone("ogg", 440.0, 2.0), duration=2)
    await coze.wait_for(lambda: coze.calls_to("transcriptions"))
    bot.send_signal(signal.SIGTERM)
    status, log = await finish(bot)
    answers = [message["text"] for message in telegram.messages_sent(ALICE.id)
               if (message.get("reply_to_message") or {}).get("message_id") == note["message_id"]]
    assert status == 0, log
    assert answers == ["tone 440 hz 2.0 s"]  # the placeholder, edited into the transcript before the bot stopped
    assert "finishing the notes in flight" in log
    assert_no_secrets(log, telegram)

    again = await start_bot(env, tmp_path)
    marker = await telegram.push_text(Chat.private(ALICE), ALICE, "/start")
    await telegram.wait_for_call("sendMessage", lambda call: call.params.get("reply_parameters", {}).get("message_id")
                                 == marker["message_id"], timeout=PROCESS_DEADLINE)
    again.send_signal(signal.SIGINT)
    status, log = await finish(again)
    assert status == 0
    assert len(coze.calls_to("transcriptions")) == 1  # the handled note did not come back after the restart
    assert_no_secrets(log, telegram)


async def test_without_a_platform_token_it_says_so(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "COZE_API_TOKEN": "pat_x"}
    process = await asyncio.create_subprocess_exec(VOICEBRIDGE, "run", env=env, cwd=tmp_path,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    status, log = await finish(process)
    assert status == 2
    assert log.strip() == ("voicebridge: cannot start: no chat platform configured: set TELEGRAM_BOT_TOKEN and/or "
                           "DISCORD_BOT_TOKEN (every variable is explained in .env.example)")


async def test_a_rejected_token_and_an_unreachable_api_are_one_line_each(fakes: tuple[FakeTelegram, FakeCoze],
                                                                         tmp_path: Path) -> None:
    telegram, coze = fakes
    wrong = "999:wrong-token-value"
    status, log = await finish(await start_bot(bot_env(telegram, coze, tmp_path, TELEGRAM_BOT_TOKEN=wrong,
                                                       VOICEBRIDGE_LOG_LEVEL="WARNING"), tmp_path))
    assert status == 2 and log.strip().endswith("TELEGRAM_BOT_TOKEN was rejected by Telegram (check it with @BotFather)")
    assert wrong not in log and "Traceback" not in log

    unreachable = bot_env(telegram, coze, tmp_path, TELEGRAM_BASE_URL="http://127.0.0.1:9/bot", VOICEBRIDGE_LOG_LEVEL="WARNING")
    status, log = await finish(await start_bot(unreachable, tmp_path))
    assert status == 1 and "cannot reach the Telegram Bot API" in log and "Traceback" not in log


async def test_telegram_and_discord_in_one_process(fakes: tuple[FakeTelegram, FakeCoze], tmp_path: Path) -> None:
    telegram, coze = fakes
    async with FakeDiscord() as discord_api:
        env = bot_env(telegram, coze, tmp_path, DISCORD_BOT_TOKEN=discord_api.token, DISCORD_API_BASE=discord_api.api_base)
        bot = await start_bot(env, tmp_path)
        await telegram.wait_for_call("getUpdates", timeout=PROCESS_DEADLINE)
        await discord_api.wait_for(lambda: discord_api.command_writes == 1, timeout=PROCESS_DEADLINE)
        await discord_api.wait_for(lambda: discord_api.gateway_connections and discord_api.gateway_connections[-1].identify,
                                   timeout=PROCESS_DEADLINE)
        telegram_note = await telegram.push_voice(Chat.private(ALICE), ALICE, make_tone("ogg", 440.0, 1.0), duration=1)
        dm = discord_api.dm_channel(discord_api.user)
        discord_note = await discord_api.dispatch_voice_message(dm.id, discord_api.user, make_tone("ogg", 300.0, 1.0), 1.0)
        await transcript_reply(telegram, telegram_note, timeout=PROCESS_DEADLINE)
        answer = await discord_transcript(discord_api, discord_note, timeout=PROCESS_DEADLINE)
        bot.send_signal(signal.SIGTERM)
        status, log = await finish(bot)
    assert status == 0, log
    assert answer["content"] == "tone 300 hz 1.0 s"
    assert discord_api.token not in log
    assert_no_secrets(log, telegram)


async def test_a_getme_that_times_out_is_tried_again_before_start_up_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy Bot API (or host) at boot: a timed-out getMe is retried, so a worker does not die
    of one slow answer; a rejected token or a refused connection is one line at once."""
    from telegram.error import InvalidToken, NetworkError, TimedOut

    from voicebridge.adapters import runner
    from voicebridge.speech.errors import ConfigError

    pauses: list[float] = []

    async def no_pause(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(runner.asyncio, "sleep", no_pause)
    calls: list[str] = []

    def answers(*outcomes: Exception | None) -> Callable[[], Awaitable[None]]:
        pending = list(outcomes)

        async def initialize() -> None:
            calls.append("getMe")
            outcome = pending.pop(0)
            if outcome is not None:
                raise outcome

        return initialize

    await runner.check_telegram_token(answers(TimedOut(), TimedOut(), None))
    assert len(calls) == 3 and pauses == [1, 2]
    calls.clear()
    with pytest.raises(runner.StartupError, match="cannot reach the Telegram Bot API: Timed out"):
        await runner.check_telegram_token(answers(TimedOut(), TimedOut(), TimedOut()))
    assert len(calls) == runner.GET_ME_ATTEMPTS
    calls.clear()
    with pytest.raises(runner.StartupError, match="Connection refused"):
        await runner.check_telegram_token(answers(NetworkError("Connection refused")))
    with pytest.raises(ConfigError, match="TELEGRAM_BOT_TOKEN was rejected"):
        await runner.check_telegram_token(answers(InvalidToken()))
    assert len(calls) == 2  # neither is retried
