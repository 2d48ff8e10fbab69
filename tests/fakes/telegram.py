"""A local Telegram Bot API server for tests: a real PTB ``Application`` talks to it over HTTP.

Point a bot at it with::

    ApplicationBuilder().token(fake.token).base_url(fake.api_base_url).base_file_url(fake.file_base_url)

The fake follows the cloud Bot API as implemented by ``tdlib/telegram-bot-api`` (``Client.cpp``)
and TDLib's entity parsers (``td/telegram/MessageEntity.cpp``), so a bot that passes here should
not be surprised by the real server:

* ``getUpdates`` is a real long poll: ``offset`` confirms earlier updates, ``timeout`` waits (at
  most 50 s) and returns as soon as an update is pushed, a newer waiting poll ends the older one
  with 409 Conflict, and ``allowed_updates`` persists between calls and filters new updates.
* Text and captions are parsed with ``parse_mode`` (HTML, MarkdownV2, Markdown) exactly like TDLib
  does, with its error messages, then trimmed and length-checked. Stored messages carry the
  plain text plus ``entities``, as Telegram returns them.
* ``sendVoice`` only produces a voice note for OGG/Opus, MP3 or M4A; anything else arrives as a
  document, as the Bot API documents.
* Files larger than 20 MiB cannot be fetched with ``getFile`` (``MAX_DOWNLOAD_FILE_SIZE``).

Known simplifications: updates are only delivered by ``getUpdates`` (``setWebhook`` records the
URL but never calls it); the server's anti-spin throttling of repeated ``getUpdates`` calls is
left out (it would add seconds to every shutdown); link URLs are not validated; replies must
point into the same chat; no entities are detected automatically except bot commands in pushed
text.

Tests drive the bot with :meth:`FakeTelegram.push_text`, :meth:`FakeTelegram.push_voice` and
:meth:`FakeTelegram.push_update`, inject failures with :meth:`FakeTelegram.fail_next`, and observe
it through :attr:`FakeTelegram.calls`, :meth:`FakeTelegram.wait_for_call` and
:meth:`FakeTelegram.messages_sent`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import mimetypes
import re
import secrets
import string
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from aiohttp import web

from tests.fakes.base import FakeServer

JsonDict = dict[str, Any]

DEFAULT_TOKEN = "123456789:AAF-fake-voicebridge-test-token"

# Limits of the cloud Bot API (telegram-bot-api Client.h / core.telegram.org/bots/api).
MAX_DOWNLOAD_SIZE = 20 << 20  # getFile refuses larger files; note: 20 MiB, not 20e6
MAX_UPLOAD_SIZE = 50 << 20
MAX_TEXT_LENGTH = 4096
MAX_CALLBACK_DATA_BYTES = 64  # InlineKeyboardButton.callback_data: 1-64 bytes
MAX_CALLBACK_ANSWER_LENGTH = 200  # answerCallbackQuery text: 0-200 characters
INLINE_BUTTON_ACTIONS = ("url", "callback_data", "web_app", "login_url", "switch_inline_query",
                         "switch_inline_query_current_chat", "switch_inline_query_chosen_chat", "copy_text",
                         "callback_game", "pay")
MAX_CAPTION_LENGTH = 1024
MAX_RAW_TEXT_BYTES = 1 << 15  # rejected before parsing: "text is too long"
LONG_POLL_MAX_TIMEOUT = 50
WEBHOOK_PORTS = (80, 88, 443, 8443)

# Update types a bot gets unless it lists them in allowed_updates (DEFAULT_ALLOWED_UPDATE_TYPES).
OPT_IN_UPDATE_TYPES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})

# Client.cpp get_chat_action: accepted values, including legacy aliases.
CHAT_ACTIONS = frozenset({
    "cancel", "typing", "record_video", "upload_video", "record_audio", "record_voice",
    "upload_audio", "upload_voice", "upload_photo", "upload_document", "choose_sticker",
    "pick_up_location", "find_location", "record_video_note", "upload_video_note",
})

# Where Telegram puts files of each kind, and their usual extension.
_FILE_FOLDERS = {"voice": "voice", "video_note": "video_notes", "audio": "music", "document": "documents"}
_DEFAULT_MIME = {"voice": "audio/ogg", "audio": "audio/mpeg"}
_VIDEO_NOTE_DIAMETER = 384

# Which ChatPermissions flag governs each kind of content, and Telegram's refusal when it is off.
_SEND_PERMISSIONS = {
    "text": ("can_send_messages", "Bad Request: not enough rights to send text messages to the chat"),
    "voice": ("can_send_voice_notes", "Bad Request: not enough rights to send voice notes to the chat"),
    "audio": ("can_send_audios", "Bad Request: not enough rights to send music to the chat"),
    "document": ("can_send_documents", "Bad Request: not enough rights to send documents to the chat"),
}
_ALL_PERMISSIONS = (
    "can_send_messages", "can_send_audios", "can_send_documents", "can_send_photos", "can_send_videos",
    "can_send_video_notes", "can_send_voice_notes", "can_send_polls", "can_send_other_messages",
    "can_add_web_page_previews", "can_change_info", "can_invite_users", "can_pin_messages",
    "can_manage_topics",
)
_ADMIN_RIGHTS = {
    "can_be_edited": False, "is_anonymous": False, "can_manage_chat": True,
    "can_delete_messages": True, "can_manage_video_chats": True, "can_restrict_members": True,
    "can_promote_members": False, "can_change_info": True, "can_invite_users": True,
    "can_post_stories": False, "can_edit_stories": False, "can_delete_stories": False,
    "can_pin_messages": True,
}

# How parameters arrive: everything is a string in form data, so typed ones are converted by name.
_JSON_PARAMS = frozenset({
    "reply_parameters", "reply_markup", "allowed_updates", "commands", "scope", "entities",
    "caption_entities", "link_preview_options",
})
_INT_PARAMS = frozenset({
    "offset", "limit", "timeout", "message_id", "user_id", "duration", "reply_to_message_id",
    "message_thread_id", "max_connections",
})
_BOOL_PARAMS = frozenset({
    "allow_sending_without_reply", "drop_pending_updates", "disable_notification", "protect_content",
    "disable_content_type_detection", "show_alert",
})

_BOT_COMMAND = re.compile(r"(?<![\w/<>])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?![\w/<>@])")
_COMMAND_NAME = re.compile(r"[a-z0-9_]{1,32}")
_TOKEN = re.compile(r"(\d+):[\w-]+")


# --------------------------------------------------------------------------------------------
# Test-side value types


@dataclass(frozen=True)
class User:
    id: int
    first_name: str
    username: str | None = None
    last_name: str | None = None
    language_code: str | None = None
    is_bot: bool = False

    def to_dict(self) -> JsonDict:
        return _without_none({
            "id": self.id, "is_bot": self.is_bot, "first_name": self.first_name,
            "last_name": self.last_name, "username": self.username,
            "language_code": self.language_code,
        })


@dataclass(frozen=True)
class Chat:
    id: int
    type: str
    title: str | None = None
    username: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    is_forum: bool = False  # a supergroup whose messages live in topics (message_thread_id)

    @classmethod
    def private(cls, user: User) -> Chat:
        return cls(user.id, "private", username=user.username, first_name=user.first_name, last_name=user.last_name)

    @classmethod
    def group(cls, chat_id: int, title: str) -> Chat:
        if chat_id >= 0:
            raise ValueError("group ids are negative")
        return cls(chat_id, "group", title=title)

    @classmethod
    def supergroup(cls, chat_id: int, title: str, username: str | None = None) -> Chat:
        if not str(chat_id).startswith("-100"):
            raise ValueError("supergroup ids start with -100")
        return cls(chat_id, "supergroup", title=title, username=username)

    @classmethod
    def forum(cls, chat_id: int, title: str) -> Chat:
        """A supergroup with topics; open them with :meth:`FakeTelegram.open_topic`."""
        return replace(cls.supergroup(chat_id, title), is_forum=True)

    def to_dict(self) -> JsonDict:
        return _without_none({
            "id": self.id, "type": self.type, "title": self.title, "username": self.username,
            "first_name": self.first_name, "last_name": self.last_name, "is_forum": self.is_forum or None,
        })


@dataclass(frozen=True)
class FileRef:
    file_id: str
    file_unique_id: str
    file_path: str
    size: int


@dataclass
class Call:
    """One Bot API request as the fake saw it; ``status``/``response`` are set once it is answered."""

    method: str
    params: JsonDict
    files: dict[str, bytes]
    timestamp: float  # time.monotonic() at arrival
    status: int | None = None
    response: JsonDict | None = None


# --------------------------------------------------------------------------------------------
# Internals


class _ApiError(Exception):
    def __init__(self, code: int, description: str, parameters: JsonDict | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters

    def body(self) -> JsonDict:
        body: JsonDict = {"ok": False, "error_code": self.code, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return body


# Refusals that only a client breaking the Bot API's rules gets (limits, malformed requests), as
# opposed to the state of the world (a deleted message, a user's privacy): each is a violation
# that fails the test (tests/violations.py) even when the code under test swallows the error.
CLIENT_MISTAKES = frozenset({
    "message is too long", "message text is empty", "message caption is too long", "text is too long",
    "message thread not found", "unsupported parse_mode", "can't parse commands JSON object",
    "BOT_COMMAND_INVALID", "BOT_COMMAND_DESCRIPTION_INVALID", "wrong parameter action in request", "chat_id is empty",
})


def _bad_request(description: str) -> _ApiError:
    return _ApiError(400, f"Bad Request: {description}")


@dataclass
class _Fault:
    error: _ApiError
    remaining: int


class _Upload(NamedTuple):
    data: bytes
    filename: str | None
    content_type: str | None


@dataclass
class _StoredFile:
    ref: FileRef
    data: bytes


@dataclass
class _ChatState:
    info: JsonDict
    members: set[int] = field(default_factory=set)
    admins: set[int] = field(default_factory=set)
    owner_id: int | None = None
    permissions: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(_ALL_PERMISSIONS, True))
    messages: dict[int, JsonDict] = field(default_factory=dict)
    last_message_id: int = 0
    topics: set[int] = field(default_factory=set)  # forum topics: the id of each one's first message


Handler = Callable[[JsonDict, dict[str, _Upload]], Awaitable[Any]]


class FakeTelegram(FakeServer):
    """The Bot API of one bot, identified by ``token``; see the module docstring."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        bot_username: str = "voicebridge_test_bot",
        bot_name: str = "VoiceBridge Test",
    ) -> None:
        super().__init__()
        match = _TOKEN.fullmatch(token)
        if match is None:
            raise ValueError("a bot token looks like '<bot id>:<secret>'")
        self.token = token
        # A bot's user id is the number before the colon of its token.
        self.bot_user = User(int(match.group(1)), bot_name, username=bot_username, is_bot=True)
        self.calls: list[Call] = []
        self._chats: dict[int, _ChatState] = {}
        self._users: dict[int, JsonDict] = {self.bot_user.id: self.bot_user.to_dict()}
        self._voice_forbidden: set[int] = set()
        self._files: dict[str, _StoredFile] = {}
        self._file_paths: dict[str, bytes] = {}
        self._file_counter = 0
        self._updates: list[JsonDict] = []
        self._last_update_id = 0
        self._allowed_updates: frozenset[str] | None = None  # None: the default set
        self._poll_generation = 0
        self._webhook: JsonDict | None = None
        self._commands: dict[tuple[str, str], list[JsonDict]] = {}
        self._faults: dict[str, list[_Fault]] = {}
        self._closing = False
        self._callback_queries: dict[str, JsonDict] = {}  # id → the query, until answered
        self.callback_answers: list[JsonDict] = []  # answerCallbackQuery parameters, in order
        self.answer_delay = 0.0  # seconds every call but getUpdates takes to answer: a distant server
        # While set and not released, every call but getUpdates is held unanswered (a server that
        # is slow for as long as a test needs, whatever the machine's speed).
        self.answers_held: asyncio.Event | None = None
        self.calls_in_flight = 0  # calls but getUpdates being answered now, and the most at once
        self.most_calls_in_flight = 0
        handlers: dict[str, Handler] = {
            "getMe": self._get_me,
            "getUpdates": self._get_updates,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "getFile": self._get_file,
            "sendMessage": self._send_message,
            "editMessageText": self._edit_message_text,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "answerCallbackQuery": self._answer_callback_query,
            "sendVoice": self._send_voice,
            "sendAudio": self._send_audio,
            "sendDocument": self._send_document,
            "sendChatAction": self._send_chat_action,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
            "getChat": self._get_chat,
            "getChatMember": self._get_chat_member,
            "getChatAdministrators": self._get_chat_administrators,
        }
        # Bot API method names are case-insensitive.
        self._methods = {name.lower(): (name, handler) for name, handler in handlers.items()}
        self.app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        self.app.router.add_get("/file/bot{token}/{file_path:.+}", self._handle_file)

    # ---------------------------------------------------------------- configuration for PTB

    @property
    def api_base_url(self) -> str:
        return f"{self.base_url}/bot"

    @property
    def file_base_url(self) -> str:
        return f"{self.base_url}/file/bot"

    async def stop(self) -> None:
        # Release waiting long polls first: aiohttp's shutdown would otherwise wait for them.
        self._closing = True
        await self.notify()
        await super().stop()

    # ---------------------------------------------------------------- test-side: incoming traffic

    def add_file(self, data: bytes, *, file_path: str | None = None, declared_size: int | None = None) -> FileRef:
        """Register downloadable bytes; ``declared_size`` pretends the file is that large."""
        self._file_counter += 1
        digest = hashlib.sha256(data).digest()[:11]
        ref = FileRef(
            file_id=secrets.token_urlsafe(32),
            # Same bytes, same unique id: the key a bot uses for caching and deduplication.
            file_unique_id=base64.urlsafe_b64encode(digest).decode().rstrip("="),
            file_path=file_path or f"documents/file_{self._file_counter}",
            size=len(data) if declared_size is None else declared_size,
        )
        self._files[ref.file_id] = _StoredFile(ref, data)
        self._file_paths[ref.file_path] = data
        return ref

    def file_data(self, file_id: str) -> bytes:
        return self._files[file_id].data

    def expire_file(self, file_id: str) -> None:
        """The file can no longer be downloaded: ``getFile`` answers "invalid file_id"."""
        del self._files[file_id]

    async def push_update(self, update_type: str, payload: JsonDict) -> JsonDict:
        """Queue ``{"update_id": n, update_type: payload}`` unless allowed_updates excludes it."""
        self._last_update_id += 1
        update = {"update_id": self._last_update_id, update_type: payload}
        # Telegram filters when the update is created, so an excluded update never appears.
        if self._is_allowed(update_type):
            self._updates.append(update)
            await self.notify()
        return update

    async def push_callback_query(self, chat: Chat, sender: User, message_id: int, data: str) -> JsonDict:
        """``sender`` presses an inline button with ``data`` under the bot's message ``message_id``
        (the query carries that message as it is now, with the message it replies to)."""
        message = self._state_of(chat).messages.get(message_id)
        if message is None:
            raise ValueError(f"no message {message_id} in chat {chat.id}")
        self._users[sender.id] = sender.to_dict()
        query_id = str(10**17 + len(self._callback_queries) + len(self.callback_answers) + 1)
        query = {"id": query_id, "from": sender.to_dict(), "message": json.loads(json.dumps(message)),
                 "chat_instance": str(abs(chat.id) * 7 + 3), "data": data}
        self._callback_queries[query_id] = query
        await self.push_update("callback_query", query)
        return query

    async def push_text(self, chat: Chat, sender: User, text: str, *, reply_to: int | None = None,
                        thread_id: int | None = None) -> JsonDict:
        """A user's text message; leading and inner ``/commands`` get ``bot_command`` entities."""
        content: JsonDict = {"text": text}
        entities = [
            {"type": "bot_command", "offset": _utf16_len(text[: m.start()]), "length": _utf16_len(m.group())}
            for m in _BOT_COMMAND.finditer(text)
        ]
        if entities:
            content["entities"] = entities
        return await self._push_message(chat, sender, content, reply_to, thread_id)

    async def push_voice(
        self,
        chat: Chat,
        sender: User,
        data: bytes,
        *,
        duration: int | None = None,
        kind: str = "voice",
        mime_type: str | None = None,
        file_name: str | None = None,
        file_size: int | None = None,
        reply_to: int | None = None,
        forward_origin: User | JsonDict | None = None,
        thread_id: int | None = None,
    ) -> JsonDict:
        """A user's audio message as ``kind`` (voice, video_note, audio or document); in a forum,
        ``thread_id`` is the topic it is posted in.

        ``file_size`` declares a size other than ``len(data)``; ``duration`` is required for every
        kind but documents, which carry none.
        """
        if kind not in _FILE_FOLDERS:
            raise ValueError(f"unknown kind {kind!r}")
        if (duration is None) != (kind == "document"):
            raise ValueError("voice, video_note and audio need a duration; documents have none")
        if kind in ("voice", "video_note") and file_name is not None:
            raise ValueError("voice and video notes carry no file_name in the Bot API")
        if kind == "video_note" and mime_type is not None:
            raise ValueError("video notes carry no mime_type in the Bot API")
        if kind != "video_note":
            mime_type = mime_type or (file_name and mimetypes.guess_type(file_name)[0]) or _DEFAULT_MIME.get(kind)
        ref = self.add_file(data, file_path=self._new_file_path(kind, file_name, mime_type), declared_size=file_size)
        length = _VIDEO_NOTE_DIAMETER if kind == "video_note" else None
        content: JsonDict = {kind: _attachment(ref, mime_type, file_name, duration=duration, length=length)}
        if isinstance(forward_origin, User):
            forward_origin = {"type": "user", "sender_user": forward_origin.to_dict(), "date": int(time.time())}
        if forward_origin is not None:
            content["forward_origin"] = forward_origin
        return await self._push_message(chat, sender, content, reply_to, thread_id)

    async def open_topic(self, chat: Chat, creator: User, name: str) -> int:
        """A new forum topic, created by ``creator``; returns its ``message_thread_id``."""
        if not chat.is_forum:
            raise ValueError("topics exist only in forum supergroups")
        topic = self._state_of(chat).last_message_id + 1  # a topic is named after its first message
        self._chats[chat.id].topics.add(topic)
        await self._push_message(chat, creator, {"forum_topic_created": {"name": name, "icon_color": 7322096}}, None, topic)
        return topic

    # ---------------------------------------------------------------- test-side: chat setup

    def set_admins(self, chat_id: int, user_ids: list[int], *, owner_id: int | None = None) -> None:
        """Make these users (the bot included, by its id) the administrators of a known group."""
        state = self._known_group(chat_id)
        owners = {owner_id} if owner_id is not None else set()
        unknown = (set(user_ids) | owners) - set(self._users)
        if unknown:
            raise ValueError(f"push a message from users {sorted(unknown)} first")
        state.admins = set(user_ids)
        state.owner_id = owner_id
        state.members |= state.admins | owners

    def set_chat_permissions(self, chat_id: int, **permissions: bool) -> None:
        """Change a group's default member permissions, e.g. ``can_send_voice_notes=False``."""
        state = self._known_group(chat_id)
        unknown = set(permissions) - set(_ALL_PERMISSIONS)
        if unknown:
            raise ValueError(f"unknown permissions {sorted(unknown)}")
        state.permissions.update(permissions)

    def set_voice_messages_forbidden(self, user_id: int, forbidden: bool = True) -> None:
        """The Premium privacy setting: sendVoice to this user fails with VOICE_MESSAGES_FORBIDDEN."""
        if forbidden:
            self._voice_forbidden.add(user_id)
        else:
            self._voice_forbidden.discard(user_id)

    def fail_next(
        self,
        method: str,
        *,
        error_code: int,
        description: str,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` with this error instead of running them."""
        parameters = {"retry_after": retry_after} if retry_after is not None else None
        fault = _Fault(_ApiError(error_code, description, parameters), times)
        self._faults.setdefault(self._canonical_method(method), []).append(fault)

    # ---------------------------------------------------------------- test-side: observation

    def calls_to(self, method: str) -> list[Call]:
        name = self._canonical_method(method)
        return [call for call in self.calls if call.method == name]

    async def wait_for_call(
        self,
        method: str,
        predicate: Callable[[Call], bool] | None = None,
        timeout: float = 10.0,
        count: int = 1,
    ) -> Call:
        """Wait until ``count`` calls of ``method`` match ``predicate``; return the ``count``-th."""

        def nth_match() -> Call | None:
            matches = [call for call in self.calls_to(method) if predicate is None or predicate(call)]
            return matches[count - 1] if len(matches) >= count else None

        return await self.wait_for(nth_match, timeout)

    def messages_sent(self, chat_id: int) -> list[JsonDict]:
        """The bot's messages in a chat, oldest first, as they are now (edits applied)."""
        state = self._chats.get(chat_id)
        if state is None:
            return []
        return [m for m in state.messages.values() if m["from"]["id"] == self.bot_user.id]

    def commands(self, scope: JsonDict | None = None, language_code: str = "") -> list[JsonDict]:
        """The command list stored for a scope (default scope if None) and language."""
        return self._commands.get(_commands_key(scope, language_code), [])

    # ---------------------------------------------------------------- HTTP

    async def _handle_api(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response(_ApiError(401, "Unauthorized").body(), status=401)
        entry = self._methods.get(request.match_info["method"].lower())
        if entry is None:
            return web.json_response(_ApiError(404, "Not Found").body(), status=404)
        name, handler = entry
        raw, uploads = await _read_parameters(request)
        call = Call(name, raw, {key: upload.data for key, upload in uploads.items()}, time.monotonic())
        self.calls.append(call)
        await self.notify()
        counted = name != "getUpdates"  # the long poll is held open by design
        if counted:
            self.calls_in_flight += 1
            self.most_calls_in_flight = max(self.most_calls_in_flight, self.calls_in_flight)
        try:
            if counted and self.answer_delay:
                await asyncio.sleep(self.answer_delay)
            if counted and self.answers_held is not None:
                await self.answers_held.wait()
            self._raise_injected_fault(name)
            call.params = _decode_parameters(raw)
            body: JsonDict = {"ok": True, "result": await handler(call.params, uploads)}
            status = 200
        except _ApiError as error:
            if error.description.removeprefix("Bad Request: ") in CLIENT_MISTAKES:
                self.violations.append(f"{name}: {error.description}")
            body, status = error.body(), error.code
        finally:
            if counted:
                self.calls_in_flight -= 1
        call.status, call.response = status, body
        await self.notify()
        return web.json_response(body, status=status)

    async def _handle_file(self, request: web.Request) -> web.Response:
        # aiohttp decodes the path, so PTB's quoted token ("%3A" for ":") compares equal here.
        if request.match_info["token"] != self.token:
            return web.json_response(_ApiError(401, "Unauthorized").body(), status=401)
        data = self._file_paths.get(request.match_info["file_path"])
        if data is None:
            return web.json_response(_ApiError(404, "Not Found").body(), status=404)
        return web.Response(body=data, content_type="application/octet-stream")

    # ---------------------------------------------------------------- methods: bot and updates

    async def _get_me(self, params: JsonDict, uploads: dict[str, _Upload]) -> JsonDict:
        return {
            **self.bot_user.to_dict(), "can_join_groups": True, "can_read_all_group_messages": False,
            "supports_inline_queries": False, "can_connect_to_business": False, "has_main_web_app": False,
        }

    async def _get_updates(self, params: JsonDict, uploads: dict[str, _Upload]) -> list[JsonDict]:
        if self._webhook is not None:
            raise _ApiError(409, "Conflict: can't use getUpdates method while webhook is active; "
                                 "use deleteWebhook to delete the webhook first")
        offset = params.get("offset", 0)
        limit = min(max(params.get("limit", 100), 1), 100)
        timeout = min(max(params.get("timeout", 0), 0), LONG_POLL_MAX_TIMEOUT)
        self._update_allowed_updates(params.get("allowed_updates"))
        if offset < 0:
            # "All previous updates will be forgotten": keep only the last -offset ones.
            del self._updates[:offset]
        elif offset > 0:
            # Calling with an offset confirms every earlier update.
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        if not self._updates and timeout > 0:
            # Only one poll may wait; a newer one ends the older with 409 (abort_long_poll).
            self._poll_generation += 1
            generation = self._poll_generation
            try:
                await self.wait_for(
                    lambda: self._updates or self._closing or generation != self._poll_generation, timeout
                )
            except TimeoutError:
                pass
            if generation != self._poll_generation:
                raise _ApiError(409, "Conflict: terminated by other getUpdates request; "
                                     "make sure that only one bot instance is running")
        return self._updates[:limit]

    async def _set_webhook(self, params: JsonDict, uploads: dict[str, _Upload]) -> bool:
        url = params.get("url", "")
        if not url:
            return await self._delete_webhook(params, uploads)
        parts = urlsplit(url)
        if parts.scheme != "https":
            raise _bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        if (parts.port or 443) not in WEBHOOK_PORTS:
            raise _bad_request("bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443")
        self._update_allowed_updates(params.get("allowed_updates"))
        if params.get("drop_pending_updates"):
            self._updates.clear()
        self._webhook = {"url": url, "max_connections": params.get("max_connections", 40)}
        return True

    async def _delete_webhook(self, params: JsonDict, uploads: dict[str, _Upload]) -> bool:
        self._webhook = None
        if params.get("drop_pending_updates"):
            self._updates.clear()
        return True

    async def _get_webhook_info(self, params: JsonDict, uploads: dict[str, _Upload]) -> JsonDict:
        info: JsonDict = {"url": "", "has_custom_certificate": False, "pending_update_count": len(self._updates)}
        if self._webhook is not None:
            info.update(self._webhook)
            if self._allowed_updates is not None:
                info["allowed_updates"] = sorted(self._allowed_updates)
        return info

    def _update_allowed_updates(self, allowed: Any) -> None:
        # Absent or unparsable: keep the previous setting; a list naming nothing known (e.g. []):
        # back to the default set (Client::get_allowed_update_types).
        if not isinstance(allowed, list) or not all(isinstance(name, str) for name in allowed):
            return
        self._allowed_updates = frozenset(name.lower() for name in allowed) or None

    def _is_allowed(self, update_type: str) -> bool:
        if self._allowed_updates is None:
            return update_type not in OPT_IN_UPDATE_TYPES
        return update_type in self._allowed_updates

    # ---------------------------------------------------------------- methods: files

    async def _get_file(self, params: JsonDict, uploads: dict[str, _Upload]) -> JsonDict:
        file_id = params.get("file_id")
        if not file_id:
            raise _bad_request("file_id not specified")
        stored = self._files.get(file_id)
        if stored is None:
            raise _bad_request("invalid file_id")
        if stored.ref.size > MAX_DOWNLOAD_SIZE:
            raise _bad_request("file is too big")
        ref = stored.ref
        return {"file_id": ref.file_id, "file_unique_id": ref.file_unique_id, "file_size": ref.size,
                "file_path": ref.file_path}

    # ---------------------------------------------------------------- methods: sending

    async def _send_message(self, params: JsonDict, uploads: dict[str, _Upload]) -> JsonDict:
        return self._send(params, "text", _message_text(params))

    async def _send_voice(self, params: JsonDict, uploads: dict[str, _Upload]) -> JsonDict:
        return self._send_file(params, uploads, "voice")

    async def _send_audio(self, params: JsonDict, uploads: dict[str, _Upload]) -> JsonDict:
        return self._send_file(params, uploads, "audio")

    async def _send_document(self, params: JsonDict, uploads: dict[str, _Upload]) -> JsonDict:
        return self._send_file(params, uploads, "document")

    def _send_file(self, params: JsonDict, uploads: dict[str, _Upload], kind: str) -> JsonDict:
        content = self._caption(params)
        value = params.get(kind)
        # An upload is the multipart part named after the parameter, or the one attach:// names;
        # any other string is the file_id of a file Telegram already has.
        attached = isinstance(value, str) and value.startswith("attach://")
        upload = uploads.get(value[len("attach://"):] if attached else kind)
        if upload is not None:
            if len(upload.data) > MAX_UPLOAD_SIZE:
                raise _ApiError(413, "Request Entity Too Large")
            kind, attachment = self._store_upload(upload, kind, params)
        elif value and not attached:
            stored = self._files.get(value)
            if stored is None:
                raise _bad_request("wrong file identifier/HTTP URL specified")
            attachment = _attachment(stored.ref, **_sent_file_details(kind, params))
        else:
            raise _bad_request(f"there is no {kind} in the request")
        return self._send(params, kind, {kind: attachment, **content})

    def _store_upload(self, upload: _Upload, kind: str, params: JsonDict) -> tuple[str, JsonDict]:
        """Keep uploaded bytes; return the kind Telegram classifies them as and the attachment."""
        voice_mime = _voice_mime_type(upload.data)
        if kind == "voice" and voice_mime is None:
            kind = "document"  # "other formats may be sent as Audio or Document"
        if kind == "voice":
            mime_type, file_name = voice_mime, None
        else:
            mime_type = upload.content_type or mimetypes.guess_type(upload.filename or "")[0]
            file_name = upload.filename
        ref = self.add_file(upload.data, file_path=self._new_file_path(kind, upload.filename, mime_type))
        return kind, _attachment(ref, mime_type, file_name, **_sent_file_details(kind, params))

    def _caption(self, params: JsonDict) -> JsonDict:
        caption, entities = _format_text(
            params.get("caption", ""), params.get("parse_mode"), params.get("caption_entities")
        )
        if _utf16_len(caption) > MAX_CAPTION_LENGTH:
            raise _bad_request("message caption is too long")
        return _without_none({"caption": caption or None, "caption_entities": entities or None})

    def _send(self, params: JsonDict, kind: str, content: JsonDict) -> JsonDict:
        """Checks shared by every send method, then store the bot's message."""
        state = self._chat_for_sending(params.get("chat_id"))
        reply_to = self._reply_target(state, params)
        chat_type = state.info["type"]
        if chat_type in ("group", "supergroup") and self.bot_user.id not in state.admins:
            flag, refusal = _SEND_PERMISSIONS[kind]
            if not state.permissions[flag]:
                raise _ApiError(400, refusal)
        if kind == "voice" and chat_type == "private" and state.info["id"] in self._voice_forbidden:
            raise _bad_request("VOICE_MESSAGES_FORBIDDEN")
        markup = params.get("reply_markup")
        _check_reply_markup(markup)
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            # Only inline keyboards belong to the message; reply keyboards change the user's client.
            content = {**content, "reply_markup": markup}
        return self._store_message(state, self.bot_user.to_dict(), content, reply_to, self._thread(state, params))

    @staticmethod
    def _thread(state: _ChatState, params: JsonDict) -> int | None:
        """The forum topic a bot's message goes to: ``message_thread_id``, else the General topic
        (which has no thread id). Outside forums the parameter means nothing."""
        thread_id = params.get("message_thread_id")
        if not state.info.get("is_forum") or thread_id in (None, 0):
            return None
        if thread_id not in state.topics:
            raise _bad_request("message thread not found")
        return int(thread_id)

    def _reply_target(self, state: _ChatState, params: JsonDict) -> JsonDict | None:
        reply = params.get("reply_parameters")
        if reply is None and params.get("reply_to_message_id"):
            reply = {"message_id": params["reply_to_message_id"],
                     "allow_sending_without_reply": params.get("allow_sending_without_reply", False)}
        if not reply:
            return None
        if reply.get("chat_id") not in (None, state.info["id"]):
            raise NotImplementedError("the fake supports replies within the same chat only")
        target = state.messages.get(reply.get("message_id", 0))
        if target is None and not reply.get("allow_sending_without_reply"):
            raise _bad_request("message to be replied not found")
        return target

    def _editable_message(self, params: JsonDict) -> JsonDict:
        """The bot's own message that ``chat_id`` and ``message_id`` name, as the edit methods find it."""
        message = self._chat(params.get("chat_id")).messages.get(params.get("message_id", 0))
        if message is None:
            raise _bad_request("message to edit not found")
        if message["from"]["id"] != self.bot_user.id:
            raise _bad_request("message can't be edited")
        return message

    async def _edit_message_text(self, params: JsonDict, uploads: dict[str, _Upload]) -> JsonDict:
        new_content = _message_text(params)
        message = self._editable_message(params)
        if "text" not in message:
            raise _bad_request("there is no text in the message to edit")
        reply_markup = params.get("reply_markup")
        _check_reply_markup(reply_markup, inline_only=True)
        if reply_markup is not None:
            new_content["reply_markup"] = reply_markup
        current = {key: message[key] for key in ("text", "entities", "reply_markup") if key in message}
        if new_content == current:
            raise _bad_request(
                "message is not modified: specified new message content and reply markup are exactly the same "
                "as a current content and reply markup of the message"
            )
        for key in current:
            del message[key]
        message.update(new_content)
        message["edit_date"] = int(time.time())
        return message

    async def _edit_message_reply_markup(self, params: JsonDict, uploads: dict[str, _Upload]) -> JsonDict:
        message = self._editable_message(params)
        markup = params.get("reply_markup")
        _check_reply_markup(markup, inline_only=True)
        if markup == message.get("reply_markup") or (not markup and "reply_markup" not in message):
            raise _bad_request("message is not modified: specified new message content and reply markup are exactly "
                               "the same as a current content and reply markup of the message")
        message.pop("reply_markup", None)
        if markup and markup.get("inline_keyboard"):
            message["reply_markup"] = markup
        message["edit_date"] = int(time.time())
        return message

    async def _answer_callback_query(self, params: JsonDict, uploads: dict[str, _Upload]) -> bool:
        query = self._callback_queries.pop(str(params.get("callback_query_id", "")), None)
        if query is None:  # unknown, or answered already
            raise _bad_request("query is too old and response timeout expired or query ID is invalid")
        text = params.get("text")
        if text is not None and (not isinstance(text, str) or len(text) > MAX_CALLBACK_ANSWER_LENGTH):
            raise _bad_request("MESSAGE_TOO_LONG")
        self.callback_answers.append(params)
        return True

    async def _send_chat_action(self, params: JsonDict, uploads: dict[str, _Upload]) -> bool:
        if params.get("action") not in CHAT_ACTIONS:
            raise _bad_request("wrong parameter action in request")
        self._thread(self._chat_for_sending(params.get("chat_id")), params)
        return True

    # ---------------------------------------------------------------- methods: commands

    async def _set_my_commands(self, params: JsonDict, uploads: dict[str, _Upload]) -> bool:
        self._check_menu_key(params)
        commands = params.get("commands")
        if not isinstance(commands, list) or len(commands) > 100 or not all(isinstance(c, dict) for c in commands):
            raise _bad_request("can't parse commands JSON object")
        for command in commands:
            if not _COMMAND_NAME.fullmatch(str(command.get("command", ""))):
                raise _bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise _bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        key = _commands_key(params.get("scope"), params.get("language_code", ""))
        self._commands[key] = [{"command": c["command"], "description": c["description"]} for c in commands]
        return True

    @staticmethod
    def _check_menu_key(params: JsonDict) -> None:
        """Menus are kept per scope and per two-letter ISO 639-1 language code (or none)."""
        scope = params.get("scope") or {"type": "default"}
        if not isinstance(scope, dict) or scope.get("type") not in _COMMAND_SCOPES:
            raise _bad_request("can't parse BotCommandScope JSON object")
        if _COMMAND_SCOPES[scope["type"]] - set(scope):
            raise _bad_request("can't parse BotCommandScope JSON object")
        language_code = params.get("language_code", "")
        if language_code and not re.fullmatch(r"[a-z]{2}", str(language_code)):
            raise _bad_request("LANGUAGE_CODE_INVALID")

    async def _get_my_commands(self, params: JsonDict, uploads: dict[str, _Upload]) -> list[JsonDict]:
        self._check_menu_key(params)
        return self.commands(params.get("scope"), params.get("language_code", ""))

    async def _delete_my_commands(self, params: JsonDict, uploads: dict[str, _Upload]) -> bool:
        self._check_menu_key(params)
        self._commands.pop(_commands_key(params.get("scope"), params.get("language_code", "")), None)
        return True

    # ---------------------------------------------------------------- methods: chats and members

    async def _get_chat(self, params: JsonDict, uploads: dict[str, _Upload]) -> JsonDict:
        state = self._chat(params.get("chat_id"))
        info: JsonDict = {
            **state.info, "accent_color_id": 0, "max_reaction_count": 11,
            "accepted_gift_types": {"unlimited_gifts": True, "limited_gifts": True, "unique_gifts": True,
                                    "premium_subscription": True, "gifts_from_channels": True},
        }
        if state.info["type"] != "private":
            info["permissions"] = dict(state.permissions)
        return info

    async def _get_chat_member(self, params: JsonDict, uploads: dict[str, _Upload]) -> JsonDict:
        state = self._chat(params.get("chat_id"))
        user = self._users.get(params.get("user_id", 0))
        if user is None:
            raise _bad_request("user not found")
        return self._member(state, user)

    async def _get_chat_administrators(self, params: JsonDict, uploads: dict[str, _Upload]) -> list[JsonDict]:
        state = self._chat(params.get("chat_id"))
        if state.info["type"] == "private":
            raise _bad_request("there are no administrators in the private chat")
        ids = ([state.owner_id] if state.owner_id is not None else []) + sorted(state.admins - {state.owner_id})
        return [self._member(state, self._users[user_id]) for user_id in ids]

    def _member(self, state: _ChatState, user: JsonDict) -> JsonDict:
        user_id = user["id"]
        if user_id == state.owner_id:
            return {"status": "creator", "user": user, "is_anonymous": False}
        if user_id in state.admins:
            return {"status": "administrator", "user": user, **_ADMIN_RIGHTS}
        if user_id in state.members or (state.info["type"] == "private" and user_id == state.info["id"]):
            return {"status": "member", "user": user}
        return {"status": "left", "user": user}

    # ---------------------------------------------------------------- state helpers

    def _canonical_method(self, method: str) -> str:
        entry = self._methods.get(method.lower())
        if entry is None:
            raise ValueError(f"the fake does not implement {method!r}")
        return entry[0]

    def _raise_injected_fault(self, method: str) -> None:
        faults = self._faults.get(method)
        if not faults:
            return
        fault = faults[0]
        fault.remaining -= 1
        if fault.remaining == 0:
            faults.pop(0)
        raise fault.error

    def _known_group(self, chat_id: int) -> _ChatState:
        state = self._chats.get(chat_id)
        if state is None or state.info["type"] == "private":
            raise ValueError(f"push a message into group {chat_id} first")
        return state

    def _chat(self, chat_id: int | str | None) -> _ChatState:
        if chat_id is None or chat_id == "":
            raise _bad_request("chat_id is empty")
        if isinstance(chat_id, str):
            # Only public supergroups and channels are addressable as @username.
            found = next((s for s in self._chats.values()
                          if s.info["type"] != "private" and s.info.get("username")
                          and f"@{s.info['username']}" == chat_id), None)
        else:
            found = self._chats.get(chat_id)
        if found is None:
            raise _bad_request("chat not found")
        return found

    def _chat_for_sending(self, chat_id: int | str | None) -> _ChatState:
        if isinstance(chat_id, int) and chat_id not in self._chats and chat_id in self._users:
            # A user the bot only saw in groups has not started a private chat with it.
            raise _ApiError(403, "Forbidden: bot can't initiate conversation with a user")
        return self._chat(chat_id)

    async def _push_message(self, chat: Chat, sender: User, content: JsonDict, reply_to: int | None,
                            thread_id: int | None) -> JsonDict:
        state = self._state_of(chat)
        state.members |= {sender.id, self.bot_user.id}
        self._users[sender.id] = sender.to_dict()
        target = None
        if reply_to is not None:
            target = state.messages.get(reply_to)
            if target is None:
                raise ValueError(f"no message {reply_to} in chat {chat.id}")
        if thread_id is not None and thread_id not in state.topics:
            raise ValueError(f"no topic {thread_id} in chat {chat.id}")
        message = self._store_message(state, sender.to_dict(), content, target, thread_id)
        await self.push_update("message", message)
        return message

    def _state_of(self, chat: Chat) -> _ChatState:
        state = self._chats.get(chat.id)
        if state is None:
            state = self._chats[chat.id] = _ChatState(chat.to_dict())
        return state

    def _store_message(
        self, state: _ChatState, sender: JsonDict, content: JsonDict, reply_to: JsonDict | None, thread_id: int | None
    ) -> JsonDict:
        state.last_message_id += 1
        message: JsonDict = {
            "message_id": state.last_message_id, "from": sender, "chat": state.info,
            "date": int(time.time()), **content,
        }
        if thread_id is not None:
            message.update(message_thread_id=thread_id, is_topic_message=True)
        if reply_to is not None:
            # Telegram nests the replied message one level deep only.
            message["reply_to_message"] = {k: v for k, v in reply_to.items() if k != "reply_to_message"}
        state.messages[message["message_id"]] = message
        return message

    def _new_file_path(self, kind: str, file_name: str | None, mime_type: str | None) -> str:
        if kind == "voice":
            extension = ".oga"
        elif kind == "video_note":
            extension = ".mp4"
        else:
            extension = (
                (file_name and "." in file_name and "." + file_name.rsplit(".", 1)[1])
                or (mime_type and mimetypes.guess_extension(mime_type))
                or ""
            )
        # Named after the number the following add_file call assigns.
        return f"{_FILE_FOLDERS[kind]}/file_{self._file_counter + 1}{extension}"


# --------------------------------------------------------------------------------------------
# Request decoding


async def _read_parameters(request: web.Request) -> tuple[JsonDict, dict[str, _Upload]]:
    """Query string plus JSON, form-urlencoded or multipart body, like the Bot API accepts."""
    raw: JsonDict = dict(request.query)
    uploads: dict[str, _Upload] = {}
    if request.content_type == "application/json":
        raw.update(await request.json())
    elif request.can_read_body:
        for name, value in (await request.post()).items():
            if isinstance(value, web.FileField):
                uploads[name] = _Upload(value.file.read(), value.filename, value.content_type)
            else:
                raw[name] = value
    return raw, uploads


def _decode_parameters(raw: JsonDict) -> JsonDict:
    return {name: _decode_parameter(name, value) for name, value in raw.items()}


def _decode_parameter(name: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if name in _JSON_PARAMS:
        try:
            return json.loads(value)
        except ValueError:
            raise _bad_request(f"can't parse {name.replace('_', ' ')} JSON object") from None
    if name in _INT_PARAMS or (name == "chat_id" and re.fullmatch(r"-?\d+", value)):
        # Like td::to_integer: a leading integer, 0 when there is none.
        match = re.match(r"-?\d+", value)
        return int(match.group()) if match else 0
    if name in _BOOL_PARAMS:
        return value.lower() in ("true", "1")
    return value


def _check_reply_markup(markup: Any, *, inline_only: bool = False) -> None:
    """An inline keyboard as the Bot API checks it (reply keyboards only by their kind): an array
    of button rows, each button with a non-empty ``text`` and exactly one action, and
    ``callback_data`` of 1–64 bytes."""
    if markup is None:
        return
    if not isinstance(markup, dict):
        raise _bad_request("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" not in markup:
        if inline_only or not {"keyboard", "remove_keyboard", "force_reply"} & markup.keys():
            raise _bad_request("can't parse inline keyboard button: InlineKeyboardMarkup must be an Array")
        return
    rows = markup["inline_keyboard"]
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise _bad_request("can't parse inline keyboard button: InlineKeyboardMarkup must be an Array of Arrays")
    for row in rows:
        for button in row:
            if not isinstance(button, dict) or not isinstance(button.get("text"), str):
                raise _bad_request("can't parse inline keyboard button: Field \"text\" must be of type String")
            if not button["text"].strip():
                raise _bad_request("BUTTON_TEXT_INVALID")
            actions = [key for key in INLINE_BUTTON_ACTIONS if key in button]
            if len(actions) != 1:
                raise _bad_request("can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard")
            if "callback_data" in button:
                data = button["callback_data"]
                if not isinstance(data, str) or not 1 <= len(data.encode()) <= MAX_CALLBACK_DATA_BYTES:
                    raise _bad_request("BUTTON_DATA_INVALID")


def _message_text(params: JsonDict) -> JsonDict:
    """The ``text`` and ``entities`` of a sendMessage or editMessageText call, checked like Telegram."""
    if not params.get("text"):
        raise _bad_request("message text is empty")
    text, entities = _format_text(params["text"], params.get("parse_mode"), params.get("entities"))
    if not text:
        raise _bad_request("message text is empty")
    if _utf16_len(text) > MAX_TEXT_LENGTH:
        raise _bad_request("message is too long")
    return {"text": text, "entities": entities} if entities else {"text": text}


def _attachment(ref: FileRef, mime_type: str | None = None, file_name: str | None = None, **details: Any) -> JsonDict:
    """A Voice, VideoNote, Audio or Document object; fields that are None are left out."""
    return _without_none({
        "file_id": ref.file_id, "file_unique_id": ref.file_unique_id, "file_size": ref.size,
        "mime_type": mime_type, "file_name": file_name, **details,
    })


def _sent_file_details(kind: str, params: JsonDict) -> JsonDict:
    """The attachment fields a send method takes from its parameters."""
    if kind == "document":
        return {}
    # Client.cpp passes the given duration (default 0) on; it is not measured from the file.
    details: JsonDict = {"duration": params.get("duration", 0)}
    if kind == "audio":
        details.update(performer=params.get("performer"), title=params.get("title"))
    return details


# Bot API BotCommandScope types, with the fields each needs besides "type".
_COMMAND_SCOPES: dict[str, set[str]] = {
    "default": set(), "all_private_chats": set(), "all_group_chats": set(), "all_chat_administrators": set(),
    "chat": {"chat_id"}, "chat_administrators": {"chat_id"}, "chat_member": {"chat_id", "user_id"},
}


def _commands_key(scope: JsonDict | None, language_code: str) -> tuple[str, str]:
    return json.dumps(scope or {"type": "default"}, sort_keys=True), language_code


def _voice_mime_type(data: bytes) -> str | None:
    """The mime type of a file Telegram accepts as a voice note (OGG/Opus, MP3, M4A), else None."""
    if data.startswith(b"OggS") and b"OpusHead" in data[:128]:
        return "audio/ogg"
    if data.startswith(b"ID3") or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "audio/mpeg"
    if data[4:8] == b"ftyp":
        return "audio/mp4"
    return None


def _without_none(values: JsonDict) -> JsonDict:
    return {key: value for key, value in values.items() if value is not None}


def _utf16_len(text: str) -> int:
    # Telegram measures offsets and lengths in UTF-16 code units.
    return len(text.encode("utf-16-le")) // 2


# --------------------------------------------------------------------------------------------
# Formatted text: ports of TDLib's parse_html, parse_markdown_v2 and parse_markdown


class _EntityParseError(Exception):
    pass


class _Entity(NamedTuple):
    kind: str  # TDLib's type name, which its error messages use
    offset: int
    length: int
    argument: str = ""


_BOT_API_TYPES = {
    "Bold": "bold", "Italic": "italic", "Underline": "underline", "Strikethrough": "strikethrough",
    "Spoiler": "spoiler", "Code": "code", "Pre": "pre", "PreCode": "pre", "TextUrl": "text_link",
    "CustomEmoji": "custom_emoji", "BlockQuote": "blockquote", "ExpandableBlockQuote": "expandable_blockquote",
}
# MessageEntity::get_type_priority: the order of entities that share offset and length.
_PRIORITY = {
    "BlockQuote": 0, "ExpandableBlockQuote": 0, "PreCode": 10, "Pre": 11, "Code": 20, "TextUrl": 49,
    "Bold": 90, "Italic": 91, "Underline": 92, "Strikethrough": 93, "Spoiler": 94, "CustomEmoji": 99,
}
_SPACES = frozenset(" \t\r\n\v\f\0")  # td::is_space; "\0" also marks the end of the text
_END = "\0"


def _format_text(text: str, parse_mode: str | None, entities: Any) -> tuple[str, list[JsonDict]]:
    """Client::get_formatted_text, then the trimming Telegram applies to every message text."""
    if len(text.encode()) > MAX_RAW_TEXT_BYTES:
        raise _bad_request("text is too long")
    mode = (parse_mode or "").lower()
    if text and mode not in ("", "none"):
        parser = {"html": _parse_html, "markdownv2": _parse_markdown_v2, "markdown": _parse_markdown}.get(mode)
        if parser is None:
            raise _bad_request("unsupported parse_mode")
        try:
            text, parsed = parser(text)
        except _EntityParseError as error:
            raise _bad_request(f"can't parse entities: {error}") from None
        parsed.sort(key=lambda e: (e.offset, -e.length, _PRIORITY[e.kind]))
        entities = [_bot_api_entity(e) for e in parsed]
    elif not isinstance(entities, list):
        entities = []
    return _strip(text, entities)


def _bot_api_entity(entity: _Entity) -> JsonDict:
    result: JsonDict = {"type": _BOT_API_TYPES[entity.kind], "offset": entity.offset, "length": entity.length}
    extra = {"PreCode": "language", "TextUrl": "url", "CustomEmoji": "custom_emoji_id"}.get(entity.kind)
    if extra:
        result[extra] = entity.argument
    return result


def _strip(text: str, entities: list[JsonDict]) -> tuple[str, list[JsonDict]]:
    """Trim surrounding whitespace and shift or clip the entities to match."""
    left = text.lstrip()
    shift = _utf16_len(text) - _utf16_len(left)
    result = left.rstrip()
    end = _utf16_len(result)
    kept = []
    for entity in entities:
        start = max(entity["offset"] - shift, 0)
        stop = min(entity["offset"] + entity["length"] - shift, end)
        if stop > start:
            kept.append({**entity, "offset": start, "length": stop - start})
    return result, kept


def _char(text: str, index: int) -> str:
    """``text[index]``, or NUL past the end, as TDLib's C strings read."""
    return text[index] if index < len(text) else _END


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode())


def _char_utf16(char: str) -> int:
    return 2 if ord(char) > 0xFFFF else 1


_HTML_TAGS = frozenset({
    "a", "b", "strong", "i", "em", "s", "strike", "del", "u", "ins", "tg-spoiler", "tg-emoji", "span",
    "pre", "code", "blockquote",
})
_HTML_SIMPLE = {
    "i": "Italic", "em": "Italic", "b": "Bold", "strong": "Bold", "s": "Strikethrough",
    "strike": "Strikethrough", "del": "Strikethrough", "u": "Underline", "ins": "Underline",
    "tg-spoiler": "Spoiler", "span": "Spoiler",
}
_NAMED_HTML_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_NAME_TOKEN = frozenset(string.ascii_letters + string.digits + ".-")


def _decode_html_entity(text: str, pos: int) -> tuple[str, int] | None:
    """The character an ``&...;`` reference at ``pos`` stands for and the index after it."""
    end = pos + 1
    if _char(text, end) == "#":
        end += 1
        base, digits = 10, string.digits
        if _char(text, end) == "x":
            end += 1
            base, digits = 16, string.hexdigits
        start = end
        while _char(text, end) in digits:
            end += 1
        code = int(text[start:end], base) if end > start else 0
        if code == 0 or code >= 0x10FFFF or end - pos >= 10:
            return None
        char = chr(code)
    else:
        while _char(text, end) in string.ascii_letters:
            end += 1
        char = _NAMED_HTML_ENTITIES.get(text[pos + 1:end], "")
        if not char:
            return None
    return char, end + 1 if _char(text, end) == ";" else end


def _parse_html(text: str) -> tuple[str, list[_Entity]]:
    out: list[str] = []
    utf16 = 0
    entities: list[_Entity] = []
    # Open tags: (name, argument, utf16 offset, index in ``out``).
    stack: list[tuple[str, str, int, int]] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "&" and (decoded := _decode_html_entity(text, i)) is not None:
            char, i = decoded
            out.append(char)
            utf16 += _char_utf16(char)
            continue
        if c != "<":
            out.append(c)
            utf16 += _char_utf16(c)
            i += 1
            continue
        begin = i
        where = f"at byte offset {_byte_offset(text, begin)}"
        i += 1
        if _char(text, i) != "/":
            while _char(text, i) not in _SPACES and _char(text, i) != ">":
                i += 1
            if _char(text, i) == _END:
                raise _EntityParseError(f"Unclosed start tag {where}")
            tag = text[begin + 1:i].lower()
            if tag not in _HTML_TAGS:
                raise _EntityParseError(f'Unsupported start tag "{tag}" {where}')
            argument, i = _parse_html_attributes(text, i, tag, where)
            if tag == "span" and argument != "spoiler":
                raise _EntityParseError(f'Tag "span" must have class "tg-spoiler" {where}')
            stack.append((tag, argument, utf16, len(out)))
            i += 1
            continue
        if not stack:
            raise _EntityParseError(f"Unexpected end tag {where}")
        while _char(text, i) not in _SPACES and _char(text, i) != ">":
            i += 1
        end_tag = text[begin + 2:i].lower()
        while _char(text, i) in _SPACES and _char(text, i) != _END:
            i += 1
        if _char(text, i) != ">":
            raise _EntityParseError(f"Unclosed end tag {where}")
        tag, argument, offset, out_start = stack.pop()
        if end_tag and end_tag != tag:
            raise _EntityParseError(f'Unmatched end tag {where}, expected "</{tag}>", found "</{end_tag}>"')
        if utf16 > offset:
            _add_html_entity(entities, tag, argument, offset, utf16 - offset, "".join(out[out_start:]))
        i += 1
    if stack:
        raise _EntityParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    result = "".join(out)
    if any(0xD800 <= ord(char) <= 0xDFFF for char in result):
        raise _EntityParseError("Text contains invalid Unicode characters after decoding HTML entities, "
                                "check for unmatched surrogate code units")
    return result, entities


def _parse_html_attributes(text: str, i: int, tag: str, where: str) -> tuple[str, int]:
    """Read the attributes of a start tag from ``i``; return the one that matters and the index of ``>``."""
    argument = ""
    while _char(text, i) != ">":
        while _char(text, i) != _END and _char(text, i) in _SPACES:
            i += 1
        if _char(text, i) == ">":
            break
        name_start = i
        while _char(text, i) not in _SPACES and _char(text, i) not in "=>/\"'":
            i += 1
        name = text[name_start:i]
        if not name:
            raise _EntityParseError(f'Empty attribute name in the tag "{tag}" {where}')
        while _char(text, i) != _END and _char(text, i) in _SPACES:
            i += 1
        if _char(text, i) != "=":
            if _char(text, i) == _END:
                raise _EntityParseError(f'Unclosed start tag "{tag}" {where}')
            if tag == "blockquote" and name == "expandable":
                argument = "1"
            continue
        i += 1
        while _char(text, i) != _END and _char(text, i) in _SPACES:
            i += 1
        if _char(text, i) == _END:
            raise _EntityParseError(f'Unclosed start tag "{tag}" {where}')
        if _char(text, i) not in "'\"":
            token_start = i
            while _char(text, i) in _NAME_TOKEN:
                i += 1
            value = text[token_start:i].lower()
            if _char(text, i) not in _SPACES and _char(text, i) != ">":
                raise _EntityParseError(
                    f"Unexpected end of name token at byte offset {_byte_offset(text, token_start)}"
                )
        else:
            quote = text[i]
            i += 1
            chars: list[str] = []
            while _char(text, i) != quote and _char(text, i) != _END:
                if text[i] == "&" and (decoded := _decode_html_entity(text, i)) is not None:
                    char, i = decoded
                    chars.append(char)
                    continue
                chars.append(text[i])
                i += 1
            if _char(text, i) == quote:
                i += 1
            value = "".join(chars)
        if _char(text, i) == _END:
            raise _EntityParseError(f"Unclosed start tag {where}")
        if tag == "a" and name == "href":
            argument = value
        elif tag == "code" and name == "class" and value.startswith("language-"):
            argument = value[len("language-"):]
        elif tag == "span" and name == "class" and value.startswith("tg-"):
            argument = value[len("tg-"):]
        elif tag == "tg-emoji" and name == "emoji-id":
            argument = value
        elif tag == "blockquote" and name == "expandable":
            argument = "1"
    return argument, i


def _add_html_entity(entities: list[_Entity], tag: str, argument: str, offset: int, length: int, inner: str) -> None:
    # The previous entity, if it covers exactly this span (how <pre><code> pairs are recognised).
    last = entities[-1] if entities and (entities[-1].offset, entities[-1].length) == (offset, length) else None
    if tag in _HTML_SIMPLE:
        entities.append(_Entity(_HTML_SIMPLE[tag], offset, length))
    elif tag == "tg-emoji":
        if not argument.isdigit() or int(argument) == 0:
            raise _EntityParseError("Invalid custom emoji identifier specified")
        entities.append(_Entity("CustomEmoji", offset, length, argument))
    elif tag == "a":
        url = argument or inner
        if url:
            entities.append(_Entity("TextUrl", offset, length, url))
    elif tag == "pre":
        # <pre><code class="language-x">…</code></pre> becomes one pre entity with a language.
        if last is not None and last.kind == "Code" and last.argument:
            entities[-1] = _Entity("PreCode", offset, length, last.argument)
        else:
            entities.append(_Entity("Pre", offset, length))
    elif tag == "code":
        if last is not None and last.kind == "Pre" and argument:
            entities[-1] = _Entity("PreCode", offset, length, argument)
        else:
            entities.append(_Entity("Code", offset, length, argument))
    else:
        entities.append(_Entity("ExpandableBlockQuote" if argument else "BlockQuote", offset, length))


_MARKDOWN_V2_RESERVED = "_*[]()~`>#+-=|{}.!\n"


@dataclass
class _OpenEntity:
    kind: str
    argument: str
    utf16: int
    index: int  # position of the opening marker in the source
    out_start: int


def _reserved(char: str) -> _EntityParseError:
    return _EntityParseError(f"Character '{char}' is reserved and must be escaped with the preceding '\\'")


def _closes_markdown_v2(kind: str, text: str, i: int) -> bool:
    c, following = text[i], _char(text, i + 1)
    return {
        "Bold": c == "*",
        "Italic": c == "_" and following != "_",
        "Code": c == "`",
        "Pre": c == "`" and following == "`" and _char(text, i + 2) == "`",
        "PreCode": c == "`" and following == "`" and _char(text, i + 2) == "`",
        "TextUrl": c == "]",
        "Underline": c == "_" and following == "_",
        "Strikethrough": c == "~",
        "Spoiler": c == "|" and following == "|",
        "CustomEmoji": c == "]",
        "BlockQuote": False,
    }[kind]


def _markdown_pre_start(text: str, i: int) -> tuple[str, str, int]:
    """After an opening triple backtick at ``i``: (kind, language, index of the content)."""
    kind, language = "Pre", ""
    language_end = i
    while _char(text, language_end) not in _SPACES and _char(text, language_end) != "`":
        language_end += 1
    if i != language_end and language_end < len(text) and text[language_end] != "`":
        kind, language, i = "PreCode", text[i:language_end], language_end
    # Skip one new line at the beginning of the block.
    if _char(text, i) in "\n\r":
        pair = _char(text, i + 1) in "\n\r" and text[i] != text[i + 1]
        i += 2 if pair else 1
    return kind, language, i


def _read_markdown_url(text: str, i: int) -> tuple[str, int]:
    """Read a ``(url)`` whose ``(`` is at ``i - 1``, honouring escapes; return it and the index of ``)``."""
    chars: list[str] = []
    while i < len(text) and text[i] != ")":
        if text[i] == "\\" and 0 < ord(_char(text, i + 1)) <= 126:
            chars.append(text[i + 1])
            i += 2
            continue
        chars.append(text[i])
        i += 1
    return "".join(chars), i


def _parse_markdown_v2(text: str) -> tuple[str, list[_Entity]]:
    out: list[str] = []
    utf16 = 0
    entities: list[_Entity] = []
    stack: list[_OpenEntity] = []
    have_blockquote = False
    can_start_blockquote = True
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and 0 < ord(_char(text, i + 1)) <= 126:
            escaped = text[i + 1]
            out.append(escaped)
            utf16 += 1
            if escaped != "\r":
                can_start_blockquote = escaped == "\n"
            i += 2
            continue
        in_code = bool(stack) and stack[-1].kind in ("Code", "Pre", "PreCode")
        if c not in ("`" if in_code else _MARKDOWN_V2_RESERVED):
            out.append(c)
            utf16 += _char_utf16(c)
            if c != "\r":
                can_start_blockquote = False
            i += 1
            continue
        is_end = bool(stack) and (
            (have_blockquote and c == "\n" and _char(text, i + 1) != ">")
            or _closes_markdown_v2(stack[-1].kind, text, i)
        )
        if not is_end:
            start = i
            opened: str | None
            argument = ""
            if c == "_":
                opened = "Italic"
                if _char(text, i + 1) == "_":
                    opened = "Underline"
                    i += 1
            elif c == "*":
                opened = "Bold"
            elif c == "~":
                opened = "Strikethrough"
            elif c == "|":
                if _char(text, i + 1) != "|":
                    raise _reserved(c)
                opened = "Spoiler"
                i += 1
            elif c == "[":
                opened = "TextUrl"
            elif c == "`":
                if _char(text, i + 1) == "`" and _char(text, i + 2) == "`":
                    opened, argument, i = _markdown_pre_start(text, i + 3)
                    i -= 1
                else:
                    opened = "Code"
            elif c == "!":
                if _char(text, i + 1) != "[":
                    raise _reserved(c)
                opened = "CustomEmoji"
                i += 1
            elif c == "\n":
                out.append("\n")
                utf16 += 1
                can_start_blockquote = True
                opened = None
            elif c == ">" and can_start_blockquote:
                opened = None if have_blockquote else "BlockQuote"
                have_blockquote = True
            else:
                raise _reserved(c)
            if opened is not None:
                stack.append(_OpenEntity(opened, argument, utf16, start, len(out)))
            i += 1
            continue
        top = stack[-1]
        kind = top.kind
        if c == "\n" and kind != "BlockQuote":
            # "||" right before the line end closes an expandable block quote.
            expandable = kind == "Spoiler" and (
                top.index == i - 2 or (top.index == i - 3 and out and out[-1] == "\r")
            )
            if not expandable:
                raise _EntityParseError(
                    f"Can't find end of {kind} entity at byte offset {_byte_offset(text, top.index)}"
                )
            stack.pop()
            top = stack[-1]
            if top.kind != "BlockQuote":
                raise _EntityParseError(
                    f"Can't find end of {top.kind} entity at byte offset {_byte_offset(text, top.index)}"
                )
            kind = "ExpandableBlockQuote"
        argument = top.argument
        skip = utf16 == top.utf16
        if kind in ("Underline", "Spoiler"):
            i += 1
        elif kind in ("Pre", "PreCode"):
            i += 2
        elif kind == "TextUrl":
            if _char(text, i + 1) != "(":
                url = "".join(out[top.out_start:])
            else:
                url_start = i + 2
                url, i = _read_markdown_url(text, url_start)
                if _char(text, i) != ")":
                    raise _EntityParseError(f"Can't find end of a URL at byte offset {_byte_offset(text, url_start)}")
            skip = skip or not url
            argument = url
        elif kind == "CustomEmoji":
            if _char(text, i + 1) != "(":
                raise _EntityParseError("Custom emoji entity must contain a tg://emoji URL")
            url_start = i + 2
            url, i = _read_markdown_url(text, url_start)
            if _char(text, i) != ")":
                raise _EntityParseError(
                    f"Can't find end of a custom emoji URL at byte offset {_byte_offset(text, url_start)}"
                )
            emoji = re.fullmatch(r"tg://emoji\?id=([1-9]\d*)", url)
            if emoji is None:
                raise _EntityParseError("Invalid custom emoji identifier specified")
            argument = emoji.group(1)
        elif kind in ("BlockQuote", "ExpandableBlockQuote"):
            # The block quote ends at this line break, which stays in the text.
            have_blockquote = False
            out.append(c)
            can_start_blockquote = True
            utf16 += 1
            skip = False
        if not skip:
            entities.append(_Entity(kind, top.utf16, utf16 - top.utf16, argument))
        stack.pop()
        i += 1
    if have_blockquote:
        kind = "BlockQuote"
        if stack[-1].kind == "Spoiler" and stack[-1].index == len(text) - 2:
            stack.pop()
            kind = "ExpandableBlockQuote"
        if stack[-1].kind == "BlockQuote":
            top = stack.pop()
            if utf16 != top.utf16:
                entities.append(_Entity(kind, top.utf16, utf16 - top.utf16))
    if stack:
        raise _EntityParseError(
            f"Can't find end of {stack[-1].kind} entity at byte offset {_byte_offset(text, stack[-1].index)}"
        )
    return "".join(out), entities


def _parse_markdown(text: str) -> tuple[str, list[_Entity]]:
    """Legacy Markdown: *bold*, _italic_, `code`, ```pre```, [text](url); no nesting."""
    out: list[str] = []
    utf16 = 0
    entities: list[_Entity] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and _char(text, i + 1) in "_*`[":
            out.append(text[i + 1])
            utf16 += 1
            i += 2
            continue
        if c not in "_*`[":
            out.append(c)
            utf16 += _char_utf16(c)
            i += 1
            continue
        begin = i
        end_char = "]" if c == "[" else c
        kind = {"_": "Italic", "*": "Bold", "`": "Code", "[": "TextUrl"}[c]
        language = ""
        i += 1
        is_pre = c == "`" and _char(text, i) == "`" and _char(text, i + 1) == "`"
        if is_pre:
            kind, language, i = _markdown_pre_start(text, i + 2)
        start_utf16 = utf16
        while i < len(text) and (
            text[i] != end_char or (is_pre and not (_char(text, i + 1) == "`" and _char(text, i + 2) == "`"))
        ):
            out.append(text[i])
            utf16 += _char_utf16(text[i])
            i += 1
        if i == len(text):
            raise _EntityParseError(f"Can't find end of the entity starting at byte offset {_byte_offset(text, begin)}")
        if utf16 != start_utf16:
            argument = language
            if kind == "TextUrl":
                if _char(text, i + 1) != "(":
                    argument = text[begin + 1:i]
                else:
                    url_start = i + 2
                    i = text.find(")", url_start)
                    i = len(text) if i < 0 else i
                    argument = text[url_start:i]
            if kind != "TextUrl" or argument:
                entities.append(_Entity(kind, start_utf16, utf16 - start_utf16, argument))
        if is_pre:
            i += 2
        i += 1
    return "".join(out), entities
