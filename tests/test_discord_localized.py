"""Discord in the user's language and only to the user who asked: registration payloads with
zh-CN / zh-TW localizations and choices, /voice autocomplete, /help, ephemeral answers in server
channels, and a locale seen in an interaction remembered for DMs. Real discord.py bot (the
runner's), the Discord fake (which holds payloads to Discord's rules), the Coze fake."""

from __future__ import annotations

from typing import Any

from voicebridge.voice_notes.messages import LANGUAGE_NAMES
from tests.fakes.coze import DEFAULT_VOICES
from tests.fakes.discord import CallbackType, MessageFlag
from tests import test_discord
from tests.test_discord import World, running_bot
from tests.harness import discord_transcript

world = test_discord.world  # the same fixture: a Discord fake and a Coze fake

EPHEMERAL = int(MessageFlag.EPHEMERAL)


def registered(world: World) -> dict[str, dict[str, Any]]:
    return {command["name"]: command for command in world.discord.commands()}


async def answered(world: World, interaction: dict[str, Any], count: int = 2) -> list[Any]:
    """The interaction's responses once there are ``count`` (the deferral, then the answer)."""
    await world.discord.wait_for(lambda: len(world.discord.interaction_responses(interaction["id"])) >= count, timeout=30)
    return world.discord.interaction_responses(interaction["id"])


async def test_every_command_and_option_is_described_in_english_and_both_chinese_scripts(world: World) -> None:
    async with running_bot(world, VOICEBRIDGE_ASR="coze-stream") as plugin:
        await world.discord.wait_for(lambda: world.discord.command_writes >= 1, timeout=15)
        languages = plugin.recognition_languages
    commands = registered(world)
    assert "help" in commands
    slash = [command for command in commands.values() if command["type"] == 1]
    for command in slash:
        assert set(command["description_localizations"]) == {"zh-CN", "zh-TW"}, command["name"]
        for option in command.get("options", []):
            assert option["description"] not in ("…", "...") and option["description"] == option["description"].strip()
            assert set(option["description_localizations"]) == {"zh-CN", "zh-TW"}, (command["name"], option["name"])
    assert commands["speak"]["description_localizations"] == {"zh-CN": "朗读文本", "zh-TW": "朗讀文字"}
    # The Transcribe message menu, by its name in each language.
    assert commands["Transcribe"]["type"] == 3
    assert commands["Transcribe"]["name_localizations"] == {"zh-CN": "转写", "zh-TW": "轉錄"}
    # /mode and /auto: choices named in each language.
    (mode,) = commands["mode"]["options"]
    assert [(choice["name"], choice["value"], choice["name_localizations"]) for choice in mode["choices"]] == [
        ("text", "text", {"zh-CN": "文字", "zh-TW": "文字"}),
        ("voice messages", "voice", {"zh-CN": "语音", "zh-TW": "語音"}),
        ("text and voice messages", "both", {"zh-CN": "文字和语音", "zh-TW": "文字和語音"}),
    ]
    (state,) = commands["auto"]["options"]
    assert [choice["name_localizations"]["zh-TW"] for choice in state["choices"]] == ["開啟", "關閉"]
    # /language: the speech service's languages, by name; /voice: autocomplete from the voice list.
    (code,) = commands["language"]["options"]
    assert [choice["value"] for choice in code["choices"]] == list(languages) and len(languages) > 5
    assert {choice["name"]: choice["name_localizations"]["zh-TW"] for choice in code["choices"]}["Cantonese"] == "粵語"
    assert all(choice["name"] == LANGUAGE_NAMES[choice["value"]]["en"] for choice in code["choices"])
    (voice_id,) = commands["voice"]["options"]
    assert voice_id["autocomplete"] is True and "choices" not in voice_id


