"""discord.py glue: messages and app commands in, plugin calls, Discord API calls out.

In a host bot, one line (configuration from the environment, as ``voicebridge run`` reads it)::

    await bot.load_extension("voicebridge.discord")

or, to pass your own plugin (with a responder)::

    await bot.add_cog(VoiceNotesCog(bot, plugin))
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from voicebridge.speech.errors import pick_language
from voicebridge.voice_notes.messages import COMMAND_DESCRIPTIONS
from voicebridge.voice_notes.model import (
    Activity,
    ChatKind,
    ChatRef,
    CommandRequest,
    DownloadFailed,
    Person,
    VoiceNotAllowed,
    VoiceNote,
    VoiceReply,
)
from voicebridge.voice_notes.plugin import VoiceNotesPlugin
from voicebridge.voice_notes.store import StoreError

log = logging.getLogger(__name__)

PLATFORM = "discord"
AnyBot = commands.Bot | commands.AutoShardedBot
DEFAULT_API_BASE = "https://discord.com/api/v10"
NO_PINGS = discord.AllowedMentions.none()  # a transcript may say "@everyone"
MIN_EDIT_INTERVAL = 1.0  # per-channel rate limits allow about 5 per 5 s (undocumented)
AUDIO_EXTENSIONS = ("ogg", "oga", "opus", "mp3", "m4a", "wav", "flac", "aac", "amr", "webm", "mp4")
COMMANDS_MARKER = "discord:commands:{application_id}"
_PERMISSION_CODES = {50001, 50013, 50173}  # missing access / permissions; voice messages not allowed here


def use_api_base(api_base: str) -> None:
    """Point discord.py's REST calls at ``api_base`` (DISCORD_API_BASE). The gateway address then
    comes from that server's ``GET /gateway/bot``, which an ``AutoShardedBot`` asks for itself."""
    discord.http.Route.BASE = api_base.rstrip("/")


def is_audio(attachment: discord.Attachment) -> bool:
    content_type = (attachment.content_type or "").split(";")[0].strip().lower()
    if content_type.startswith("audio/") or content_type == "video/mp4" or attachment.is_voice_message():
        return True
    return attachment.filename.rsplit(".", 1)[-1].lower() in AUDIO_EXTENSIONS


def _language(locale: discord.Locale | None) -> str | None:
    return str(locale) if locale is not None else None


def chat_ref(channel: discord.abc.Messageable) -> ChatRef:
    private = isinstance(channel, discord.DMChannel | discord.GroupChannel)
    return ChatRef(PLATFORM, str(getattr(channel, "id", "")), ChatKind.PRIVATE if private else ChatKind.GROUP)


def voice_note(message: discord.Message, language: str | None) -> VoiceNote | None:
    """The first audio attachment of a message, or None."""
    attachment = next((item for item in message.attachments if is_audio(item)), None)
    if attachment is None:
        return None
    return attachment_note(attachment, message.channel, str(message.id), message.author, language)


def attachment_note(attachment: discord.Attachment, channel: Any, message_id: str,
                    author: discord.User | discord.Member, language: str | None) -> VoiceNote:
    async def fetch() -> bytes:
        try:
            return await attachment.read()
        except discord.HTTPException as error:
            # The CDN URL is signed; only the status goes into the error.
            raise DownloadFailed(f"Discord attachment: HTTP {error.status}") from None

    return VoiceNote(
        chat=chat_ref(channel),
        message_id=message_id,
        sender=Person(str(author.id), author.display_name, language),
        cache_key=_cache_key(attachment),
        fetch=fetch,
        mime_type=attachment.content_type,
        file_name=attachment.filename,
        declared_seconds=attachment.duration,
        declared_bytes=attachment.size,
        speaker=author.display_name,
    )


def _cache_key(attachment: discord.Attachment) -> str:
    """A voice message's size, duration and waveform fingerprint its audio, so a re-post of the
    same recording (new attachment id) hits the cache; other files are keyed by attachment."""
    if attachment.waveform:
        fingerprint = f"{attachment.size}:{attachment.duration}:{attachment.waveform.hex()}"
        return "voice:" + hashlib.sha256(fingerprint.encode()).hexdigest()
    return f"attachment:{attachment.id}"


