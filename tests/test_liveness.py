"""Liveness: a bot that no longer hears a chat platform says so on /healthz and exits non-zero,
so that systemd or Docker restart it, instead of staying alive but deaf."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest

from voicebridge.adapters.runner import run_bot
from voicebridge.config import RunnerSettings
from voicebridge.liveness import ConnectionLost
from tests.audio_tools import make_tone
from tests.fakes.coze import DEFAULT_TOKEN, FakeCoze
from tests.fakes.discord import FakeDiscord
from tests.fakes.telegram import Chat, FakeTelegram, User
from tests.harness import transcript_reply
from tests.test_operations import free_port, wait_until_listening
from tests.test_runner import VOICEBRIDGE, finish

ALICE = User(1001, "Alice", language_code="en")


def telegram_values(telegram: FakeTelegram, coze: FakeCoze, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"TELEGRAM_BOT_TOKEN": telegram.token, "TELEGRAM_BASE_URL": telegram.api_base_url,
            "TELEGRAM_BASE_FILE_URL": telegram.file_base_url, "COZE_API_TOKEN": DEFAULT_TOKEN,
            "COZE_API_BASE": coze.base_url, "COZE_WS_BASE": coze.ws_base_url, "VOICEBRIDGE_DB": str(tmp_path / "bot.db"),
            **extra}


async def end_the_long_poll(telegram: FakeTelegram) -> None:
    """An update ends the getUpdates call the bot is waiting in, so its next one comes at once."""
    await telegram.push_text(Chat.private(ALICE), ALICE, "/privacy")


async def test_a_dead_poller_stops_the_runner_with_a_non_zero_status(tmp_path: Path) -> None:
    async with FakeTelegram() as telegram, FakeCoze() as coze:
        env = {"PATH": os.environ["PATH"], **telegram_values(telegram, coze, tmp_path)}
        bot = await asyncio.create_subprocess_exec(VOICEBRIDGE, "run", env=env, cwd=tmp_path,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        await telegram.wait_for_call("getUpdates", timeout=20)
        # Telegram refuses the token from now on: PTB ends its polling task for good.
        telegram.fail_next("getUpdates", error_code=401, description="Unauthorized", times=2)
        await end_the_long_poll(telegram)
        status, log = await finish(bot)
    assert status == 1
    last = log.strip().splitlines()[-1]
    assert last.startswith("voicebridge: stopped: Telegram polling stopped (InvalidToken")
    assert telegram.token not in log


async def test_health_says_why_while_the_notes_in_flight_finish(tmp_path: Path) -> None:
    port = free_port()
    async with FakeTelegram() as telegram, FakeCoze() as coze:
        settings = RunnerSettings.from_values(telegram_values(telegram, coze, tmp_path, VOICEBRIDGE_METRICS_PORT=str(port)))
        runner = asyncio.create_task(run_bot(settings, asyncio.Event()))
        await telegram.wait_for_call("getUpdates", timeout=20)
        await wait_until_listening(port)
        coze.delay_next("transcriptions", 3.0)  # a note still in flight when the poller dies
        note = await telegram.push_voice(Chat.private(ALICE), ALICE, make_tone("ogg", 440.0, 1.0), duration=1)
        await coze.wait_for(lambda: coze.calls_to("transcriptions"), timeout=20)
        telegram.fail_next("getUpdates", error_code=401, description="Unauthorized", times=2)
        await end_the_long_poll(telegram)
        async with httpx.AsyncClient(timeout=5) as client, asyncio.timeout(20):
            while (health := await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                await asyncio.sleep(0.05)
        with pytest.raises(ConnectionLost, match="Telegram polling stopped"):
            await asyncio.wait_for(runner, timeout=30)
    assert health.status_code == 503 and health.text.startswith("Telegram polling stopped (InvalidToken")
    answers = [message["text"] for message in telegram.messages_sent(ALICE.id)
               if (message.get("reply_to_message") or {}).get("message_id") == note["message_id"]]
    assert answers == ["tone 440 hz 1.0 s"]  # the note in flight was still answered (its placeholder edited)


async def test_a_poller_down_longer_than_the_timeout_stops_the_runner(tmp_path: Path) -> None:
    async with FakeTelegram() as telegram, FakeCoze() as coze:
        settings = RunnerSettings.from_values(telegram_values(telegram, coze, tmp_path, VOICEBRIDGE_LIVENESS_TIMEOUT="2"))
        runner = asyncio.create_task(run_bot(settings, asyncio.Event()))
        await telegram.wait_for_call("getUpdates", timeout=20)
        telegram.fail_next("getUpdates", error_code=502, description="Bad Gateway", times=1000)
        await end_the_long_poll(telegram)
        with pytest.raises(ConnectionLost) as lost:
            await asyncio.wait_for(runner, timeout=30)
    assert str(lost.value).startswith("Telegram polling has been down for 2 s (")
    assert len([call for call in telegram.calls_to("getUpdates") if call.status == 502]) >= 2  # PTB kept retrying


async def test_a_short_outage_is_not_fatal(tmp_path: Path) -> None:
    async with FakeTelegram() as telegram, FakeCoze() as coze:
        stop = asyncio.Event()
        settings = RunnerSettings.from_values(telegram_values(telegram, coze, tmp_path, VOICEBRIDGE_LIVENESS_TIMEOUT="5"))
        runner = asyncio.create_task(run_bot(settings, stop))
        await telegram.wait_for_call("getUpdates", timeout=20)
        telegram.fail_next("getUpdates", error_code=502, description="Bad Gateway", times=2)
        await end_the_long_poll(telegram)
        # PTB waits 1 s and 1.5 s after the failures, then polls again; an update ends that poll.
        failures = [await telegram.wait_for_call("getUpdates", lambda call: call.status == 502, count=count, timeout=20)
                    for count in (1, 2)]
        await telegram.wait_for_call("getUpdates", lambda call: call.timestamp > failures[-1].timestamp, timeout=20)
        await end_the_long_poll(telegram)
        await telegram.wait_for_call("getUpdates", lambda call: call.timestamp > failures[-1].timestamp and call.status == 200,
                                     timeout=20)
        # Past the moment the outage would have become fatal, had the recovery not counted.
        await asyncio.sleep(max(0.0, failures[0].timestamp + 5.5 - asyncio.get_running_loop().time()))
        still_running = not runner.done()
        stop.set()
        await asyncio.wait_for(runner, timeout=30)  # an ordinary stop: no ConnectionLost
    assert still_running


async def test_a_killed_discord_gateway_stops_the_runner(tmp_path: Path) -> None:
    async with FakeDiscord() as discord_api, FakeCoze() as coze:
        values = {"DISCORD_BOT_TOKEN": discord_api.token, "DISCORD_API_BASE": discord_api.api_base,
                  "COZE_API_TOKEN": DEFAULT_TOKEN, "COZE_API_BASE": coze.base_url, "COZE_WS_BASE": coze.ws_base_url,
                  "VOICEBRIDGE_DB": str(tmp_path / "bot.db")}
        runner = asyncio.create_task(run_bot(RunnerSettings.from_values(values), asyncio.Event()))
        await discord_api.wait_for(lambda: discord_api.gateway_connections and discord_api.gateway_connections[-1].identify,
                                   timeout=20)
        await discord_api.wait_for(lambda: discord_api.command_writes >= 1, timeout=20)
        # The token is revoked and the session moved: the RESUME is refused with 4004, a close
        # discord.py does not recover from, and its gateway task ends.
        discord_api.token = "revoked"
        await discord_api.request_reconnect()
        with pytest.raises(ConnectionLost) as lost:
            await asyncio.wait_for(runner, timeout=30)
    assert str(lost.value).startswith("Discord gateway stopped (")
    assert "4004" in str(lost.value)
    assert [connection.close_code for connection in discord_api.gateway_connections][-1] == 4004


async def test_a_webhook_telegram_no_longer_delivers_to_stops_the_runner(tmp_path: Path) -> None:
    port = free_port()
    async with FakeTelegram() as telegram, FakeCoze() as coze:
        values = telegram_values(telegram, coze, tmp_path, TELEGRAM_WEBHOOK_URL="https://bot.example.org/telegram/hook",
                                 TELEGRAM_WEBHOOK_LISTEN="127.0.0.1", TELEGRAM_WEBHOOK_PORT=str(port),
                                 VOICEBRIDGE_LIVENESS_TIMEOUT="2")
        runner = asyncio.create_task(run_bot(RunnerSettings.from_values(values), asyncio.Event()))
        await telegram.wait_for_call("setWebhook", timeout=20)
        await telegram.wait_for_call("getWebhookInfo", timeout=20)  # watched, and fine so far
        async with httpx.AsyncClient() as client:  # another instance (or a person) removes the webhook
            assert (await client.post(f"{telegram.api_base_url}{telegram.token}/deleteWebhook")).status_code == 200
        with pytest.raises(ConnectionLost) as lost:
            await asyncio.wait_for(runner, timeout=30)
    assert str(lost.value).startswith("Telegram webhook has been down for 2 s (Telegram now delivers to nobody")


async def test_refused_credentials_show_on_health_until_a_call_succeeds(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    async with FakeTelegram() as telegram, FakeCoze() as coze:
        stop = asyncio.Event()
        values = telegram_values(telegram, coze, tmp_path, COZE_API_TOKEN="pat_expired", VOICEBRIDGE_METRICS_PORT=str(port))
        runner = asyncio.create_task(run_bot(RunnerSettings.from_values(values), stop))
        await telegram.wait_for_call("getUpdates", timeout=20)
        await wait_until_listening(port)
        async with httpx.AsyncClient(timeout=5) as client:
            health = []
            for count in (1, 2, 3):
                if count == 3:
                    coze.tokens.add("pat_expired")  # the operator renewed it on Coze's side
                note = await telegram.push_voice(Chat.private(ALICE), ALICE, make_tone("ogg", 440.0, 1.0), duration=1)
                await transcript_reply(telegram, note, timeout=20)  # the transcript, or the error, in its placeholder
                health.append(await client.get(f"http://127.0.0.1:{port}/healthz"))
        stop.set()
        await asyncio.wait_for(runner, timeout=30)
    refused = ("coze refused the credentials (COZE_API_TOKEN): expired, revoked, or for the other region "
               "(coze.cn vs coze.com)")
    assert [(answer.status_code, answer.text.startswith(refused)) for answer in health] == [(503, True), (503, True),
                                                                                            (200, False)]
    assert len([record for record in caplog.records if refused in record.getMessage()]) == 1  # one line until it works
    assert "pat_expired" not in health[0].text
