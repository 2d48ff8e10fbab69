"""End to end through a real discord.py bot (the runner's AutoShardedBot with the Cog), the local
Discord REST + gateway fake and the local Coze fake."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord
import pytest

from voicebridge.adapters.runner import start_discord
from voicebridge.config import RunnerSettings
from voicebridge.speech.retry import Retrier
from voicebridge.speech.service import SpeechService
from voicebridge.voice_notes.plugin import VoiceNotesPlugin
from voicebridge.voice_notes.store import SQLiteStore
from tests.audio_tools import analyse, decode, make_tone, probe
from tests.fakes.coze import DEFAULT_TOKEN, DEFAULT_VOICES, FakeCoze
from tests.fakes.discord import FakeDiscord, FakeFile, Intent, RecordedRequest
from tests.harness import discord_transcript

TONE = make_tone("ogg", 440.0, 2.0)
MESSAGES = "POST /channels/{channel_id}/messages"


@dataclass
class World:
    discord: FakeDiscord
    coze: FakeCoze
    retrier: Retrier
    tmp: Path


@pytest.fixture
async def world(fast_retrier: Retrier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)  # restored after each test
    async with FakeDiscord(rate_limit_window=0.05) as fake_discord, FakeCoze() as coze:
        yield World(fake_discord, coze, fast_retrier, tmp_path)


@asynccontextmanager
async def running_bot(world: World, db: str = ":memory:", **env: str) -> AsyncIterator[VoiceNotesPlugin]:
    values = {"COZE_API_TOKEN": DEFAULT_TOKEN, "COZE_API_BASE": world.coze.base_url, "COZE_WS_BASE": world.coze.ws_base_url,
              "COZE_VOICE_ID": DEFAULT_VOICES[0].voice_id, "DISCORD_BOT_TOKEN": world.discord.token,
              "DISCORD_API_BASE": world.discord.api_base, **env}
    settings = RunnerSettings.from_values(values)
    service = SpeechService.from_settings(settings.speech, retrier=world.retrier)
    store = SQLiteStore(db)
    plugin = VoiceNotesPlugin(service, store, settings.plugin, edit_interval=0.2, closes=(service, store))
    bot = await start_discord(settings.discord, plugin, guild_ready_timeout=0.1)
    try:
        yield plugin
    finally:
        await bot.close()
        await plugin.drain(1)
        await plugin.aclose()


def posts_in(world: World, channel_id: int) -> list[RecordedRequest]:
    return [request for request in world.discord.requests
            if request.route == MESSAGES and request.path == f"/channels/{channel_id}/messages" and request.status == 200]


async def reply_to(world: World, message: dict[str, Any]) -> RecordedRequest:
    """The accepted message that answers ``message``."""
    return await world.discord.wait_for_request(
        "POST", f"/channels/{message['channel_id']}/messages",
        lambda request: request.status == 200
        and str((request.json.get("message_reference") or {}).get("message_id")) == message["id"],
        timeout=15)


async def test_dm_voice_message_gets_its_transcript_without_pings(world: World) -> None:
    async with running_bot(world):
        dm = world.discord.dm_channel(world.discord.user)
        note = await world.discord.dispatch_voice_message(dm.id, world.discord.user, TONE, 2.0)
        reply = await reply_to(world, note)  # the placeholder, at once
        transcript = await discord_transcript(world.discord, note)
    assert reply.json["content"] == "🎙 Transcribing… 0:02"
    assert transcript["content"] == "tone 440 hz 2.0 s"
    assert reply.json["allowed_mentions"]["parse"] == [] and reply.json["allowed_mentions"].get("replied_user") is False
    # The placeholder is the channel's status: no typing indicator beside it.
    assert not any(request.route == "POST /channels/{channel_id}/typing" for request in world.discord.requests)


async def test_voice_mode_sends_a_native_voice_message(world: World) -> None:
    async with running_bot(world, VOICEBRIDGE_REPLY="voice"):
        dm = world.discord.dm_channel(world.discord.user)
        note = await world.discord.dispatch_voice_message(dm.id, world.discord.user, TONE, 2.0)
        sent = await reply_to(world, note)
    assert sent.json["flags"] == 8192 and "content" not in sent.json
    (attachment,) = sent.json["attachments"]
    (file,) = sent.files
    assert (file.filename, file.content_type) == ("voice-message.ogg", "audio/ogg")
    assert probe(file.data)["codec_name"] == "opus"
    samples, rate = decode(file.data)
    spoken = analyse(samples, rate)
    assert spoken.frequency == pytest.approx(DEFAULT_VOICES[0].frequency, rel=0.01)
    assert attachment["duration_secs"] == pytest.approx(spoken.seconds, abs=0.05)
    waveform = base64.b64decode(attachment["waveform"])
    assert len(waveform) == pytest.approx(spoken.seconds * 10, abs=1) and max(waveform) == 255


async def test_voice_refused_falls_back_to_audio_then_text(world: World) -> None:
    async with running_bot(world, VOICEBRIDGE_REPLY="voice"):
        dm = world.discord.dm_channel(world.discord.user)
        world.discord.fail_next(MESSAGES, status=403, code=50013, message="Missing Permissions")
        first = await world.discord.dispatch_voice_message(dm.id, world.discord.user, TONE, 2.0)
        audio = await reply_to(world, first)
        world.discord.fail_next(MESSAGES, status=403, code=50173, times=2)
        second = await world.discord.dispatch_voice_message(dm.id, world.discord.user, make_tone("ogg", 300.0, 1.0), 1.0)
        text = await reply_to(world, second)
    assert "flags" not in audio.json and audio.files[0].filename == "reply.ogg"
    assert text.json["content"] == "tone 300 hz 1.0 s"


async def test_transcribe_context_menu_defers_then_answers_by_followup(world: World) -> None:
    async with running_bot(world) as plugin:
        channel = world.discord.text_channel
        await plugin.store.set_chat_setting("discord", str(channel.id), "auto_transcribe", "off")
        note = await world.discord.dispatch_voice_message(channel.id, world.discord.user, TONE, 2.0)
        interaction = await world.discord.dispatch_interaction("Transcribe", user=world.discord.user, channel_id=channel.id,
                                                               target_message_id=note["id"])
        await world.discord.wait_for(lambda: len(world.discord.interaction_responses(interaction["id"])) >= 2, timeout=15)
        await world.discord.wait_for(lambda: world.discord.interaction_responses(interaction["id"])[1].message["content"]
                                     == "🎤 alice: tone 440 hz 2.0 s", timeout=15)
    deferred, followup = world.discord.interaction_responses(interaction["id"])[:2]
    assert (deferred.kind, deferred.callback_type) == ("callback", 5)
    assert followup.kind == "followup"  # the placeholder, edited into the transcript
    assert posts_in(world, channel.id) == []  # auto off: nothing posted for the note itself


async def test_guild_voice_message_is_transcribed_automatically_with_the_speaker(world: World) -> None:
    async with running_bot(world):
        note = await world.discord.dispatch_voice_message(world.discord.text_channel.id, world.discord.user, TONE, 2.0)
        reply = await discord_transcript(world.discord, note)
    assert reply["content"] == "🎤 alice: tone 440 hz 2.0 s"


async def test_audio_attachments_and_the_transcribe_slash_command(world: World) -> None:
    async with running_bot(world):
        dm = world.discord.dm_channel(world.discord.user)
        message = await world.discord.dispatch_message(dm.id, world.discord.user, content="listen",
                                                       attachments=[FakeFile(make_tone("mp3", 600.0, 1.0), "memo.mp3")])
        reply = await discord_transcript(world.discord, message)
        interaction = await world.discord.dispatch_interaction(
            "transcribe", user=world.discord.user, channel_id=dm.id,
            options={"audio": FakeFile(make_tone("m4a", 700.0, 1.0), "clip.m4a")})
        await world.discord.wait_for(lambda: len(world.discord.interaction_responses(interaction["id"])) >= 2
                                     and world.discord.interaction_responses(interaction["id"])[1].message["content"]
                                     == "tone 700 hz 1.0 s", timeout=15)
    assert reply["content"] == "tone 600 hz 1.0 s"


async def test_long_transcripts_are_split_at_2000_characters(world: World) -> None:
    world.coze.transcript = " ".join(f"sentence{index}." for index in range(500))  # 6389 characters
    async with running_bot(world):
        dm = world.discord.dm_channel(world.discord.user)
        note = await world.discord.dispatch_voice_message(dm.id, world.discord.user, TONE, 2.0)
        await world.discord.wait_for(lambda: len(posts_in(world, dm.id)) >= 4, timeout=15)
        await discord_transcript(world.discord, note)
    contents = [message["content"] for message in world.discord.messages_in(dm.id) if message["author"]["id"] == str(world.discord.bot_user.id)]
    assert len(contents) == 4 and all(len(content) <= 2000 for content in contents)
    assert all(content.endswith(f" ({number}/4)") for number, content in enumerate(contents, 1))
    assert " ".join(content.rsplit(" (", 1)[0] for content in contents) == world.coze.transcript
    assert {str(request.json["message_reference"]["message_id"]) for request in posts_in(world, dm.id)} == {note["id"]}


async def test_mentions_in_a_transcript_never_ping(world: World) -> None:
    world.coze.transcript = "hey @everyone and @here, call <@1234567890> now"
    async with running_bot(world):
        note = await world.discord.dispatch_voice_message(world.discord.text_channel.id, world.discord.user, TONE, 2.0)
        reply = await reply_to(world, note)
        await discord_transcript(world.discord, note)
    created = world.discord.messages_in(world.discord.text_channel.id)[-1]
    assert "@everyone" in created["content"] and reply.json["allowed_mentions"]["parse"] == []
    assert created["mention_everyone"] is False and created["mentions"] == []


async def test_rate_limits_are_waited_out(world: World) -> None:
    async with running_bot(world):
        dm = world.discord.dm_channel(world.discord.user)
        world.discord.fail_next(MESSAGES, status=429, retry_after=0.3)
        note = await world.discord.dispatch_voice_message(dm.id, world.discord.user, TONE, 2.0)
        reply = await discord_transcript(world.discord, note)
    assert reply["content"] == "tone 440 hz 2.0 s"


async def test_bots_and_own_messages_are_ignored(world: World) -> None:
    other_bot = world.discord.add_user("another-bot", bot=True)
    world.discord.add_member(world.discord.guild, other_bot)
    async with running_bot(world):
        channel = world.discord.text_channel
        await world.discord.dispatch_voice_message(channel.id, other_bot, TONE, 2.0)
        note = await world.discord.dispatch_voice_message(channel.id, world.discord.user, make_tone("ogg", 300.0, 1.0), 1.0)
        await discord_transcript(world.discord, note)
    assert [message["content"] for message in world.discord.messages_in(channel.id)
            if message["author"]["id"] == str(world.discord.bot_user.id)] == ["🎤 alice: tone 300 hz 1.0 s"]
    assert len(world.coze.calls_to("transcriptions")) == 1


async def test_slash_commands_and_manage_server_rights(world: World) -> None:
    bob = world.discord.add_user("bob")
    world.discord.add_member(world.discord.guild, bob)
    async with running_bot(world, VOICEBRIDGE_SPEAK_IN_GROUPS="everyone") as plugin:  # bob is no admin
        channel = world.discord.text_channel
        refused = await world.discord.dispatch_interaction("mode", user=bob, channel_id=channel.id, options={"mode": "voice"})
        allowed = await world.discord.dispatch_interaction("mode", user=world.discord.user, channel_id=channel.id,
                                                           options={"mode": "both"})
        spoken = await world.discord.dispatch_interaction("speak", user=bob, channel_id=channel.id, options={"text": "Hello there"},
                                                          locale="zh-CN")
        for interaction in (refused, allowed, spoken):
            await world.discord.wait_for(lambda i=interaction: len(world.discord.interaction_responses(i["id"])) >= 2, timeout=15)
        settings = await plugin.chat_settings(plugin_chat(channel.id))
    assert world.discord.interaction_responses(refused["id"])[1].message["content"] == "Only the chat's admins can change settings here."
    assert settings.reply_mode.value == "both"
    audio = world.discord.interaction_responses(spoken["id"])[1].files[0]
    assert analyse(*decode(audio.data)).seconds == pytest.approx(len("Hello there") * 0.06, abs=0.05)


def plugin_chat(channel_id: int) -> Any:
    from voicebridge.voice_notes.model import ChatKind, ChatRef

    return ChatRef("discord", str(channel_id), ChatKind.GROUP)


async def test_commands_are_registered_once_in_both_languages(world: World) -> None:
    db = str(world.tmp / "bot.db")
    async with running_bot(world, db=db):
        await world.discord.wait_for(lambda: world.discord.command_writes == 1, timeout=15)
    async with running_bot(world, db=db):
        dm = world.discord.dm_channel(world.discord.user)
        note = await world.discord.dispatch_voice_message(dm.id, world.discord.user, TONE, 2.0)
        await reply_to(world, note)
    assert world.discord.command_writes == 1  # the restart registered nothing
    commands = {command["name"]: command for command in world.discord.commands()}
    assert {"Transcribe", "transcribe", "speak", "settings", "mode", "language", "voice", "voices", "auto", "hotwords",
            "usage", "privacy", "forget"} <= set(commands)
    assert commands["speak"]["description"] == "Read a text aloud"
    assert commands["speak"]["description_localizations"]["zh-CN"] == "朗读文本"


async def test_without_the_message_content_intent_dms_still_work(fast_retrier: Retrier, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)
    caplog.set_level(logging.WARNING)
    async with FakeDiscord(approved_intents=Intent(0)) as fake_discord, FakeCoze() as coze:
        world = World(fake_discord, coze, fast_retrier, tmp_path)
        async with running_bot(world):
            guild_note = await fake_discord.dispatch_voice_message(fake_discord.text_channel.id, fake_discord.user, TONE, 2.0)
            dm = fake_discord.dm_channel(fake_discord.user)
            note = await fake_discord.dispatch_voice_message(dm.id, fake_discord.user, TONE, 2.0)
            await reply_to(world, note)
        assert posts_in(world, fake_discord.text_channel.id) == [] and guild_note
    assert "Message Content intent" in caplog.text and "Transcribe context menu" in caplog.text


async def test_a_host_bot_adds_voice_notes_with_one_line(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    import yarl
    from discord.ext import commands
    from discord.gateway import DiscordWebSocket

    monkeypatch.chdir(tmp_path)
    for name, value in {"COZE_API_TOKEN": DEFAULT_TOKEN, "COZE_API_BASE": world.coze.base_url,
                        "COZE_WS_BASE": world.coze.ws_base_url, "VOICEBRIDGE_DB": str(tmp_path / "host.db")}.items():
        monkeypatch.setenv(name, value)
    intents = discord.Intents.default()
    intents.message_content = True
    bot = commands.Bot(command_prefix="!", intents=intents, guild_ready_timeout=0.1)
    await bot.load_extension("voicebridge.discord")  # the one line
    # The host's own concern, not the plugin's: point its plain Bot at the local Discord.
    monkeypatch.setattr(discord.http.Route, "BASE", world.discord.api_base)
    await bot.login(world.discord.token)
    _, gateway, _ = await bot.http.get_bot_gateway()
    monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(gateway))
    connection = asyncio.create_task(bot.connect())
    await asyncio.wait_for(bot.get_cog("VoiceNotes").commands_synced.wait(), timeout=15)  # type: ignore[union-attr]
    dm = world.discord.dm_channel(world.discord.user)
    note = await world.discord.dispatch_voice_message(dm.id, world.discord.user, TONE, 2.0)
    reply = await discord_transcript(world.discord, note)
    await bot.close()
    await connection
    assert reply["content"] == "tone 440 hz 2.0 s"
    # A guest registers its own commands one by one (12 slash commands and the Transcribe menu).
    assert world.discord.command_writes == 13 and len(world.discord.commands()) == 13


async def test_voice_replies_over_the_upload_limit_are_not_attempted() -> None:
    from voicebridge.adapters.discord import ChannelChat
    from voicebridge.voice_notes.model import VoiceNotAllowed, VoiceReply

    class TinyGuild:
        filesize_limit = 1000

    class Channel:
        id = 1
        guild = TinyGuild()

    chat = ChannelChat(bot=None, channel=Channel())  # type: ignore[arg-type]
    voice = VoiceReply(data=b"\0" * 1001, seconds=1.0, waveform=b"\x80")
    for send in (chat.send_voice, chat.send_audio):
        with pytest.raises(VoiceNotAllowed, match="upload limit"):
            await send(voice, None)  # refused before any request: the ladder goes on to text


async def test_a_forged_voice_message_fingerprint_gets_no_one_elses_transcript(world: World) -> None:
    """Size, duration and waveform are the sender's to choose: two different recordings that
    share all three (in two chats) are each transcribed, never answered from the other's cache."""
    victim, forged = make_tone("wav", 440.0, 2.0), make_tone("wav", 880.0, 2.0)
    assert len(victim) == len(forged)
    waveform = bytes(range(0, 200, 10))
    async with running_bot(world):
        channel = world.discord.text_channel
        first = await world.discord.dispatch_voice_message(channel.id, world.discord.user, victim, 2.0, waveform)
        first_reply = await discord_transcript(world.discord, first)
        dm = world.discord.dm_channel(world.discord.user)
        second = await world.discord.dispatch_voice_message(dm.id, world.discord.user, forged, 2.0, waveform)
        second_reply = await discord_transcript(world.discord, second)
    assert first_reply["content"].endswith("tone 440 hz 2.0 s")
    assert second_reply["content"] == "tone 880 hz 2.0 s"
    assert len(world.coze.calls_to("transcriptions")) == 2


