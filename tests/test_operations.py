"""Running it for real: Telegram webhook mode, health and metrics, structured logs."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from voicebridge.adapters.runner import BOT_API_CONNECTIONS, run_bot
from voicebridge.config import RunnerSettings
from voicebridge.metrics import Metrics, serve_status
from tests.audio_tools import make_tone
from tests.fakes.coze import DEFAULT_TOKEN, FakeCoze
from tests.fakes.telegram import Chat, FakeTelegram, User
from tests.harness import transcript_reply

VOICEBRIDGE = str(Path(sys.executable).with_name("voicebridge"))
ALICE = User(1001, "Alice", language_code="en")
TONE = make_tone("ogg", 440.0, 1.0)
# How long a test waits for a bot process to start or answer: seconds on a quiet machine, far
# more when the cores are busy; a deadline on a condition, not a measure of speed.
PROCESS_DEADLINE = 120.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def values(telegram: FakeTelegram, coze: FakeCoze, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"TELEGRAM_BOT_TOKEN": telegram.token, "TELEGRAM_BASE_URL": telegram.api_base_url,
            "TELEGRAM_BASE_FILE_URL": telegram.file_base_url, "COZE_API_TOKEN": DEFAULT_TOKEN,
            "COZE_API_BASE": coze.base_url, "COZE_WS_BASE": coze.ws_base_url,
            "VOICEBRIDGE_DB": str(tmp_path / "bot.db"), **extra}


@asynccontextmanager
async def bot_in_process(settings_values: dict[str, str]) -> AsyncIterator[None]:
    """``run_bot`` in this event loop, stopped (as by SIGTERM) on exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_bot(RunnerSettings.from_values(settings_values), stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def wait_until_listening(port: int) -> None:
    async with asyncio.timeout(15):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.05)


