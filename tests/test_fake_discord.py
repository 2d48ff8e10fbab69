"""The Discord fake, driven by a real discord.py 2.7.1 bot.

Each test starts an actual ``commands.Bot`` against ``FakeDiscord``: REST via
``discord.http.Route.BASE`` and the gateway via the URL ``GET /gateway/bot`` hands out (see
``point_discord_py_at``). Waiting is always on an event — a discord.py event, a recorded
request, a gateway state — never on a fixed sleep.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import discord
import pytest
import yarl
from discord import app_commands
from discord.ext import commands
from discord.gateway import DiscordWebSocket

from tests.audio_tools import make_tone
from tests.fakes.discord import (
    OVERWRITE_MEMBER,
    CallbackType,
    FakeDiscord,
    FakeFile,
    Intent,
    MessageFlag,
    Permission,
    PermissionOverwrite,
)

# Tests of the fake provoke its refusals on purpose (see tests/violations.py).
pytestmark = pytest.mark.breaks_rules

SEND_MESSAGE = "POST /channels/{channel_id}/messages"
TIMEOUT = 10.0


@pytest.fixture(scope="module")
def ogg() -> bytes:
    return make_tone("ogg", frequency=440.0, seconds=1.5)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


def make_bot(*, message_content: bool = True, cls: type[commands.Bot] = commands.Bot) -> commands.Bot:
    intents = discord.Intents.default()
    intents.message_content = message_content
    # discord.py fires on_ready once no GUILD_CREATE has arrived for guild_ready_timeout
    # (2 s by default); the fake sends them right after READY, so a short quiet period suffices.
    return cls(command_prefix="!", intents=intents, guild_ready_timeout=0.2)


async def point_discord_py_at(fake: FakeDiscord, bot: commands.Bot, monkeypatch: pytest.MonkeyPatch) -> None:
    """Log ``bot`` in against the fake, the least invasive way discord.py 2.7.1 allows.

    REST: every ``Route`` (HTTPClient and the interaction webhook adapter alike) is built from
    the class attribute ``Route.BASE``. Gateway: ``AutoShardedClient`` asks ``GET /gateway/bot``
    itself, but a plain ``Client`` never asks where the gateway is: ``Client.connect`` calls
    ``DiscordWebSocket.from_client`` without a ``gateway`` argument, which then falls back to the
    class attribute ``DEFAULT_GATEWAY``. So we fetch the URL as a sharded client would and set it.
    """
    monkeypatch.setattr(discord.http.Route, "BASE", fake.api_base)
    await bot.login(fake.token)
    if not isinstance(bot, commands.AutoShardedBot):
        _, gateway_url, _ = await bot.http.get_bot_gateway()
        monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(gateway_url))


@contextlib.asynccontextmanager
async def running(bot: commands.Bot, fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[commands.Bot]:
    """Log in, connect and wait for on_ready; on exit close the bot and surface connection errors."""
    try:
        await point_discord_py_at(fake, bot, monkeypatch)
        # reconnect=True as in Client.start(): only then does 4014 become PrivilegedIntentsRequired.
        connection = asyncio.create_task(bot.connect())
        ready = asyncio.create_task(bot.wait_until_ready())
        done, _ = await asyncio.wait({connection, ready}, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if connection in done:
            connection.result()  # raises what ended the connection
            raise AssertionError("the gateway connection ended before on_ready")
        if not done:
            raise TimeoutError("the bot did not become ready")
        yield bot
    except BaseException:
        await bot.close()
        raise
    await bot.close()
    await connection  # raises if the connection failed during the test


class Inbox:
    """Every message discord.py hands to on_message, in order."""

    def __init__(self, bot: commands.Bot) -> None:
        self._queue: asyncio.Queue[discord.Message] = asyncio.Queue()
        bot.add_listener(self._queue.put, "on_message")

    async def next_from(self, author_id: int) -> discord.Message:
        async with asyncio.timeout(TIMEOUT):
            while True:
                message = await self._queue.get()
                if message.author.id == author_id:
                    return message


class VoiceFile(discord.File):
    """platforms.md §2.2 "Workaround for 2.7": File.to_dict plus the voice-message metadata."""

    def __init__(
        self, data: bytes, duration: float | None, waveform: bytes | None, filename: str = "voice-message.ogg"
    ) -> None:
        super().__init__(io.BytesIO(data), filename=filename)
        self.duration = duration
        self.waveform = waveform

    def to_dict(self, index: int) -> dict[str, Any]:
        payload = super().to_dict(index)
        if self.duration is not None:
            payload["duration_secs"] = self.duration
        if self.waveform is not None:
            payload["waveform"] = base64.b64encode(self.waveform).decode()
        return payload


async def send_voice_message(
    bot: commands.Bot,
    channel_id: int,
    files: list[discord.File],
    content: str | None = None,
    content_type: str = "audio/ogg",
) -> dict[str, Any]:
    """Send flag IS_VOICE_MESSAGE through discord.py's internal HTTP API (platforms.md §2.2)."""
    params = discord.http.handle_message_parameters(
        content=content, files=files, flags=discord.MessageFlags(voice=True)
    )
    for part in params.multipart[1:]:
        part["content_type"] = content_type  # discord.py hard-codes application/octet-stream
    with params:
        return await bot.http.send_message(channel_id, params=params)