class VoiceMessageFile(discord.File):
    """An OGG/Opus file sent as a native voice message: discord.py 2.7 does not send the
    attachment metadata (``duration_secs``, ``waveform``) that Discord requires for one."""

    def __init__(self, voice: VoiceReply) -> None:
        super().__init__(io.BytesIO(voice.data), filename="voice-message.ogg")
        self.voice = voice

    def to_dict(self, index: int) -> dict[str, Any]:
        payload = super().to_dict(index)
        payload["duration_secs"] = round(self.voice.seconds, 2)
        payload["waveform"] = base64.b64encode(self.voice.waveform).decode("ascii")
        return payload


def _manages_server(permissions: discord.Permissions) -> bool:
    return permissions.manage_guild or permissions.administrator


@contextmanager
def _refusals(voice: VoiceReply, upload_limit: int) -> Iterator[None]:
    """An upload Discord will not take here (too large, no permission, not in this channel)
    becomes :class:`VoiceNotAllowed`, so the plugin moves on to the next way of answering."""
    if len(voice.data) > upload_limit:
        raise VoiceNotAllowed("larger than this channel's upload limit")
    try:
        yield
    except discord.HTTPException as error:
        if error.status == 413 or (error.status == 403 and error.code in _PERMISSION_CODES):
            raise VoiceNotAllowed(f"{error.status} {error.code}: {error.text}") from error
        raise


class ChannelChat:
    """The plugin's port for a Discord channel, answering a message there."""

    max_text_length = 2000
    needs_waveform = True
    min_edit_interval = MIN_EDIT_INTERVAL

    def __init__(self, bot: AnyBot, channel: discord.abc.Messageable) -> None:
        self.bot = bot
        self.channel = channel

    @staticmethod
    def text_length(text: str) -> int:
        return len(text)

    def _reference(self, reply_to: str | None) -> discord.MessageReference | None:
        if reply_to is None:
            return None
        # If the note was deleted meanwhile, the answer still goes out, just not as a reply.
        return discord.MessageReference(message_id=int(reply_to), channel_id=self.channel.id,  # type: ignore[attr-defined]
                                        fail_if_not_exists=False)

    @property
    def upload_limit(self) -> int:
        guild = getattr(self.channel, "guild", None)
        return guild.filesize_limit if guild is not None else discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES

    async def send_text(self, text: str, reply_to: str | None) -> str:
        message = await self.channel.send(text, reference=self._reference(reply_to),  # type: ignore[arg-type]
                                           allowed_mentions=NO_PINGS, mention_author=False)
        return str(message.id)

    async def edit_text(self, message_id: str, text: str) -> None:
        await self.channel.get_partial_message(int(message_id)).edit(content=text, allowed_mentions=NO_PINGS)  # type: ignore[attr-defined]

    async def send_voice(self, voice: VoiceReply, reply_to: str | None) -> str:
        reference = self._reference(reply_to)
        params = discord.http.handle_message_parameters(
            file=VoiceMessageFile(voice), flags=discord.MessageFlags(voice=True),
            message_reference=reference.to_message_reference_dict() if reference else discord.utils.MISSING,  # type: ignore[arg-type]
            allowed_mentions=NO_PINGS, mention_author=False)
        with params, _refusals(voice, self.upload_limit):
            assert params.multipart is not None  # a message with a file is multipart
            params.multipart[1]["content_type"] = "audio/ogg"  # discord.py would say application/octet-stream
            data = await self.bot.http.send_message(self.channel.id, params=params)  # type: ignore[attr-defined]
        return str(data["id"])

    async def send_audio(self, voice: VoiceReply, reply_to: str | None) -> str:
        with _refusals(voice, self.upload_limit):
            message = await self.channel.send(file=discord.File(io.BytesIO(voice.data), filename="reply.ogg"),
                                              reference=self._reference(reply_to),  # type: ignore[arg-type]
                                              allowed_mentions=NO_PINGS, mention_author=False)
        return str(message.id)

    @asynccontextmanager
    async def activity(self, kind: Activity) -> AsyncIterator[None]:
        try:
            async with self.channel.typing():  # re-sent every few seconds by discord.py
                yield
        except discord.HTTPException as error:  # typing is a courtesy
            log.debug("typing indicator failed: %s", error)

    async def is_admin(self, user_id: str) -> bool:
        guild = getattr(self.channel, "guild", None)
        member = guild.get_member(int(user_id)) if guild is not None else None
        return member is not None and _manages_server(member.guild_permissions)


