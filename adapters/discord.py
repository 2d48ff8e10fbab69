"""discord.py glue: messages and app commands in, plugin calls, Discord API calls out.

In a host bot, one line (configuration from the environment, as ``voicebridge run`` reads it)::

    await bot.load_extension("voicebridge.discord")

with ``bot.voicebridge_options = voicebridge.Options(...)`` set before it to pass a responder,
commands or settings. Every transcript is also dispatched as a ``voice_transcript`` event
(``on_voice_transcript(message, transcript)``). ``unload_extension`` / ``reload_extension``
leave nothing behind.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from voicebridge.options import Options, build_plugin
from voicebridge.voice_notes.buttons import BUTTON_PREFIX
from voicebridge.voice_notes.messages import TABLES
from voicebridge.voice_notes.model import (
    Activity,
    Button,
    ButtonPress,
    ChatKind,
    ChatRef,
    CommandRequest,
    DownloadFailed,
    Person,
    TextMessage,
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
COMMANDS_MARKER = "discord:commands:{application_id}"  # sync="all": digest of the whole tree
OWN_COMMANDS_MARKER = "discord:own-commands:{application_id}"  # sync="own": id and digest of each of ours
TRANSCRIPT_EVENT = "voice_transcript"  # on_voice_transcript(message, transcript)
_PERMISSION_CODES = {50001, 50013, 50173}  # missing access / permissions; voice messages not allowed here
# Answered only to whoever asked (ephemeral) in server channels: settings, their refusals, usage,
# privacy, help. Transcripts, spoken texts and an agent's answers stay in the channel.
PRIVATE_ANSWERS = frozenset({"help", "settings", "mode", "language", "voice", "voices", "auto", "hotwords", "usage",
                             "privacy", "forget"})
MAX_CHOICES = 25  # Discord: choices and autocomplete results per option
# Discord's Chinese locales and the catalogue language each reads.
CHINESE_LOCALES = {discord.Locale.chinese: "zh", discord.Locale.taiwan_chinese: "zh-hant"}


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


def voice_note(message: discord.Message, *, sender_language: str | None = None) -> VoiceNote | None:
    """The first audio attachment of a message, or None."""
    attachment = next((item for item in message.attachments if is_audio(item)), None)
    if attachment is None:
        return None
    return attachment_note(attachment, message.channel, str(message.id), message.author,
                           sender_language=sender_language, message=message)


def attachment_note(attachment: discord.Attachment, channel: Any, message_id: str, author: discord.User | discord.Member, *,
                    sender_language: str | None = None, message: discord.Message | None = None) -> VoiceNote:
    async def fetch() -> bytes:
        try:
            return await attachment.read()
        except discord.HTTPException as error:
            # The CDN URL is signed; only the status goes into the error.
            raise DownloadFailed(f"Discord attachment: HTTP {error.status}") from None

    guild = getattr(channel, "guild", None)
    return VoiceNote(
        chat=chat_ref(channel),
        message_id=message_id,
        sender=Person(str(author.id), author.display_name, sender_language),
        # Discord assigns attachment ids; size, duration and waveform are the sender's to choose.
        cache_key=f"attachment:{attachment.id}",
        fetch=fetch,
        mime_type=attachment.content_type,
        file_name=attachment.filename,
        declared_seconds=attachment.duration,
        declared_bytes=attachment.size,
        speaker=author.display_name,
        chat_language=_language(guild.preferred_locale) if guild is not None else None,
        message=message,
    )


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


def components(buttons: Sequence[Button]) -> discord.ui.View | None:
    """The buttons as message components. The view is stopped before it is sent: discord.py
    then keeps no state for it (presses are read from their custom_id, by the Cog, from the
    store), and edits with no buttons remove them (``None``)."""
    if not buttons:
        return None
    view = discord.ui.View(timeout=None)
    for button in buttons:
        view.add_item(discord.ui.Button(label=button.label, custom_id=button.data, style=discord.ButtonStyle.secondary))
    view.stop()
    return view


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

    async def send_text(self, text: str, reply_to: str | None, buttons: Sequence[Button] = ()) -> str:
        view = components(buttons)
        message = await self.channel.send(text, reference=self._reference(reply_to),  # type: ignore[arg-type, call-overload]
                                           allowed_mentions=NO_PINGS, mention_author=False,
                                           **({"view": view} if view is not None else {}))
        return str(message.id)

    async def edit_text(self, message_id: str, text: str, buttons: Sequence[Button] = ()) -> None:
        await self.channel.get_partial_message(int(message_id)).edit(  # type: ignore[attr-defined]
            content=text, allowed_mentions=NO_PINGS, view=components(buttons))

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

    async def report_error(self, error: BaseException) -> None:
        await report_to_host(self.bot, error)


class InteractionChat:
    """The plugin's port for an app command: answers are followups to a deferred interaction.

    Native voice messages are not sent as interaction responses (Discord once ignored their
    metadata there), so a spoken answer arrives as an audio file. ``ephemeral``: the interaction
    was deferred as one only its user sees, and so is every followup.
    """

    max_text_length = 2000
    needs_waveform = False
    min_edit_interval = MIN_EDIT_INTERVAL

    def __init__(self, bot: AnyBot, interaction: discord.Interaction, *, ephemeral: bool = False) -> None:
        self.bot = bot
        self.interaction = interaction
        self.ephemeral = ephemeral
        self._answered = False  # a followup has filled the deferred "thinking…" response

    @staticmethod
    def text_length(text: str) -> int:
        return len(text)

    async def send_text(self, text: str, reply_to: str | None, buttons: Sequence[Button] = ()) -> str:
        view = components(buttons)
        message = await self.interaction.followup.send(text, allowed_mentions=NO_PINGS, wait=True, ephemeral=self.ephemeral,
                                                       **({"view": view} if view is not None else {}))
        self._answered = True
        return str(message.id)

    async def send_notice(self, text: str, reply_to: str | None) -> str:
        """A refusal or an error, for the user who asked only. A public "thinking…" response
        cannot turn ephemeral: it is deleted, and the notice follows as an ephemeral message."""
        in_server = self.interaction.guild is not None
        if in_server and not self.ephemeral and not self._answered:
            try:
                await self.interaction.delete_original_response()
            except discord.HTTPException as error:  # then it fills the public response, as before
                log.debug("could not delete the deferred response: %s", error)
                return await self.send_text(text, reply_to)
            self._answered = True  # the next followup is a message of its own
        message = await self.interaction.followup.send(text, allowed_mentions=NO_PINGS, wait=True, ephemeral=in_server)
        self._answered = True
        return str(message.id)

    async def edit_text(self, message_id: str, text: str, buttons: Sequence[Button] = ()) -> None:
        await self.interaction.followup.edit_message(int(message_id), content=text, allowed_mentions=NO_PINGS,
                                                     view=components(buttons))

    async def send_voice(self, voice: VoiceReply, reply_to: str | None) -> str:
        raise VoiceNotAllowed("interaction responses carry voice as an audio file")

    async def send_audio(self, voice: VoiceReply, reply_to: str | None) -> str:
        with _refusals(voice, self.interaction.filesize_limit):
            message = await self.interaction.followup.send(file=discord.File(io.BytesIO(voice.data), filename="reply.ogg"),
                                                           allowed_mentions=NO_PINGS, wait=True, ephemeral=self.ephemeral)
        self._answered = True
        return str(message.id)

    @asynccontextmanager
    async def activity(self, kind: Activity) -> AsyncIterator[None]:
        yield  # a deferred interaction already shows "thinking…"

    async def is_admin(self, user_id: str) -> bool:
        return self.interaction.guild is None or _manages_server(self.interaction.permissions)

    async def report_error(self, error: BaseException) -> None:
        await report_to_host(self.bot, error)


def button_press(bot: AnyBot, interaction: discord.Interaction) -> tuple[ChannelChat, ButtonPress]:
    """A component interaction on one of the plugin's messages, and the channel to answer in."""
    message = interaction.message
    user = interaction.user
    guild = interaction.guild

    async def acknowledge(text: str | None) -> None:
        if interaction.response.is_done():
            return
        if text is None:
            await interaction.response.defer()  # "deferred update": the message stays as it is
        else:
            await interaction.response.send_message(text, ephemeral=True)

    async def note() -> VoiceNote | None:
        reference = message.reference if message is not None else None
        if reference is None or reference.message_id is None:
            return None
        try:
            replied = reference.resolved if isinstance(reference.resolved, discord.Message) else \
                await interaction.channel.fetch_message(reference.message_id)  # type: ignore[union-attr]
        except discord.HTTPException as error:
            log.info("the note a button was for is gone: %s", error)
            return None
        return voice_note(replied, sender_language=_language(interaction.locale))

    press = ButtonPress(
        # The channel may be only partly known (a DM's PartialMessageable): no guild means private.
        chat=ChatRef(PLATFORM, str(interaction.channel_id), ChatKind.PRIVATE if guild is None else ChatKind.GROUP),
        sender=Person(str(user.id), user.display_name, _language(interaction.locale)),
        data=str((interaction.data or {}).get("custom_id", "")),
        message_id=str(message.id) if message is not None else "",
        acknowledge=acknowledge,
        note=note,
        chat_language=_language(guild.preferred_locale) if guild is not None else None,
        origin=interaction,
    )
    return ChannelChat(bot, interaction.channel), press  # type: ignore[arg-type]


