"""Talking to a Coze agent, end to end: a real python-telegram-bot Application and a real
discord.py bot, installed through the public API with ``VOICEBRIDGE_RESPONDER=coze-agent``,
against the Telegram, Discord and Coze fakes (the agent chat API included). Answers are checked
as the user sees them (the message after its last edit), voice answers on the audio itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import discord
import pytest
from telegram.ext import ApplicationBuilder

import voicebridge
import voicebridge.telegram
from voicebridge.adapters.runner import start_discord
from voicebridge.adapters.telegram import TelegramInstall
from voicebridge.config import RunnerSettings, Settings
from voicebridge.options import Options, build_plugin
from voicebridge.speech.retry import Retrier
from voicebridge.voice_notes.answers import spoken_form
from voicebridge.voice_notes.plugin import ALL_COMMANDS, VoiceNotesPlugin
from voicebridge.voice_notes.store import today
from tests.audio_tools import analyse, decode, make_tone, probe
from tests.fakes.coze import DEFAULT_VOICES, FakeCoze
from tests.fakes.coze_agent import DEFAULT_BOT_ID, AgentTurn, FakeAgent
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord import voice_note as discord_voice_note
from tests.fakes.telegram import Chat, FakeTelegram, User
from tests.harness import is_placeholder, speech_values

ALICE = User(1001, "Alice", username="alice", language_code="en")
BOB = User(1002, "Bob", language_code="zh-hans")
GROUP = Chat.supergroup(-1001234567890, "Voice club")
TONE = make_tone("ogg", 440.0, 2.0)
HEARD = "tone 440 hz 2.0 s"  # what the Coze fake's recogniser hears in TONE
AGENT = {"VOICEBRIDGE_RESPONDER": "coze-agent", "COZE_BOT_ID": DEFAULT_BOT_ID}
SECONDS_PER_CHAR = 0.06  # the Coze fake's TTS: a tone this long per character
# Two sentences, the first long enough to be spoken on its own while the second still streams.
WEATHER = ("**Hangzhou** is sunny today, with a light breeze from the lake and clear skies all afternoon. "
           "Tomorrow brings rain, so take an umbrella when you go out.")


def echo(turn: AgentTurn) -> str:
    return f"You said: {turn.question}. This is message {turn.number} of our conversation."


def paced(seconds: float) -> Callable[[str], Any]:
    """A gate that paces an answer like a model writing it: the stream lasts at least the number
    of pieces times ``seconds``, longer than an edit interval, however busy the machine is."""

    async def gate(answer_so_far: str) -> None:
        await asyncio.sleep(seconds)

    return gate


@dataclass
class World:
    telegram: FakeTelegram
    coze: FakeCoze
    retrier: Retrier

    @property
    def agent(self) -> FakeAgent:
        return self.coze.agents.agents[DEFAULT_BOT_ID]


@pytest.fixture
async def world(fast_retrier: Retrier) -> AsyncIterator[World]:
    async with FakeTelegram() as telegram, FakeCoze() as coze:
        yield World(telegram, coze, fast_retrier)
        assert coze.agents.violations == []  # every request and event kept to cozepy's models


@asynccontextmanager
async def agent_bot(world: World, responder: voicebridge.responders.CozeAgent | None = None,
                    **env: str) -> AsyncIterator[TelegramInstall]:
    """A bot as ``voicebridge run`` builds it, with the agent configured by environment only
    (or, given ``responder``, a host bot passing its agent in the default guest options)."""
    settings = Settings.from_values(speech_values(world.coze) | (AGENT if responder is None else {}) | env)
    application = (ApplicationBuilder().token(world.telegram.token).base_url(world.telegram.api_base_url)
                   .base_file_url(world.telegram.file_base_url).get_updates_connection_pool_size(2).build())
    options = Options(commands=ALL_COMMANDS, menu="replace") if responder is None else Options(responder=responder)
    handle = voicebridge.telegram.install(application, options, settings=settings, store=":memory:")
    async with application:
        await handle.start()
        await application.start()
        await application.updater.start_polling(timeout=1)  # type: ignore[union-attr]
        try:
            yield handle
        finally:
            await application.updater.stop()  # type: ignore[union-attr]
            await application.stop()
            await handle.stop()


def answers_to(world: World, message: dict[str, Any]) -> list[str]:
    """The bot's replies to ``message`` as they read now (edits applied)."""
    return [sent.get("text") or "<voice>" for sent in world.telegram.messages_sent(message["chat"]["id"])
            if (sent.get("reply_to_message") or {}).get("message_id") == message["message_id"]]


