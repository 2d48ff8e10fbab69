"""The embedded mode (``voicebridge run``, SQLite) survives ``kill -9``: a note received but not
answered is written down at receipt and, after a restart, answered — or apologised for when its
file can no longer be downloaded — exactly once."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.audio_tools import make_tone
from tests.fakes.coze import DEFAULT_TOKEN, FakeCoze
from tests.fakes.telegram import Chat, FakeTelegram, User
from tests.test_runner import PROCESS_DEADLINE, VOICEBRIDGE, bot_env
from tests.test_scale_out import answers_to

ALICE = User(4001, "Alice", language_code="en")
BOB = User(4002, "Bob", language_code="en")


async def start_bot(env: dict[str, str], cwd: Path, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as output:
        return await asyncio.create_subprocess_exec(VOICEBRIDGE, "run", env=env, cwd=cwd, stdout=output, stderr=output)


async def stopped(process: asyncio.subprocess.Process) -> int:
    process.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(process.wait(), timeout=PROCESS_DEADLINE)


async def test_kill_9_then_restart_answers_each_note_exactly_once(tmp_path: Path) -> None:
    log = tmp_path / "bot.log"
    async with FakeTelegram() as telegram, FakeCoze() as coze:
        env = bot_env(telegram, coze, tmp_path, VOICEBRIDGE_LOG_LEVEL="INFO")
        bot = await start_bot(env, tmp_path, log)
        await telegram.wait_for_call("getUpdates", timeout=PROCESS_DEADLINE)
        coze.delay_next("transcriptions", 60, times=2)  # both notes are mid-transcription at the kill
        kept = await telegram.push_voice(Chat.private(ALICE), ALICE, make_tone("ogg", 300.0, 1.0), duration=1)
        lost = await telegram.push_voice(Chat.private(BOB), BOB, make_tone("ogg", 500.0, 1.0), duration=1)
        await coze.wait_for(lambda: len(coze.calls_to("transcriptions")) == 2, timeout=PROCESS_DEADLINE)
        bot.kill()
        await bot.wait()
        assert not answers_to(telegram, kept) and not answers_to(telegram, lost)
        telegram.expire_file(lost["voice"]["file_id"])  # Bob's file went meanwhile

        again = await start_bot(env, tmp_path, log)
        await telegram.wait_for_call("sendMessage", lambda call: bool(answers_to(telegram, kept)), timeout=PROCESS_DEADLINE)
        await telegram.wait_for_call("sendMessage", lambda call: bool(answers_to(telegram, lost)), timeout=PROCESS_DEADLINE)
        assert await stopped(again) == 0

        third = await start_bot(env, tmp_path, log)  # nothing is left to answer
        marker = await telegram.push_text(Chat.private(ALICE), ALICE, "/start")
        await telegram.wait_for_call("sendMessage", lambda call: bool(answers_to(telegram, marker)), timeout=PROCESS_DEADLINE)
        assert await stopped(third) == 0
    output = log.read_text()
    # The placeholder sent before the kill is the one the restarted bot edits: one reply each.
    assert [message["text"] for message in answers_to(telegram, kept)] == ["tone 300 hz 1.0 s"], output
    assert [message["text"] for message in answers_to(telegram, lost)] == [
        "I could not download this file. Please try again."], output
    assert "Traceback" not in output and telegram.token not in output and DEFAULT_TOKEN not in output