async def test_webhook_mode_checks_the_secret_on_every_request(tmp_path: Path) -> None:
    port = free_port()
    public_url = "https://bot.example.org/telegram/hook"  # TLS ends at a reverse proxy in front of the bot
    url = f"http://127.0.0.1:{port}/telegram/hook"  # where that proxy forwards to
    async with FakeTelegram() as telegram, FakeCoze() as coze:
        settings = values(telegram, coze, tmp_path, TELEGRAM_WEBHOOK_URL=public_url, TELEGRAM_WEBHOOK_LISTEN="127.0.0.1",
                          TELEGRAM_WEBHOOK_PORT=str(port), TELEGRAM_WEBHOOK_SECRET="s3cret-token_1")
        async with bot_in_process(settings):
            registration = await telegram.wait_for_call("setWebhook", timeout=PROCESS_DEADLINE)
            await wait_until_listening(port)
            message = await telegram.push_voice(Chat.private(ALICE), ALICE, TONE, duration=1)
            update = {"update_id": 900001, "message": message}
            async with httpx.AsyncClient(timeout=10) as client:
                unsigned = await client.post(url, json=update)
                forged = await client.post(url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "guess"})
                signed = await client.post(url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret-token_1"})
            reply = await transcript_reply(telegram, message, timeout=PROCESS_DEADLINE)
        assert (unsigned.status_code, forged.status_code, signed.status_code) == (403, 403, 200)
        assert reply["text"] == "tone 440 hz 1.0 s"
        assert registration.params["url"] == public_url and registration.params["secret_token"] == "s3cret-token_1"
        assert telegram.calls_to("getUpdates") == []
        assert len(telegram.calls_to("sendMessage")) == 1  # the refused requests never reached the bot


async def test_oversized_webhook_bodies_are_refused_unread(tmp_path: Path) -> None:
    """Four unauthenticated 90 MB posts and an authenticated 2 MB one: each is refused on its
    headers (or at 1 MB for a body that declares no length); the bot's memory does not grow. A
    small unauthenticated post is refused with 403 (tested with the webhook mode above)."""
    port = free_port()
    async with FakeTelegram() as telegram, FakeCoze() as coze:
        settings = values(telegram, coze, tmp_path, TELEGRAM_WEBHOOK_URL="https://bot.example.org/hook",
                          TELEGRAM_WEBHOOK_LISTEN="127.0.0.1", TELEGRAM_WEBHOOK_PORT=str(port))
        async with bot_in_process(settings):
            registration = await telegram.wait_for_call("setWebhook", timeout=PROCESS_DEADLINE)
            secret = registration.params["secret_token"]
            await wait_until_listening(port)
            peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

            async def megabytes(count: int) -> AsyncIterator[bytes]:
                for _ in range(count):
                    yield b"x" * 1_000_000

            async def answer_to_headers(*headers: str) -> int:
                """The status the server answers a request's headers with, before any body is sent."""
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write("\r\n".join(["POST /hook HTTP/1.1", "Host: bot", *headers, "", ""]).encode())
                status_line = await asyncio.wait_for(reader.readline(), timeout=PROCESS_DEADLINE)
                writer.close()
                return int(status_line.split()[1])

            unsigned = await asyncio.gather(*(answer_to_headers("Content-Length: 90000000") for _ in range(4)))
            too_big = await answer_to_headers("Content-Length: 2000000", f"X-Telegram-Bot-Api-Secret-Token: {secret}")
            async with httpx.AsyncClient(timeout=30, base_url=f"http://127.0.0.1:{port}") as client:
                try:  # no declared length: cut off at 1 MB
                    chunked = (await client.post("/hook", content=megabytes(90),
                                                 headers={"X-Telegram-Bot-Api-Secret-Token": secret})).status_code
                except httpx.HTTPError:
                    chunked = 0  # the server closed the connection mid-body
            peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert unsigned == [413] * 4 and too_big == 413 and chunked in (0, 400, 413)
    assert peak_after - peak_before < 30_000  # KiB: nowhere near the 360 MB the bodies would take
    assert secret and len(secret) >= 32


async def test_every_paid_answer_arrives_through_a_storm_of_429s(tmp_path: Path) -> None:
    """Sixty consecutive 429s (retry_after 1 s) across twenty chats: all twenty answers arrive."""
    chats = [User(2000 + index, f"User {index}", language_code="en") for index in range(20)]
    # Encoded before the bot starts: make_tone waits for ffmpeg on the loop the bot and fakes share.
    audio = [make_tone("ogg", 300.0 + 20 * index, 1.0) for index in range(len(chats))]
    async with FakeTelegram() as telegram, FakeCoze() as coze:
        async with bot_in_process(values(telegram, coze, tmp_path)):
            await telegram.wait_for_call("getUpdates", timeout=PROCESS_DEADLINE)
            telegram.fail_next("sendMessage", error_code=429, description="Too Many Requests: retry after 1", retry_after=1,
                               times=60)
            notes = [await telegram.push_voice(Chat.private(user), user, audio[index], duration=1)
                     for index, user in enumerate(chats)]
            for note in notes:
                await telegram.wait_for_call("sendMessage", lambda call, note=note: call.status == 200 and (
                    call.params.get("reply_parameters") or {}).get("message_id") == note["message_id"]
                    and int(call.params["chat_id"]) == note["chat"]["id"], timeout=120)
    refused = [call for call in telegram.calls_to("sendMessage") if call.status == 429]
    answered = {int(call.params["chat_id"]) for call in telegram.calls_to("sendMessage") if call.status == 200}
    assert len(refused) == 60 and answered == {user.id for user in chats}


async def test_health_and_prometheus_metrics(tmp_path: Path) -> None:
    port = free_port()
    async with FakeTelegram() as telegram, FakeCoze() as coze:
        async with bot_in_process(values(telegram, coze, tmp_path, VOICEBRIDGE_METRICS_PORT=str(port))):
            await telegram.wait_for_call("getUpdates", timeout=PROCESS_DEADLINE)
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(timeout=10) as client:
                health = await client.get(f"{base}/healthz")
                coze.fail_next("transcriptions", code=5000)  # one retry
                for _ in range(2):  # the second is answered from the cache
                    message = await telegram.push_voice(Chat.private(ALICE), ALICE, TONE, duration=1)
                    await telegram.wait_for_call("sendMessage", lambda call, m=message: (call.params.get("reply_parameters")
                                                 or {}).get("message_id") == m["message_id"], timeout=PROCESS_DEADLINE)
                await telegram.push_voice(Chat.private(ALICE), ALICE, b"not audio" * 50, duration=1)
                await telegram.wait_for_call("sendMessage", count=3, timeout=PROCESS_DEADLINE)
                async with asyncio.timeout(15):  # the last note is done once its reply is sent and recorded
                    while "voicebridge_in_flight 0" not in (metrics := (await client.get(f"{base}/metrics")).text):
                        await asyncio.sleep(0.05)
                missing = await client.get(f"{base}/nothing")
    assert (health.status_code, health.text) == (200, "ok\n")
    assert missing.status_code == 404
    for line in (
        'voicebridge_notes_received_total{platform="telegram"} 3',
        'voicebridge_notes_transcribed_total{platform="telegram",provider="coze"} 1',
        'voicebridge_cache_hits_total{platform="telegram"} 1',
        'voicebridge_notes_failed_total{platform="telegram",reason="audio_undecodable"} 1',
        'voicebridge_audio_seconds_total{platform="telegram",provider="coze"} 1',
        'voicebridge_provider_retries_total{kind="server",operation="transcribe",provider="coze"} 1',
        'voicebridge_provider_requests_total{operation="transcribe",outcome="ok",provider="coze"} 1',
        'voicebridge_provider_latency_seconds_count{operation="transcribe",provider="coze"} 2',
        "voicebridge_in_flight 0",
    ):
        assert line in metrics.splitlines(), line
    assert "# TYPE voicebridge_provider_latency_seconds histogram" in metrics


async def test_health_turns_unavailable_when_stopping() -> None:
    serving = True
    port = free_port()
    server = await serve_status(port, Metrics(), lambda: None if serving else "not serving", host="127.0.0.1")
    async with httpx.AsyncClient(timeout=5) as client:
        before = await client.get(f"http://127.0.0.1:{port}/healthz")
        serving = False
        after = await client.get(f"http://127.0.0.1:{port}/healthz")
        posted = await client.post(f"http://127.0.0.1:{port}/metrics")
    server.close()
    assert (before.status_code, after.status_code, posted.status_code) == (200, 503, 405)
    assert after.text == "not serving\n"


async def test_json_logs_carry_a_request_id_per_note_and_no_secret(tmp_path: Path) -> None:
    audio = [make_tone("ogg", frequency, 1.0) for frequency in (300.0, 500.0)]  # before the bot starts
    async with FakeTelegram() as telegram, FakeCoze() as coze:
        env = {**{key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ},
               **values(telegram, coze, tmp_path, VOICEBRIDGE_LOG_FORMAT="json", VOICEBRIDGE_LOG_LEVEL="DEBUG")}
        bot = await asyncio.create_subprocess_exec(VOICEBRIDGE, "run", env=env, cwd=tmp_path,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        # A process start (imports, database, getMe) takes seconds, many more on a loaded machine.
        await telegram.wait_for_call("getUpdates", timeout=PROCESS_DEADLINE)
        notes = [await telegram.push_voice(Chat.private(ALICE), ALICE, data, duration=1) for data in audio]
        await telegram.wait_for_call("sendMessage", count=2, timeout=PROCESS_DEADLINE)
        bot.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(bot.communicate(), timeout=PROCESS_DEADLINE)
    lines = stderr.decode().splitlines()
    events: list[dict[str, Any]] = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {"time", "level", "logger", "request_id", "message"} <= set(events[0])
    note_ids = {event["request_id"] for event in events if event["message"].startswith("voice note ")}
    assert len(note_ids) == 2 and "-" not in note_ids
    for request_id in note_ids:  # each note's work is traceable by its id
        assert any(event["request_id"] == request_id and event["message"].startswith("transcribed") for event in events)
    everything = stderr.decode()
    for secret in (telegram.token, telegram.token.replace(":", "%3A"), DEFAULT_TOKEN):
        assert secret not in everything
    assert bot.returncode == 0 and len(notes) == 2


async def test_a_burst_of_notes_stays_within_the_bot_api_connection_pool(tmp_path: Path) -> None:
    """Sixty chats at once against a slow Bot API: calls wait for one of the pool's connections
    (httpcore's bookkeeping grows with the pool's square) and every note is still answered."""
    async with FakeTelegram() as telegram, FakeCoze() as coze, bot_in_process(values(telegram, coze, tmp_path)):
        await telegram.wait_for_call("getUpdates", timeout=PROCESS_DEADLINE)
        # The Bot API answers nothing until the pool is full: how full it gets does not depend on
        # how fast a loaded machine makes calls (a 0.2 s delay did: the pool then never filled).
        telegram.answers_held = released = asyncio.Event()
        users = [User(2000 + index, f"User {index}", language_code="en") for index in range(60)]
        for user in users:
            await telegram.push_voice(Chat.private(user), user, TONE, duration=1)
        async with asyncio.timeout(PROCESS_DEADLINE):
            while telegram.calls_in_flight < BOT_API_CONNECTIONS:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # calls beyond the pool, were there any, would arrive now; asserted below
        released.set()
        await telegram.wait_for_call("sendMessage", count=len(users), timeout=PROCESS_DEADLINE)
    answered = {call.params["chat_id"] for call in telegram.calls if call.method == "sendMessage"}
    assert answered == {user.id for user in users}
    assert BOT_API_CONNECTIONS < len(users) and telegram.most_calls_in_flight == BOT_API_CONNECTIONS