async def answered(world: World, message: dict[str, Any], *expected: str) -> None:
    await world.telegram.wait_for(lambda: answers_to(world, message) == list(expected), timeout=30)


def texts_sent_for(world: World, message: dict[str, Any]) -> list[str]:
    """Every text the bot put on screen for ``message``: first sends and each edit, in order,
    after the "Transcribing…" placeholder; a partial's closing "…" is left off."""
    ids = {sent["message_id"] for sent in world.telegram.messages_sent(message["chat"]["id"])
           if (sent.get("reply_to_message") or {}).get("message_id") == message["message_id"]}
    shown = []
    for call in world.telegram.calls:
        sent = call.method == "sendMessage" and (call.params.get("reply_parameters") or {}).get("message_id") == message["message_id"]
        edited = call.method == "editMessageText" and int(call.params["message_id"]) in ids
        if (sent or edited) and not is_placeholder(call.params["text"]):
            shown.append(call.params["text"])
    return [text.removesuffix("…") for text in shown[:-1]] + shown[-1:]


# ------------------------------------------------------------------------------------------ Telegram


async def test_private_voice_notes_and_texts_are_one_conversation_until_new(world: World) -> None:
    chat = Chat.private(ALICE)
    async with agent_bot(world):
        start = await world.telegram.push_text(chat, ALICE, "/start")
        await world.telegram.wait_for(lambda: answers_to(world, start), timeout=15)
        note = await world.telegram.push_voice(chat, ALICE, TONE, duration=2)
        await answered(world, note, echo(AgentTurn(HEARD, (), "", "")))
        typed = await world.telegram.push_text(chat, ALICE, "And what about you?")
        await answered(world, typed, "You said: And what about you?. This is message 2 of our conversation.")
        new = await world.telegram.push_text(chat, ALICE, "/new")
        await answered(world, new, "Done: the next message starts a new conversation.")
        fresh = await world.telegram.push_text(chat, ALICE, "Hello again")
        await answered(world, fresh, "You said: Hello again. This is message 1 of our conversation.")
        menu = {command["command"] for command in world.telegram.commands({"type": "all_private_chats"})}
        privacy = await world.telegram.push_text(chat, ALICE, "/privacy")
        await world.telegram.wait_for(lambda: answers_to(world, privacy), timeout=15)
    assert answers_to(world, start)[0].startswith("Hi! Talk to me")
    assert {"ask", "new"} <= menu
    assert "Answers come from an agent on Coze (扣子)" in answers_to(world, privacy)[0]
    chats = world.coze.agents.chats
    assert [chat_.new_conversation for chat_ in chats] == [True, False, True]
    assert len({chat_.user_id for chat_ in chats}) == 1 and "1001" not in chats[0].user_id


async def test_a_host_bot_passes_a_coze_agent_as_its_responder(world: World) -> None:
    agent = voicebridge.responders.CozeAgent(bot_id=DEFAULT_BOT_ID)
    async with agent_bot(world, agent) as handle:
        typed = await world.telegram.push_text(Chat.private(ALICE), ALICE, "Hello agent")
        await answered(world, typed, "You said: Hello agent. This is message 1 of our conversation.")
        assert {"ask", "new"} <= set(handle.plugin.command_names) and "start" not in handle.plugin.command_names
    assert agent._client is None  # its connection closed with the plugin; a later question opens a new one