def discord_buttons(message: dict[str, Any]) -> dict[str, str]:
    """label → custom_id of a message's buttons."""
    return {button["label"]: button["custom_id"] for row in message.get("components") or [] for button in row["components"]}


async def test_transcript_buttons_are_components_that_work_after_a_restart(world: World,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    db = str(world.tmp / "bot.db")
    dm = world.discord.dm_channel(world.discord.user)
    async with running_bot(world, db=db, VOICEBRIDGE_ASR="coze-stream"):
        await world.discord.dispatch_voice_message(dm.id, world.discord.user, TONE, 2.0)
        await world.discord.wait_for(lambda: discord_buttons(world.discord.messages_in(dm.id)[-1]), timeout=30)
        transcript = world.discord.messages_in(dm.id)[-1]
    buttons = discord_buttons(transcript)
    assert transcript["content"] == "tone 440 hz 2.0 s"
    assert list(buttons) == ["🔊 Speak", "Recognise as 中文", "Recognise as English"]
    assert all(custom_id.startswith("vb:") for custom_id in buttons.values())

    async with running_bot(world, db=db, VOICEBRIDGE_ASR="coze-stream") as plugin:  # restarted, same database
        speak = await world.discord.dispatch_component(user=world.discord.user, channel_id=dm.id,
                                                       message_id=transcript["id"], custom_id=buttons["🔊 Speak"])
        voice = await reply_to(world, transcript)
        english = await world.discord.dispatch_component(user=world.discord.user, channel_id=dm.id,
                                                         message_id=transcript["id"], custom_id=buttons["Recognise as English"])
        await world.discord.wait_for(lambda: len([message for message in world.discord.messages_in(dm.id)
                                                  if message["content"] == "tone 440 hz 2.0 s"]) == 2, timeout=30)
        await plugin.buttons.forget_chat("discord", str(dm.id))  # as /forget does
        stale = await world.discord.dispatch_component(user=world.discord.user, channel_id=dm.id,
                                                       message_id=transcript["id"], custom_id=buttons["🔊 Speak"])
        await world.discord.wait_for(lambda: world.discord.interaction_responses(stale["id"]), timeout=30)
    assert voice.json["flags"] == 8192  # a native voice message, replying to the transcript
    assert [reply.callback_type for reply in world.discord.interaction_responses(speak["id"])] == [6]
    assert [reply.callback_type for reply in world.discord.interaction_responses(english["id"])] == [6]
    (refusal,) = world.discord.interaction_responses(stale["id"])
    assert refusal.callback_type == 4 and refusal.json["data"]["flags"] & 64  # ephemeral: for the presser alone
    assert refusal.json["data"]["content"] == "This button no longer works."
    assert world.coze.ws_sessions[-1].asr_config["user_language"] == "en"  # type: ignore[index]
    assert "could not acknowledge" not in caplog.text and "Traceback" not in caplog.text


async def test_a_hosts_own_components_are_left_to_the_host(world: World) -> None:
    async with running_bot(world):
        dm = world.discord.dm_channel(world.discord.user)
        # A message of the host bot's with a button of its own (the fake stores it as the bot's).
        host_button = {"type": 1, "components": [{"type": 2, "style": 1, "label": "Order", "custom_id": "host:order"}]}
        host_message = world.discord._new_message(dm, world.discord.bot_user, content="Pizza?", extra={"components": [host_button]})
        hosts = await world.discord.dispatch_component(user=world.discord.user, channel_id=dm.id,
                                                       message_id=host_message["id"], custom_id="host:order")
        # A stale button of the plugin's on the same message, pressed after it: answered.
        host_message["components"].append({"type": 1, "components": [
            {"type": 2, "style": 2, "label": "Speak", "custom_id": "vb:AAAAAAAAAAAA:0"}]})
        ours = await world.discord.dispatch_component(user=world.discord.user, channel_id=dm.id,
                                                      message_id=host_message["id"], custom_id="vb:AAAAAAAAAAAA:0")
        await world.discord.wait_for(lambda: world.discord.interaction_responses(ours["id"]), timeout=30)
    assert world.discord.interaction_responses(hosts["id"]) == []  # the host's to answer, not the plugin's
    assert world.discord.interaction_responses(ours["id"])[0].json["data"]["content"] == "This button no longer works."
