"""Discord events as jobs: the ingress side (the gateway shards' voice messages and app commands
become jobs; interactions are deferred there, within Discord's 3 s) and the worker side (notes
answered in their channel, commands by followups to the deferred interaction, over REST only).

The ingress runs the same Cog as ``voicebridge run``, with :class:`DiscordIntake` in the place
of the plugin: what the Cog would hand the plugin is written down as a job instead. A job holds
the note or command in the plugin's own platform-free terms plus where to answer.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from typing import Any

import discord
from discord.webhook.async_ import async_context

from voicebridge.config import DiscordSettings
from voicebridge.jobs import DeliveryLog, Job, NewJob, PostgresQueue, RecordedChat
from voicebridge.speech.errors import ConfigError
from voicebridge.voice_notes.delivery import send_text
from voicebridge.voice_notes.messages import text
from voicebridge.voice_notes.model import (
    ButtonPress,
    ChatKind,
    ChatPort,
    ChatRef,
    CommandRequest,
    DownloadFailed,
    Person,
    VoiceNote,
)
from voicebridge.voice_notes.plugin import ALL_COMMANDS, VoiceNotesPlugin
from voicebridge.voice_notes.settings import PluginSettings
from voicebridge.voice_notes.store import Store, StoreError

from .discord import DEFAULT_API_BASE, PLATFORM, ChannelChat, InteractionChat, use_api_base
from .runner import StartupError

log = logging.getLogger(__name__)

ENQUEUE_ATTEMPTS = 5  # Discord does not deliver an event again: the database gets a few tries


class DiscordIntake:
    """The plugin's stand-in inside the ingress's Cog: every note and command becomes a job."""

    def __init__(self, queue: PostgresQueue, store: Store, settings: PluginSettings, *,
                 recognition_languages: tuple[str, ...] = ("auto",)) -> None:
        """``recognition_languages``: what the workers' ASR chain honours, offered by /language."""
        self.queue = queue
        self.store = store  # the Cog keeps the command-sync state here
        self.settings = settings
        self.command_names = ALL_COMMANDS
        self.recognition_languages = recognition_languages
        self._tasks: set[asyncio.Task[None]] = set()

    async def voice_choices(self, typed: str, limit: int) -> list[tuple[str, str]]:
        """None: the ingress has no speech service to ask (/voice still takes a typed id)."""
        return []

    async def start(self) -> None:
        """Nothing to start: the workers run the plugin."""

    def run_in_background(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def handle_voice_note(self, note: VoiceNote, chat: ChatPort) -> None:
        assert isinstance(chat, ChannelChat) and isinstance(note.message, discord.Message)
        url = _attachment_url(note.cache_key, note.message.attachments)
        payload = {"platform": PLATFORM, "event": "note", "channel": _channel(chat.channel), "note": note_payload(note, url)}
        await self._enqueue(NewJob(f"{PLATFORM}:message:{note.message_id}", f"{PLATFORM}:{note.chat.id}", payload))

    async def handle_command(self, request: CommandRequest, chat: ChatPort) -> None:
        """Called after the Cog deferred the interaction: the worker answers by followups."""
        assert isinstance(chat, InteractionChat)
        interaction = chat.interaction
        replied = request.replied_note
        url = _interaction_attachment_url(interaction, replied.cache_key) if replied is not None else None
        payload = {
            "platform": PLATFORM, "event": "command",
            "interaction": {"application_id": interaction.application_id, "token": interaction.token,
                            "ephemeral": chat.ephemeral,
                            "in_guild": interaction.guild_id is not None, "permissions": interaction.permissions.value,
                            "filesize_limit": interaction.filesize_limit},
            "request": {**asdict(request), "replied_note": note_payload(replied, url) if replied is not None else None},
        }
        await self._enqueue(NewJob(f"{PLATFORM}:interaction:{interaction.id}", f"{PLATFORM}:{request.chat.id}", payload))

    async def handle_button(self, press: ButtonPress, chat: ChatPort) -> None:
        """A press of one of the plugin's buttons: acknowledged here, within Discord's 3 s (a
        short answer for the presser, if any, comes from the worker as an ephemeral followup)."""
        assert isinstance(chat, ChannelChat)
        await press.acknowledge(None)
        note = await press.note()  # the note the pressed transcript answers, while the gateway side can see it
        url = _attachment_url(note.cache_key, note.message.attachments) if note is not None and note.message else None
        interaction = press.origin if isinstance(press.origin, discord.Interaction) else None
        payload = {
            "platform": PLATFORM, "event": "button", "channel": _channel(chat.channel),
            "press": {"chat": asdict(press.chat), "sender": asdict(press.sender), "data": press.data,
                      "message_id": press.message_id, "chat_language": press.chat_language},
            "interaction": {"application_id": interaction.application_id, "token": interaction.token} if interaction else None,
            "note": note_payload(note, url) if note is not None else None,
        }
        source = f"{PLATFORM}:interaction:{interaction.id if interaction else press.message_id + ':' + press.data}"
        await self._enqueue(NewJob(source, f"{PLATFORM}:{press.chat.id}", payload))

    async def _enqueue(self, job: NewJob) -> None:
        for attempt in range(1, ENQUEUE_ATTEMPTS + 1):
            try:
                await self.queue.enqueue(job)
                log.info("%s queued", job.source)
                return
            except StoreError as error:
                if attempt == ENQUEUE_ATTEMPTS:
                    log.error("%s lost: the job could not be queued: %s", job.source, error)
                    return
                log.warning("cannot queue %s yet, trying again: %s", job.source, error)
                await asyncio.sleep(attempt)

    async def drain(self, timeout: float) -> bool:
        if not self._tasks:
            return True
        _, late = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in late:
            task.cancel()
        return not late

    async def aclose(self) -> None:
        await self.drain(0)


def _channel(channel: Any) -> dict[str, Any]:
    guild = getattr(channel, "guild", None)
    private = isinstance(channel, discord.DMChannel | discord.GroupChannel)
    return {"id": channel.id, "guild_id": guild.id if guild is not None else None, "private": private}


def _attachment_url(cache_key: str, attachments: Any) -> str | None:
    return next((attachment.url for attachment in attachments if f"attachment:{attachment.id}" == cache_key), None)


def _interaction_attachment_url(interaction: discord.Interaction, cache_key: str) -> str | None:
    """An attachment of a slash command option or of the message a context menu was used on, by
    its id, from the interaction's resolved data."""
    resolved = (interaction.data or {}).get("resolved", {})
    candidates = [*resolved.get("attachments", {}).values()]
    for message in resolved.get("messages", {}).values():
        candidates += message.get("attachments", [])
    return next((item["url"] for item in candidates if f"attachment:{item['id']}" == cache_key), None)


def note_payload(note: VoiceNote, url: str | None) -> dict[str, Any]:
    """A note in the job, without what only lives in this process (fetch, platform objects)."""
    return {"chat": asdict(note.chat), "message_id": note.message_id, "sender": asdict(note.sender),
            "cache_key": note.cache_key, "mime_type": note.mime_type, "file_name": note.file_name,
            "declared_seconds": note.declared_seconds, "declared_bytes": note.declared_bytes,
            "download_limit": note.download_limit, "speaker": note.speaker, "chat_language": note.chat_language,
            "url": url}


def _chat_ref(data: dict[str, Any]) -> ChatRef:
    return ChatRef(data["platform"], data["id"], ChatKind(data["kind"]))


class DiscordJobRunner:
    """Answers Discord jobs over REST: no gateway connection in a worker."""

    def __init__(self, client: discord.Client, plugin: VoiceNotesPlugin) -> None:
        self.client = client
        self.plugin = plugin

    async def run(self, job: Job, deliveries: DeliveryLog) -> None:
        payload = job.payload
        chat = RecordedChat(self._port(payload), deliveries, job.id)
        if payload["event"] == "note":
            await self.plugin.handle_voice_note(self._note(payload["note"]), chat)
        elif payload["event"] == "button":
            await self.plugin.handle_button(self._press(payload), chat)
        else:
            data = payload["request"]
            request = CommandRequest(
                name=data["name"], args=data["args"], chat=_chat_ref(data["chat"]), sender=Person(**data["sender"]),
                message_id=data["message_id"], replied_text=data["replied_text"], chat_language=data["chat_language"],
                replied_note=self._note(data["replied_note"]) if data["replied_note"] else None)
            await self.plugin.handle_command(request, chat)

    async def give_up(self, job: Job, deliveries: DeliveryLog) -> None:
        payload = job.payload
        if payload["event"] == "button":
            return  # a press that keeps failing is let go: its button can be pressed again
        chat = RecordedChat(self._port(payload), deliveries, job.id)
        if payload["event"] == "note":
            note = payload["note"]
            await send_text(chat, text("unexpected_error", note["sender"]["language"]), note["message_id"])
        else:
            await send_text(chat, text("unexpected_error", payload["request"]["sender"]["language"]), None)

    def _press(self, payload: dict[str, Any]) -> ButtonPress:
        """The press as the ingress saw it; it was acknowledged there, so what is left to say to
        the presser goes as an ephemeral followup."""
        data = payload["press"]
        interaction = payload["interaction"]
        note = self._note(payload["note"]) if payload["note"] else None

        async def acknowledge(message: str | None) -> None:
            if message is not None and interaction is not None:
                followup = discord.Webhook.partial(interaction["application_id"], interaction["token"], client=self.client)
                await followup.send(message, ephemeral=True)

        async def replied_note() -> VoiceNote | None:
            return note

        return ButtonPress(chat=_chat_ref(data["chat"]), sender=Person(**data["sender"]), data=data["data"],
                           message_id=data["message_id"], acknowledge=acknowledge, note=replied_note,
                           chat_language=data["chat_language"])

    def _port(self, payload: dict[str, Any]) -> ChatPort:
        if payload["event"] in ("note", "button"):
            channel = payload["channel"]
            kind = discord.ChannelType.private if channel["private"] else discord.ChannelType.text
            messageable = self.client.get_partial_messageable(channel["id"], guild_id=channel["guild_id"], type=kind)
            return ChannelChat(self.client, messageable)  # type: ignore[arg-type]  # a REST-only client answers
        interaction = payload["interaction"]
        # An application webhook, as discord.py's Interaction.followup builds it: only those send
        # ephemeral followups (a partial webhook is an incoming one).
        followup = discord.Webhook.from_state({"id": interaction["application_id"], "type": 3, "token": interaction["token"]},
                                              state=self.client._connection)
        deferred = DeferredInteraction(followup, interaction["filesize_limit"], interaction["in_guild"] or None,
                                       discord.Permissions(interaction["permissions"]))
        return InteractionChat(self.client, deferred, ephemeral=interaction.get("ephemeral", False))  # type: ignore[arg-type]

    def _note(self, data: dict[str, Any]) -> VoiceNote:
        url = data["url"]
        http = self.client.http

        async def fetch() -> bytes:
            if not url:
                raise DownloadFailed("Discord attachment: no URL in the job")
            try:
                return await http.get_from_cdn(url)
            except discord.HTTPException as error:
                raise DownloadFailed(f"Discord attachment: HTTP {error.status}") from None  # the URL is signed: kept out

        return VoiceNote(chat=_chat_ref(data["chat"]), message_id=data["message_id"], sender=Person(**data["sender"]),
                         cache_key=data["cache_key"], fetch=fetch, mime_type=data["mime_type"], file_name=data["file_name"],
                         declared_seconds=data["declared_seconds"], declared_bytes=data["declared_bytes"],
                         download_limit=data["download_limit"], speaker=data["speaker"], chat_language=data["chat_language"])


@dataclass(frozen=True)
class DeferredInteraction:
    """What :class:`InteractionChat` needs of an interaction the ingress deferred: its followup
    webhook (valid for 15 minutes) and what Discord said about where it was used."""

    followup: discord.Webhook
    filesize_limit: int
    guild: bool | None  # None in DMs: there every user may change their own settings
    permissions: discord.Permissions

    async def delete_original_response(self) -> None:
        """As :meth:`discord.Interaction.delete_original_response`, by the followup webhook's token."""
        followup = self.followup
        assert followup.token is not None
        await async_context.get().delete_original_interaction_response(
            followup.id, followup.token, session=followup.session, proxy=followup.proxy, proxy_auth=followup.proxy_auth)


async def discord_job_runner(settings: DiscordSettings, plugin: VoiceNotesPlugin, cleanup: AsyncExitStack) -> DiscordJobRunner:
    """A REST-only client logged in with the bot token (no gateway), closed by ``cleanup``."""
    if settings.api_base != DEFAULT_API_BASE:
        use_api_base(settings.api_base)
    client = discord.Client(intents=discord.Intents.none())
    cleanup.push_async_callback(client.close)
    try:
        await client.login(settings.token or "")
    except discord.LoginFailure:
        raise ConfigError("DISCORD_BOT_TOKEN was rejected by Discord (check it in the Developer Portal)") from None
    except (discord.HTTPException, OSError) as error:
        raise StartupError(f"cannot reach the Discord API: {error}") from None
    return DiscordJobRunner(client, plugin)