async def test_the_answer_grows_in_one_reply_as_the_agent_writes_it(world: World) -> None:
    world.agent.gate = paced(0.15)  # 12 pieces: past Telegram's one-second edit interval in a private chat
    async with agent_bot(world):
        note = await world.telegram.push_voice(Chat.private(ALICE), ALICE, TONE, duration=2)
        final = echo(AgentTurn(HEARD, (), "", ""))
        await answered(world, note, final)
    shown = texts_sent_for(world, note)
    assert len(shown) >= 2 and shown[-1] == final
    # Before it, what was heard may show in the placeholder ("🎙 …"), then the answer so far (on a slow
    # machine the whole of it, still marked unfinished, before the final edit).
    partials = [text for text in shown[:-1] if not text.startswith("🎙 ")]
    assert partials and all(final.startswith(partial) for partial in partials)
    assert any(len(partial) < len(final) for partial in partials)  # it grew
    assert len(world.telegram.calls_to("sendMessage")) == 1  # one reply, edited: never a second message


async def test_voice_answers_are_spoken_sentence_by_sentence_while_the_answer_streams(world: World) -> None:
    world.agent.answer = lambda turn: WEATHER
    first_sentence = WEATHER[:WEATHER.index(". ") + 1]

    async def gate(answer_so_far: str) -> None:
        # Hold the rest of the answer until the first sentence is being synthesized: a bot
        # that waited for the whole answer before speaking would never get there.
        if len(answer_so_far) > len(first_sentence) + 1 and not world.coze.calls_to("speech"):
            await world.coze.wait_for(lambda: world.coze.calls_to("speech"), timeout=30)

    world.agent.gate = gate
    async with agent_bot(world, VOICEBRIDGE_REPLY="voice") as handle:
        note = await world.telegram.push_voice(Chat.private(ALICE), ALICE, TONE, duration=2)
        sent = await world.telegram.wait_for_call("sendVoice", timeout=30)
        await handle.plugin.bookkeeper.flush()  # usage is settled in the background
        usage = await handle.plugin.store.usage("telegram", str(ALICE.id), today())
    spoken = [call.json["input"] for call in world.coze.calls_to("speech")]
    assert spoken == [spoken_form(first_sentence), spoken_form(WEATHER[len(first_sentence):])]
    assert "*" not in "".join(spoken)  # markup is not read aloud
    audio = sent.files["voice"]
    assert probe(audio)["codec_name"] == "opus"
    report = analyse(*decode(audio))
    assert report.frequency == pytest.approx(DEFAULT_VOICES[0].frequency, rel=0.01)
    assert report.seconds == pytest.approx(sum(map(len, spoken)) * SECONDS_PER_CHAR, abs=0.1)
    assert usage.tts_characters == sum(map(len, spoken))  # agent answers count like any spoken answer
    assert answers_to(world, note) == ["<voice>"]  # voice mode: no text


async def test_both_mode_shows_the_text_then_sends_the_voice(world: World) -> None:
    async with agent_bot(world, VOICEBRIDGE_REPLY="both"):
        note = await world.telegram.push_voice(Chat.private(ALICE), ALICE, TONE, duration=2)
        await answered(world, note, echo(AgentTurn(HEARD, (), "", "")), "<voice>")
    report = analyse(*decode(world.telegram.calls_to("sendVoice")[0].files["voice"]))
    assert report.seconds == pytest.approx(len(echo(AgentTurn(HEARD, (), "", ""))) * SECONDS_PER_CHAR, abs=0.1)


async def test_a_spoken_answer_stays_within_the_daily_allowance(world: World) -> None:
    world.agent.answer = lambda turn: WEATHER
    async with agent_bot(world, VOICEBRIDGE_REPLY="voice", VOICEBRIDGE_DAILY_TTS_CHARACTERS="100"):
        note = await world.telegram.push_voice(Chat.private(ALICE), ALICE, TONE, duration=2)
        await answered(world, note, f"{WEATHER}\n\n(No voice reply: this chat has used its 100 characters read aloud "
                                    "for today.)")
    assert world.telegram.calls_to("sendVoice") == []
    # The first sentence fit in the allowance and was spoken; the rest was refused before any call.
    assert [call.json["input"] for call in world.coze.calls_to("speech")] == [spoken_form(WEATHER[:WEATHER.index(". ") + 1])]