async def report_to_host(bot: AnyBot, error: BaseException) -> None:
    """Through the bot's ``on_error``, as discord.py reports an event's error (it logs it unless
    the host handles it); called from the ``except`` block that caught ``error``."""
    try:
        await bot.on_error("voicebridge_reply", error)
    except Exception:
        log.exception("the host's on_error failed")


class CommandTranslator(app_commands.Translator):
    """Simplified (zh-CN) and Traditional (zh-TW) Chinese for Discord's Chinese clients: command
    and option descriptions, choice and context-menu names, from the plugin's catalogues. A
    string names its table and key in its extras (see :func:`_localized`)."""

    async def translate(self, string: app_commands.locale_str, locale: discord.Locale,
                        context: app_commands.TranslationContextTypes) -> str | None:
        table = TABLES.get(string.extras.get("table", "commands"))
        key = string.extras.get("key")
        language = CHINESE_LOCALES.get(locale)
        if table is None or language is None or key not in table:
            return None
        return table[key][language]


def _localized(table: str, key: str) -> app_commands.locale_str:
    """A command's text in English, translated by :class:`CommandTranslator` from ``TABLES[table][key]``."""
    return app_commands.locale_str(TABLES[table][key]["en"], table=table, key=key)


def _described(name: str) -> app_commands.locale_str:
    return _localized("commands", name)


