"""python-telegram-bot glue: updates in, plugin calls, Bot API calls out. No decisions here.

In a host bot::

    voice_notes = VoiceNotesTelegram(plugin)
    voice_notes.install(application)   # handlers in their own group, non-blocking
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, TypeVar

from telegram import Bot, BotCommand, BotCommandScopeDefault, ChatMember, Message, ReplyParameters, Update
from telegram.constants import ChatAction, ChatType
from telegram.error import BadRequest, RetryAfter, TelegramError
from telegram.ext import Application, BaseHandler, CommandHandler, ContextTypes, MessageHandler, filters
from telegram.warnings import PTBDeprecationWarning

from voicebridge.voice_notes.messages import LANGUAGES
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

log = logging.getLogger(__name__)
T = TypeVar("T")

PLATFORM = "telegram"
DEFAULT_HANDLER_GROUP = 10
# The cloud Bot API serves downloads up to 20 MB (PTB: FileSizeLimit.FILESIZE_DOWNLOAD).
DOWNLOAD_LIMIT_BYTES = 20_000_000
ACTION_REFRESH_SECONDS = 4.0  # a chat action shows for 5 s at most
MAX_FLOOD_WAITS = 3
# Bot FAQ: about 1 message/s per chat and 20 messages/min per group; edits are taken to count.
PRIVATE_EDIT_INTERVAL = 1.0
GROUP_EDIT_INTERVAL = 3.0
AUDIO_EXTENSIONS = ("ogg", "oga", "opus", "mp3", "m4a", "wav", "flac", "aac", "amr", "webm", "weba", "mka")
MEDIA = (
    filters.VOICE
    | filters.VIDEO_NOTE
    | filters.AUDIO
    | filters.Document.AUDIO
    | filters.Document.MimeType("application/ogg")
    | filters.Document.FileExtension(AUDIO_EXTENSIONS[0])
)
for _extension in AUDIO_EXTENSIONS[1:]:
    MEDIA = MEDIA | filters.Document.FileExtension(_extension)

_ACTIONS = {Activity.TYPING: ChatAction.TYPING, Activity.RECORDING_VOICE: ChatAction.RECORD_VOICE}
_ADMIN_STATUSES = (ChatMember.OWNER, ChatMember.ADMINISTRATOR)


class VoiceNotesTelegram:
    """Installs a :class:`VoiceNotesPlugin` into a python-telegram-bot ``Application``."""

    def __init__(self, plugin: VoiceNotesPlugin, *, group: int = DEFAULT_HANDLER_GROUP) -> None:
        self.plugin = plugin
        self.group = group
        self._handlers: list[BaseHandler[Any, Any, Any]] = []

    def install(self, application: Application[Any, Any, Any, Any, Any, Any]) -> None:
        """Add the handlers in their own group (``block=False``: a long note never holds up the
        host's other updates). With ``run_polling``/``run_webhook`` the plugin also starts and
        stops with the application; otherwise call :meth:`start` and :meth:`stop` yourself."""
        self._handlers = [
            CommandHandler(list(self.plugin.command_names), self._on_command, filters=filters.UpdateType.MESSAGE, block=False),
            MessageHandler(filters.UpdateType.MESSAGE & MEDIA, self._on_media, block=False),
        ]
        application.add_handlers(self._handlers, group=self.group)
        host_post_init, host_post_shutdown = application.post_init, application.post_shutdown

        async def post_init(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
            await self.start(app.bot)
            if host_post_init:
                await host_post_init(app)

        async def post_shutdown(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
            if host_post_shutdown:
                await host_post_shutdown(app)
            await self.stop()

        application.post_init = post_init
        application.post_shutdown = post_shutdown

    def uninstall(self, application: Application[Any, Any, Any, Any, Any, Any]) -> None:
        for handler in self._handlers:
            application.remove_handler(handler, group=self.group)
        self._handlers = []

    async def start(self, bot: Bot) -> None:
        """Start the plugin and publish the command menu in English and Chinese."""
        await self.plugin.start()
        for language in LANGUAGES:
            commands = [BotCommand(name, description) for name, description in self.plugin.command_descriptions(language)]
            try:
                await bot.set_my_commands(commands, scope=BotCommandScopeDefault(),
                                          language_code=None if language == "en" else language)
            except TelegramError as error:
                log.warning("could not publish the %s command menu: %s", language, error)

    async def stop(self) -> None:
        await self.plugin.aclose()

    async def _on_media(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None:
            return
        note = voice_note(message)
        if note is not None:
            await self.plugin.handle_voice_note(note, TelegramChat(context.bot, message))

    async def _on_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or not message.text:
            return
        command, _, args = message.text.partition(" ")
        if "\n" in command:  # "/speak\ntext": the command ends at the first whitespace of any kind
            command, _, rest = command.partition("\n")
            args = f"{rest} {args}".strip()
        replied = message.reply_to_message
        request = CommandRequest(
            name=command.lstrip("/").split("@", 1)[0].lower(),
            args=args.strip(),
            chat=chat_ref(message),
            sender=person(message),
            message_id=str(message.message_id),
            replied_note=voice_note(replied) if replied is not None else None,
            replied_text=(replied.text or replied.caption) if replied is not None else None,
        )
        await self.plugin.handle_command(request, TelegramChat(context.bot, message))


def chat_ref(message: Message) -> ChatRef:
    kind = ChatKind.PRIVATE if message.chat.type == ChatType.PRIVATE else ChatKind.GROUP
    return ChatRef(PLATFORM, str(message.chat.id), kind)


def person(message: Message) -> Person:
    user = message.from_user
    if message.sender_chat is not None:  # an anonymous admin or a channel speaking in the group
        return Person(str(message.sender_chat.id), message.sender_chat.title or "", user.language_code if user else None)
    if user is None:
        return Person("", "")
    return Person(str(user.id), user.full_name, user.language_code)


def speaker(message: Message) -> str:
    """Who spoke: for a forward, the original sender as far as Telegram reveals them."""
    origin = message.forward_origin
    if origin is not None:
        for attribute in ("sender_user", "sender_chat", "chat"):
            source = getattr(origin, attribute, None)
            if source is not None:
                return getattr(source, "full_name", None) or getattr(source, "title", None) or ""
        return getattr(origin, "sender_user_name", "") or ""
    return person(message).name


def voice_note(message: Message) -> VoiceNote | None:
    """The audio a message carries, or None."""
    media = message.voice or message.video_note or message.audio or message.document
    if media is None:
        return None
    if message.document is not None and not _audio_document(message.document.mime_type, message.document.file_name):
        return None

    async def fetch() -> bytes:
        try:
            file = await media.get_file()
            return bytes(await file.download_as_bytearray())
        except TelegramError as error:
            # PTB messages carry no URL; the exception chain (with the token in a URL) stays out.
            raise DownloadFailed(f"Telegram: {type(error).__name__}: {error.message}") from None
        except Exception as error:
            raise DownloadFailed(f"Telegram download: {type(error).__name__}") from None

    return VoiceNote(
        chat=chat_ref(message),
        message_id=str(message.message_id),
        sender=person(message),
        cache_key=media.file_unique_id,
        fetch=fetch,
        mime_type=getattr(media, "mime_type", None),
        file_name=getattr(media, "file_name", None),
        declared_seconds=_seconds(media, "duration"),
        declared_bytes=media.file_size,
        download_limit=DOWNLOAD_LIMIT_BYTES,
        speaker=speaker(message),
    )


def _audio_document(mime_type: str | None, file_name: str | None) -> bool:
    if mime_type and (mime_type.startswith("audio/") or mime_type == "application/ogg"):
        return True
    return bool(file_name) and file_name.rsplit(".", 1)[-1].lower() in AUDIO_EXTENSIONS  # type: ignore[union-attr]


def _seconds(source: object, attribute: str) -> float | None:
    """A PTB duration as seconds: PTB 22.2+ returns int or timedelta and warns on int access."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = getattr(source, attribute, None)
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value) if value is not None else None