async def test_in_groups_the_agent_answers_what_is_said_to_the_bot_and_transcribes_the_rest(world: World) -> None:
    async with agent_bot(world):
        plain = await world.telegram.push_voice(GROUP, ALICE, TONE, duration=2)
        await answered(world, plain, f"🎤 Alice: {HEARD}")
        transcript_id = world.telegram.messages_sent(GROUP.id)[-1]["message_id"]
        to_bot = await world.telegram.push_voice(GROUP, ALICE, make_tone("ogg", 300.0, 1.0), duration=1, reply_to=transcript_id)
        await answered(world, to_bot, "You said: tone 300 hz 1.0 s. This is message 1 of our conversation.")
        chatter = await world.telegram.push_text(GROUP, BOB, "nice weather")
        asked = await world.telegram.push_text(GROUP, BOB, "/ask What is the capital of France")
        await answered(world, asked, "You said: What is the capital of France. This is message 1 of our conversation.")
        about_note = await world.telegram.push_text(GROUP, BOB, "/ask", reply_to=plain["message_id"])
        await answered(world, about_note, f"You said: {HEARD}. This is message 2 of our conversation.")
        await world.telegram.push_text(GROUP, ALICE, "/settings")  # something after the chatter, to know it was seen
        await world.telegram.wait_for(lambda: "Settings for this chat" in world.telegram.messages_sent(GROUP.id)[-1].get("text", ""))
    assert answers_to(world, chatter) == []  # typed chatter in groups is not for the agent
    assert [chat.question for chat in world.coze.agents.chats] == ["tone 300 hz 1.0 s", "What is the capital of France", HEARD]
    assert len({chat.conversation_id for chat in world.coze.agents.chats}) == 2  # Alice's and Bob's


@pytest.mark.parametrize(("script", "user", "expected"), [
    ({"ending": "failed", "code": 5000}, ALICE,
     f"Sorry, the agent could not answer this time. Please try again. I heard: {HEARD}"),
    ({"ending": "requires_action"}, ALICE,
     f"Sorry, the agent wanted to use a tool that this bot cannot run, so there is no answer. I heard: {HEARD}"),
    ({"ending": "error", "code": 4009}, BOB, f"智能体当前繁忙，请过一分钟再试。我听到的是：{HEARD}"),
    ({"ending": "hang"}, ALICE, f"Sorry, the answer is taking too long. I heard: {HEARD}"),
])
async def test_a_failed_answer_is_one_short_message_that_keeps_the_transcript(world: World, script: dict[str, Any],
                                                                             user: User, expected: str) -> None:
    world.coze.agents.script_next(**script)
    async with agent_bot(world, VOICEBRIDGE_RESPONDER_TIMEOUT="1"):
        note = await world.telegram.push_voice(Chat.private(user), user, TONE, duration=2)
        await answered(world, note, expected)


async def test_a_failure_after_part_of_the_answer_replaces_it(world: World) -> None:
    world.agent.gate = paced(0.15)
    world.coze.agents.script_next("failed", after_pieces=10)  # 10 × 0.15 s: past the first edit interval
    async with agent_bot(world):
        note = await world.telegram.push_voice(Chat.private(ALICE), ALICE, TONE, duration=2)
        expected = f"Sorry, the agent could not answer this time. Please try again. I heard: {HEARD}"
        await answered(world, note, expected)
    shown = texts_sent_for(world, note)
    assert len(shown) >= 2 and shown[0] in world.coze.agents.chats[0].answer  # part of the answer showed first…
    assert shown[-1] == expected  # …and did not stay as if it were the whole


async def test_an_agent_not_published_is_reported_to_the_user_and_the_operator(world: World,
                                                                              caplog: pytest.LogCaptureFixture) -> None:
    world.agent.published = False
    async with agent_bot(world):
        chat = Chat.private(ALICE)
        typed = await world.telegram.push_text(chat, ALICE, "Hello?")
        await answered(world, typed, "The agent is not set up correctly. The bot owner needs to check its Coze settings.")
    assert "publish the agent to the API channel" in caplog.text


