"""voicebridge as a guest in someone else's discord.py bot, loaded with
``await bot.load_extension("voicebridge.discord")`` into a host with its own global and
dev-guild commands (one of them a /settings of its own), an on_message handler and an error
handler; loaded, unloaded and reloaded. The host's commands and handlers must be unharmed, the
plugin must work, and nothing may be left behind."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import discord
import pytest
import yarl
from discord.ext import commands
from discord.gateway import DiscordWebSocket

import voicebridge
from voicebridge.adapters.discord import VoiceNotesCog
from tests.audio_tools import make_tone
from tests.fakes.coze import DEFAULT_TOKEN, FakeCoze
from tests.fakes.discord import FakeDiscord
from tests.harness import discord_transcript

TONE = make_tone("ogg", 440.0, 2.0)
PLUGIN_COMMANDS = {"transcribe", "speak", "mode", "language", "voice", "voices", "auto", "hotwords", "usage", "privacy",
                   "forget"}  # every default command but /settings, which the host has
HOST_GLOBAL = [{"name": "ping", "description": "Is the bot there?"},
               {"name": "settings", "description": "The host bot's own settings"}]


@dataclass
class Host:
    """A host bot and what its own handlers saw."""

    bot: commands.Bot
    messages: list[int] = field(default_factory=list)
    transcripts: list[tuple[int, str]] = field(default_factory=list)
    host_settings_calls: int = 0


@dataclass
class World:
    discord: FakeDiscord
    coze: FakeCoze
    tmp: Path
    monkeypatch: pytest.MonkeyPatch

    def options(self, **fields: Any) -> voicebridge.Options:
        settings = voicebridge.Settings.from_values({"COZE_API_TOKEN": DEFAULT_TOKEN, "COZE_API_BASE": self.coze.base_url,
                                                     "COZE_WS_BASE": self.coze.ws_base_url})
        return voicebridge.Options(settings=settings, store=str(self.tmp / "guest.db"), **fields)


@pytest.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)  # restored after each test
    monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", DiscordWebSocket.DEFAULT_GATEWAY)
    async with FakeDiscord(rate_limit_window=0.05) as fake_discord, FakeCoze(transcript="Pizza for two") as coze:
        # The host registered its own commands with Discord before (another deploy, another tool).
        fake_discord.register_commands(HOST_GLOBAL)
        fake_discord.register_commands([{"name": "deploy", "description": "Developers only"}], guild_id=fake_discord.guild.id)
        yield World(fake_discord, coze, tmp_path, monkeypatch)


def host_bot(world: World, options: voicebridge.Options | None) -> Host:
    intents = discord.Intents.default()
    intents.message_content = True
    bot = commands.Bot(command_prefix="!", intents=intents, guild_ready_timeout=0.1)
    host = Host(bot)
    if options is not None:
        bot.voicebridge_options = options  # type: ignore[attr-defined]

    @bot.tree.command(name="ping", description="Is the bot there?")
    async def ping(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("pong")

    @bot.tree.command(name="settings", description="The host bot's own settings")
    async def settings(interaction: discord.Interaction) -> None:
        host.host_settings_calls += 1
        await interaction.response.send_message("host settings")

    @bot.tree.command(name="deploy", description="Developers only", guild=discord.Object(world.discord.guild.id))
    async def deploy(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("deployed")

    @bot.event
    async def on_message(message: discord.Message) -> None:
        host.messages.append(message.id)
        await bot.process_commands(message)

    @bot.event
    async def on_voice_transcript(message: discord.Message, transcript: str) -> None:
        host.transcripts.append((message.id, transcript))

    return host


@asynccontextmanager
async def connected(world: World, host: Host) -> AsyncIterator[None]:
    """The host logs in to the local Discord and connects (its own concern, not the plugin's)."""
    world.monkeypatch.setattr(discord.http.Route, "BASE", world.discord.api_base)
    await host.bot.login(world.discord.token)
    _, gateway, _ = await host.bot.http.get_bot_gateway()
    world.monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(gateway))
    connection = asyncio.create_task(host.bot.connect())
    try:
        await asyncio.wait_for(host.bot.wait_until_ready(), timeout=30)
        yield
    finally:
        await host.bot.close()
        await connection


async def synced(host: Host) -> VoiceNotesCog:
    cog = host.bot.get_cog("VoiceNotes")
    assert isinstance(cog, VoiceNotesCog)
    await asyncio.wait_for(cog.commands_synced.wait(), timeout=30)
    return cog


def command_writes(world: World) -> list[str]:
    return [f"{request.method} {request.path}" for request in world.discord.requests
            if "/commands" in request.path and request.method != "GET"]


def voicebridge_tasks() -> list[asyncio.Task[Any]]:
    """Tasks still running voicebridge code."""
    return [task for task in asyncio.all_tasks() if "voicebridge" in repr(task.get_coro())]


async def reply_to(world: World, message: dict[str, Any]) -> dict[str, Any]:
    """The bot's answer to ``message`` as the channel shows it (edited into its placeholder)."""
    return await discord_transcript(world.discord, message)