def _option(command: str, option: str) -> app_commands.locale_str:
    return _localized("options", f"{command}.{option}")


def _choice(table: str, key: str, value: str) -> app_commands.Choice[str]:
    return app_commands.Choice(name=_localized(table, key), value=value)


def _with_language_choices(command: app_commands.Command[Any, ..., Any], codes: tuple[str, ...]) -> None:
    """/language offers the languages this bot's speech service recognises, by name. The
    parameter is replaced, not changed: the class's command shares it with every Cog."""
    parameter = command._params["code"]
    choices = [_choice("languages", code, code) for code in codes if code in TABLES["languages"]][:MAX_CHOICES]
    command._params["code"] = replace(parameter, choices=choices)


class VoiceNotesCog(commands.Cog, name="VoiceNotes"):
    """Voice messages and audio attachments in DMs and channels, plus the plugin's app commands.

    Only the commands the plugin answers are added, and none whose name the host's command tree
    already holds (skipped with a warning). ``sync`` decides what is registered with Discord:
    ``own`` creates or edits voicebridge's commands one by one, only when they changed; ``all``
    overwrites the whole tree (a bot voicebridge owns); ``none`` leaves the registry alone.
    """

    def __init__(self, bot: AnyBot, plugin: VoiceNotesPlugin, *, sync: str = "own", owns_plugin: bool = False) -> None:
        self.bot = bot
        self.plugin = plugin
        self.sync = sync
        self.owns_plugin = owns_plugin
        self.transcribe_menu = app_commands.ContextMenu(name=_localized("menus", "transcribe"), callback=self._transcribe_message)
        self.ask_menu = app_commands.ContextMenu(name=_localized("menus", "ask"), callback=self._ask_about_message)
        self.commands_synced = asyncio.Event()  # set once the app commands are registered (or failed to be)
        self._own_translator: CommandTranslator | None = None
        self._sync_task: asyncio.Task[None] | None = None
        offered = set(plugin.command_names)
        self.__cog_app_commands__ = [command for command in self.__cog_app_commands__ if command.name in offered]
        for command in self.__cog_app_commands__:
            if command.name == "language" and isinstance(command, app_commands.Command):
                _with_language_choices(command, plugin.recognition_languages)
        self._menus = [menu for name, menu in (("transcribe", self.transcribe_menu), ("ask", self.ask_menu)) if name in offered]

    async def cog_load(self) -> None:
        tree = self.bot.tree
        kept = []
        for command in self.__cog_app_commands__:
            if tree.get_command(command.name) is None:
                kept.append(command)
            else:
                log.warning("the bot already has a /%s command; voicebridge leaves it to the bot and offers none", command.name)
        self.__cog_app_commands__ = kept
        for menu in list(self._menus):
            if tree.get_command(menu.name, type=menu.type) is None:
                tree.add_command(menu)
            else:
                log.warning("the bot already has a %r message command; voicebridge offers none", menu.name)
                self._menus.remove(menu)
        if self.sync == "all" and tree.translator is None:
            self._own_translator = CommandTranslator()
            await tree.set_translator(self._own_translator)
        await self.plugin.start()
        if self.bot.is_ready():  # loaded into a running bot: there will be no READY to wait for
            self._sync_task = asyncio.create_task(self._register_commands())

    async def cog_unload(self) -> None:
        tree = self.bot.tree
        for menu in self._menus:
            tree.remove_command(menu.name, type=menu.type)
        if self._own_translator is not None and tree.translator is self._own_translator:
            await tree.set_translator(None)
        if self._sync_task is not None:
            self._sync_task.cancel()
            await asyncio.gather(self._sync_task, return_exceptions=True)
        if self.owns_plugin:
            await self.plugin.drain(self.plugin.settings.shutdown_grace_seconds)
            await self.plugin.aclose()

    @property
    def registered_commands(self) -> list[app_commands.Command[Any, ..., Any] | app_commands.ContextMenu]:
        """The app commands this Cog put on the tree."""
        return [*self.__cog_app_commands__, *self._menus]

    def drop_command(self, command: app_commands.Command[Any, ..., Any] | app_commands.ContextMenu) -> None:
        """Take one of ours off the tree: Discord has a command of that name that is not ours."""
        self.bot.tree.remove_command(command.name, type=_command_type(command))
        if command in self._menus:
            self._menus.remove(command)  # type: ignore[arg-type]
        else:
            self.__cog_app_commands__ = [own for own in self.__cog_app_commands__ if own is not command]

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        if not self.bot.intents.message_content:
            log.warning("the Message Content intent is off: voice messages in server channels cannot be seen. "
                        "DMs and the Transcribe context menu still work; enable the intent in the Developer "
                        "Portal (Bot page) to transcribe server channels automatically")
        if self._sync_task is None:  # on_ready comes again after a reconnect
            self._sync_task = asyncio.create_task(self._register_commands())

    async def _register_commands(self) -> None:
        try:
            if self.sync == "all":
                await sync_commands_if_changed(self.bot, self.plugin)
            elif self.sync == "own":
                await sync_own_commands(self.bot, self)
        except (discord.HTTPException, app_commands.AppCommandError, StoreError) as error:
            log.warning("could not register the app commands with Discord: %s", error)
        except Exception:
            log.exception("could not register the app commands with Discord")
        finally:
            self.commands_synced.set()

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or message.webhook_id is not None:
            return  # our own answers and other bots' messages are not for us
        note = voice_note(message)
        if note is not None:
            note = replace(note, announce=self._announcer(message), addressed=self._replies_to_us(message))
            self.plugin.run_in_background(self.plugin.handle_voice_note(note, ChannelChat(self.bot, message.channel)))
        elif self.plugin.converses and isinstance(message.channel, discord.DMChannel) and message.content.strip():
            if (await self.bot.get_context(message)).valid:
                return  # one of the host's own prefix commands
            typed = TextMessage(chat_ref(message.channel), str(message.id),
                                Person(str(message.author.id), message.author.display_name), message.content, message)
            self.plugin.run_in_background(self.plugin.handle_text(typed, ChannelChat(self.bot, message.channel)))

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Presses of the plugin's buttons (custom_id with its prefix); every other component,
        the host's, is left to the host."""
        data = interaction.data or {}
        if interaction.type is not discord.InteractionType.component or not str(data.get("custom_id", "")).startswith(BUTTON_PREFIX):
            return
        chat, press = button_press(self.bot, interaction)
        self.plugin.run_in_background(self.plugin.handle_button(press, chat))

    def _replies_to_us(self, message: discord.Message) -> bool:
        """A reply to one of the bot's own messages: said to the bot."""
        replied = message.reference.resolved if message.reference is not None else None
        return isinstance(replied, discord.Message) and self.bot.user is not None and replied.author.id == self.bot.user.id

    def _announcer(self, message: discord.Message) -> Callable[[str], None]:
        return lambda transcript: self.bot.dispatch(TRANSCRIPT_EVENT, message, transcript)

    async def _run(self, interaction: discord.Interaction, name: str, args: str = "", note: VoiceNote | None = None) -> None:
        """Acknowledge at once (Discord allows 3 s), then let the plugin answer by followups;
        in server channels, answers about settings and the like only to whoever asked."""
        ephemeral = interaction.guild_id is not None and name in PRIVATE_ANSWERS
        await interaction.response.defer(thinking=True, ephemeral=ephemeral)
        user = interaction.user
        guild = interaction.guild
        request = CommandRequest(
            name=name,
            args=args,
            chat=chat_ref(interaction.channel),  # type: ignore[arg-type]
            sender=Person(str(user.id), user.display_name, _language(interaction.locale)),
            message_id=None,
            replied_note=note,
            chat_language=_language(guild.preferred_locale) if guild is not None else None,
        )
        self.plugin.run_in_background(self.plugin.handle_command(request, InteractionChat(self.bot, interaction,
                                                                                         ephemeral=ephemeral)))

    async def _transcribe_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        note = voice_note(message)
        if note is not None:
            note = replace(note, announce=self._announcer(message))
        await self._run(interaction, "transcribe", note=note)

    async def _ask_about_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        note = voice_note(message)
        await self._run(interaction, "ask", "" if note is not None else message.content, note=note)

    @app_commands.command(name="help", description=_described("help"))
    async def help_command(self, interaction: discord.Interaction) -> None:
        await self._run(interaction, "help")

    @app_commands.command(name="ask", description=_described("ask"))
    @app_commands.describe(question=_option("ask", "question"), audio=_option("ask", "audio"))
    async def ask(self, interaction: discord.Interaction, question: str | None = None,
                  audio: discord.Attachment | None = None) -> None:
        note = None
        if audio is not None and is_audio(audio):
            note = attachment_note(audio, interaction.channel, str(interaction.id), interaction.user)
        await self._run(interaction, "ask", question or "", note=note)

    @app_commands.command(name="new", description=_described("new"))
    async def new(self, interaction: discord.Interaction) -> None:
        await self._run(interaction, "new")

    @app_commands.command(name="transcribe", description=_described("transcribe.discord"))
    @app_commands.describe(audio=_option("transcribe", "audio"))
    async def transcribe(self, interaction: discord.Interaction, audio: discord.Attachment) -> None:
        note = None
        if is_audio(audio):
            note = attachment_note(audio, interaction.channel, str(interaction.id), interaction.user)
        await self._run(interaction, "transcribe", note=note)

    @app_commands.command(name="speak", description=_described("speak"))
    @app_commands.describe(text=_option("speak", "text"))
    async def speak(self, interaction: discord.Interaction, text: str) -> None:
        await self._run(interaction, "speak", text)

    @app_commands.command(name="settings", description=_described("settings"))
    async def settings(self, interaction: discord.Interaction) -> None:
        await self._run(interaction, "settings")

    @app_commands.command(name="mode", description=_described("mode"))
    @app_commands.describe(mode=_option("mode", "mode"))
    @app_commands.choices(mode=[_choice("catalogue", f"mode.{value}", value) for value in ("text", "voice", "both")])
    async def mode(self, interaction: discord.Interaction, mode: str) -> None:
        await self._run(interaction, "mode", mode)

    @app_commands.command(name="language", description=_described("language"))
    @app_commands.describe(code=_option("language", "code"))
    async def language(self, interaction: discord.Interaction, code: str) -> None:
        """Its choices are set per Cog: the languages of the bot's speech service."""
        await self._run(interaction, "language", code)

    @app_commands.command(name="voice", description=_described("voice"))
    @app_commands.describe(voice_id=_option("voice", "voice_id"))
    async def voice(self, interaction: discord.Interaction, voice_id: str) -> None:
        await self._run(interaction, "voice", voice_id)

    @voice.autocomplete("voice_id")
    async def _voice_choices(self, interaction: discord.Interaction, typed: str) -> list[app_commands.Choice[str]]:
        """The provider's voices whose name or id contains what the user has typed so far."""
        voices = await self.plugin.voice_choices(typed, MAX_CHOICES)
        return [app_commands.Choice(name=name[:100], value=voice_id) for voice_id, name in voices]

    @app_commands.command(name="voices", description=_described("voices"))
    async def voices(self, interaction: discord.Interaction) -> None:
        await self._run(interaction, "voices")

    @app_commands.command(name="auto", description=_described("auto"))
    @app_commands.describe(state=_option("auto", "state"))
    @app_commands.choices(state=[_choice("catalogue", value, value) for value in ("on", "off")])
    async def auto(self, interaction: discord.Interaction, state: str) -> None:
        await self._run(interaction, "auto", state)

    @app_commands.command(name="hotwords", description=_described("hotwords"))
    @app_commands.describe(words=_option("hotwords", "words"))
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