class TelegramChat:
    """The plugin's :class:`ChatPort` for one Telegram chat (and forum topic)."""

    max_text_length = 4096
    needs_waveform = False

    def __init__(self, bot: Bot, message: Message) -> None:
        self.bot = bot
        self.chat_id = message.chat.id
        self.thread_id = message.message_thread_id if message.is_topic_message else None
        private = message.chat.type == ChatType.PRIVATE
        self.min_edit_interval = PRIVATE_EDIT_INTERVAL if private else GROUP_EDIT_INTERVAL

    @staticmethod
    def text_length(text: str) -> int:
        return len(text.encode("utf-16-le")) // 2  # Telegram counts UTF-16 code units

    def _reply(self, reply_to: str | None) -> ReplyParameters | None:
        # If the note was deleted meanwhile, the answer still goes out, just without the quote.
        return ReplyParameters(int(reply_to), allow_sending_without_reply=True) if reply_to else None

    async def send_text(self, text: str, reply_to: str | None) -> str:
        message = await self._call(lambda: self.bot.send_message(
            self.chat_id, text, reply_parameters=self._reply(reply_to), message_thread_id=self.thread_id))
        return str(message.message_id)

    async def edit_text(self, message_id: str, text: str) -> None:
        try:
            await self._call(lambda: self.bot.edit_message_text(text, chat_id=self.chat_id, message_id=int(message_id)))
        except BadRequest as error:
            if "not modified" not in error.message.lower():
                raise

    async def send_voice(self, voice: VoiceReply, reply_to: str | None) -> str:
        # A Premium user's privacy setting, or a group that forbids voice notes.
        return await self._send_file(self.bot.send_voice, voice, "voice.ogg", reply_to,
                                     ("voice_messages_forbidden", "rights to send voice"))

    async def send_audio(self, voice: VoiceReply, reply_to: str | None) -> str:
        return await self._send_file(self.bot.send_audio, voice, "reply.ogg", reply_to, ("rights to send",))

    async def _send_file(self, send: Callable[..., Awaitable[Message]], voice: VoiceReply, filename: str,
                         reply_to: str | None, refusals: tuple[str, ...]) -> str:
        try:
            message = await self._call(lambda: send(
                self.chat_id, voice.data, duration=max(1, round(voice.seconds)), filename=filename,
                reply_parameters=self._reply(reply_to), message_thread_id=self.thread_id))
        except BadRequest as error:
            # PTB strips "Bad Request: " and capitalises the rest: match case-insensitively.
            if any(refusal in error.message.lower() for refusal in refusals):
                raise VoiceNotAllowed(error.message) from error
            raise
        return str(message.message_id)

    @asynccontextmanager
    async def activity(self, kind: Activity) -> AsyncIterator[None]:
        async def refresh() -> None:
            while True:
                try:
                    await self.bot.send_chat_action(self.chat_id, _ACTIONS[kind], message_thread_id=self.thread_id)
                except TelegramError as error:
                    log.debug("chat action failed: %s", error)
                await asyncio.sleep(ACTION_REFRESH_SECONDS)

        task = asyncio.create_task(refresh())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def is_admin(self, user_id: str) -> bool:
        if user_id == str(self.chat_id):  # an anonymous admin speaks as the group itself
            return True
        try:
            member = await self._call(lambda: self.bot.get_chat_member(self.chat_id, int(user_id)))
        except (TelegramError, ValueError) as error:
            log.warning("could not check admin rights of %s: %s", user_id, error)
            return False
        return member.status in _ADMIN_STATUSES

    async def _call(self, request: Callable[[], Awaitable[T]]) -> T:
        """Bot API call that waits out flood control (RetryAfter) a few times instead of failing."""
        for attempt in range(MAX_FLOOD_WAITS + 1):
            try:
                return await request()
            except RetryAfter as error:
                if attempt == MAX_FLOOD_WAITS:
                    raise
                delay = _seconds(error, "retry_after") or 1.0
                log.info("Telegram flood control: waiting %.0fs", delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")