async def test_voice_autocomplete_offers_the_providers_voices_by_name(world: World) -> None:
    async with running_bot(world):
        await world.discord.wait_for(lambda: world.discord.command_writes >= 1, timeout=15)
        channel = world.discord.text_channel
        typing = await world.discord.dispatch_interaction("voice", user=world.discord.user, channel_id=channel.id,
                                                          options={"voice_id": "ja"}, focused="voice_id")
        (result,) = await answered(world, typing, 1)
        everything = await world.discord.dispatch_interaction("voice", user=world.discord.user, channel_id=channel.id,
                                                              focused="voice_id")
        (every,) = await answered(world, everything, 1)
    assert typing["type"] == 4 and result.callback_type == CallbackType.APPLICATION_COMMAND_AUTOCOMPLETE_RESULT == 8
    jay = DEFAULT_VOICES[1]
    assert result.json["data"]["choices"] == [{"name": "Jay (English)", "value": jay.voice_id}]
    assert [choice["value"] for choice in every.json["data"]["choices"]] == [voice.voice_id for voice in DEFAULT_VOICES]


async def test_answers_about_settings_are_ephemeral_in_server_channels_and_public_in_dms(world: World) -> None:
    bob = world.discord.add_user("bob")
    world.discord.add_member(world.discord.guild, bob)
    async with running_bot(world):
        await world.discord.wait_for(lambda: world.discord.command_writes >= 1, timeout=15)
        channel = world.discord.text_channel
        asked = {name: await world.discord.dispatch_interaction(name, user=world.discord.user, channel_id=channel.id)
                 for name in ("settings", "usage", "privacy", "help")}
        refused = await world.discord.dispatch_interaction("mode", user=bob, channel_id=channel.id, options={"mode": "voice"},
                                                           locale="zh-TW")
        spoken = await world.discord.dispatch_interaction("speak", user=bob, channel_id=channel.id, options={"text": "Hi"})
        dm = world.discord.dm_channel(world.discord.user)
        in_dm = await world.discord.dispatch_interaction("settings", user=world.discord.user, channel_id=dm.id)
        responses = {name: await answered(world, interaction) for name, interaction in
                     {**asked, "refused": refused, "dm": in_dm}.items()}
        spoken_responses = await answered(world, spoken, 3)  # deferred, deleted, then the refusal
    for name in ("settings", "usage", "privacy", "help", "refused"):
        deferral, answer = responses[name][:2]
        assert deferral.json["data"]["flags"] & EPHEMERAL, name
        assert answer.message["flags"] & EPHEMERAL, name
    assert responses["refused"][1].message["content"] == "只有管理員可以在這裡變更設定。"
    assert not responses["dm"][0].json.get("data", {}).get("flags", 0) & EPHEMERAL  # a DM is private anyway
    assert "Apps → Transcribe" in responses["help"][1].message["content"]
    # /speak is answered in the channel; its refusal goes to bob alone, the public "thinking…" is removed.
    deferral, deleted, refusal = spoken_responses
    assert not deferral.json.get("data", {}).get("flags", 0) & EPHEMERAL
    assert deleted.kind == "delete"
    assert refusal.message["flags"] & EPHEMERAL and refusal.message["content"] == "Here, only admins can have texts read aloud."


async def test_a_locale_seen_in_a_server_interaction_is_remembered_for_dms(world: World) -> None:
    async with running_bot(world):
        await world.discord.wait_for(lambda: world.discord.command_writes >= 1, timeout=15)
        privacy = await world.discord.dispatch_interaction("privacy", user=world.discord.user,
                                                           channel_id=world.discord.text_channel.id, locale="zh-TW")
        await answered(world, privacy)
        dm = world.discord.dm_channel(world.discord.user)
        note = await world.discord.dispatch_voice_message(dm.id, world.discord.user, b"this is not audio", 2.0)
        reply = await discord_transcript(world.discord, note, timeout=30)
    assert reply["content"] == "無法將這個檔案辨識為音訊，請傳送語音訊息或常見格式的音訊檔案。"