class InteractionChat:
    """The plugin's port for an app command: answers are followups to a deferred interaction.

    Native voice messages are not sent as interaction responses (Discord once ignored their
    metadata there), so a spoken answer arrives as an audio file.
    """

    max_text_length = 2000
    needs_waveform = False
    min_edit_interval = MIN_EDIT_INTERVAL

    def __init__(self, interaction: discord.Interaction) -> None:
        self.interaction = interaction

    @staticmethod
    def text_length(text: str) -> int:
        return len(text)

    async def send_text(self, text: str, reply_to: str | None) -> str:
        message = await self.interaction.followup.send(text, allowed_mentions=NO_PINGS, wait=True)
        return str(message.id)

    async def edit_text(self, message_id: str, text: str) -> None:
        await self.interaction.followup.edit_message(int(message_id), content=text, allowed_mentions=NO_PINGS)

    async def send_voice(self, voice: VoiceReply, reply_to: str | None) -> str:
        raise VoiceNotAllowed("interaction responses carry voice as an audio file")

    async def send_audio(self, voice: VoiceReply, reply_to: str | None) -> str:
        with _refusals(voice, self.interaction.filesize_limit):
            message = await self.interaction.followup.send(file=discord.File(io.BytesIO(voice.data), filename="reply.ogg"),
                                                           allowed_mentions=NO_PINGS, wait=True)
        return str(message.id)

    @asynccontextmanager
    async def activity(self, kind: Activity) -> AsyncIterator[None]:
        yield  # a deferred interaction already shows "thinking…"

    async def is_admin(self, user_id: str) -> bool:
        return self.interaction.guild is None or _manages_server(self.interaction.permissions)


class CommandTranslator(app_commands.Translator):
    """Chinese command descriptions for Chinese Discord clients, from the plugin's catalogue."""

    async def translate(self, string: app_commands.locale_str, locale: discord.Locale,
                        context: app_commands.TranslationContextTypes) -> str | None:
        key = string.extras.get("key")
        if key in COMMAND_DESCRIPTIONS and pick_language(str(locale)) == "zh":
            return COMMAND_DESCRIPTIONS[key]["zh"]
        return None


def _described(name: str) -> app_commands.locale_str:
    return app_commands.locale_str(COMMAND_DESCRIPTIONS[name]["en"], key=name)


