"""python-telegram-bot glue: updates in, plugin calls, Bot API calls out. No decisions here.

In a host bot::

    handle = voicebridge.telegram.install(application)   # or install(application, responder=...)

The handlers go into their own group (10 by default) and never block the host's updates. The
plugin starts after the host's ``post_init`` (or with the first update it handles, if the host
replaced ``post_init`` after installing), and stops in ``post_stop``: in-flight notes get
``VOICEBRIDGE_SHUTDOWN_GRACE`` seconds, then everything it created is closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from telegram import (
    Bot,
    BotCommand,
    BotCommandScope,
    BotCommandScopeAllChatAdministrators,
    BotCommandScopeAllGroupChats,
    BotCommandScopeAllPrivateChats,
    BotCommandScopeDefault,
    CallbackQuery,
    ChatMember,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    ReplyParameters,
    Update,
)
from telegram.constants import ChatAction, ChatType
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError
from telegram.ext import Application, BaseHandler, CallbackQueryHandler, CommandHandler, ContextTypes, MessageHandler, filters
from telegram.warnings import PTBDeprecationWarning

from voicebridge.options import Options, build_plugin
from voicebridge.voice_notes.messages import COMMAND_DESCRIPTIONS
from voicebridge.jobs import SQLiteJournal
from voicebridge.voice_notes.buttons import BUTTON_PREFIX
from voicebridge.voice_notes.model import (
    Activity,
    Button,
    ButtonPress,
    ChatKind,
    ChatPort,
    ChatRef,
    CommandRequest,
    DownloadFailed,
    Person,
    TextMessage,
    VoiceNotAllowed,
    VoiceNote,
    VoiceReply,
)
from voicebridge.voice_notes.plugin import MenuAudience, VoiceNotesPlugin
from voicebridge.voice_notes.store import SQLiteStore

if TYPE_CHECKING:
    from .telegram_jobs import ReceiptBook

log = logging.getLogger(__name__)
T = TypeVar("T")
AnyApplication = Application[Any, Any, Any, Any, Any, Any]
Hook = Callable[[AnyApplication], Coroutine[Any, Any, None]]

PLATFORM = "telegram"
# The cloud Bot API serves downloads up to 20 MB (PTB: FileSizeLimit.FILESIZE_DOWNLOAD).
DOWNLOAD_LIMIT_BYTES = 20_000_000
ACTION_REFRESH_SECONDS = 4.0  # a chat action shows for 5 s at most
NETWORK_ATTEMPTS = 3  # a Bot API call that fails on the network is tried this often
# Bot FAQ: about 1 message/s per chat and 20 messages/min per group; edits are taken to count.
PRIVATE_EDIT_INTERVAL = 1.0
GROUP_EDIT_INTERVAL = 3.0
MAX_MENU_COMMANDS = 100  # Bot API: setMyCommands takes at most 100 commands
BUTTONS_PER_ROW = 3
# Only the plugin's own buttons: a host's callback queries never reach it (and go on to the host's handlers).
BUTTON_PATTERN = "^" + BUTTON_PREFIX
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


def install(application: AnyApplication, options: Options | None = None, **fields: Any) -> TelegramInstall:
    """Add voice notes to ``application``: ``options`` (a :class:`voicebridge.Options`), or its
    fields as keywords. Returns the handle (``.plugin``, ``.uninstall()``, ``.start()``, ``.stop()``)."""
    options = replace(options or Options(), **fields)
    return TelegramInstall(application, build_plugin(options), options, owns_plugin=True)


class TelegramInstall:
    """The plugin installed in one ``Application``: its handlers and lifecycle hooks."""

    def __init__(self, application: AnyApplication, plugin: VoiceNotesPlugin, options: Options, *, owns_plugin: bool) -> None:
        """``owns_plugin``: :meth:`stop` drains and closes the plugin (``voicebridge run`` shares
        one plugin between its platforms and closes it itself)."""
        self.application = application
        self.plugin = plugin
        self.options = options
        self.owns_plugin = owns_plugin
        self._handlers: list[BaseHandler[Any, Any, Any]] = [
            CommandHandler(list(plugin.command_names), self._on_command, filters=filters.UpdateType.MESSAGE, block=False),
            MessageHandler(filters.UpdateType.MESSAGE & MEDIA, self._on_media, block=False),
            CallbackQueryHandler(self._on_button, pattern=BUTTON_PATTERN, block=False),
        ]
        if plugin.converses:  # an agent also answers what is typed to it in private
            self._handlers.append(MessageHandler(filters.UpdateType.MESSAGE & filters.ChatType.PRIVATE & filters.TEXT
                                                 & ~filters.COMMAND, self._on_text, block=False))
        application.add_handlers(self._handlers, group=options.group)
        self._receipts: ReceiptBook | None = None  # crash recovery, when the store is SQLite
        self._starting = asyncio.Lock()
        self._started = False
        self._stopped = False
        self._hooks: dict[str, Hook] = {}
        self._wrap_hooks()

    # ------------------------------------------------------------------ lifecycle

    def _wrap_hooks(self) -> None:
        """Chain the plugin onto the host's ``post_init`` and ``post_stop``, keeping theirs. Hooks
        the host sets later replace ours; :meth:`start` then wraps ``post_stop`` again."""
        for name, ours in (("post_init", self._after_host_init), ("post_stop", self._before_host_stop)):
            current = getattr(self.application, name)
            if current is not None and current is self._hooks.get(name):
                continue
            hook = _chained(current, ours, host_first=name == "post_init")
            self._hooks[name] = hook
            setattr(self.application, name, hook)

    async def _after_host_init(self, application: AnyApplication) -> None:
        await self.start()

    async def _before_host_stop(self, application: AnyApplication) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the plugin and publish its commands in the menus; idempotent. Called for you
        under ``run_polling`` / ``run_webhook``; call it after ``application.initialize()`` when
        you drive the application yourself."""
        async with self._starting:
            if self._started:
                return
            self._started = True
            await self.plugin.start()
            self._wrap_hooks()  # in case the host set its own post_stop after install
            await publish_menus(self.application.bot, self.plugin, self.options.menu)
            if isinstance(self.plugin.store, SQLiteStore):
                from .telegram_jobs import ReceiptBook  # it builds on this module

                self._receipts = ReceiptBook(SQLiteJournal(self.plugin.store), self.application, self.plugin,
                                             self.plugin.command_names)
                self.plugin.run_in_background(self._receipts.recover())

    async def stop(self) -> None:
        """Let notes in flight finish (``VOICEBRIDGE_SHUTDOWN_GRACE``), then close everything
        the plugin created; idempotent. Call it before ``application.shutdown()``."""
        if self._stopped or not self.owns_plugin:
            return
        self._stopped = True
        await self.plugin.drain(self.plugin.settings.shutdown_grace_seconds)
        await self.plugin.aclose()

    def uninstall(self) -> None:
        """Remove the handlers and hooks; a started plugin is stopped in the background."""
        for handler in self._handlers:
            self.application.remove_handler(handler, group=self.options.group)
        self._handlers = []
        for name, hook in self._hooks.items():
            if getattr(self.application, name) is hook:
                setattr(self.application, name, getattr(hook, "host_hook", None))
        self._hooks = {}
        if self._started and not self._stopped:
            self.application.create_task(self.stop())

    # ------------------------------------------------------------------ updates

    async def _on_media(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or (note := voice_note(message, context)) is None:
            return
        await self.start()
        replied = message.reply_to_message
        if replied is not None and replied.from_user is not None and replied.from_user.id == context.bot.id:
            note = replace(note, addressed=True)  # a reply to the bot is said to the bot
        if self.options.transcript_as_text:
            note = replace(note, hand_off=self._hand_off(update))
        self._run(update, message, lambda chat: self.plugin.handle_voice_note(note, chat))

    async def _on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or not message.text:
            return
        await self.start()
        typed = TextMessage(chat_ref(message), str(message.message_id), person(message), message.text, message, context)
        self.plugin.run_in_background(self.plugin.handle_text(typed, TelegramChat(self.application, update, message, delivery_deadline=self.plugin.settings.delivery_deadline_seconds)))

    async def _on_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or not message.text:
            return
        await self.start()
        request = command_request(message, context)
        self._run(update, message, lambda chat: self.plugin.handle_command(request, chat))

    async def _on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        await self.start()
        chat, press = button_press(self.application, update, self.plugin.settings.delivery_deadline_seconds, context)
        self.plugin.run_in_background(self.plugin.handle_button(press, chat) if chat is not None
                                      else press.acknowledge(None))

    def _run(self, update: Update, message: Message, answer: Callable[[ChatPort], Awaitable[None]]) -> None:
        """``answer`` in the background, written down first when the store keeps receipts."""
        chat = TelegramChat(self.application, update, message, delivery_deadline=self.plugin.settings.delivery_deadline_seconds)
        if self._receipts is not None and not self.options.transcript_as_text:
            self.plugin.run_in_background(self._receipts.handle(update, chat, answer))
        else:
            self.plugin.run_in_background(answer(chat))

    def _hand_off(self, update: Update) -> Callable[[str], Awaitable[None]]:
        """The transcript as a text message from the same user, processed by the application as
        if they had typed it: the host's MessageHandlers and conversations answer it."""

        async def process_as_text(transcript: str) -> None:
            message = update.effective_message
            assert message is not None
            data = message.to_dict()
            for media in ("voice", "audio", "document", "video_note", "caption", "caption_entities"):
                data.pop(media, None)
            data["text"] = transcript
            typed = Update.de_json({"update_id": update.update_id, "message": data}, self.application.bot)
            await self.application.process_update(typed)

        return process_as_text


def _chained(host: Hook | None, ours: Hook, *, host_first: bool) -> Hook:
    async def hook(application: AnyApplication) -> None:
        if host is not None and host_first:
            await host(application)
        await ours(application)
        if host is not None and not host_first:
            await host(application)

    hook.host_hook = host  # type: ignore[attr-defined]  # restored by uninstall
    return hook


# Telegram's menu languages are two-letter ISO 639-1 codes (setMyCommands language_code), so all
# Chinese users share the "zh" menu, in Simplified Chinese; English is the menu without a language.
MENU_LANGUAGES = ("en", "zh")
_DEFAULT_SCOPE = BotCommandScopeDefault()
_SCOPES: dict[MenuAudience, BotCommandScope] = {
    MenuAudience.PRIVATE: BotCommandScopeAllPrivateChats(),
    MenuAudience.GROUP: BotCommandScopeAllGroupChats(),
    MenuAudience.GROUP_ADMINS: BotCommandScopeAllChatAdministrators(),
}
# Where Telegram looks next when a scope has no menu for a user (the Bot API's order of scopes).
_BROADER: dict[MenuAudience, tuple[BotCommandScope, ...]] = {
    MenuAudience.PRIVATE: (_DEFAULT_SCOPE,),
    MenuAudience.GROUP: (_DEFAULT_SCOPE,),
    MenuAudience.GROUP_ADMINS: (_SCOPES[MenuAudience.GROUP], _DEFAULT_SCOPE),
}
MenuKey = tuple[str, str]  # (scope type, language code: "" for the menu without a language)


async def publish_menus(bot: Bot, plugin: VoiceNotesPlugin, menu: str) -> None:
    """The plugin's commands in the command menus, per audience (private chats; all group
    members; group admins) and language (English, Chinese).

    ``merge`` keeps every command the host has put in each menu and adds the plugin's missing
    ones; where the host has no menu of its own for a scope or a language, the menu the user
    would otherwise see (Telegram's fallback: the language-neutral menu, then the broader scope)
    is the base. ``replace`` publishes the plugin's alone; ``none`` does nothing.
    """
    if menu == "none":
        return
    current: dict[MenuKey, list[BotCommand]] = {}
    if menu == "merge":
        try:
            for scope in (_DEFAULT_SCOPE, *_SCOPES.values()):
                for language in MENU_LANGUAGES:
                    found = await bot.get_my_commands(scope=scope, language_code=_code(language))
                    current[(scope.type, _code(language) or "")] = list(found)
        except TelegramError as error:
            log.warning("could not read the command menus, left as they are: %s", error)
            return

    def hosts(audience: MenuAudience, language: str) -> list[BotCommand]:
        """The host's commands that users of this audience and language see today."""
        for scope in (_SCOPES[audience], *_BROADER[audience]):
            for code in dict.fromkeys((_code(language) or "", "")):
                commands = current.get((scope.type, code), [])
                if commands:
                    return [command for command in commands if not _is_ours(command, plugin)]
        return []

    for audience, scope in _SCOPES.items():
        for language in MENU_LANGUAGES:
            base = hosts(audience, language)
            present = {command.command for command in base}
            ours = [BotCommand(name, description) for name, description in plugin.command_descriptions(language, audience)
                    if name not in present]
            commands = [*base, *ours]
            if len(commands) > MAX_MENU_COMMANDS:
                log.warning("the %s %s command menu would have %d commands; Telegram takes %d", audience, language,
                            len(commands), MAX_MENU_COMMANDS)
                commands = commands[:MAX_MENU_COMMANDS]
            if menu == "merge" and _same(commands, current[(scope.type, _code(language) or "")]):
                continue  # already as it should be
            try:
                await bot.set_my_commands(commands, scope=scope, language_code=_code(language))
            except TelegramError as error:
                log.warning("could not publish the %s %s command menu: %s", audience, language, error)


def _is_ours(command: BotCommand, plugin: VoiceNotesPlugin) -> bool:
    """A menu entry the plugin published (at an earlier start): one of its names with one of its
    descriptions. A host's command of the same name keeps its own description, and stays."""
    descriptions = COMMAND_DESCRIPTIONS.get(command.command)
    return command.command in plugin.command_names and descriptions is not None and command.description in descriptions.values()


def _same(commands: list[BotCommand], published: list[BotCommand]) -> bool:
    return [(c.command, c.description) for c in commands] == [(c.command, c.description) for c in published]


def _code(language: str) -> str | None:
    return None if language == "en" else language  # English is the menu without a language


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


def voice_note(message: Message, context: ContextTypes.DEFAULT_TYPE | None = None) -> VoiceNote | None:
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
        message=message,
        context=context,
    )