async def test_an_answer_that_goes_on_is_cut_and_spread_over_messages(world: World) -> None:
    world.agent.answer = lambda turn: "blah " * 5000  # 25 000 characters
    world.agent.piece_size = 1000
    async with agent_bot(world):
        typed = await world.telegram.push_text(Chat.private(ALICE), ALICE, "Talk forever")
        # Long answers are split as transcripts are: each part marked with its (i/n).
        await world.telegram.wait_for(lambda: answers_to(world, typed) and answers_to(world, typed)[-1].endswith("… (5/5)"),
                                      timeout=30)
    pieces = answers_to(world, typed)
    assert len(pieces) == 5 and all(len(piece) <= 4096 for piece in pieces)
    assert "".join(pieces).count("blah") == 20_000 // len("blah ")  # the first 20 000 characters, then "…"


async def test_a_host_responder_that_streams_grows_its_answer_and_speaks_it(world: World) -> None:
    """The streaming contract is not Coze's: any async iterable of text pieces grows and is spoken."""

    async def answer(transcript: str, context: voicebridge.ResponderContext) -> AsyncIterator[str]:
        for word in f"Heard {transcript}. Thinking it over, word by word, as a model writes.".split(" "):
            await asyncio.sleep(0.1)
            yield word + " "

    settings = Settings.from_values(speech_values(world.coze) | {"VOICEBRIDGE_REPLY": "both"})
    application = (ApplicationBuilder().token(world.telegram.token).base_url(world.telegram.api_base_url)
                   .base_file_url(world.telegram.file_base_url).get_updates_connection_pool_size(2).build())
    handle = voicebridge.telegram.install(application, settings=settings, store=":memory:", responder=answer)
    async with application:
        await handle.start()
        await application.start()
        await application.updater.start_polling(timeout=1)  # type: ignore[union-attr]
        note = await world.telegram.push_voice(Chat.private(ALICE), ALICE, TONE, duration=2)
        final = f"Heard {HEARD}. Thinking it over, word by word, as a model writes."
        await answered(world, note, final, "<voice>")
        await application.updater.stop()  # type: ignore[union-attr]
        await application.stop()
        await handle.stop()
    shown = texts_sent_for(world, note)
    assert len(shown) >= 2 and all(final.startswith(partial) for partial in shown)
    assert "ask" not in handle.plugin.command_names  # a host's responder is no agent: no /ask, /new
    report = analyse(*decode(world.telegram.calls_to("sendVoice")[0].files["voice"]))
    assert report.seconds == pytest.approx(len(final) * SECONDS_PER_CHAR, abs=0.1)


# ------------------------------------------------------------------------------------------ Discord


@dataclass
class DiscordWorld:
    discord: FakeDiscord
    coze: FakeCoze
    retrier: Retrier


@pytest.fixture
async def discord_world(fast_retrier: Retrier, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DiscordWorld]:
    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)  # restored after each test
    async with FakeDiscord(rate_limit_window=0.05) as fake_discord, FakeCoze() as coze:
        yield DiscordWorld(fake_discord, coze, fast_retrier)
        assert coze.agents.violations == []


@asynccontextmanager
async def discord_agent_bot(world: DiscordWorld, **env: str) -> AsyncIterator[VoiceNotesPlugin]:
    """The runner's Discord bot, its plugin built as ``voicebridge run`` builds it."""
    values = speech_values(world.coze) | AGENT | {"DISCORD_BOT_TOKEN": world.discord.token,
                                                 "DISCORD_API_BASE": world.discord.api_base} | env
    settings = RunnerSettings.from_values(values)
    plugin = build_plugin(Options(commands=ALL_COMMANDS, settings=settings, store=":memory:"), retrier=world.retrier,
                          edit_interval=0.2)
    bot = await start_discord(settings.discord, plugin, guild_ready_timeout=0.1)
    try:
        yield plugin
    finally:
        await bot.close()
        await plugin.drain(1)
        await plugin.aclose()