async def sync_own_commands(bot: AnyBot, cog: VoiceNotesCog) -> None:
    """Create or edit voicebridge's own global commands one by one, only those that changed since
    the last registration (ids and digests remembered in the store), and delete the ones it made
    that it no longer offers. A command of the same name that voicebridge did not make is the
    host's: it stays, and voicebridge drops its own from the tree with one warning."""
    translator = CommandTranslator()
    application_id = bot.application_id
    assert application_id is not None
    marker = OWN_COMMANDS_MARKER.format(application_id=application_id)
    stored: dict[str, dict[str, str]] = json.loads(await cog.plugin.store.marker(marker) or "{}")
    registered: dict[str, dict[str, str]] = {}
    remote: list[dict[str, Any]] | None = None
    for command in cog.registered_commands:
        payload = await command.get_translated_payload(bot.tree, translator)
        command_type = _command_type(command)
        key = f"{command_type.value}:{command.name}"
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
        record = stored.get(key)
        if record is not None and record["digest"] == digest:
            registered[key] = record
            continue
        if remote is None:
            remote = list(await bot.http.get_global_commands(application_id))
        existing = next((found for found in remote if found["name"] == command.name
                         and int(found.get("type", 1)) == command_type.value), None)
        if existing is not None and (record is None or existing["id"] != record["id"]) and not _made_by_us(existing, payload):
            log.warning("Discord already has a command %r that voicebridge did not register; it is left alone "
                        "and voicebridge offers none", command.name)
            cog.drop_command(command)
            continue
        if existing is not None:
            data = await bot.http.edit_global_command(application_id, existing["id"], payload)
        else:
            data = await bot.http.upsert_global_command(application_id, payload)
        registered[key] = {"id": str(data["id"]), "digest": digest}
        log.info("registered the %s command with Discord", command.name)
    for key, record in stored.items():
        if key not in registered:
            try:
                await bot.http.delete_global_command(application_id, record["id"])
            except discord.NotFound:
                pass
            log.info("removed voicebridge's %s command from Discord", key.split(":", 1)[1])
    if registered != stored:
        await cog.plugin.store.set_marker(marker, json.dumps(registered, sort_keys=True))


def _command_type(command: app_commands.Command[Any, ..., Any] | app_commands.ContextMenu) -> discord.AppCommandType:
    return command.type if isinstance(command, app_commands.ContextMenu) else discord.AppCommandType.chat_input


def _made_by_us(existing: dict[str, Any], payload: dict[str, Any]) -> bool:
    """A command registered before voicebridge kept ids (a bulk sync) is recognised as its own
    by its description; a host's command of the same name has its own."""
    return bool(payload.get("description")) and existing.get("description") == payload.get("description")


async def setup(bot: commands.Bot) -> None:
    """``await bot.load_extension("voicebridge.discord")``: the plugin, configured by
    ``bot.voicebridge_options`` when the host set it, else from the environment."""
    options: Options = getattr(bot, "voicebridge_options", None) or Options()
    plugin = build_plugin(options)
    try:
        await bot.add_cog(VoiceNotesCog(bot, plugin, sync=options.sync, owns_plugin=True))
    except BaseException:
        await plugin.aclose()
        raise


async def teardown(bot: commands.Bot) -> None:
    """``unload_extension``: the Cog lives in another module than the extension, so discord.py
    would not remove it by itself."""
    await bot.remove_cog(VoiceNotesCog.__cog_name__)
