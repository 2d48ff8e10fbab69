"""``voicebridge ingress`` and ``voicebridge worker`` as real processes, sharing a real PostgreSQL,
against the Telegram, Discord, Coze and Feishu fakes: ``kill -9`` of a worker and of the ingress
in the middle of a load, the Feishu tenant limit across workers, Discord shards and deferred
interactions, and the commands' refusals."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.audio_tools import make_tone
from tests.fakes.coze import DEFAULT_TOKEN, FakeCoze
from tests.fakes.discord import FakeDiscord, FakeFile
from tests.fakes.feishu import DEFAULT_APP_ID, DEFAULT_APP_SECRET, FakeFeishu
from tests.fakes.telegram import Chat, FakeTelegram, User
from tests.harness import discord_transcript, is_placeholder
from tests.test_operations import free_port, wait_until_listening

VOICEBRIDGE = str(Path(sys.executable).with_name("voicebridge"))
# Short, so a killed worker's jobs are taken over quickly, yet long enough that a live worker's
# renewals (every third of it) still arrive on a machine loaded with other work.
LEASE_SECONDS = 8
# How long a test waits for processes to start or answer: a deadline on a condition, far beyond
# what a machine with busy cores takes.
PROCESS_DEADLINE = 120.0


class Processes:
    """voicebridge processes started by a test; every one still running is killed at the end."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env = env
        self.cwd = cwd
        self.started: list[tuple[asyncio.subprocess.Process, Path]] = []

    async def start(self, command: str, **extra: str) -> asyncio.subprocess.Process:
        log = self.cwd / f"{command}-{len(self.started)}.log"
        with log.open("wb") as output:
            process = await asyncio.create_subprocess_exec(VOICEBRIDGE, command, env={**self.env, **extra}, cwd=self.cwd,
                                                           stdout=output, stderr=output)
        self.started.append((process, log))
        return process

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')}" for _, path in self.started)

    async def stop_all(self) -> None:
        for process, _ in self.started:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process, _ in self.started:
            try:
                await asyncio.wait_for(process.wait(), timeout=30)
            except TimeoutError:
                process.kill()
                await process.wait()


def scale_env(database_url: str, **values: str) -> dict[str, str]:
    base = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    return {**base, "VOICEBRIDGE_DB": database_url, "VOICEBRIDGE_JOB_LEASE": str(LEASE_SECONDS),
            "VOICEBRIDGE_SHUTDOWN_GRACE": "5", "VOICEBRIDGE_LOG_LEVEL": "INFO", **values}


def telegram_env(telegram: FakeTelegram) -> dict[str, str]:
    return {"TELEGRAM_BOT_TOKEN": telegram.token, "TELEGRAM_BASE_URL": telegram.api_base_url,
            "TELEGRAM_BASE_FILE_URL": telegram.file_base_url}


@pytest.fixture
async def processes(tmp_path: Path) -> AsyncIterator[Callable[[dict[str, str]], Processes]]:
    made: list[Processes] = []

    def make(env: dict[str, str]) -> Processes:
        made.append(Processes(env, tmp_path))
        return made[-1]

    yield make
    for group in made:
        await group.stop_all()


def answers_to(telegram: FakeTelegram, note: dict[str, Any]) -> list[dict[str, Any]]:
    """The bot's replies to ``note`` as the chat shows them, placeholders left out. A worker killed
    between sending a placeholder and recording it leaves that placeholder behind (the job's next
    run sends its own): the at-least-once window of a kill -9, written up in docs/scaling.md."""
    return [message for message in telegram.messages_sent(note["chat"]["id"])
            if (message.get("reply_to_message") or {}).get("message_id") == note["message_id"] and "text" in message
            and not is_placeholder(message["text"])]