async def final_reply(world: DiscordWorld, message: dict[str, Any], expected: str) -> None:
    """Wait until the bot's reply to ``message`` reads ``expected`` (after any edits)."""

    def reply() -> str | None:
        for stored in world.discord.messages_in(int(message["channel_id"])):
            if stored["author"]["id"] == str(world.discord.bot_user.id) and \
                    str((stored.get("message_reference") or {}).get("message_id")) == message["id"]:
                return stored.get("content")
        return None

    await world.discord.wait_for(lambda: reply() == expected, timeout=30)


async def test_discord_dms_voice_and_text_and_slash_ask_and_new(discord_world: DiscordWorld) -> None:
    world = discord_world
    async with discord_agent_bot(world):
        dm = world.discord.dm_channel(world.discord.user)
        note = await world.discord.dispatch_voice_message(dm.id, world.discord.user, TONE, 2.0)
        await final_reply(world, note, f"You said: {HEARD}. This is message 1 of our conversation.")
        typed = await world.discord.dispatch_message(dm.id, world.discord.user, content="Tell me more")
        await final_reply(world, typed, "You said: Tell me more. This is message 2 of our conversation.")
        new = await world.discord.dispatch_interaction("new", user=world.discord.user, channel_id=dm.id)
        await world.discord.wait_for(lambda: len(world.discord.interaction_responses(new["id"])) >= 2, timeout=15)
        asked = await world.discord.dispatch_interaction("ask", user=world.discord.user, channel_id=dm.id,
                                                         options={"question": "Who are you"})
        await world.discord.wait_for(
            lambda: any(response.message and response.message.get("content") == "You said: Who are you. This is message 1 "
                        "of our conversation." for response in world.discord.interaction_responses(asked["id"])), timeout=15)
    assert world.discord.interaction_responses(new["id"])[-1].message["content"] == \
        "Done: the next message starts a new conversation."


async def test_discord_channels_answer_replies_to_the_bot_and_transcribe_the_rest(discord_world: DiscordWorld) -> None:
    world = discord_world
    channel = world.discord.text_channel
    async with discord_agent_bot(world, VOICEBRIDGE_REPLY="both"):
        note = await world.discord.dispatch_voice_message(channel.id, world.discord.user, TONE, 2.0)
        await final_reply(world, note, f"🎤 alice: {HEARD}")
        transcript = next(message for message in world.discord.messages_in(channel.id)
                          if message["author"]["id"] == str(world.discord.bot_user.id))
        to_bot = await world.discord.dispatch_message(
            channel.id, world.discord.user, attachments=[discord_voice_note(make_tone("ogg", 300.0, 1.0), 1.0)],
            flags=8192, message_reference={"message_id": int(transcript["id"])})
        expected = "You said: tone 300 hz 1.0 s. This is message 1 of our conversation."
        await final_reply(world, to_bot, expected)
        await world.discord.wait_for(lambda: voice_replies(world, to_bot), timeout=30)
        menu = await world.discord.dispatch_interaction("Ask", user=world.discord.user, channel_id=channel.id,
                                                        target_message_id=note["id"])
        await world.discord.wait_for(lambda: any(
            reply.message.get("content") == f"You said: {HEARD}. This is message 2 of our conversation."
            for reply in world.discord.interaction_responses(menu["id"]) if reply.message), timeout=30)
    (voice,) = voice_replies(world, to_bot)
    report = analyse(*decode(voice.files[0].data))
    assert report.seconds == pytest.approx(len(expected) * SECONDS_PER_CHAR, abs=0.1)
    assert voice.json["attachments"][0]["waveform"]  # a native voice message, waveform and all
    assert [chat.question for chat in world.coze.agents.chats] == ["tone 300 hz 1.0 s", HEARD]


def voice_replies(world: DiscordWorld, message: dict[str, Any]) -> list[Any]:
    return [request for request in world.discord.requests
            if request.route == "POST /channels/{channel_id}/messages" and request.status == 200 and request.files
            and str((request.json.get("message_reference") or {}).get("message_id")) == message["id"]]