async def test_the_host_keeps_its_commands_and_handlers_and_the_plugin_works(world: World,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)

    async def answer(transcript: str, context: voicebridge.ResponderContext) -> str:
        assert context.platform == "discord" and isinstance(context.message, discord.Message) and context.context is None
        return f"Host bot heard: {transcript}"

    host = host_bot(world, world.options(responder=answer))
    host_ids = {command["name"]: command["id"] for command in world.discord.commands()}
    await host.bot.load_extension("voicebridge.discord")  # the one line
    async with connected(world, host):
        await synced(host)
        dm = world.discord.dm_channel(world.discord.user)
        note = await world.discord.dispatch_voice_message(dm.id, world.discord.user, TONE, 2.0)
        reply = await reply_to(world, note)
        interaction = await world.discord.dispatch_interaction("settings", user=world.discord.user,
                                                               channel_id=world.discord.text_channel.id)
        await world.discord.wait_for(lambda: world.discord.interaction_responses(interaction["id"]), timeout=15)
        global_commands = {command["name"]: command for command in world.discord.commands()}
    assert reply["content"] == "Host bot heard: Pizza for two"
    assert int(note["id"]) in host.messages  # the host's on_message still sees everything
    assert host.transcripts == [(int(note["id"]), "Pizza for two")]
    assert host.host_settings_calls == 1  # /settings is the host's, answered by the host
    # The host's global commands are untouched (same ids), its dev-guild command is not published
    # globally, and the plugin registered its own commands one by one — never a bulk overwrite.
    assert {name: global_commands[name]["id"] for name in host_ids} == host_ids
    assert set(global_commands) == {"ping", "settings", "Transcribe", *PLUGIN_COMMANDS}
    assert [command["name"] for command in world.discord.commands(world.discord.guild.id)] == ["deploy"]
    assert not any(write.startswith("PUT") for write in command_writes(world))
    assert len(command_writes(world)) == len(PLUGIN_COMMANDS) + 1
    assert caplog.text.count("already has a /settings command") == 1


async def test_unload_leaves_nothing_and_reload_registers_nothing_twice(world: World) -> None:
    host = host_bot(world, world.options())
    translator_before = host.bot.tree.translator
    await host.bot.load_extension("voicebridge.discord")
    async with connected(world, host):
        await synced(host)
        writes = len(command_writes(world))
        await host.bot.unload_extension("voicebridge.discord")
        assert host.bot.get_cog("VoiceNotes") is None
        assert {command.name for command in host.bot.tree.get_commands()} == {"ping", "settings"}
        assert host.bot.tree.get_command("Transcribe", type=discord.AppCommandType.message) is None
        assert host.bot.tree.translator is translator_before
        assert all("voicebridge" not in repr(listener) for listeners in host.bot.extra_events.values()
                   for listener in listeners)
        assert voicebridge_tasks() == []
        await host.bot.load_extension("voicebridge.discord")
        await host.bot.reload_extension("voicebridge.discord")
        await synced(host)
        dm = world.discord.dm_channel(world.discord.user)
        note = await world.discord.dispatch_voice_message(dm.id, world.discord.user, TONE, 2.0)
        reply = await reply_to(world, note)
        # Nothing changed since the first registration: no command is written again.
        assert len(command_writes(world)) == writes
        await host.bot.unload_extension("voicebridge.discord")
    assert reply["content"] == "Pizza for two"
    assert voicebridge_tasks() == []


async def test_a_loaded_extension_into_a_running_bot_registers_its_commands(world: World) -> None:
    host = host_bot(world, world.options(commands=["transcribe", "speak"]))
    async with connected(world, host):
        await host.bot.load_extension("voicebridge.discord")
        await synced(host)
        names = {command["name"] for command in world.discord.commands()}
        await host.bot.unload_extension("voicebridge.discord")
    assert names == {"ping", "settings", "transcribe", "speak", "Transcribe"}


async def test_commands_the_plugin_no_longer_offers_are_removed_and_host_commands_never_overwritten(world: World) -> None:
    host = host_bot(world, world.options())
    await host.bot.load_extension("voicebridge.discord")
    async with connected(world, host):
        await synced(host)
    # The same store, fewer commands: the plugin deletes only what it registered itself.
    second = host_bot(world, world.options(commands=["transcribe"]))
    await second.bot.load_extension("voicebridge.discord")
    async with connected(world, second):
        await synced(second)
        names = {command["name"] for command in world.discord.commands()}
        await second.bot.unload_extension("voicebridge.discord")
    assert names == {"ping", "settings", "transcribe", "Transcribe"}


async def test_sync_none_never_touches_the_registry(world: World) -> None:
    host = host_bot(world, world.options(sync="none"))
    await host.bot.load_extension("voicebridge.discord")
    async with connected(world, host):
        await synced(host)
        dm = world.discord.dm_channel(world.discord.user)
        await reply_to(world, await world.discord.dispatch_voice_message(dm.id, world.discord.user, TONE, 2.0))
        await host.bot.unload_extension("voicebridge.discord")
    assert command_writes(world) == []
    assert not any("/commands" in request.path for request in world.discord.requests)