async def wait_until(predicate: Callable[[], Any], timeout: float, what: str, logs: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{logs()}")
        await asyncio.sleep(0.1)


def tone(index: int) -> tuple[bytes, str]:
    """A 1 s note with a frequency of its own, and the transcript the fakes hear in it."""
    frequency = 200 + 20 * index
    return make_tone("ogg", float(frequency), 1.0), f"tone {frequency} hz 1.0 s"


def tones(count: int) -> list[tuple[bytes, str]]:
    """``count`` notes of ``tone``, encoded before any process starts: make_tone runs ffmpeg and
    waits for it, which blocks the event loop the fakes answer on. Encoding while the workers
    boot starved their getMe calls on a loaded machine (three 5 s timeouts: the worker exited)."""
    return [tone(index) for index in range(count)]


async def test_kill_9_of_a_worker_and_of_the_ingress_loses_nothing(postgres_url: str, tmp_path: Path,
                                                                    processes: Callable[[dict[str, str]], Processes]) -> None:
    users = [User(2000 + number, f"User{number}", language_code="en") for number in range(4)]
    async with FakeTelegram() as telegram, FakeCoze() as coze:
        env = scale_env(postgres_url, **telegram_env(telegram), COZE_API_TOKEN=DEFAULT_TOKEN,
                        COZE_API_BASE=coze.base_url, COZE_WS_BASE=coze.ws_base_url)
        audio = tones(36)
        group = processes(env)
        ingress = await group.start("ingress")
        doomed = await group.start("worker")
        await wait_until(lambda: telegram.calls_to("getUpdates"), 60, "the ingress to poll", group.logs)
        coze.delay_next("transcriptions", 0.4, times=1000)  # the provider's latency: jobs overlap the kill

        # Phase 1: 24 notes in 4 chats; kill -9 one worker once some are answered.
        expected: dict[int, tuple[dict[str, Any], str]] = {}
        for index in range(24):
            user = users[index % 4]
            data, transcript = audio[index]
            note = await telegram.push_voice(Chat.private(user), user, data, duration=1)
            expected[len(expected)] = (note, transcript)
        await wait_until(lambda: sum(bool(answers_to(telegram, note)) for note, _ in expected.values()) >= 4, 60,
                         "the first answers", group.logs)
        # The survivor starts only now: started with the doomed one, it could take every job first
        # (each chat's notes run one at a time) and leave the doomed worker none to die holding.
        await group.start("worker")
        held = await wait_for_lease(postgres_url, doomed.pid, group.logs)
        doomed.kill()  # SIGKILL: no chance to hand anything back
        await doomed.wait()
        killed_at = time.monotonic()
        await wait_until(lambda: all(answers_to(telegram, note) for note, _ in expected.values()), 90,
                         "every note of phase 1 to be answered", group.logs)
        recovery = time.monotonic() - killed_at

        # Phase 2: kill -9 the ingress while notes arrive, start a new one, send the rest.
        for index in range(24, 30):
            user = users[index % 4]
            data, transcript = audio[index]
            note = await telegram.push_voice(Chat.private(user), user, data, duration=1)
            expected[len(expected)] = (note, transcript)
        ingress.kill()
        await ingress.wait()
        for index in range(30, 36):
            user = users[index % 4]
            data, transcript = audio[index]
            note = await telegram.push_voice(Chat.private(user), user, data, duration=1)
            expected[len(expected)] = (note, transcript)
        await group.start("ingress")
        await wait_until(lambda: all(answers_to(telegram, note) for note, _ in expected.values()), 90,
                         "every note of phase 2 to be answered", group.logs)

        # A button pressed under a transcript: the ingress queues the press, a worker answers it.
        first_note, _ = expected[0]
        transcript_message = answers_to(telegram, first_note)[-1]
        speak = transcript_message["reply_markup"]["inline_keyboard"][0][0]
        assert speak["text"] == "🔊 Speak"
        press = await telegram.push_callback_query(Chat.private(users[0]), users[0], transcript_message["message_id"],
                                                   speak["callback_data"])
        await wait_until(lambda: any((call.params.get("reply_parameters") or {}).get("message_id")
                                     == transcript_message["message_id"] for call in telegram.calls_to("sendVoice")),
                         60, "the spoken transcript", group.logs)
        assert [answer["callback_query_id"] for answer in telegram.callback_answers] == [press["id"]]
        await group.stop_all()

    logs = group.logs()
    assert "Traceback" not in logs, logs
    assert telegram.token not in logs and DEFAULT_TOKEN not in logs
    duplicates = 0
    for note, transcript in expected.values():
        texts = [message["text"] for message in answers_to(telegram, note)]
        assert set(texts) == {transcript}, (note["message_id"], texts, logs)  # each note its own transcript
        duplicates += len(texts) - 1
    assert duplicates <= 1, f"{duplicates} notes were answered twice; one worker was killed\n{logs}"
    for user in users:  # each chat's notes answered in the order they were sent
        answered = list(dict.fromkeys(int(call.params["reply_parameters"]["message_id"])
                                      for call in telegram.calls_to("sendMessage") if int(call.params["chat_id"]) == user.id))
        assert answered == sorted(answered), (answered, logs)
    assert recovery < 60
    connection = await asyncpg.connect(postgres_url)
    try:
        taken_over = await connection.fetchrow("SELECT state, attempts, lease_owner FROM voicebridge.jobs WHERE id = $1", held)
    finally:
        await connection.close()
    assert taken_over is not None and taken_over["state"] == "done" and taken_over["attempts"] >= 2
    assert not taken_over["lease_owner"].endswith(f":{doomed.pid}")  # finished by the other worker


async def wait_for_lease(database_url: str, pid: int, logs: Callable[[], str]) -> int:
    """The id of a job the worker with ``pid`` is working on, once there is one."""
    connection = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + 60
        while True:
            job = await connection.fetchval("SELECT id FROM voicebridge.jobs WHERE state = 'ready' AND lease_owner LIKE $1 "
                                            "AND lease_until > now() LIMIT 1", f"%:{pid}")
            if job is not None:
                return int(job)
            if time.monotonic() > deadline:
                pytest.fail(f"worker {pid} never took a job\n{logs()}")
            await asyncio.sleep(0.05)
    finally:
        await connection.close()


async def test_the_feishu_tenant_limit_holds_across_workers(postgres_url: str, tmp_path: Path,
                                                            processes: Callable[[dict[str, str]], Processes]) -> None:
    users = [User(3000 + number, f"User{number}") for number in range(8)]
    async with FakeTelegram() as telegram, FakeFeishu(max_open_streams=2, latency_seconds=0.05) as feishu:
        env = scale_env(postgres_url, **telegram_env(telegram), FEISHU_APP_ID=DEFAULT_APP_ID,
                        FEISHU_APP_SECRET=DEFAULT_APP_SECRET, FEISHU_BASE_URL=feishu.base_url, FEISHU_MAX_STREAMS="2")
        audio = tones(len(users))
        group = processes(env)
        await group.start("ingress")
        await group.start("worker")
        await group.start("worker")
        await wait_until(lambda: telegram.calls_to("getUpdates"), PROCESS_DEADLINE, "the ingress to poll", group.logs)
        # The fake answers no stream's first packet until two are open at once: that the workers'
        # streams overlap up to the limit no longer depends on how fast a loaded machine opens them.
        released = feishu.hold_new_streams()
        notes = []
        for index, user in enumerate(users):
            data, transcript = audio[index]
            notes.append((await telegram.push_voice(Chat.private(user), user, data, duration=1), transcript))
        await wait_until(lambda: feishu.open_streams >= 2, PROCESS_DEADLINE, "two streams open at once", group.logs)
        released.set()
        await wait_until(lambda: all(answers_to(telegram, note) for note, _ in notes), 2 * PROCESS_DEADLINE,
                         "every answer", group.logs)
        await group.stop_all()
    for note, transcript in notes:
        assert [message["text"] for message in answers_to(telegram, note)] == [transcript]
    refused = [record for record in feishu.records if record.status == 429]
    assert refused == [], "a worker opened a stream beyond the tenant's limit"
    assert feishu.max_open_streams_observed == 2  # both workers' streams overlapped, up to the limit


async def test_ingress_and_worker_need_postgresql(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "TELEGRAM_BOT_TOKEN": "1:x", "COZE_API_TOKEN": "pat_x",
           "VOICEBRIDGE_DB": str(tmp_path / "bot.db")}
    for command in ("ingress", "worker"):
        process = await asyncio.create_subprocess_exec(VOICEBRIDGE, command, env=env, cwd=tmp_path,
                                                       stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        assert process.returncode == 2
        assert f"voicebridge {command} needs a PostgreSQL VOICEBRIDGE_DB" in stderr.decode()


async def test_an_unreachable_database_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "TELEGRAM_BOT_TOKEN": "1:x", "COZE_API_TOKEN": "pat_x",
           "VOICEBRIDGE_DB": "postgresql://voicebridge:hunter2@127.0.0.1:9/voicebridge"}
    for command in ("run", "ingress", "worker"):
        process = await asyncio.create_subprocess_exec(VOICEBRIDGE, command, env=env, cwd=tmp_path,
                                                       stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        message = stderr.decode()
        assert process.returncode == 2, message  # the start-up checks refuse it
        assert "VOICEBRIDGE_DB" in message and "127.0.0.1:9" in message and "hunter2" not in message
        assert "Traceback" not in message


async def test_discord_through_ingress_shards_and_a_worker(postgres_url: str, tmp_path: Path,
                                                           processes: Callable[[dict[str, str]], Processes]) -> None:
    async with FakeDiscord(rate_limit_window=0.05) as discord_api, FakeCoze() as coze:
        bob = discord_api.add_user("bob")  # no admin
        discord_api.add_member(discord_api.guild, bob)
        env = scale_env(postgres_url, DISCORD_BOT_TOKEN=discord_api.token, DISCORD_API_BASE=discord_api.api_base,
                        DISCORD_SHARD_COUNT="2", DISCORD_SHARD_IDS="0,1", COZE_API_TOKEN=DEFAULT_TOKEN,
                        COZE_API_BASE=coze.base_url, COZE_WS_BASE=coze.ws_base_url)
        dm_audio, guild_audio, m4a = make_tone("ogg", 300.0, 1.0), make_tone("ogg", 500.0, 1.0), make_tone("m4a", 700.0, 1.0)
        group = processes(env)  # the audio encoded first: see tones()
        await group.start("ingress")
        await group.start("worker")
        await wait_until(lambda: sorted(tuple(connection.identify["shard"]) for connection in discord_api.gateway_connections
                                        if connection.identify) == [(0, 2), (1, 2)], 60, "both shards", group.logs)
        await wait_until(lambda: discord_api.command_writes >= 1, 60, "the commands to be registered", group.logs)
        dm = discord_api.dm_channel(discord_api.user)
        note = await discord_api.dispatch_voice_message(dm.id, discord_api.user, dm_audio, 1.0)
        answer = await discord_transcript(discord_api, note, timeout=60)
        guild_note = await discord_api.dispatch_voice_message(discord_api.text_channel.id, discord_api.user, guild_audio, 1.0)
        guild_answer = await discord_transcript(discord_api, guild_note, timeout=60)
        # A button under a transcript: deferred by the ingress, answered by the worker.
        await wait_until(lambda: discord_api.messages_in(dm.id)[-1].get("components"), 60, "the buttons", group.logs)
        transcript = discord_api.messages_in(dm.id)[-1]
        speak = transcript["components"][0]["components"][0]
        assert speak["label"] == "🔊 Speak"
        press = await discord_api.dispatch_component(user=discord_api.user, channel_id=dm.id, message_id=transcript["id"],
                                                     custom_id=speak["custom_id"])
        await wait_until(lambda: any(message.get("flags") == 8192 and (message.get("message_reference") or {})
                                     .get("message_id") == transcript["id"] for message in discord_api.messages_in(dm.id)),
                         60, "the spoken transcript", group.logs)
        interaction = await discord_api.dispatch_interaction(
            "transcribe", user=discord_api.user, channel_id=dm.id,
            options={"audio": FakeFile(m4a, "clip.m4a")})
        await wait_until(lambda: len(discord_api.interaction_responses(interaction["id"])) >= 2
                         and discord_api.interaction_responses(interaction["id"])[1].message["content"] == "tone 700 hz 1.0 s",
                         60, "the deferral and the followup", group.logs)
        settings = await discord_api.dispatch_interaction("settings", user=discord_api.user,
                                                          channel_id=discord_api.text_channel.id, locale="zh-TW")
        await wait_until(lambda: len(discord_api.interaction_responses(settings["id"])) >= 2, 60,
                         "the settings", group.logs)
        refused = await discord_api.dispatch_interaction("speak", user=bob, channel_id=discord_api.text_channel.id,
                                                         options={"text": "Hello"})
        await wait_until(lambda: len(discord_api.interaction_responses(refused["id"])) >= 3, 60,
                         "the refusal", group.logs)
        await group.stop_all()
    # A refusal of a public command: the worker removes the public "thinking…" and tells bob alone.
    assert [reply.kind for reply in discord_api.interaction_responses(refused["id"])] == ["callback", "delete", "followup"]
    assert discord_api.interaction_responses(refused["id"])[2].message["flags"] & 64
    # In a server channel the ingress defers /settings as ephemeral; the worker answers in the user's locale.
    settings_deferral, settings_answer = discord_api.interaction_responses(settings["id"])[:2]
    assert settings_deferral.json["data"]["flags"] == 64 and settings_answer.message["flags"] & 64
    assert settings_answer.message["content"].startswith("這個聊天室的設定：")
    language = next(command for command in discord_api.commands() if command["name"] == "language")
    assert [choice["value"] for choice in language["options"][0]["choices"]] == ["auto"]  # Coze file ASR: auto only
    assert answer["content"] == "tone 300 hz 1.0 s"
    assert guild_answer["content"] == "🎤 alice: tone 500 hz 1.0 s"
    assert [reply.callback_type for reply in discord_api.interaction_responses(press["id"])] == [6]  # by the ingress
    deferred, followup = discord_api.interaction_responses(interaction["id"])[:2]
    assert (deferred.kind, deferred.callback_type) == ("callback", 5)  # by the ingress, within Discord's 3 s
    assert followup.kind == "followup" and followup.message["content"] == "tone 700 hz 1.0 s"  # by the worker (edited)
    logs = group.logs()
    assert "Traceback" not in logs and discord_api.token not in logs


async def test_a_webhook_ingress_answers_200_only_for_a_committed_job(postgres_url: str, tmp_path: Path,
                                                                      processes: Callable[[dict[str, str]], Processes]) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram/hook"
    secret = {"X-Telegram-Bot-Api-Secret-Token": "s3cret-token_2"}
    user = User(5001, "Alice")
    async with FakeTelegram() as telegram, FakeCoze() as coze:
        env = scale_env(postgres_url, **telegram_env(telegram), COZE_API_TOKEN=DEFAULT_TOKEN, COZE_API_BASE=coze.base_url,
                        COZE_WS_BASE=coze.ws_base_url, TELEGRAM_WEBHOOK_URL="https://bot.example.org/telegram/hook",
                        TELEGRAM_WEBHOOK_LISTEN="127.0.0.1", TELEGRAM_WEBHOOK_PORT=str(port),
                        TELEGRAM_WEBHOOK_SECRET="s3cret-token_2")
        data, transcript = tone(3)
        group = processes(env)
        await group.start("ingress")
        await telegram.wait_for_call("setWebhook", timeout=60)
        await wait_until_listening(port)
        message = await telegram.push_voice(Chat.private(user), user, data, duration=1)
        update = {"update_id": 700001, "message": message}
        async with httpx.AsyncClient(timeout=30) as client:
            refused = await client.post(url, json=update)
            first = await client.post(url, json=update, headers=secret)
            connection = await asyncpg.connect(postgres_url)
            try:  # no worker runs yet: the 200 itself says the job is in the database
                queued = await connection.fetchval("SELECT count(*) FROM voicebridge.jobs WHERE source LIKE '%:700001'")
                again = await client.post(url, json=update, headers=secret)  # Telegram retrying: the same job
                after_retry = await connection.fetchval("SELECT count(*) FROM voicebridge.jobs")
            finally:
                await connection.close()
        await group.start("worker")
        await wait_until(lambda: answers_to(telegram, message), 60, "the answer", group.logs)
        await group.stop_all()
    assert (refused.status_code, first.status_code, again.status_code) == (403, 200, 200)
    assert (queued, after_retry) == (1, 1)
    assert [message["text"] for message in answers_to(telegram, message)] == [transcript]
    assert telegram.calls_to("getUpdates") == []