class VoiceNotesCog(commands.Cog, name="VoiceNotes"):
    """Voice messages and audio attachments in DMs and channels, plus the plugin's app commands."""

    def __init__(self, bot: AnyBot, plugin: VoiceNotesPlugin, *, owns_plugin: bool = False) -> None:
        self.bot = bot
        self.plugin = plugin
        self.owns_plugin = owns_plugin
        self.transcribe_menu = app_commands.ContextMenu(name="Transcribe", callback=self._transcribe_message)
        self.commands_synced = asyncio.Event()  # set once the app commands are registered (or failed to be)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.transcribe_menu)
        if self.bot.tree.translator is None:
            await self.bot.tree.set_translator(CommandTranslator())
        await self.plugin.start()

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.transcribe_menu.name, type=self.transcribe_menu.type)
        if self.owns_plugin:
            await self.plugin.aclose()
            await self.plugin.service.aclose()

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        if not self.bot.intents.message_content:
            log.warning("the Message Content intent is off: voice messages in server channels cannot be seen. "
                        "DMs and the Transcribe context menu still work; enable the intent in the Developer "
                        "Portal (Bot page) to transcribe server channels automatically")
        if self.commands_synced.is_set():
            return  # on_ready comes again after a reconnect
        try:
            await sync_commands_if_changed(self.bot, self.plugin)
        except (discord.HTTPException, app_commands.AppCommandError, StoreError) as error:
            log.warning("could not register the app commands with Discord: %s", error)
        finally:
            self.commands_synced.set()

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or message.webhook_id is not None:
            return  # our own answers and other bots' messages are not for us
        language = _language(message.guild.preferred_locale) if message.guild else None
        note = voice_note(message, language)
        if note is not None:
            await self.plugin.handle_voice_note(note, ChannelChat(self.bot, message.channel))

    async def _run(self, interaction: discord.Interaction, name: str, args: str = "", note: VoiceNote | None = None) -> None:
        """Acknowledge at once (Discord allows 3 s), then let the plugin answer by followups."""
        await interaction.response.defer(thinking=True)
        user = interaction.user
        request = CommandRequest(
            name=name,
            args=args,
            chat=chat_ref(interaction.channel),  # type: ignore[arg-type]
            sender=Person(str(user.id), user.display_name, _language(interaction.locale)),
            message_id=None,
            replied_note=note,
        )
        await self.plugin.handle_command(request, InteractionChat(interaction))

    async def _transcribe_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        await self._run(interaction, "transcribe", note=voice_note(message, _language(interaction.locale)))

    @app_commands.command(name="transcribe", description=_described("transcribe"))
    @app_commands.describe(audio="A voice message or audio file")
    async def transcribe(self, interaction: discord.Interaction, audio: discord.Attachment) -> None:
        note = None
        if is_audio(audio):
            note = attachment_note(audio, interaction.channel, str(interaction.id), interaction.user, _language(interaction.locale))
        await self._run(interaction, "transcribe", note=note)

    @app_commands.command(name="speak", description=_described("speak"))
    async def speak(self, interaction: discord.Interaction, text: str) -> None:
        await self._run(interaction, "speak", text)

    @app_commands.command(name="settings", description=_described("settings"))
    async def settings(self, interaction: discord.Interaction) -> None:
        await self._run(interaction, "settings")

    @app_commands.command(name="mode", description=_described("mode"))
    async def mode(self, interaction: discord.Interaction, mode: Literal["text", "voice", "both"]) -> None:
        await self._run(interaction, "mode", mode)

    @app_commands.command(name="language", description=_described("language"))
    async def language(self, interaction: discord.Interaction, code: str) -> None:
        await self._run(interaction, "language", code)

    @app_commands.command(name="voice", description=_described("voice"))
    async def voice(self, interaction: discord.Interaction, voice_id: str) -> None:
        await self._run(interaction, "voice", voice_id)

    @app_commands.command(name="voices", description=_described("voices"))
    async def voices(self, interaction: discord.Interaction) -> None:
        await self._run(interaction, "voices")

    @app_commands.command(name="auto", description=_described("auto"))
    async def auto(self, interaction: discord.Interaction, state: Literal["on", "off"]) -> None:
        await self._run(interaction, "auto", state)

    @app_commands.command(name="hotwords", description=_described("hotwords"))
    async def hotwords(self, interaction: discord.Interaction, words: str | None = None) -> None:
        await self._run(interaction, "hotwords", words or "")

    @app_commands.command(name="usage", description=_described("usage"))
    async def usage(self, interaction: discord.Interaction) -> None:
        await self._run(interaction, "usage")

    @app_commands.command(name="privacy", description=_described("privacy"))
    async def privacy(self, interaction: discord.Interaction) -> None:
        await self._run(interaction, "privacy")

    @app_commands.command(name="forget", description=_described("forget"))
    async def forget(self, interaction: discord.Interaction) -> None:
        await self._run(interaction, "forget")


async def sync_commands_if_changed(bot: AnyBot, plugin: VoiceNotesPlugin) -> bool:
    """Register the app commands when they differ from the last registration (remembered in the
    store), so restarts do not use up Discord's daily command-creation quota."""
    tree = bot.tree
    translator = tree.translator
    payload = [await command.get_translated_payload(tree, translator) if translator else command.to_dict(tree)
               for command in tree.get_commands()]
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    marker = COMMANDS_MARKER.format(application_id=bot.application_id)
    if await plugin.store.marker(marker) == digest:
        return False
    await tree.sync()
    await plugin.store.set_marker(marker, digest)
    log.info("registered %d app commands with Discord", len(payload))
    return True


async def setup(bot: commands.Bot) -> None:
    """``await bot.load_extension("voicebridge.discord")``: the plugin, configured from the environment."""
    from voicebridge.config import Settings
    from voicebridge.speech.service import SpeechService
    from voicebridge.voice_notes.store import Store

    settings = Settings.load()
    plugin = VoiceNotesPlugin(SpeechService.from_settings(settings.speech), Store(settings.plugin.db_path), settings.plugin)
    await bot.add_cog(VoiceNotesCog(bot, plugin, owns_plugin=True))