async def test_an_undeliverable_reply_reaches_the_hosts_on_error(world: World) -> None:
    host = host_bot(world, world.options())
    reported: list[tuple[str, BaseException]] = []

    @host.bot.event
    async def on_error(event: str, *args: Any, **kwargs: Any) -> None:
        reported.append((event, args[0]))

    await host.bot.load_extension("voicebridge.discord")
    async with connected(world, host):
        await synced(host)
        # No access: the placeholder fails, and so does the transcript sent in its place.
        world.discord.fail_next("POST /channels/{channel_id}/messages", status=403, code=50001, times=2)
        dm = world.discord.dm_channel(world.discord.user)
        await world.discord.dispatch_voice_message(dm.id, world.discord.user, TONE, 2.0)
        async with asyncio.timeout(30):
            while not reported:
                await asyncio.sleep(0.01)
        await host.bot.unload_extension("voicebridge.discord")
    assert reported[0][0] == "voicebridge_reply" and isinstance(reported[0][1], discord.Forbidden)


async def test_a_users_locale_from_an_interaction_is_their_language_in_dms(world: World) -> None:
    languages: list[str | None] = []

    async def answer(transcript: str, context: voicebridge.ResponderContext) -> None:
        languages.append(context.user_language)

    host = host_bot(world, world.options(responder=answer))
    await host.bot.load_extension("voicebridge.discord")
    async with connected(world, host):
        await synced(host)
        dm = world.discord.dm_channel(world.discord.user)
        await world.discord.dispatch_voice_message(dm.id, world.discord.user, TONE, 2.0)
        async with asyncio.timeout(30):
            while not languages:
                await asyncio.sleep(0.01)
        interaction = await world.discord.dispatch_interaction("privacy", user=world.discord.user, channel_id=dm.id,
                                                               locale="zh-CN")
        await world.discord.wait_for(lambda: len(world.discord.interaction_responses(interaction["id"])) >= 2, timeout=30)
        await world.discord.dispatch_voice_message(dm.id, world.discord.user, make_tone("ogg", 500.0, 2.0), 2.0)
        async with asyncio.timeout(30):
            while len(languages) < 2:
                await asyncio.sleep(0.01)
        await host.bot.unload_extension("voicebridge.discord")
    assert languages == [None, "zh-CN"]
    privacy = world.discord.interaction_responses(interaction["id"])[-1]
    assert "扣子" in str(privacy)  # answered in Chinese


async def test_the_example_host_bot_runs_and_shuts_down_clean(world: World) -> None:
    """examples/discord_host.py in its own process under ``python -X dev``: a voice message gets
    the host's answer, the host's own prefix command works, SIGINT stops it cleanly."""
    root = Path(__file__).resolve().parent.parent
    env = {**{key: value for key, value in os.environ.items() if not key.startswith(("COZE_", "FEISHU_", "VOICEBRIDGE_"))},
           "COZE_API_TOKEN": DEFAULT_TOKEN, "COZE_API_BASE": world.coze.base_url, "COZE_WS_BASE": world.coze.ws_base_url,
           "DISCORD_BOT_TOKEN": world.discord.token, "DISCORD_API_BASE": world.discord.api_base,
           "DEV_GUILD_ID": str(world.discord.guild.id), "VOICEBRIDGE_DB": str(world.tmp / "voicebridge.db"),
           "PYTHONWARNINGS": "default"}
    process = subprocess.Popen([sys.executable, "-X", "dev", "-X", "faulthandler", str(root / "examples" / "discord_host.py")], cwd=world.tmp,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        await world.discord.wait_for(lambda: world.discord.gateway_connections, timeout=60)
        await world.discord.wait_for(lambda: any(request.method == "POST" and request.path.endswith("/commands")
                                                 and request.json.get("name") == "Transcribe"
                                                 for request in world.discord.requests), timeout=60)
        dm = world.discord.dm_channel(world.discord.user)
        note = await world.discord.dispatch_voice_message(dm.id, world.discord.user, TONE, 2.0)
        reply = await reply_to(world, note)
        hello = await world.discord.dispatch_message(world.discord.text_channel.id, world.discord.user, content="!hello")
        await world.discord.wait_for_request("POST", f"/channels/{hello['channel_id']}/messages",
                                             lambda request: request.json.get("content") == "hello!", timeout=30)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            _, stderr = await asyncio.to_thread(process.communicate, timeout=120)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)  # -X faulthandler: every thread's stack to stderr
            _, stderr = await asyncio.to_thread(process.communicate, timeout=60)
            pytest.fail("the host bot did not stop within 120 s of SIGINT; its threads then:\n"
                        + stderr.decode(errors="replace")[-8000:])
    log = stderr.decode(errors="replace")
    assert reply["content"] == "You said: Pizza for two"
    assert {command["name"] for command in world.discord.commands(world.discord.guild.id)} == {"deploy"}
    assert "already has a /settings command" in log and "says: Pizza for two" in log
    for trouble in ("ResourceWarning", "Task was destroyed", "Traceback", "never awaited"):
        assert trouble not in log, log