def button_press(application: AnyApplication, update: Update, delivery_deadline: float,
                 context: ContextTypes.DEFAULT_TYPE | None = None) -> tuple[TelegramChat | None, ButtonPress]:
    """A press of one of the plugin's buttons (``update`` carries its callback query), and the
    chat to answer in (None when the message it was under is no longer accessible: then the
    press is only acknowledged)."""
    query: CallbackQuery = update.callback_query  # type: ignore[assignment]

    async def acknowledge(text: str | None) -> None:
        await query.answer(text)

    message = query.message if isinstance(query.message, Message) else None
    user = query.from_user
    sender = Person(str(user.id), user.full_name, user.language_code)
    if message is None:
        return None, ButtonPress(ChatRef(PLATFORM, "", ChatKind.PRIVATE), sender, query.data or "", "", acknowledge, _no_note)
    replied = message.reply_to_message

    async def note() -> VoiceNote | None:
        return voice_note(replied, context) if replied is not None else None

    chat = TelegramChat(application, update, message, delivery_deadline=delivery_deadline)
    return chat, ButtonPress(chat_ref(message), sender, query.data or "", str(message.message_id), acknowledge, note,
                             origin=query)


async def _no_note() -> VoiceNote | None:
    return None


def command_request(message: Message, context: ContextTypes.DEFAULT_TYPE | None = None) -> CommandRequest:
    """A command message (``/name args``, a CommandHandler's match) as the plugin's request."""
    command, _, args = (message.text or "").partition(" ")
    if "\n" in command:  # "/speak\ntext": the command ends at the first whitespace of any kind
        command, _, rest = command.partition("\n")
        args = f"{rest} {args}".strip()
    replied = message.reply_to_message
    return CommandRequest(
        name=command.lstrip("/").split("@", 1)[0].lower(),
        args=args.strip(),
        chat=chat_ref(message),
        sender=person(message),
        message_id=str(message.message_id),
        replied_note=voice_note(replied, context) if replied is not None else None,
        replied_text=(replied.text or replied.caption) if replied is not None else None,
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


def _keyboard(buttons: Sequence[Button]) -> InlineKeyboardMarkup | None:
    if not buttons:
        return None
    rows = [buttons[start:start + BUTTONS_PER_ROW] for start in range(0, len(buttons), BUTTONS_PER_ROW)]
    return InlineKeyboardMarkup([[InlineKeyboardButton(button.label, callback_data=button.data) for button in row]
                                 for row in rows])


class TelegramChat:
    """The plugin's :class:`ChatPort` for one Telegram chat (and forum topic).

    Every text is sent with ``parse_mode=None`` stated explicitly: transcripts are plain text, and
    a host's ``Defaults(parse_mode=...)`` must not turn a ``<`` in them into a failed send.
    """

    max_text_length = 4096
    needs_waveform = False

    def __init__(self, application: AnyApplication, update: Update, message: Message, *,
                 delivery_deadline: float = 600.0) -> None:
        self.application = application
        self.bot = application.bot
        self.update = update
        self.chat_id = message.chat.id
        self.thread_id = message.message_thread_id if message.is_topic_message else None
        private = message.chat.type == ChatType.PRIVATE
        self.min_edit_interval = PRIVATE_EDIT_INTERVAL if private else GROUP_EDIT_INTERVAL
        self.delivery_deadline = delivery_deadline

    @staticmethod
    def text_length(text: str) -> int:
        return len(text.encode("utf-16-le")) // 2  # Telegram counts UTF-16 code units

    def _reply(self, reply_to: str | None) -> ReplyParameters | None:
        # If the note was deleted meanwhile, the answer still goes out, just without the quote.
        return ReplyParameters(int(reply_to), allow_sending_without_reply=True) if reply_to else None

    async def send_text(self, text: str, reply_to: str | None, buttons: Sequence[Button] = ()) -> str:
        message = await self._call(lambda: self.bot.send_message(
            self.chat_id, text, parse_mode=None, reply_parameters=self._reply(reply_to), message_thread_id=self.thread_id,
            reply_markup=_keyboard(buttons)))
        return str(message.message_id)

    async def edit_text(self, message_id: str, text: str, buttons: Sequence[Button] = ()) -> None:
        try:
            await self._call(lambda: self.bot.edit_message_text(text, chat_id=self.chat_id, message_id=int(message_id),
                                                                parse_mode=None, reply_markup=_keyboard(buttons)))
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

    async def report_error(self, error: BaseException) -> None:
        """To the host's error handlers, as PTB reports a handler's error (they log it if none)."""
        try:
            await self.application.process_error(self.update, error)  # type: ignore[arg-type]
        except Exception:
            log.exception("the host's error handler failed")

    async def _call(self, request: Callable[[], Awaitable[T]]) -> T:
        """A Bot API call that waits out flood control (RetryAfter) until the delivery deadline,
        and retries network failures a few times: an answer that was paid for is not dropped
        because the platform asked to wait."""
        deadline = time.monotonic() + self.delivery_deadline
        network_failures = 0
        while True:
            try:
                return await request()
            except RetryAfter as error:
                delay = _seconds(error, "retry_after") or 1.0
                if time.monotonic() + delay > deadline:
                    raise
                log.info("Telegram flood control: waiting %.0fs", delay)
                await asyncio.sleep(delay)
            except (BadRequest, Forbidden):
                raise  # permanent: the request itself is refused
            except NetworkError:
                network_failures += 1
                delay = float(2 ** (network_failures - 1))
                if network_failures >= NETWORK_ATTEMPTS or time.monotonic() + delay > deadline:
                    raise
                log.info("Telegram unreachable, trying again in %.0fs", delay)
                await asyncio.sleep(delay)