def routes(fake: FakeDiscord) -> list[str]:
    return [request.route for request in fake.requests]


# ------------------------------------------------------------------------------------------------
# Connecting


async def test_bot_connects_identifies_and_caches_the_guild(fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> None:
    bot = make_bot()
    async with running(bot, fake, monkeypatch):
        assert bot.user is not None and bot.user.id == fake.bot_user.id
        assert bot.application_id == fake.application_id
        channel = bot.get_channel(fake.text_channel.id)
        assert isinstance(channel, discord.TextChannel)
        assert channel.guild.id == fake.guild.id and channel.name == "general"
        assert channel.guild.me is not None
        permissions = channel.permissions_for(channel.guild.me)
        assert permissions.send_messages and permissions.attach_files and not permissions.administrator
        # Without GUILD_PRESENCES, GUILD_CREATE carries only the bot's own member.
        assert channel.guild.member_count == 2 and channel.guild.get_member(fake.user.id) is None

        (connection,) = fake.gateway_connections
        assert connection.query["encoding"] == "json" and connection.query["v"] == "10"
        assert connection.identify is not None
        assert connection.identify["intents"] == bot.intents.value
        assert connection.identify["intents"] & Intent.MESSAGE_CONTENT
        assert connection.heartbeats >= 1  # discord.py heartbeats right after HELLO
        # Start-up REST traffic: login (users/@me + application info), then our gateway lookup.
        assert routes(fake) == ["GET /users/@me", "GET /oauth2/applications/@me", "GET /gateway/bot"]


async def test_shutdown_closes_the_gateway_without_rest_calls(
    fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = make_bot()
    async with running(bot, fake, monkeypatch):
        requests_before_close = len(fake.requests)
    assert bot.is_closed()
    (connection,) = fake.gateway_connections
    await fake.wait_for(lambda: connection.close_code is not None)
    # Client.close() asks for 1000, but the idle poll_event task, woken by aiohttp's close,
    # closes first with discord.py's default 4000 — a resumable close, so Discord keeps the
    # session (and the bot's presence) until it times out.
    assert connection.close_code == 4000
    assert len(fake.requests) == requests_before_close  # closing makes no REST calls


async def test_autosharded_bot_only_needs_the_rest_base(fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> None:
    bot = make_bot(cls=commands.AutoShardedBot)
    async with running(bot, fake, monkeypatch):
        assert DiscordWebSocket.DEFAULT_GATEWAY.host == "gateway.discord.gg"  # untouched
        assert bot.get_channel(fake.text_channel.id) is not None
        (connection,) = fake.gateway_connections
        assert connection.identify is not None and connection.identify["shard"] == [0, 1]
        assert routes(fake) == ["GET /users/@me", "GET /oauth2/applications/@me", "GET /gateway/bot"]


async def test_wrong_token_is_rejected_by_rest(fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(discord.http.Route, "BASE", fake.api_base)
    bot = make_bot()
    try:
        with pytest.raises(discord.LoginFailure):
            await bot.login("not-the-token")
    finally:
        await bot.close()
    assert fake.requests[-1].status == 401
    assert fake.requests[-1].headers["Authorization"] == "Bot not-the-token"


@pytest.mark.parametrize(
    ("first_frame", "close_code"),
    [
        pytest.param(lambda token: {"op": 1, "d": None}, None, id="heartbeat-is-fine"),
        pytest.param(lambda token: {"op": 3, "d": {"status": "online"}}, 4003, id="presence-before-identify"),
        pytest.param(lambda token: {"op": 2, "d": {"token": "wrong", "intents": 513, "properties": {}}}, 4004,
                     id="wrong-token"),
        pytest.param(lambda token: {"op": 2, "d": {"token": token, "intents": 1 << 30, "properties": {}}}, 4013,
                     id="unknown-intent"),
    ],
)
async def test_gateway_protocol_errors_close_with_discords_codes(
    fake: FakeDiscord, first_frame: Callable[[str], dict[str, Any]], close_code: int | None
) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(fake.gateway_url) as ws:
        hello = await ws.receive_json(timeout=TIMEOUT)
        assert hello["op"] == 10 and hello["d"]["heartbeat_interval"] > 0
        await ws.send_json(first_frame(fake.token))
        reply = await ws.receive(timeout=TIMEOUT)
        if close_code is None:
            assert reply.json()["op"] == 11  # HEARTBEAT_ACK
        else:
            assert reply.type is aiohttp.WSMsgType.CLOSE and ws.close_code == close_code


async def test_privileged_intent_not_enabled_closes_with_4014(monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeDiscord(approved_intents=Intent(0)) as fake:
        with pytest.raises(discord.PrivilegedIntentsRequired):
            async with running(make_bot(message_content=True), fake, monkeypatch):
                pass
        assert fake.gateway_connections[-1].close_code == 4014
        # The same application is fine when the bot does not ask for the intent.
        async with running(make_bot(message_content=False), fake, monkeypatch) as bot:
            assert bot.get_channel(fake.text_channel.id) is not None


async def test_reconnect_request_is_resumed_without_losing_events(
    fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = make_bot()
    inbox = Inbox(bot)
    async with running(bot, fake, monkeypatch):
        await fake.request_reconnect()
        first = fake.gateway_connections[0]
        await fake.wait_for(lambda: first.close_code is not None)
        # Dispatched while the client may be between connections: replayed on RESUME.
        sent = await fake.dispatch_message(fake.text_channel.id, fake.user, content="still there?")
        received = await inbox.next_from(fake.user.id)
        assert received.id == int(sent["id"]) and received.content == "still there?"
        second = fake.gateway_connections[1]
        assert second.path == "/gateway/resume" and second.resume is not None and second.identify is None


# ------------------------------------------------------------------------------------------------
# Receiving


async def test_dm_voice_message_reaches_on_message_and_downloads(
    fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch, ogg: bytes
) -> None:
    bot = make_bot()
    inbox = Inbox(bot)
    dm = fake.dm_channel(fake.user)
    waveform = bytes(range(0, 250, 17))
    async with running(bot, fake, monkeypatch):
        sent = await fake.dispatch_voice_message(dm.id, fake.user, ogg, 1.5, waveform)
        message = await inbox.next_from(fake.user.id)
        assert isinstance(message.channel, discord.DMChannel) and message.guild is None
        assert message.flags.voice
        (attachment,) = message.attachments
        assert attachment.is_voice_message()
        assert attachment.filename == "voice-message.ogg" and attachment.content_type == "audio/ogg"
        assert attachment.duration == 1.5 and attachment.waveform == waveform
        assert attachment.size == len(ogg)
        assert "ex=" in attachment.url and "hm=" in attachment.url  # signed, expiring CDN URL
        assert await attachment.read() == ogg
        assert await attachment.read(use_cached=True) == ogg  # via proxy_url
        fetched = await message.channel.fetch_message(message.id)
        assert fetched.attachments[0].id == int(sent["attachments"][0]["id"])


async def test_expired_attachment_url_is_not_found(
    fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch, ogg: bytes
) -> None:
    bot = make_bot()
    inbox = Inbox(bot)
    fake.attachment_url_ttl = -1  # URLs issued from now on have already expired
    async with running(bot, fake, monkeypatch):
        await fake.dispatch_voice_message(fake.dm_channel(fake.user).id, fake.user, ogg, 1.5)
        message = await inbox.next_from(fake.user.id)
        with pytest.raises(discord.NotFound):
            await message.attachments[0].read()


async def test_without_message_content_intent_guild_content_is_empty(
    fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch, ogg: bytes
) -> None:
    bot = make_bot(message_content=False)
    inbox = Inbox(bot)
    async with running(bot, fake, monkeypatch):
        await fake.dispatch_voice_message(fake.text_channel.id, fake.user, ogg, 1.5)
        voice = await inbox.next_from(fake.user.id)
        assert voice.flags.voice and voice.attachments == []  # flags stay, content goes

        await fake.dispatch_message(fake.text_channel.id, fake.user, content="plain words")
        assert (await inbox.next_from(fake.user.id)).content == ""

        mention = f"{fake.bot_user.mention} transcribe please"
        await fake.dispatch_message(fake.text_channel.id, fake.user, content=mention)
        assert (await inbox.next_from(fake.user.id)).content == mention

        await fake.dispatch_message(fake.dm_channel(fake.user).id, fake.user, content="in a DM")
        assert (await inbox.next_from(fake.user.id)).content == "in a DM"


async def test_boosted_guild_and_bot_role_reach_discord_py(monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeDiscord() as fake:
        boosted = fake.add_guild("Boosted", owner=fake.user, premium_tier=2,
                                 bot_permissions=Permission.VIEW_CHANNEL | Permission.MANAGE_MESSAGES)
        async with running(make_bot(), fake, monkeypatch) as bot:
            guild = bot.get_guild(boosted.id)
            assert guild is not None and guild.me is not None
            assert guild.filesize_limit == boosted.upload_limit == 50 * 1024 * 1024
            assert [role.is_bot_managed() for role in guild.me.roles] == [False, True]  # @everyone, bot role
            assert guild.me.guild_permissions.manage_messages
            with pytest.raises(RuntimeError, match="before the bot connects"):
                fake.add_text_channel(boosted, "too-late")


# ------------------------------------------------------------------------------------------------
# Sending


async def test_reply_records_allowed_mentions_and_reference(fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> None:
    bot = make_bot()
    inbox = Inbox(bot)
    async with running(bot, fake, monkeypatch):
        await fake.dispatch_message(fake.text_channel.id, fake.user, content="what did I say?")
        original = await inbox.next_from(fake.user.id)
        async with original.channel.typing():
            reply = await original.reply(
                f"@everyone {fake.user.mention} said hi", allowed_mentions=discord.AllowedMentions.none()
            )

        request = await fake.wait_for_request("POST", "/channels/{channel_id}/messages")
        assert request.json["allowed_mentions"] == {"parse": []}
        assert request.json["message_reference"]["message_id"] == original.id
        stored = fake.messages_in(fake.text_channel.id)[-1]
        assert stored["id"] == str(reply.id) and stored["type"] == 19  # REPLY
        assert stored["message_reference"]["message_id"] == str(original.id)
        # Nobody is pinged: not @everyone, not the mentioned user, not the replied-to author.
        assert stored["mentions"] == [] and stored["mention_everyone"] is False
        assert reply.reference is not None and reply.reference.message_id == original.id
        assert "POST /channels/{channel_id}/typing" in routes(fake)
        # The bot's own message comes back over the gateway, as on Discord.
        echoed = await inbox.next_from(fake.bot_user.id)
        assert echoed.id == reply.id


async def test_reply_without_allowed_mentions_pings(fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> None:
    bot = make_bot()
    inbox = Inbox(bot)
    async with running(bot, fake, monkeypatch):
        await fake.dispatch_message(fake.text_channel.id, fake.user, content="ping me")
        original = await inbox.next_from(fake.user.id)
        await original.channel.send("@everyone look", reference=original)
        stored = fake.messages_in(fake.text_channel.id)[-1]
        assert [user["id"] for user in stored["mentions"]] == [str(fake.user.id)]
        assert stored["mention_everyone"] is True


async def test_bot_opens_a_dm_to_send_privately(fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> None:
    bot = make_bot()
    inbox = Inbox(bot)
    async with running(bot, fake, monkeypatch):
        await fake.dispatch_message(fake.text_channel.id, fake.user, content="DM me the transcript")
        request = await inbox.next_from(fake.user.id)
        sent = await request.author.send("here it is")
        assert isinstance(sent.channel, discord.DMChannel)
        opened = await fake.wait_for_request("POST", "/users/@me/channels")
        assert opened.json == {"recipient_id": fake.user.id}
        dm = fake.dm_channel(fake.user)
        assert sent.channel.id == dm.id and fake.messages_in(dm.id)[-1]["content"] == "here it is"
        fetched = await bot.fetch_channel(dm.id)
        assert isinstance(fetched, discord.DMChannel) and fetched.recipient is not None
        assert fetched.recipient.id == fake.user.id


async def test_manual_voice_message_passes_validation(
    fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch, ogg: bytes
) -> None:
    bot = make_bot()
    async with running(bot, fake, monkeypatch):
        channel = bot.get_channel(fake.text_channel.id)
        assert isinstance(channel, discord.TextChannel)
        waveform = bytes([0, 64, 128, 255] * 4)
        data = await send_voice_message(bot, channel.id, [VoiceFile(ogg, 1.5, waveform)])
        message = discord.Message(state=channel._state, channel=channel, data=data)

        assert message.flags.voice
        (attachment,) = message.attachments
        assert attachment.is_voice_message() and attachment.duration == 1.5 and attachment.waveform == waveform
        assert await attachment.read() == ogg
        request = fake.requests[-1]
        assert request.json["flags"] == MessageFlag.IS_VOICE_MESSAGE
        assert request.json["attachments"] == [
            {"id": 0, "filename": "voice-message.ogg", "duration_secs": 1.5,
             "waveform": base64.b64encode(waveform).decode()}
        ]
        (file,) = request.files
        assert file.field == "files[0]" and file.content_type == "audio/ogg" and file.data == ogg
        with pytest.raises(discord.HTTPException) as edit_error:
            await message.edit(content="no")
        assert edit_error.value.code == 50162


async def test_voice_upload_type_comes_from_the_file_name(
    fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch, ogg: bytes
) -> None:
    """Without step 3 of the workaround discord.py declares application/octet-stream; the fake,
    like Discord as reported in platforms.md §2.2, derives audio/ogg from the file name."""
    bot = make_bot()
    async with running(bot, fake, monkeypatch):
        data = await send_voice_message(
            bot, fake.text_channel.id, [VoiceFile(ogg, 1.5, b"\x80")], content_type="application/octet-stream"
        )
        assert data["attachments"][0]["content_type"] == "audio/ogg"
        assert fake.requests[-1].files[0].content_type == "application/octet-stream"


@pytest.mark.parametrize(
    ("files", "options", "code"),
    [
        pytest.param(lambda ogg: [VoiceFile(ogg, 1.5, None)], {}, 50161, id="no-waveform"),
        pytest.param(lambda ogg: [VoiceFile(ogg, None, b"\x80")], {}, 50161, id="no-duration"),
        pytest.param(lambda ogg: [VoiceFile(ogg, 1.5, b"\x80"), VoiceFile(ogg, 1.5, b"\x80")], {}, 50160,
                     id="two-files"),
        pytest.param(lambda ogg: [VoiceFile(b"text", 1.5, b"\x80", "notes.txt")], {"content_type": "text/plain"},
                     50160, id="not-audio"),
        pytest.param(lambda ogg: [VoiceFile(ogg, 1.5, b"\x80")], {"content": "hello"}, 50159, id="with-content"),
    ],
)
async def test_malformed_voice_message_is_rejected(
    fake: FakeDiscord,
    monkeypatch: pytest.MonkeyPatch,
    ogg: bytes,
    files: Callable[[bytes], list[discord.File]],
    options: dict[str, str],
    code: int,
) -> None:
    bot = make_bot()
    async with running(bot, fake, monkeypatch):
        with pytest.raises(discord.HTTPException) as error:
            await send_voice_message(bot, fake.text_channel.id, files(ogg), **options)
        assert error.value.status == 400 and error.value.code == code
        assert fake.messages_in(fake.text_channel.id) == []


async def test_voice_message_in_a_forbidding_channel_gets_50173(
    fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch, ogg: bytes
) -> None:
    no_voice = fake.add_text_channel(fake.guild, "no-voice", voice_messages_allowed=False)
    bot = make_bot()
    async with running(bot, fake, monkeypatch):
        with pytest.raises(discord.Forbidden) as error:
            await send_voice_message(bot, no_voice.id, [VoiceFile(ogg, 1.5, b"\x80")])
        assert error.value.code == 50173


async def test_missing_permission_surfaces_as_forbidden(fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> None:
    read_only = fake.add_text_channel(
        fake.guild, "read-only",
        overwrites=[PermissionOverwrite(fake.bot_user.id, OVERWRITE_MEMBER, deny=Permission.SEND_MESSAGES)],
    )
    bot = make_bot()
    async with running(bot, fake, monkeypatch):
        channel = bot.get_channel(read_only.id)
        assert isinstance(channel, discord.TextChannel)
        assert not channel.permissions_for(channel.guild.me).send_messages  # discord.py sees the overwrite too
        with pytest.raises(discord.Forbidden) as error:
            await channel.send("hello")
        assert error.value.code == 50013 and error.value.text == "Missing Permissions"


async def test_injected_403_surfaces_as_forbidden(fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> None:
    bot = make_bot()
    async with running(bot, fake, monkeypatch):
        channel = bot.get_channel(fake.text_channel.id)
        assert isinstance(channel, discord.TextChannel)
        fake.fail_next(SEND_MESSAGE, status=403, code=50013)
        with pytest.raises(discord.Forbidden) as error:
            await channel.send("hello")
        assert error.value.code == 50013
        await channel.send("hello again")  # only the next request failed
        assert [r.status for r in fake.requests if r.route == SEND_MESSAGE] == [403, 200]


@pytest.mark.parametrize("global_", [False, True], ids=["route", "global"])
async def test_429_is_waited_out_and_the_message_arrives(
    fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch, global_: bool
) -> None:
    bot = make_bot()
    async with running(bot, fake, monkeypatch):
        channel = bot.get_channel(fake.text_channel.id)
        assert isinstance(channel, discord.TextChannel)
        fake.fail_next(SEND_MESSAGE, status=429, retry_after=0.3, global_=global_)
        message = await channel.send("patience")
        limited, accepted = [r for r in fake.requests if r.route == SEND_MESSAGE]
        assert (limited.status, accepted.status) == (429, 200)
        assert accepted.received_at - limited.received_at >= 0.3
        assert fake.messages_in(channel.id)[-1]["id"] == str(message.id)


async def test_discord_py_follows_the_bucket_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeDiscord(rate_limit=2, rate_limit_window=0.5) as fake:
        bot = make_bot()
        async with running(bot, fake, monkeypatch):
            channel = bot.get_channel(fake.text_channel.id)
            assert isinstance(channel, discord.TextChannel)
            for text in ("one", "two", "three"):
                await channel.send(text)
            sends = [r for r in fake.requests if r.route == SEND_MESSAGE]
            assert [r.status for r in sends] == [200, 200, 200]  # no 429: discord.py waited pre-emptively
            assert sends[2].received_at - sends[0].received_at >= 0.4


async def test_a_client_ignoring_the_headers_gets_a_discord_429() -> None:
    async with FakeDiscord(rate_limit=1, rate_limit_window=30) as fake, aiohttp.ClientSession() as session:
        url = f"{fake.api_base}/users/@me"
        headers = {"Authorization": f"Bot {fake.token}"}
        async with session.get(url, headers=headers) as first:
            assert first.status == 200 and first.headers["X-RateLimit-Remaining"] == "0"
            assert first.headers["Content-Type"] == "application/json"
        async with session.get(url, headers=headers) as second:
            body = await second.json()
            assert second.status == 429 and second.headers["Via"] and second.headers["X-RateLimit-Scope"] == "user"
            assert body["global"] is False and 0 < body["retry_after"] <= 30


async def test_unmodelled_routes_answer_like_discord_and_are_recorded(fake: FakeDiscord) -> None:
    headers = {"Authorization": f"Bot {fake.token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(f"{fake.api_base}/guilds/{fake.guild.id}/members") as unknown:
            assert unknown.status == 404 and await unknown.json() == {"message": "404: Not Found", "code": 0}
        async with session.delete(f"{fake.api_base}/users/@me") as wrong_method:
            assert wrong_method.status == 405
        async with session.post(f"{fake.api_base}/users/@me/channels", data=b"{not json",
                                headers={"Content-Type": "application/json"}) as bad_json:
            assert bad_json.status == 400 and (await bad_json.json())["code"] == 50109
    assert [(r.route, r.status) for r in fake.requests] == [
        ("UNKNOWN", 404), ("UNKNOWN", 405), ("POST /users/@me/channels", 400)
    ]
    assert fake.requests[0].path == f"/guilds/{fake.guild.id}/members"


async def test_too_long_content_and_too_large_upload(fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> None:
    bot = make_bot()
    async with running(bot, fake, monkeypatch):
        channel = bot.get_channel(fake.text_channel.id)
        assert isinstance(channel, discord.TextChannel)
        with pytest.raises(discord.HTTPException) as too_long:
            await channel.send("x" * 2001)
        assert too_long.value.status == 400 and too_long.value.code == 50035
        assert "content" in too_long.value.text  # discord.py flattens the form errors into text
        await channel.send("x" * 2000)

        assert channel.guild.filesize_limit == fake.guild.upload_limit == 10 * 1024 * 1024
        with pytest.raises(discord.HTTPException) as too_large:
            await channel.send(file=discord.File(io.BytesIO(bytes(fake.guild.upload_limit + 1)), "big.bin"))
        assert too_large.value.status == 413 and too_large.value.code == 40005
        await channel.send(file=discord.File(io.BytesIO(bytes(fake.guild.upload_limit)), "fits.bin"))


async def test_edit_and_delete_own_message(fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> None:
    bot = make_bot()
    async with running(bot, fake, monkeypatch):
        channel = bot.get_channel(fake.text_channel.id)
        assert isinstance(channel, discord.TextChannel)
        message = await channel.send("draft")
        edited = await message.edit(content="final")
        assert edited.content == "final" and edited.edited_at is not None
        assert fake.messages_in(channel.id)[-1]["content"] == "final"
        await message.delete()
        assert fake.messages_in(channel.id) == []


# ------------------------------------------------------------------------------------------------
# Application commands and interactions


async def test_tree_sync_stores_commands_and_a_restart_does_not_rewrite_them(
    fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bot_with_commands() -> commands.Bot:
        bot = make_bot()

        @bot.tree.command(name="transcribe", description="Transcribe an audio file")
        async def transcribe(interaction: discord.Interaction, audio: discord.Attachment) -> None: ...

        async def transcribe_message(interaction: discord.Interaction, message: discord.Message) -> None: ...

        bot.tree.add_command(app_commands.ContextMenu(name="Transcribe", callback=transcribe_message))
        return bot

    async with running(bot_with_commands(), fake, monkeypatch) as bot:
        synced = await bot.tree.sync()
        assert sorted((c.name, c.type.value) for c in synced) == [("Transcribe", 3), ("transcribe", 1)]
        assert fake.command_writes == 1
        stored = {c["name"]: c for c in fake.commands()}
        assert stored["transcribe"]["options"][0]["type"] == 11  # ATTACHMENT
        assert {c.id for c in await bot.tree.fetch_commands()} == {int(c["id"]) for c in stored.values()}

        await bot.tree.sync(guild=discord.Object(fake.guild.id))  # nothing registered for the guild
        assert fake.commands(fake.guild.id) == [] and fake.command_writes == 2

    async with running(bot_with_commands(), fake, monkeypatch):
        assert fake.command_writes == 2  # starting again re-registers nothing


async def test_single_command_upsert_and_naming_rules(fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> None:
    bot = make_bot()
    async with running(bot, fake, monkeypatch):
        with pytest.raises(discord.HTTPException) as error:
            await bot.http.bulk_upsert_global_commands(
                fake.application_id, [{"name": "Transcribe", "description": "capital letters", "type": 1}]
            )
        assert error.value.code == 50035 and fake.command_writes == 0

        command = {"name": "transcribe", "description": "first", "type": 1}
        created = await bot.http.upsert_global_command(fake.application_id, command)
        updated = await bot.http.upsert_global_command(fake.application_id, {**command, "description": "second"})
        assert [r.status for r in fake.requests if r.method == "POST" and "/commands" in r.route] == [201, 200]
        assert updated["id"] == created["id"] and [c["description"] for c in fake.commands()] == ["second"]


@pytest.mark.parametrize("where", ["guild", "dm"])
async def test_message_context_menu_defers_then_follows_up(
    fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch, ogg: bytes, where: str
) -> None:
    bot = make_bot(message_content=False)  # context-menu targets are exempt from the intent
    seen: list[discord.Message] = []

    async def transcribe(interaction: discord.Interaction, message: discord.Message) -> None:
        seen.append(message)
        await interaction.response.defer(thinking=True)
        audio = await message.attachments[0].read()
        await interaction.followup.send(f"{len(audio)} bytes, {message.attachments[0].duration} s")

    bot.tree.add_command(app_commands.ContextMenu(name="Transcribe", callback=transcribe))
    channel_id = fake.text_channel.id if where == "guild" else fake.dm_channel(fake.user).id
    async with running(bot, fake, monkeypatch):
        await bot.tree.sync()
        target = await fake.dispatch_voice_message(channel_id, fake.user, ogg, 1.5)
        interaction = await fake.dispatch_interaction(
            "Transcribe", user=fake.user, channel_id=channel_id, target_message_id=target["id"]
        )
        assert interaction["data"]["type"] == 3 and interaction["data"]["target_id"] == target["id"]
        assert ("member" in interaction) == (where == "guild") and ("user" in interaction) == (where == "dm")

        await fake.wait_for_request("POST", "/webhooks/{webhook_id}/{webhook_token}")
        callback, followup = fake.interaction_responses(interaction["id"])
        assert callback.kind == "callback"
        assert callback.callback_type == CallbackType.DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE
        assert followup.kind == "followup" and followup.json["content"] == f"{len(ogg)} bytes, 1.5 s"
        # The first followup after a deferral fills the "thinking" message instead of adding one.
        assert followup.message["id"] == callback.message["id"]
        assert followup.message["flags"] & MessageFlag.LOADING == 0
        assert followup.message["type"] == 23 and followup.message["message_reference"]["message_id"] == target["id"]
        assert seen[0].id == int(target["id"]) and seen[0].flags.voice and seen[0].attachments[0].is_voice_message()


async def test_slash_command_with_options_responds_once(fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> None:
    bot = make_bot()

    @bot.tree.command(name="echo", description="Repeat text")
    async def echo(interaction: discord.Interaction, text: str, times: int = 1) -> None:
        await interaction.response.send_message(text * times)

    async with running(bot, fake, monkeypatch):
        await bot.tree.sync()
        interaction = await fake.dispatch_interaction(
            "echo", user=fake.user, channel_id=fake.text_channel.id, options={"text": "hi ", "times": 2}
        )
        callback_route = "/interactions/{webhook_id}/{webhook_token}/callback"
        request = await fake.wait_for_request("POST", callback_route)
        assert request.query == {"with_response": "1"} and request.status == 200
        (reply,) = fake.interaction_responses(interaction["id"])
        assert reply.callback_type == CallbackType.CHANNEL_MESSAGE_WITH_SOURCE
        assert reply.message["content"] == "hi hi " and reply.message["type"] == 20

        # Discord rejects a second initial response, whoever sends it.
        async with aiohttp.ClientSession() as session:
            url = f"{fake.api_base}/interactions/{interaction['id']}/{interaction['token']}/callback"
            async with session.post(url, json={"type": 4, "data": {"content": "again"}}) as again:
                assert again.status == 400 and (await again.json())["code"] == 40060


async def test_late_interaction_response_is_unknown(fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> None:
    bot = make_bot()
    failed: asyncio.Future[app_commands.AppCommandError] = asyncio.get_running_loop().create_future()

    @bot.tree.command(name="slow", description="Answers too late")
    async def slow(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("done")

    @bot.tree.error
    async def on_app_command_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        failed.set_result(error)

    fake.interaction_deadline = 0.0  # every response is past the deadline
    async with running(bot, fake, monkeypatch):
        await bot.tree.sync()
        interaction = await fake.dispatch_interaction("slow", user=fake.user, channel_id=fake.text_channel.id)
        await fake.wait_for_request("POST", "/interactions/{webhook_id}/{webhook_token}/callback")
        error = await asyncio.wait_for(failed, TIMEOUT)
        assert isinstance(error, app_commands.CommandInvokeError)
        assert isinstance(error.original, discord.NotFound) and error.original.code == 10062
        assert fake.interaction_responses(interaction["id"]) == []


async def test_interactions_need_registered_commands(fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> None:
    async with running(make_bot(), fake, monkeypatch):
        with pytest.raises(LookupError):
            await fake.dispatch_interaction("transcribe", user=fake.user, channel_id=fake.text_channel.id)
        fake.register_commands([{"name": "transcribe", "description": "seeded", "type": 1}])
        interaction = await fake.dispatch_interaction("transcribe", user=fake.user, channel_id=fake.text_channel.id)
        assert interaction["data"]["id"] == fake.commands()[0]["id"] and fake.command_writes == 0


async def test_attachment_option_is_resolved(fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch, ogg: bytes) -> None:
    bot = make_bot()
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    @bot.tree.command(name="transcribe", description="Transcribe an audio file")
    async def transcribe(interaction: discord.Interaction, audio: discord.Attachment) -> None:
        await interaction.response.defer()
        received.set_result(await audio.read())
        await interaction.edit_original_response(content=f"{audio.filename}: {audio.content_type}")

    async with running(bot, fake, monkeypatch):
        await bot.tree.sync()
        interaction = await fake.dispatch_interaction(
            "transcribe", user=fake.user, channel_id=fake.text_channel.id,
            options={"audio": FakeFile(ogg, "memo.ogg")},
        )
        assert await asyncio.wait_for(received, TIMEOUT) == ogg
        await fake.wait_for(lambda: len(fake.interaction_responses(interaction["id"])) == 2)
        _, edit = fake.interaction_responses(interaction["id"])
        assert edit.kind == "edit" and edit.message["content"] == "memo.ogg: audio/ogg"


async def test_followup_before_any_response_is_an_unknown_webhook(
    fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(make_bot(), fake, monkeypatch):
        fake.register_commands([{"name": "ping", "description": "ping", "type": 1}])
        interaction = await fake.dispatch_interaction("ping", user=fake.user, channel_id=fake.text_channel.id)
        async with aiohttp.ClientSession() as session:
            url = f"{fake.api_base}/webhooks/{fake.application_id}/{interaction['token']}"
            async with session.post(url, json={"content": "too early"}) as response:
                assert response.status == 404 and (await response.json())["code"] == 10015


VALID_OPTION = {"name": "mode", "description": "How to answer", "type": 3, "required": True,
                "choices": [{"name": "text", "value": "text", "name_localizations": {"zh-CN": "文字"}}]}


@pytest.mark.parametrize(("broken", "problem"), [
    ({"description": "x" * 101}, "description"),
    ({"description_localizations": {"zh": "中文"}}, "LOCALE_INVALID"),  # Discord's locale is zh-CN
    ({"description_localizations": {"zh-TW": ""}}, "description_localizations"),
    ({"options": [{**VALID_OPTION, "description": ""}]}, "options"),
    ({"options": [{**VALID_OPTION, "name": "Mode"}]}, "APPLICATION_COMMAND_INVALID_NAME"),
    ({"options": [{**VALID_OPTION, "choices": [{"name": str(n), "value": str(n)} for n in range(26)]}]}, "choices"),
    ({"options": [{**VALID_OPTION, "autocomplete": True}]}, "AUTOCOMPLETE"),
    ({"options": [{**VALID_OPTION, "required": False}, VALID_OPTION | {"name": "other"}]}, "REQUIRED"),
])
def test_command_payloads_are_held_to_discords_rules(broken: dict[str, Any], problem: str) -> None:
    fake = FakeDiscord()
    command = {"name": "mode", "description": "Answer with text, voice or both", "type": 1, "options": [VALID_OPTION],
               "description_localizations": {"zh-CN": "设置回复方式", "zh-TW": "設定回覆方式"}}
    fake.register_commands([command])  # the valid one is taken
    with pytest.raises(ValueError, match=problem):
        fake.register_commands([{**command, **broken}])


def test_context_menu_names_are_localized_within_32_characters() -> None:
    fake = FakeDiscord()
    fake.register_commands([{"name": "Transcribe", "type": 3, "name_localizations": {"zh-CN": "转写", "zh-TW": "轉錄"}}])
    with pytest.raises(ValueError, match="name_localizations"):
        fake.register_commands([{"name": "Transcribe", "type": 3, "name_localizations": {"zh-TW": "轉" * 33}}])
