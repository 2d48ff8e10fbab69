"""A local Discord — REST API v10, Gateway and attachment CDN — for a real discord.py client.

The fake implements Discord's side of the wire, not discord.py's: a bot started against it logs
in, identifies on the gateway, caches the guilds from GUILD_CREATE, receives MESSAGE_CREATE and
INTERACTION_CREATE dispatches and answers over REST exactly as it would against discord.com.
Discord rules that a plugin can trip over are enforced with Discord's status codes and JSON error
codes: the message-content intent, channel permissions, the 2000-character limit, upload size,
the voice-message rules (flag 8192, one audio attachment with ``duration_secs`` and
``waveform``), the 3-second interaction deadline, single initial responses and per-route rate
limits with ``X-RateLimit-*`` headers.

Pointing discord.py 2.7.1 at it is the test's job (see ``tests/test_fake_discord.py``):
``discord.http.Route.BASE = fake.api_base`` covers all REST calls, including the interaction
webhooks; a non-sharded ``Client`` connects to the class attribute
``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`` (set it to the ``url`` from
``GET /gateway/bot``), while ``AutoShardedClient`` asks ``GET /gateway/bot`` itself.

Build the world (users, guilds, channels) before the bot connects: Discord delivers it in
GUILD_CREATE right after IDENTIFY, and the fake sends no later CHANNEL_CREATE or
GUILD_MEMBER_ADD events. DM channels can be opened at any time.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import hashlib
import hmac
import json
import math
import mimetypes
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum, IntFlag
from functools import reduce
from http import HTTPStatus
from operator import or_
from typing import Any, Literal
from urllib.parse import quote

from aiohttp import WSMsgType, hdrs, web

from tests.fakes.base import FakeServer

API_VERSION = 10
API_PREFIX = f"/api/v{API_VERSION}"
DISCORD_EPOCH_MS = 1_420_070_400_000
HEARTBEAT_INTERVAL_MS = 41_250  # what Discord currently sends in HELLO
MAX_CONTENT_LENGTH = 2000
MiB = 1024 * 1024
DEFAULT_UPLOAD_LIMIT = 10 * MiB
# Per-file upload limit by boost tier (discord.py's Guild._PREMIUM_GUILD_LIMITS agrees).
PREMIUM_UPLOAD_LIMITS = {0: DEFAULT_UPLOAD_LIMIT, 1: DEFAULT_UPLOAD_LIMIT, 2: 50 * MiB, 3: 100 * MiB}
OVERWRITE_ROLE = 0
OVERWRITE_MEMBER = 1


class ChannelType(IntEnum):
    GUILD_TEXT = 0
    DM = 1


class CommandType(IntEnum):
    CHAT_INPUT = 1
    USER = 2
    MESSAGE = 3


class OptionType(IntEnum):
    STRING = 3
    INTEGER = 4
    BOOLEAN = 5
    NUMBER = 10
    ATTACHMENT = 11


class CallbackType(IntEnum):
    CHANNEL_MESSAGE_WITH_SOURCE = 4
    DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE = 5
    DEFERRED_UPDATE_MESSAGE = 6  # component interactions only
    UPDATE_MESSAGE = 7  # component interactions only
    APPLICATION_COMMAND_AUTOCOMPLETE_RESULT = 8


class InteractionType(IntEnum):
    APPLICATION_COMMAND = 2
    APPLICATION_COMMAND_AUTOCOMPLETE = 4


# Discord's locales (Reference: Locales): the keys name_localizations / description_localizations take.
LOCALES = frozenset({
    "id", "da", "de", "en-GB", "en-US", "es-ES", "es-419", "fr", "hr", "it", "lt", "hu", "nl", "no", "pl", "pt-BR", "ro",
    "fi", "sv-SE", "vi", "tr", "cs", "el", "bg", "ru", "uk", "hi", "th", "zh-CN", "ja", "zh-TW", "ko",
})
MAX_OPTIONS = 25
MAX_CHOICES = 25
MAX_ACTION_ROWS = 5
MAX_ROW_BUTTONS = 5
MAX_CUSTOM_ID_LENGTH = 100
MAX_BUTTON_LABEL_LENGTH = 80


class MessageType(IntEnum):
    DEFAULT = 0
    REPLY = 19
    CHAT_INPUT_COMMAND = 20
    CONTEXT_MENU_COMMAND = 23


class MessageFlag(IntFlag):
    SUPPRESS_EMBEDS = 1 << 2
    EPHEMERAL = 1 << 6
    LOADING = 1 << 7
    SUPPRESS_NOTIFICATIONS = 1 << 12
    IS_VOICE_MESSAGE = 1 << 13
    IS_COMPONENTS_V2 = 1 << 15


# Create Message accepts only these flags; other bits are ignored. Interaction responses add EPHEMERAL.
_SETTABLE_FLAGS = (
    MessageFlag.SUPPRESS_EMBEDS
    | MessageFlag.SUPPRESS_NOTIFICATIONS
    | MessageFlag.IS_VOICE_MESSAGE
    | MessageFlag.IS_COMPONENTS_V2
)
_SETTABLE_INTERACTION_FLAGS = _SETTABLE_FLAGS | MessageFlag.EPHEMERAL


class Intent(IntFlag):
    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_PRESENCES = 1 << 8
    GUILD_MESSAGES = 1 << 9
    DIRECT_MESSAGES = 1 << 12
    MESSAGE_CONTENT = 1 << 15


# Every documented intent bit (0-16, 20, 21, 24, 25); anything else closes the gateway with 4013.
_KNOWN_INTENTS = (1 << 17) - 1 | 1 << 20 | 1 << 21 | 1 << 24 | 1 << 25
_PRIVILEGED_INTENTS = Intent.GUILD_MEMBERS | Intent.GUILD_PRESENCES | Intent.MESSAGE_CONTENT
# The application flag an unverified app gets when a privileged intent is toggled on in the
# Developer Portal (the *_LIMITED variants).
_APPLICATION_FLAG_FOR_INTENT = {
    Intent.GUILD_PRESENCES: 1 << 13,
    Intent.GUILD_MEMBERS: 1 << 15,
    Intent.MESSAGE_CONTENT: 1 << 19,
}


class Permission(IntFlag):
    CREATE_INSTANT_INVITE = 1 << 0
    KICK_MEMBERS = 1 << 1
    BAN_MEMBERS = 1 << 2
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    MANAGE_GUILD = 1 << 5  # "Manage Server"
    ADD_REACTIONS = 1 << 6
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    SEND_TTS_MESSAGES = 1 << 12
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    MENTION_EVERYONE = 1 << 17
    USE_EXTERNAL_EMOJIS = 1 << 18
    CONNECT = 1 << 20
    SPEAK = 1 << 21
    CHANGE_NICKNAME = 1 << 26
    MANAGE_ROLES = 1 << 28
    MANAGE_WEBHOOKS = 1 << 29
    USE_APPLICATION_COMMANDS = 1 << 31
    SEND_MESSAGES_IN_THREADS = 1 << 38
    SEND_VOICE_MESSAGES = 1 << 46


ALL_PERMISSIONS = int(reduce(or_, Permission))
# What @everyone gets in a new guild (the subset of Discord's default that this fake models).
DEFAULT_EVERYONE_PERMISSIONS = int(
    Permission.CREATE_INSTANT_INVITE
    | Permission.ADD_REACTIONS
    | Permission.VIEW_CHANNEL
    | Permission.SEND_MESSAGES
    | Permission.EMBED_LINKS
    | Permission.ATTACH_FILES
    | Permission.READ_MESSAGE_HISTORY
    | Permission.MENTION_EVERYONE
    | Permission.USE_EXTERNAL_EMOJIS
    | Permission.CONNECT
    | Permission.SPEAK
    | Permission.CHANGE_NICKNAME
    | Permission.USE_APPLICATION_COMMANDS
    | Permission.SEND_MESSAGES_IN_THREADS
    | Permission.SEND_VOICE_MESSAGES
)
# A DM with the bot: no permission system, but interactions report these as app_permissions.
_DM_PERMISSIONS = int(
    Permission.VIEW_CHANNEL
    | Permission.SEND_MESSAGES
    | Permission.READ_MESSAGE_HISTORY
    | Permission.ADD_REACTIONS
    | Permission.ATTACH_FILES
    | Permission.EMBED_LINKS
    | Permission.MENTION_EVERYONE
    | Permission.USE_EXTERNAL_EMOJIS
    | Permission.SEND_VOICE_MESSAGES
)
# Lacking SEND_MESSAGES implicitly denies these (Discord's permission hierarchy).
_NEEDS_SEND_MESSAGES = int(
    Permission.SEND_TTS_MESSAGES | Permission.MENTION_EVERYONE | Permission.ATTACH_FILES | Permission.EMBED_LINKS
)

# JSON error codes (topics/opcodes-and-status-codes.mdx) and the messages Discord sends with them.
ERROR_MESSAGES: dict[int, str] = {
    10003: "Unknown Channel",
    10004: "Unknown Guild",
    10008: "Unknown Message",
    10013: "Unknown User",
    10015: "Unknown Webhook",
    10062: "Unknown interaction",
    40005: "Request entity too large",
    40060: "Interaction has already been acknowledged.",
    50001: "Missing Access",
    50005: "Cannot edit a message authored by another user",
    50006: "Cannot send an empty message",
    50013: "Missing Permissions",
    50027: "Invalid Webhook Token",
    50035: "Invalid Form Body",
    50109: "The request body contains invalid JSON.",
    50159: "Voice messages do not support additional content.",
    50160: "Voice messages must have a single audio attachment.",
    50161: "Voice messages must have supporting metadata.",
    50162: "Voice messages cannot be edited.",
    50173: "You cannot send voice messages in this channel.",
    160002: "Cannot reply without permission to read message history",
}

# Refusals only a client breaking Discord's rules gets (malformed or over-limit requests, a second
# answer to an interaction), as opposed to the state of the world (permissions, deleted
# messages): each is a violation that fails the test (tests/violations.py).
CLIENT_MISTAKES = frozenset({40060, 50006, 50035, 50109, 50159, 50160, 50161, 50162})

# The parsed body of the API request being handled (set by the middleware, read by handlers).
_request_body: contextvars.ContextVar[tuple[Any, list[RecordedFile]]] = contextvars.ContextVar("request_body")

# Gateway close codes the fake sends, with Discord's reasons.
_GATEWAY_CLOSE_REASONS = {
    4001: "Unknown opcode.",
    4002: "Error while decoding payload.",
    4003: "Not authenticated.",
    4004: "Authentication failed.",
    4005: "Already authenticated.",
    4010: "Invalid shard.",
    4013: "Invalid intent(s).",
    4014: "Disallowed intent(s).",
}

_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")


def _payload() -> Any:
    return _request_body.get()[0]


def _files() -> list[RecordedFile]:
    return _request_body.get()[1]


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _json(body: Any, status: int = 200) -> web.Response:
    # Exactly "application/json": discord.py's json_or_text compares the header verbatim, and
    # aiohttp's json_response would append "; charset=utf-8".
    return web.Response(status=status, body=json.dumps(body).encode(), headers={hdrs.CONTENT_TYPE: "application/json"})


def _error(status: int, code: int, message: str | None = None, errors: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"message": message or ERROR_MESSAGES[code], "code": code}
    if errors:
        body["errors"] = errors
    return _json(body, status)


def _form_error(path: str, error_code: str, message: str) -> web.Response:
    """400 50035 with Discord's nested ``errors`` object; ``path`` is dotted, e.g. "attachments.0.waveform"."""
    errors: dict[str, Any] = {"_errors": [{"code": error_code, "message": message}]}
    for key in reversed(path.split(".")):
        errors = {key: errors}
    return _error(400, 50035, errors=errors)


def _localization_error(at: str, localizations: Any, valid: Callable[[str], bool], rule: str) -> web.Response | None:
    """A ``*_localizations`` object: Discord locales as keys, each value held to the field's own rule."""
    if localizations is None:
        return None
    if not isinstance(localizations, dict):
        return _form_error(at, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
    for locale, value in localizations.items():
        if locale not in LOCALES:
            return _form_error(f"{at}.{locale}", "LOCALE_INVALID", f"Invalid locale {locale!r}")
        if not isinstance(value, str) or not valid(value):
            return _form_error(f"{at}.{locale}", "BASE_TYPE_BAD_LENGTH", rule)
    return None


def _describes(value: str) -> bool:
    return 1 <= len(value) <= 100


def _option_errors(at: str, options: Any) -> web.Response | None:
    """Chat-input options: names as command names, descriptions of 1-100 characters, at most 25
    options and 25 choices of 1-100 characters each, required ones first, autocomplete or choices."""
    if not isinstance(options, list) or len(options) > MAX_OPTIONS:
        return _form_error(f"{at}options", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_OPTIONS} or fewer in length.")
    optional_seen = False
    for index, option in enumerate(options):
        here = f"{at}options.{index}."
        if not _is_valid_chat_input_name(option.get("name", "")):
            return _form_error(f"{here}name", "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
        if not _describes(option.get("description", "")):
            return _form_error(f"{here}description", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        for field_name, valid in (("name_localizations", _is_valid_chat_input_name), ("description_localizations", _describes)):
            if error := _localization_error(f"{here}{field_name}", option.get(field_name), valid, "Invalid value"):
                return error
        if option.get("required"):
            if optional_seen:
                return _form_error(f"{here}required", "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                                   "Required options must be placed before non-required options")
        else:
            optional_seen = True
        choices = option.get("choices") or []
        if len(choices) > MAX_CHOICES:
            return _form_error(f"{here}choices", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CHOICES} or fewer in length.")
        if choices and option.get("autocomplete"):
            return _form_error(f"{here}autocomplete", "APPLICATION_COMMAND_OPTION_CHOICES_AUTOCOMPLETE",
                               "Autocomplete and choices cannot both be set")
        for number, choice in enumerate(choices):
            if not _describes(choice.get("name", "")):
                return _form_error(f"{here}choices.{number}.name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
            if error := _localization_error(f"{here}choices.{number}.name_localizations", choice.get("name_localizations"),
                                            _describes, "Must be between 1 and 100 in length."):
                return error
    return None


def _component_errors(components: Any) -> web.Response | None:
    """Message components as Discord checks them: at most 5 action rows (type 1) of 1–5
    buttons (type 2); a button with style 1–4 has a custom_id of 1–100 characters (unique in
    the message), a link button (style 5) a url and no custom_id; labels of at most 80."""
    if components is None:
        return None
    if not isinstance(components, list) or len(components) > MAX_ACTION_ROWS:
        return _form_error("components", "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
    seen: set[str] = set()
    for row_index, row in enumerate(components):
        path = f"components.{row_index}"
        if not isinstance(row, dict) or row.get("type") != 1:
            return _form_error(f"{path}.type", "UNION_TYPE_CHOICES", "Value of field \"type\" must be one of (1,).")
        buttons = row.get("components")
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= MAX_ROW_BUTTONS:
            return _form_error(f"{path}.components", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length.")
        for index, button in enumerate(buttons):
            where = f"{path}.components.{index}"
            if not isinstance(button, dict) or button.get("type") != 2:
                return _form_error(f"{where}.type", "UNION_TYPE_CHOICES", "Value of field \"type\" must be one of (2,).")
            style = button.get("style")
            if style not in (1, 2, 3, 4, 5):
                return _form_error(f"{where}.style", "BASE_TYPE_CHOICES", "Value must be one of {1, 2, 3, 4, 5}.")
            if len(str(button.get("label", ""))) > MAX_BUTTON_LABEL_LENGTH:
                return _form_error(f"{where}.label", "BASE_TYPE_MAX_LENGTH", "Must be 80 or fewer in length.")
            custom_id = button.get("custom_id")
            if style == 5:
                if custom_id is not None or not button.get("url"):
                    return _form_error(f"{where}.url", "BUTTON_COMPONENT_URL_REQUIRED", "A url is required")
                continue
            if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= MAX_CUSTOM_ID_LENGTH:
                return _form_error(f"{where}.custom_id", "BUTTON_COMPONENT_CUSTOM_ID_REQUIRED",
                                   "A custom id is required and must be 1-100 characters")
            if custom_id in seen:
                return _form_error(f"{where}.custom_id", "COMPONENT_CUSTOM_ID_DUPLICATED",
                                   "Component custom id cannot be duplicated")
            seen.add(custom_id)
    return None


def _is_valid_chat_input_name(name: str) -> bool:
    # Discord's rule is ^[-_'\p{L}\p{N}\p{sc=Deva}\p{sc=Thai}]{1,32}$ with lowercase letters where a
    # lowercase form exists; the stdlib has no \p{..}, so letters/digits stand in for L and N.
    return 1 <= len(name) <= 32 and name == name.lower() and all(c.isalnum() or c in "-_'" for c in name)


# ------------------------------------------------------------------------------------------------
# The world: users, guilds, channels


@dataclass
class FakeUser:
    id: int
    username: str
    bot: bool = False
    global_name: str | None = None

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "username": self.username,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": None,
            "banner": None,
            "accent_color": None,
            "public_flags": 0,
            "flags": 0,
            "avatar_decoration_data": None,
            "collectibles": None,
            "primary_guild": None,
        }
        if self.bot:
            data["bot"] = True
        return data


@dataclass(frozen=True)
class PermissionOverwrite:
    """A channel overwrite; ``id`` is a role id (the guild id for @everyone) or a user id."""

    id: int
    type: int  # OVERWRITE_ROLE or OVERWRITE_MEMBER
    allow: int = 0
    deny: int = 0

    def payload(self) -> dict[str, Any]:
        return {"id": str(self.id), "type": self.type, "allow": str(self.allow), "deny": str(self.deny)}


@dataclass
class FakeRole:
    id: int
    name: str
    permissions: int
    position: int = 0
    bot_id: int | None = None  # set on the managed role Discord creates for a bot invited with permissions

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "name": self.name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": self.position,
            "permissions": str(self.permissions),
            "managed": self.bot_id is not None,
            "mentionable": False,
            "flags": 0,
        }
        if self.bot_id is not None:
            data["tags"] = {"bot_id": str(self.bot_id)}
        return data


@dataclass
class FakeMember:
    user: FakeUser
    roles: list[int]
    joined_at: str = field(default_factory=_now_iso)

    def payload(self, *, with_user: bool = True, permissions: int | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "roles": [str(role) for role in self.roles],
            "nick": None,
            "avatar": None,
            "banner": None,
            "joined_at": self.joined_at,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }
        if with_user:
            data["user"] = self.user.payload()
        if permissions is not None:
            data["permissions"] = str(permissions)
        return data


@dataclass
class FakeChannel:
    id: int
    type: ChannelType
    name: str | None = None
    guild_id: int | None = None
    position: int = 0
    overwrites: list[PermissionOverwrite] = field(default_factory=list)
    recipient: FakeUser | None = None  # the other side of a DM
    voice_messages_allowed: bool = True  # False: voice messages get 403 50173 here

    def payload(self) -> dict[str, Any]:
        if self.type is ChannelType.DM:
            assert self.recipient is not None
            return {"id": str(self.id), "type": int(self.type), "last_message_id": None, "flags": 0,
                    "recipients": [self.recipient.payload()]}
        return {
            "id": str(self.id),
            "type": int(self.type),
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": self.position,
            "permission_overwrites": [overwrite.payload() for overwrite in self.overwrites],
            "parent_id": None,
            "topic": None,
            "nsfw": False,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }


@dataclass
class FakeGuild:
    id: int
    name: str
    owner_id: int
    premium_tier: int
    upload_limit: int  # per-file limit in bytes; larger uploads get 413 40005
    roles: list[FakeRole] = field(default_factory=list)
    channels: list[FakeChannel] = field(default_factory=list)
    members: dict[int, FakeMember] = field(default_factory=dict)
    joined_at: str = field(default_factory=_now_iso)

    def role(self, role_id: int) -> FakeRole:
        return next(role for role in self.roles if role.id == role_id)


@dataclass(frozen=True)
class FakeFile:
    """Bytes a user uploads; becomes an attachment served by the fake's CDN."""

    data: bytes
    filename: str
    content_type: str | None = None  # None: derived from the file name, as Discord does
    duration_secs: float | None = None
    waveform: bytes | None = None  # one byte (0-255) per point
    description: str | None = None


def voice_note(ogg: bytes, duration_secs: float, waveform: bytes | None = None) -> FakeFile:
    """A voice-message attachment as Discord's clients upload it (send with flag IS_VOICE_MESSAGE)."""
    if waveform is None:
        # Clients sample at most every 100 ms and downsample to at most 256 points.
        waveform = bytes([128]) * max(1, min(256, round(duration_secs * 10)))
    return FakeFile(ogg, "voice-message.ogg", "audio/ogg", duration_secs, waveform)


# ------------------------------------------------------------------------------------------------
# What the fake records


@dataclass(frozen=True)
class RecordedFile:
    field: str  # multipart field name, e.g. "files[0]"
    filename: str | None
    content_type: str | None  # as declared in the multipart part
    data: bytes


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    route: str  # discord.py's Route.key form, e.g. "POST /channels/{channel_id}/messages"
    path: str  # without the /api/v10 prefix, e.g. "/channels/123/messages"
    query: dict[str, str]
    headers: dict[str, str]
    json: Any  # the JSON body, or payload_json of a multipart body
    files: list[RecordedFile]
    status: int
    received_at: float  # time.monotonic()


@dataclass(frozen=True)
class InteractionReply:
    """An accepted response to an interaction (rejected ones are only in ``FakeDiscord.requests``)."""

    kind: Literal["callback", "followup", "edit", "delete"]
    callback_type: int | None  # for kind == "callback"
    json: Any
    files: list[RecordedFile]
    message: dict[str, Any] | None  # the message created, edited or deleted (None for an autocomplete result)


@dataclass
class GatewayConnection:
    path: str
    query: dict[str, str]
    identify: dict[str, Any] | None = None
    resume: dict[str, Any] | None = None
    heartbeats: int = 0
    close_code: int | None = None  # of the first close frame, whoever sent it; set once the connection ended


@dataclass
class _Session:
    id: str
    intents: int
    shard: list[int] | None
    ws: web.WebSocketResponse | None
    seq: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)  # sent dispatches, replayed on RESUME
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class _Interaction:
    id: int
    token: str
    command: dict[str, Any]
    channel: FakeChannel
    user: FakeUser
    target: dict[str, Any] | None
    dispatched_at: float
    response_type: int | None = None
    message_ids: list[int] = field(default_factory=list)  # original response first
    loading: bool = False  # deferred, and the "thinking" message is not filled yet
    replies: list[InteractionReply] = field(default_factory=list)
    kind: InteractionType = InteractionType.APPLICATION_COMMAND
    component: dict[str, Any] | None = None  # the message whose button was pressed (component interactions)


@dataclass
class _Fault:
    status: int
    code: int
    message: str | None
    retry_after: float | None
    global_: bool
    remaining: int


@dataclass
class _Bucket:
    remaining: int
    resets_at: float  # time.monotonic()


class _InvalidJSON(Exception):
    pass


# ------------------------------------------------------------------------------------------------


class FakeDiscord(FakeServer):
    """Discord REST API v10 under ``api_base``, the Gateway under ``gateway_url``, and the CDN.

    The default world: the bot user, the human ``user`` ("alice", also the guild owner), and
    ``guild`` with the text channel ``text_channel``. Privileged intents in ``approved_intents``
    are the ones switched on in the Developer Portal; requesting any other closes with 4014.
    """

    def __init__(
        self,
        token: str = "MTAxNTk2.fake.bot-token",
        *,
        approved_intents: Intent = Intent.MESSAGE_CONTENT,
        interaction_deadline: float = 3.0,
        interaction_token_ttl: float = 15 * 60.0,
        rate_limit: int = 5,
        rate_limit_window: float = 5.0,
        attachment_url_ttl: float = 24 * 3600.0,
    ) -> None:
        super().__init__()
        self.token = token
        self.approved_intents = approved_intents
        self.interaction_deadline = interaction_deadline  # seconds to the initial response
        self.interaction_token_ttl = interaction_token_ttl  # seconds for followups and edits
        # Discord's usual bucket for sending messages is 5 per 5 s per channel; every route and
        # major parameter (channel, guild, webhook) gets such a bucket here.
        self.rate_limit = rate_limit
        self.rate_limit_window = rate_limit_window
        self.attachment_url_ttl = attachment_url_ttl  # lifetime of signed CDN URLs

        self.requests: list[RecordedRequest] = []
        self.gateway_connections: list[GatewayConnection] = []
        self.command_writes = 0  # successful PUT/POST application-command requests

        self._last_id = 0
        self._users: dict[int, FakeUser] = {}
        self._guilds: dict[int, FakeGuild] = {}
        self._channels: dict[int, FakeChannel] = {}
        self._dm_channels: dict[int, FakeChannel] = {}  # by recipient id
        self._messages: dict[int, list[dict[str, Any]]] = {}  # by channel id, oldest first
        self._commands: dict[int | None, list[dict[str, Any]]] = {}  # by guild id; None = global
        self._interactions: dict[int, _Interaction] = {}
        self._sessions: dict[str, _Session] = {}
        self._faults: dict[str, list[_Fault]] = {}
        self._buckets: dict[tuple[str | None, ...], _Bucket] = {}
        self._cdn: dict[str, tuple[bytes, str | None]] = {}  # by path, without the signature query
        self._cdn_secret = secrets.token_bytes(32)

        self.application_id = self._new_id()
        # A bot user's id is its application's id.
        self.bot_user = FakeUser(self.application_id, "voicebridge-test-bot", bot=True)
        self._users[self.bot_user.id] = self.bot_user
        self.user = self.add_user("alice")
        self.guild = self.add_guild("Test Guild", owner=self.user)
        self.text_channel = self.guild.channels[0]

        self._route_keys = self._add_routes()
        self.app.middlewares.append(self._api_middleware)
        self.app.on_shutdown.append(self._close_gateway_connections)

    # --------------------------------------------------------------------------------------------
    # Addresses

    @property
    def api_base(self) -> str:
        return f"{self.base_url}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        return f"{self.ws_base_url}/gateway"

    @property
    def resume_gateway_url(self) -> str:
        return f"{self.ws_base_url}/gateway/resume"

    # --------------------------------------------------------------------------------------------
    # Building the world (before the bot connects)

    def add_user(self, username: str, *, bot: bool = False) -> FakeUser:
        user = FakeUser(self._new_id(), username, bot=bot)
        self._users[user.id] = user
        return user

    def add_guild(
        self,
        name: str,
        *,
        owner: FakeUser,
        premium_tier: int = 0,
        bot_permissions: int | None = None,
        channel_name: str = "general",
    ) -> FakeGuild:
        """A guild the bot is in, with @everyone, a text channel, the owner and the bot as members.

        ``bot_permissions`` adds the managed role Discord creates when a bot is invited with
        permissions; without it the bot has only what @everyone has.
        """
        self._require_offline()
        guild_id = self._new_id()
        guild = FakeGuild(guild_id, name, owner.id, premium_tier, PREMIUM_UPLOAD_LIMITS[premium_tier])
        guild.roles.append(FakeRole(guild_id, "@everyone", DEFAULT_EVERYONE_PERMISSIONS))
        bot_roles: list[int] = []
        if bot_permissions is not None:
            bot_role = FakeRole(self._new_id(), self.bot_user.username, bot_permissions, 1, bot_id=self.bot_user.id)
            guild.roles.append(bot_role)
            bot_roles.append(bot_role.id)
        self._guilds[guild_id] = guild
        self.add_member(guild, owner)
        self.add_member(guild, self.bot_user, roles=bot_roles)
        self.add_text_channel(guild, channel_name)
        return guild

    def add_text_channel(
        self,
        guild: FakeGuild,
        name: str,
        *,
        overwrites: Sequence[PermissionOverwrite] = (),
        voice_messages_allowed: bool = True,
    ) -> FakeChannel:
        self._require_offline()
        channel = FakeChannel(self._new_id(), ChannelType.GUILD_TEXT, name, guild.id, len(guild.channels),
                              list(overwrites), voice_messages_allowed=voice_messages_allowed)
        guild.channels.append(channel)
        self._channels[channel.id] = channel
        return channel

    def add_member(self, guild: FakeGuild, user: FakeUser, *, roles: Sequence[int] = ()) -> FakeMember:
        self._require_offline()
        member = FakeMember(user, list(roles))
        guild.members[user.id] = member
        return member

    def dm_channel(self, user: FakeUser) -> FakeChannel:
        """The DM channel between the bot and ``user`` (the one POST /users/@me/channels returns)."""
        channel = self._dm_channels.get(user.id)
        if channel is None:
            channel = FakeChannel(self._new_id(), ChannelType.DM, recipient=user)
            self._dm_channels[user.id] = channel
            self._channels[channel.id] = channel
        return channel

    def add_attachment(self, channel_id: int, file: FakeFile) -> dict[str, Any]:
        """Register ``file`` on the CDN and return its attachment object (signed, expiring URLs)."""
        attachment_id = self._new_id()
        content_type = file.content_type or mimetypes.guess_type(file.filename)[0]
        path = f"/attachments/{channel_id}/{attachment_id}/{quote(file.filename)}"
        issued = int(time.time())
        expires_hex, issued_hex = f"{issued + int(self.attachment_url_ttl):x}", f"{issued:x}"
        signature = self._cdn_signature(path, expires_hex, issued_hex)
        signed = f"{path}?ex={expires_hex}&is={issued_hex}&hm={signature}&"
        self._cdn[path] = (file.data, content_type)
        attachment: dict[str, Any] = {
            "id": str(attachment_id),
            "filename": file.filename,
            "size": len(file.data),
            # cdn.discordapp.com and media.discordapp.net, both served by this fake.
            "url": f"{self.base_url}/cdn{signed}",
            "proxy_url": f"{self.base_url}/media{signed}",
            "content_type": content_type,
        }
        if file.description is not None:
            attachment["description"] = file.description
        if file.duration_secs is not None:
            attachment["duration_secs"] = file.duration_secs
        if file.waveform is not None:
            attachment["waveform"] = base64.b64encode(file.waveform).decode()
        return attachment

    # --------------------------------------------------------------------------------------------
    # What happened

    def messages_in(self, channel_id: int) -> list[dict[str, Any]]:
        """Every message in the channel, oldest first, as stored (full content, any author)."""
        return list(self._messages.get(channel_id, []))

    def interaction_responses(self, interaction_id: int | str) -> list[InteractionReply]:
        return list(self._interactions[int(interaction_id)].replies)

    def commands(self, guild_id: int | None = None) -> list[dict[str, Any]]:
        """Registered application commands: global, or of one guild."""
        return list(self._commands.get(guild_id, []))

    async def wait_for_request(
        self,
        method: str,
        route_or_path: str | Callable[[str], bool],
        predicate: Callable[[RecordedRequest], bool] | None = None,
        timeout: float = 10.0,
    ) -> RecordedRequest:
        """The first recorded request with ``method`` whose route template or path matches.

        ``route_or_path`` is a template ("/channels/{channel_id}/messages"), a concrete path
        ("/channels/123/messages") or a predicate on the path.
        """

        def matches(request: RecordedRequest) -> bool:
            if request.method != method:
                return False
            if callable(route_or_path):
                path_matches = route_or_path(request.path)
            else:
                path_matches = request.route == f"{method} {route_or_path}" or request.path == route_or_path
            return path_matches and (predicate is None or predicate(request))

        return await self.wait_for(lambda: next((r for r in self.requests if matches(r)), None), timeout)

    # --------------------------------------------------------------------------------------------
    # Fault injection

    def fail_next(
        self,
        route: str,
        *,
        status: int,
        code: int = 0,
        message: str | None = None,
        retry_after: float | None = None,
        global_: bool = False,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests on ``route`` (e.g. "POST /channels/{channel_id}/messages")
        with an error instead of handling them. A 429 needs ``retry_after`` and is shaped like
        Discord's (JSON body, ``Via`` header, ``X-RateLimit-Scope``), so discord.py waits it out."""
        if route not in self._route_keys:
            raise ValueError(f"unknown route {route!r}; known: {sorted(self._route_keys)}")
        if status == 429 and retry_after is None:
            raise ValueError("a 429 needs retry_after")
        self._faults.setdefault(route, []).append(_Fault(status, code, message, retry_after, global_, times))

    # --------------------------------------------------------------------------------------------
    # Test-side gateway events

    async def dispatch_message(
        self,
        channel_id: int,
        author: FakeUser,
        *,
        content: str = "",
        attachments: Sequence[FakeFile] = (),
        flags: int = 0,
        message_reference: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A user posts a message: it is stored (GET works) and sent as MESSAGE_CREATE.

        ``message_reference`` is Discord's shape, e.g. ``{"message_id": 123}``, for a reply.
        Returns the stored message, with content even where the bot's intents hide it.
        """
        self._require_session()
        channel = self._channels[channel_id]
        if channel.type is ChannelType.DM:
            assert channel.recipient is not None
            if author.id not in (self.bot_user.id, channel.recipient.id):
                raise ValueError(f"{author.username} is not in this DM")
        elif author.id not in self._guilds[channel.guild_id].members:
            raise ValueError(f"{author.username} is not a member of the guild")
        referenced = None
        if message_reference is not None:
            referenced = self._find_message(channel.id, message_reference["message_id"])
            if referenced is None:
                raise LookupError(f"no message {message_reference['message_id']} in channel {channel.id}")
        message = self._new_message(
            channel,
            author,
            content=content,
            attachments=[self.add_attachment(channel.id, file) for file in attachments],
            flags=flags,
            referenced=referenced,
        )
        await self._broadcast_message("MESSAGE_CREATE", message)
        return message

    async def dispatch_voice_message(
        self, channel_id: int, author: FakeUser, ogg: bytes, duration_secs: float, waveform: bytes | None = None
    ) -> dict[str, Any]:
        """A user records a voice message: flag IS_VOICE_MESSAGE, one voice-message.ogg attachment."""
        return await self.dispatch_message(
            channel_id,
            author,
            attachments=[voice_note(ogg, duration_secs, waveform)],
            flags=MessageFlag.IS_VOICE_MESSAGE,
        )

    async def dispatch_interaction(
        self,
        command_name: str,
        *,
        user: FakeUser,
        channel_id: int,
        options: Mapping[str, Any] | None = None,
        target_message_id: int | str | None = None,
        locale: str = "en-US",
        focused: str | None = None,
    ) -> dict[str, Any]:
        """A user invokes a registered application command; sent as INTERACTION_CREATE.

        With ``target_message_id`` it is a MESSAGE context-menu command on that message,
        otherwise a chat-input (slash) command with ``options`` by name (an ATTACHMENT option
        takes a ``FakeFile``). Discord only offers registered commands, so the command must have
        been synced (or seeded with ``register_commands``). Returns the interaction payload; its
        ``id`` keys ``interaction_responses``. With ``focused`` (an option's name) it is an
        autocomplete interaction (type 4) while that option is being typed: ``options`` hold the
        values so far, and the app answers with a callback of type 8 and its choices.
        """
        self._require_session()
        channel = self._channels[channel_id]
        guild = self._guild_of(channel)
        command_type = CommandType.CHAT_INPUT if target_message_id is None else CommandType.MESSAGE
        command = self._find_command(command_name, command_type, guild)
        data: dict[str, Any] = {"id": command["id"], "name": command["name"], "type": int(command_type)}
        if "guild_id" in command:
            data["guild_id"] = command["guild_id"]
        resolved: dict[str, Any] = {}
        target = None
        if target_message_id is not None:
            target = self._find_message(channel.id, target_message_id)
            if target is None:
                raise LookupError(f"no message {target_message_id} in channel {channel.id}")
            data["target_id"] = target["id"]
            # Unfiltered: the target of a context-menu command is exempt from the content intent.
            resolved["messages"] = {target["id"]: target}
        if options:
            data["options"] = self._command_options(command, options, channel, resolved)
        if focused is not None:
            option = next((option for option in command.get("options", []) if option["name"] == focused), None)
            if option is None or not option.get("autocomplete"):
                raise ValueError(f"option {focused!r} of {command_name!r} has no autocomplete")
            data["options"] = [{**value, "focused": True} if value["name"] == focused else value
                               for value in data.get("options", [])]
            if not any(value.get("focused") for value in data["options"]):
                data["options"].append({"name": focused, "type": option["type"], "value": "", "focused": True})
        if resolved:
            data["resolved"] = resolved
        kind = InteractionType.APPLICATION_COMMAND if focused is None else InteractionType.APPLICATION_COMMAND_AUTOCOMPLETE

        interaction_id, token, payload = self._interaction_payload(int(kind), data, channel, user, locale)
        self._interactions[interaction_id] = _Interaction(
            interaction_id, token, command, channel, user, target, dispatched_at=time.monotonic(), kind=kind
        )
        await self._broadcast("INTERACTION_CREATE", lambda session: payload, guild)
        return payload

    def _interaction_payload(self, kind: int, data: dict[str, Any], channel: FakeChannel, user: FakeUser,
                             locale: str) -> tuple[int, str, dict[str, Any]]:
        """An INTERACTION_CREATE payload as Discord sends it: its id, its token and the payload."""
        guild = self._guild_of(channel)
        interaction_id = self._new_id()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(48)
        user_permissions = self._permissions(channel, user.id)
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": kind,
            "data": data,
            "token": token,
            "version": 1,
            "channel": {**channel.payload(), "permissions": str(user_permissions)},
            "channel_id": str(channel.id),
            "app_permissions": str(self._permissions(channel, self.bot_user.id)),
            "locale": locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "attachment_size_limit": guild.upload_limit if guild else DEFAULT_UPLOAD_LIMIT,
        }
        if guild is not None:
            payload.update(
                guild_id=str(guild.id),
                guild={"id": str(guild.id), "locale": "en-US", "features": []},
                guild_locale="en-US",
                member=guild.members[user.id].payload(permissions=user_permissions),
                context=0,  # GUILD
            )
        else:
            payload.update(user=user.payload(), context=1)  # BOT_DM
        payload["authorizing_integration_owners"] = self._integration_owners(channel)
        return interaction_id, token, payload

    async def dispatch_component(
        self, *, user: FakeUser, channel_id: int, message_id: int | str, custom_id: str, locale: str = "en-US"
    ) -> dict[str, Any]:
        """A user presses the button ``custom_id`` under the bot's message: INTERACTION_CREATE of
        type 3 (MESSAGE_COMPONENT) carrying the message. Discord sends presses of buttons that
        exist only, so the message must have one with that custom_id. Returns the payload."""
        self._require_session()
        channel = self._channels[channel_id]
        guild = self._guild_of(channel)
        message = self._find_message(channel.id, message_id)
        if message is None:
            raise LookupError(f"no message {message_id} in channel {channel.id}")
        custom_ids = {button.get("custom_id") for row in message.get("components") or [] for button in row["components"]}
        if custom_id not in custom_ids:
            raise LookupError(f"message {message_id} has no button {custom_id!r}")
        interaction_id, token, payload = self._interaction_payload(
            3, {"custom_id": custom_id, "component_type": 2}, channel, user, locale)  # MESSAGE_COMPONENT
        payload["message"] = message
        self._interactions[interaction_id] = _Interaction(
            interaction_id, token, {"id": "0", "name": "", "type": 0}, channel, user, None,
            dispatched_at=time.monotonic(), component=message)
        await self._broadcast("INTERACTION_CREATE", lambda session: payload, guild)
        return payload

    def register_commands(self, commands: Iterable[Mapping[str, Any]], guild_id: int | None = None) -> None:
        """Seed commands as if a previous run had synced them (not counted in ``command_writes``)."""
        commands = [dict(command) for command in commands]
        error = self._command_errors(commands, "")
        if error is not None:
            raise ValueError(f"invalid application commands: {error.text}")
        self._store_commands(commands, guild_id)

    async def request_reconnect(self) -> None:
        """Send RECONNECT (op 7) as Discord does before moving a session; clients RESUME on
        ``resume_gateway_url``, and dispatches made in between are replayed."""
        for session in self._sessions.values():
            async with session.lock:
                if session.ws is not None and not session.ws.closed:
                    await session.ws.send_str(json.dumps({"op": 7, "d": None, "s": None, "t": None}))

    # --------------------------------------------------------------------------------------------
    # Routing, recording, auth, faults and rate limits

    def _add_routes(self) -> set[str]:
        routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
            ("GET", "/gateway", self._get_gateway),
            ("GET", "/gateway/bot", self._get_gateway_bot),
            ("GET", "/users/@me", self._get_current_user),
            ("GET", "/oauth2/applications/@me", self._get_application),
            ("GET", "/applications/@me", self._get_application),
            ("GET", "/applications/{application_id}/commands", self._get_commands),
            ("PUT", "/applications/{application_id}/commands", self._bulk_overwrite_commands),
            ("POST", "/applications/{application_id}/commands", self._upsert_command),
            ("PATCH", "/applications/{application_id}/commands/{command_id}", self._edit_command),
            ("DELETE", "/applications/{application_id}/commands/{command_id}", self._delete_command),
            ("GET", "/applications/{application_id}/guilds/{guild_id}/commands", self._get_commands),
            ("PUT", "/applications/{application_id}/guilds/{guild_id}/commands", self._bulk_overwrite_commands),
            ("POST", "/applications/{application_id}/guilds/{guild_id}/commands", self._upsert_command),
            ("PATCH", "/applications/{application_id}/guilds/{guild_id}/commands/{command_id}", self._edit_command),
            ("DELETE", "/applications/{application_id}/guilds/{guild_id}/commands/{command_id}", self._delete_command),
            ("GET", "/channels/{channel_id}", self._get_channel),
            ("POST", "/users/@me/channels", self._open_dm),
            ("POST", "/channels/{channel_id}/messages", self._create_message),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self._get_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._edit_message),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self._delete_message),
            ("POST", "/channels/{channel_id}/typing", self._trigger_typing),
            # Parameter names follow discord.py's Route paths, so route keys equal Route.key.
            ("POST", "/interactions/{webhook_id}/{webhook_token}/callback", self._interaction_callback),
            ("POST", "/webhooks/{webhook_id}/{webhook_token}", self._create_followup),
            ("GET", "/webhooks/{webhook_id}/{webhook_token}/messages/@original", self._webhook_message),
            ("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/@original", self._webhook_message),
            ("DELETE", "/webhooks/{webhook_id}/{webhook_token}/messages/@original", self._delete_original),
            ("GET", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}", self._webhook_message),
            ("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}", self._webhook_message),
        ]
        for method, path, handler in routes:
            self.app.router.add_route(method, API_PREFIX + path, handler)
        for prefix in ("/cdn", "/media"):
            self.app.router.add_get(prefix + "/attachments/{channel_id}/{attachment_id}/{filename}", self._cdn_file)
        self.app.router.add_get("/gateway", self._gateway)
        self.app.router.add_get("/gateway/resume", self._gateway)
        return {f"{method} {path}" for method, path, _ in routes}

    @web.middleware
    async def _api_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX):
            return await handler(request)
        received_at = time.monotonic()
        resource = request.match_info.route.resource
        template = resource.canonical[len(API_PREFIX):] if resource is not None else None
        route = f"{request.method} {template}" if template is not None else "UNKNOWN"
        payload: Any = None
        files: list[RecordedFile] = []
        try:
            payload, files = await self._read_body(request)
        except _InvalidJSON:
            response: web.StreamResponse = _error(400, 50109)
        else:
            _request_body.set((payload, files))
            response = await self._api_response(request, handler, route)
        # Every response comes through Discord's Google load balancer; discord.py checks this
        # header on 429s to tell Discord's rate limits from a Cloudflare ban.
        response.headers["Via"] = "1.1 google"
        if response.status == 400 and isinstance(response, web.Response) and not request.get("injected"):
            code = json.loads(response.body or b"{}").get("code") if isinstance(response.body, bytes) else None
            if code in CLIENT_MISTAKES:
                self.violations.append(f"{route}: {code} {ERROR_MESSAGES[code]}")
        self.requests.append(
            RecordedRequest(
                request.method, route, request.path[len(API_PREFIX):], dict(request.query), dict(request.headers),
                payload, files, response.status, received_at,
            )
        )
        await self.notify()
        return response

    async def _api_response(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]], route: str
    ) -> web.StreamResponse:
        if route == "UNKNOWN":
            exception = request.match_info.http_exception or web.HTTPNotFound()
            return _error(exception.status, 0, f"{exception.status}: {exception.reason}")
        # Interaction callbacks and webhooks authenticate with the token in their URL.
        path_template = route.split(" ", 1)[1]
        needs_auth = route != "GET /gateway" and not path_template.startswith(("/interactions/", "/webhooks/"))
        if needs_auth and request.headers.get(hdrs.AUTHORIZATION) != f"Bot {self.token}":
            return _error(401, 0, "401: Unauthorized")
        faults = self._faults.get(route)
        if faults:
            fault = faults[0]
            fault.remaining -= 1
            if fault.remaining == 0:
                faults.pop(0)
            request["injected"] = True  # a refusal the test asked for, not the client's mistake
            return self._fault_response(fault, route)
        # Buckets are per route and major parameters (channel, guild, webhook id + token).
        major = (request.match_info.get(k) for k in ("channel_id", "guild_id", "webhook_id", "webhook_token"))
        bucket = self._take_from_bucket((route, *major))
        reset_after = max(0.0, bucket.resets_at - time.monotonic())
        if bucket.remaining < 0:
            bucket.remaining = 0
            headers = self._bucket_headers(route, 0, reset_after)
            return self._rate_limited(reset_after, global_=False, code=0, headers=headers)
        response = await handler(request)
        response.headers.update(self._bucket_headers(route, bucket.remaining, reset_after))
        return response

    def _take_from_bucket(self, key: tuple[str | None, ...]) -> _Bucket:
        """Count one request in a fixed window; ``remaining < 0`` means it is over the limit."""
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None or now >= bucket.resets_at:
            bucket = self._buckets[key] = _Bucket(self.rate_limit, now + self.rate_limit_window)
        bucket.remaining -= 1
        return bucket

    def _bucket_headers(self, route: str, remaining: int, reset_after: float) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.rate_limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            # A bucket hash names a route, not its major parameters (as Discord's do).
            "X-RateLimit-Bucket": hashlib.md5(route.encode()).hexdigest(),
        }

    def _fault_response(self, fault: _Fault, route: str) -> web.Response:
        if fault.status != 429:
            default = ERROR_MESSAGES.get(fault.code) or f"{fault.status}: {HTTPStatus(fault.status).phrase}"
            message = fault.message or default
            return _error(fault.status, fault.code, message)
        assert fault.retry_after is not None
        # A per-route 429 carries the route's headers, showing the bucket empty; a global one does not.
        headers = {} if fault.global_ else self._bucket_headers(route, 0, fault.retry_after)
        return self._rate_limited(fault.retry_after, global_=fault.global_, code=fault.code, headers=headers,
                                  message=fault.message)

    @staticmethod
    def _rate_limited(
        retry_after: float, *, global_: bool, code: int, headers: dict[str, str], message: str | None = None
    ) -> web.Response:
        body: dict[str, Any] = {"message": message or "You are being rate limited.",
                                "retry_after": round(retry_after, 3), "global": global_}
        if code:
            body["code"] = code
        response = _json(body, 429)
        response.headers.update(headers)
        response.headers["Retry-After"] = str(math.ceil(retry_after))
        response.headers["X-RateLimit-Scope"] = "global" if global_ else "user"
        if global_:
            response.headers["X-RateLimit-Global"] = "true"
        return response

    @staticmethod
    async def _read_body(request: web.Request) -> tuple[Any, list[RecordedFile]]:
        """JSON, or multipart with ``payload_json`` and ``files[n]`` (other fields as strings)."""
        if not request.body_exists:
            return None, []
        if request.content_type == "multipart/form-data":
            payload: dict[str, Any] = {}
            files: list[RecordedFile] = []
            async for part in await request.multipart():
                if part.filename is not None:
                    files.append(RecordedFile(part.name or "", part.filename, part.headers.get(hdrs.CONTENT_TYPE),
                                              bytes(await part.read())))
                elif part.name == "payload_json":
                    try:
                        payload.update(json.loads(await part.text()))
                    except ValueError as exc:
                        raise _InvalidJSON from exc
                else:
                    payload[part.name or ""] = await part.text()
            return payload, files
        try:
            return json.loads(await request.text()), []
        except ValueError as exc:
            raise _InvalidJSON from exc

    # --------------------------------------------------------------------------------------------
    # REST: gateway discovery, current user, application

    async def _get_gateway(self, request: web.Request) -> web.Response:
        return _json({"url": self.gateway_url})

    async def _get_gateway_bot(self, request: web.Request) -> web.Response:
        return _json({
            "url": self.gateway_url,
            "shards": 1,
            "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 14_400_000, "max_concurrency": 1},
        })

    def _current_user_payload(self) -> dict[str, Any]:
        return {**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "email": None, "locale": "en-US"}

    async def _get_current_user(self, request: web.Request) -> web.Response:
        return _json(self._current_user_payload())

    @property
    def application_flags(self) -> int:
        return sum(flag for intent, flag in _APPLICATION_FLAG_FOR_INTENT.items() if intent & self.approved_intents)

    async def _get_application(self, request: web.Request) -> web.Response:
        owner = self.user.payload()
        return _json({
            "id": str(self.application_id),
            "name": self.bot_user.username,
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": hashlib.sha256(self.token.encode()).hexdigest(),
            "owner": owner,
            "team": None,
            "flags": self.application_flags,
            "bot": self.bot_user.payload(),
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "approximate_guild_count": len(self._guilds),
            "integration_types_config": {"0": {}},
        })

    # --------------------------------------------------------------------------------------------
    # REST: application commands

    def _command_scope(self, request: web.Request) -> int | None | web.Response:
        if request.match_info["application_id"] != str(self.application_id):
            return _error(403, 50001)
        if "guild_id" not in request.match_info:
            return None
        guild_id = int(request.match_info["guild_id"])
        return guild_id if guild_id in self._guilds else _error(404, 10004)

    async def _get_commands(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        if isinstance(scope, web.Response):
            return scope
        return _json(self.commands(scope))

    async def _bulk_overwrite_commands(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        if isinstance(scope, web.Response):
            return scope
        commands = _payload()
        if not isinstance(commands, list) or not all(isinstance(command, dict) for command in commands):
            return _form_error("_root", "BASE_TYPE_ARRAY", "Must be an array of objects.")
        error = self._command_errors(commands, "")
        if error is not None:
            return error
        self._store_commands(commands, scope)
        self.command_writes += 1
        return _json(self.commands(scope))

    async def _upsert_command(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        if isinstance(scope, web.Response):
            return scope
        command = _payload()
        if not isinstance(command, dict):
            return _form_error("_root", "BASE_TYPE_DICT", "Must be an object.")
        error = self._command_errors([command], None)
        if error is not None:
            return error
        # A command with the same name and type is overwritten (200); otherwise it is new (201).
        key = (command["name"], command.get("type", CommandType.CHAT_INPUT))
        existing = self.commands(scope)
        others = [c for c in existing if (c["name"], c["type"]) != key]
        self._store_commands([*others, command], scope)
        self.command_writes += 1
        return _json(self.commands(scope)[-1], 201 if len(others) == len(existing) else 200)

    async def _edit_command(self, request: web.Request) -> web.Response:
        """PATCH one command by id: the fields given replace the stored ones (Edit Global/Guild
        Application Command); the id stays."""
        scope = self._command_scope(request)
        if isinstance(scope, web.Response):
            return scope
        changes = _payload()
        if not isinstance(changes, dict):
            return _form_error("_root", "BASE_TYPE_DICT", "Must be an object.")
        existing = self.commands(scope)
        index = next((i for i, command in enumerate(existing) if command["id"] == request.match_info["command_id"]), None)
        if index is None:
            return _error(404, 10063)  # Unknown application command
        edited = {**existing[index], **changes}
        others = [command for i, command in enumerate(existing) if i != index]
        error = self._command_errors([*others, edited], "")
        if error is not None:
            return error
        self._store_commands([*existing[:index], edited, *existing[index + 1:]], scope)
        self.command_writes += 1
        return _json(self.commands(scope)[index])

    async def _delete_command(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        if isinstance(scope, web.Response):
            return scope
        existing = self.commands(scope)
        kept = [command for command in existing if command["id"] != request.match_info["command_id"]]
        if len(kept) == len(existing):
            return _error(404, 10063)
        self._commands[scope] = kept
        self.command_writes += 1
        return web.Response(status=204)

    @staticmethod
    def _command_errors(commands: Sequence[Mapping[str, Any]], index_prefix: str | None) -> web.Response | None:
        """Discord's naming rules; ``index_prefix`` None for a single command (no index in paths)."""
        seen: set[tuple[int, str]] = set()
        for index, command in enumerate(commands):
            at = "" if index_prefix is None else f"{index_prefix}{index}."
            command_type = command.get("type", CommandType.CHAT_INPUT)
            name = command.get("name", "")
            if command_type == CommandType.CHAT_INPUT:
                if not _is_valid_chat_input_name(name):
                    return _form_error(f"{at}name", "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
                if not 1 <= len(command.get("description", "")) <= 100:
                    return _form_error(f"{at}description", "BASE_TYPE_BAD_LENGTH",
                                       "Must be between 1 and 100 in length.")
                if error := _localization_error(f"{at}name_localizations", command.get("name_localizations"),
                                                _is_valid_chat_input_name, "Command name is invalid"):
                    return error
                if error := _localization_error(f"{at}description_localizations", command.get("description_localizations"),
                                                _describes, "Must be between 1 and 100 in length."):
                    return error
                if error := _option_errors(at, command.get("options") or []):
                    return error
            else:
                if not 1 <= len(name) <= 32:
                    return _form_error(f"{at}name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length.")
                if error := _localization_error(f"{at}name_localizations", command.get("name_localizations"),
                                                lambda value: 1 <= len(value) <= 32, "Must be between 1 and 32 in length."):
                    return error
                if command.get("description") or command.get("options"):
                    return _form_error(f"{at}description", "APPLICATION_COMMAND_INVALID_FIELD",
                                       "Context menu commands take no description or options")
            if (command_type, name) in seen:
                return _form_error(f"{at}name", "APPLICATION_COMMANDS_DUPLICATE_NAME",
                                   "Application command names must be unique")
            seen.add((command_type, name))
        return None

    def _store_commands(self, commands: Sequence[Mapping[str, Any]], guild_id: int | None) -> None:
        """Replace a scope's commands; a command keeps its id while its name and type stay."""
        old_ids = {(c["name"], c["type"]): c["id"] for c in self._commands.get(guild_id, [])}
        stored = []
        for command in commands:
            command_type = command.get("type", int(CommandType.CHAT_INPUT))
            entry = {
                "id": old_ids.get((command["name"], command_type)) or str(self._new_id()),
                "application_id": str(self.application_id),
                "version": str(self._new_id()),
                "type": command_type,
                "name": command["name"],
                "name_localizations": command.get("name_localizations"),
                "description": command.get("description", ""),
                "description_localizations": command.get("description_localizations"),
                "default_member_permissions": command.get("default_member_permissions"),
                "contexts": command.get("contexts"),
                "integration_types": command.get("integration_types") or [0],
                "nsfw": command.get("nsfw", False),
            }
            if command.get("options"):
                entry["options"] = command["options"]
            if guild_id is not None:
                entry["guild_id"] = str(guild_id)
            stored.append(entry)
        self._commands[guild_id] = stored

    def _find_command(self, name: str, command_type: CommandType, guild: FakeGuild | None) -> dict[str, Any]:
        scopes = [guild.id, None] if guild is not None else [None]
        context = 0 if guild is not None else 1  # GUILD or BOT_DM
        for scope in scopes:
            for command in self._commands.get(scope, []):
                if command["name"] == name and command["type"] == command_type:
                    if command["contexts"] is not None and context not in command["contexts"]:
                        raise LookupError(f"command {name!r} is not offered in this context")
                    return command
        raise LookupError(f"no registered {command_type.name} command {name!r}: Discord only offers synced commands")

    def _command_options(
        self, command: Mapping[str, Any], options: Mapping[str, Any], channel: FakeChannel, resolved: dict[str, Any]
    ) -> list[dict[str, Any]]:
        definitions = {option["name"]: option for option in command.get("options", [])}
        missing = [name for name, option in definitions.items() if option.get("required") and name not in options]
        if missing:
            raise ValueError(f"required options missing: {missing}")
        values = []
        for name, value in options.items():
            if name not in definitions:
                raise ValueError(f"command {command['name']!r} has no option {name!r}")
            option_type = definitions[name]["type"]
            if option_type == OptionType.ATTACHMENT:
                attachment = self.add_attachment(channel.id, value)
                resolved.setdefault("attachments", {})[attachment["id"]] = attachment
                value = attachment["id"]
            elif option_type not in (OptionType.STRING, OptionType.INTEGER, OptionType.BOOLEAN, OptionType.NUMBER):
                raise NotImplementedError(f"option type {option_type} is not modelled")
            values.append({"name": name, "type": option_type, "value": value})
        return values

    # --------------------------------------------------------------------------------------------
    # REST: channels and messages

    def _visible_channel(self, request: web.Request) -> FakeChannel | web.Response:
        """The route's channel, or Discord's answer when it is unknown or hidden from the bot."""
        channel = self._channels.get(int(request.match_info["channel_id"]))
        if channel is None:
            return _error(404, 10003)
        if not self._permissions(channel, self.bot_user.id) & Permission.VIEW_CHANNEL:
            return _error(403, 50001)
        return channel

    async def _get_channel(self, request: web.Request) -> web.Response:
        channel = self._visible_channel(request)
        return channel if isinstance(channel, web.Response) else _json(channel.payload())

    async def _open_dm(self, request: web.Request) -> web.Response:
        user = self._users.get(int((_payload() or {}).get("recipient_id", 0)))
        if user is None:
            return _error(404, 10013)
        return _json(self.dm_channel(user).payload())

    async def _trigger_typing(self, request: web.Request) -> web.Response:
        channel = self._visible_channel(request)
        if isinstance(channel, web.Response):
            return channel
        if not self._permissions(channel, self.bot_user.id) & Permission.SEND_MESSAGES:
            return _error(403, 50013)
        return web.Response(status=204)

    async def _create_message(self, request: web.Request) -> web.Response:
        channel = self._visible_channel(request)
        if isinstance(channel, web.Response):
            return channel
        payload = _payload() or {}
        uploads = self._new_message_uploads(channel, payload)
        if isinstance(uploads, web.Response):
            return uploads
        referenced = None
        reference = payload.get("message_reference")
        if reference:
            referenced = self._find_message(channel.id, reference.get("message_id"))
            if referenced is None and reference.get("fail_if_not_exists", True):
                return _form_error("message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")
        permissions = self._permissions(channel, self.bot_user.id)
        voice = payload.get("flags", 0) & MessageFlag.IS_VOICE_MESSAGE
        if (
            not permissions & Permission.SEND_MESSAGES
            or (uploads and not permissions & Permission.ATTACH_FILES)
            or (voice and not permissions & Permission.SEND_VOICE_MESSAGES)
        ):
            return _error(403, 50013)
        if referenced is not None and not permissions & Permission.READ_MESSAGE_HISTORY:
            return _error(403, 160002)
        if (invalid := _component_errors(payload.get("components"))) is not None:
            return invalid
        message = self._new_message(
            channel,
            self.bot_user,
            content=payload.get("content") or "",
            attachments=[self.add_attachment(channel.id, upload) for upload in uploads],
            embeds=payload.get("embeds") or [],
            flags=payload.get("flags", 0) & _SETTABLE_FLAGS,
            referenced=referenced,
            allowed_mentions=payload.get("allowed_mentions"),
            tts=bool(payload.get("tts")),
            nonce=payload.get("nonce"),
            extra={"components": payload.get("components") or []},
        )
        await self._broadcast_message("MESSAGE_CREATE", message)
        return _json(message)

    async def _get_message(self, request: web.Request) -> web.Response:
        channel = self._visible_channel(request)
        if isinstance(channel, web.Response):
            return channel
        if not self._permissions(channel, self.bot_user.id) & Permission.READ_MESSAGE_HISTORY:
            return _error(403, 50013)
        message = self._find_message(channel.id, request.match_info["message_id"])
        if message is None:
            return _error(404, 10008)
        # Over REST the content intent is the app's approval, not what the gateway session asked for.
        has_intent = bool(self.approved_intents & Intent.MESSAGE_CONTENT)
        return _json(self._as_seen(message, channel.guild_id, has_intent))

    async def _edit_message(self, request: web.Request) -> web.Response:
        channel = self._visible_channel(request)
        if isinstance(channel, web.Response):
            return channel
        message = self._find_message(channel.id, request.match_info["message_id"])
        if message is None:
            return _error(404, 10008)
        if message["author"]["id"] != str(self.bot_user.id):
            return _error(403, 50005)
        payload = _payload() or {}
        uploads = self._uploads(payload, _files())
        if isinstance(uploads, web.Response):
            return uploads
        edited = self._edit(message, payload, uploads)
        if isinstance(edited, web.Response):
            return edited
        await self._broadcast_message("MESSAGE_UPDATE", edited)
        return _json(edited)

    async def _delete_message(self, request: web.Request) -> web.Response:
        channel = self._visible_channel(request)
        if isinstance(channel, web.Response):
            return channel
        message = self._find_message(channel.id, request.match_info["message_id"])
        if message is None:
            return _error(404, 10008)
        own = message["author"]["id"] == str(self.bot_user.id)
        if not own and not self._permissions(channel, self.bot_user.id) & Permission.MANAGE_MESSAGES:
            return _error(403, 50013)
        self._messages[channel.id].remove(message)
        await self._broadcast_message_delete(message)
        return web.Response(status=204)

    async def _broadcast_message_delete(self, message: Mapping[str, Any]) -> None:
        channel = self._channels[int(message["channel_id"])]
        event = {"id": message["id"], "channel_id": message["channel_id"]}
        if channel.guild_id is not None:
            event["guild_id"] = str(channel.guild_id)
        await self._broadcast("MESSAGE_DELETE", lambda s: event if s.intents & self._message_intent(channel) else None,
                              self._guild_of(channel))

    # --------------------------------------------------------------------------------------------
    # REST: interactions

    async def _interaction_callback(self, request: web.Request) -> web.Response:
        interaction = self._interactions.get(int(request.match_info["webhook_id"]))
        if interaction is None or interaction.token != request.match_info["webhook_token"]:
            return _error(404, 10062)
        if interaction.response_type is not None:
            return _error(400, 40060)
        if time.monotonic() - interaction.dispatched_at > self.interaction_deadline:
            return _error(404, 10062)  # Discord invalidates the token after the deadline
        payload = _payload() or {}
        callback_type = payload.get("type")
        data = payload.get("data") or {}
        ephemeral = data.get("flags", 0) & MessageFlag.EPHEMERAL
        if interaction.kind == InteractionType.APPLICATION_COMMAND_AUTOCOMPLETE:
            return self._autocomplete_result(interaction, payload)
        if interaction.component is not None and callback_type in (CallbackType.DEFERRED_UPDATE_MESSAGE,
                                                                   CallbackType.UPDATE_MESSAGE):
            # An acknowledged press: nothing new, or the pressed message edited in place.
            message = interaction.component
            if callback_type == CallbackType.UPDATE_MESSAGE:
                edited = self._edit(message, data, [])
                if isinstance(edited, web.Response):
                    return edited
                await self._broadcast_message("MESSAGE_UPDATE", edited)
            interaction.response_type = callback_type
            interaction.replies.append(InteractionReply("callback", callback_type, payload, _files(), message))
            if request.query.get("with_response", "").lower() not in ("1", "true"):
                return web.Response(status=204)
            resource = {"type": callback_type, **({"message": message} if callback_type == CallbackType.UPDATE_MESSAGE else {})}
            return _json({
                "interaction": {"id": str(interaction.id), "type": 3, "response_message_id": message["id"],
                                "response_message_loading": False, "response_message_ephemeral": False},
                "resource": resource,
            })
        if (invalid := _component_errors(data.get("components"))) is not None:
            return invalid
        if callback_type == CallbackType.DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE:
            # The user sees a "thinking" message until the first followup or edit fills it.
            message = self._interaction_message(interaction, {"flags": ephemeral}, [], loading=True)
        elif callback_type == CallbackType.CHANNEL_MESSAGE_WITH_SOURCE:
            uploads = self._new_message_uploads(interaction.channel, data)
            if isinstance(uploads, web.Response):
                return uploads
            message = self._interaction_message(interaction, data, uploads)
        else:
            choices = "{4, 5, 6, 7}" if interaction.component is not None else "{4, 5}"
            return _form_error("type", "BASE_TYPE_CHOICES", f"Value must be one of {choices}.")
        interaction.response_type = callback_type
        interaction.loading = callback_type == CallbackType.DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE
        interaction.replies.append(InteractionReply("callback", callback_type, payload, _files(), message))
        if not ephemeral:
            await self._broadcast_message("MESSAGE_CREATE", message)
        if request.query.get("with_response", "").lower() not in ("1", "true"):
            return web.Response(status=204)
        resource: dict[str, Any] = {"type": callback_type}
        if callback_type == CallbackType.CHANNEL_MESSAGE_WITH_SOURCE:
            resource["message"] = message
        return _json({
            "interaction": {
                "id": str(interaction.id),
                "type": 2,
                "response_message_id": message["id"],
                "response_message_loading": interaction.loading,
                "response_message_ephemeral": bool(ephemeral),
            },
            "resource": resource,
        })

    def _autocomplete_result(self, interaction: _Interaction, payload: Mapping[str, Any]) -> web.Response:
        """An autocomplete interaction takes only a type 8 callback: up to 25 choices."""
        if payload.get("type") != CallbackType.APPLICATION_COMMAND_AUTOCOMPLETE_RESULT:
            return _form_error("type", "INTERACTION_APPLICATION_COMMAND_AUTOCOMPLETE_INVALID",
                               "Autocomplete interactions take only an autocomplete result")
        choices = (payload.get("data") or {}).get("choices")
        if not isinstance(choices, list) or len(choices) > MAX_CHOICES:
            return _form_error("data.choices", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CHOICES} or fewer in length.")
        for index, choice in enumerate(choices):
            if not _describes(str(choice.get("name", ""))) or "value" not in choice:
                return _form_error(f"data.choices.{index}.name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        interaction.response_type = CallbackType.APPLICATION_COMMAND_AUTOCOMPLETE_RESULT
        interaction.replies.append(InteractionReply("callback", interaction.response_type, dict(payload), [], None))
        return web.Response(status=204)

    async def _delete_original(self, request: web.Request) -> web.Response:
        """Delete Original Interaction Response: the "thinking" message goes; a later followup
        is a message of its own."""
        interaction = self._webhook_interaction(request)
        if isinstance(interaction, web.Response):
            return interaction
        message = self._find_message(interaction.channel.id, interaction.message_ids[0])
        if message is None:
            return _error(404, 10008)
        self._messages[interaction.channel.id].remove(message)
        interaction.loading = False
        interaction.replies.append(InteractionReply("delete", None, {}, [], message))
        if not message["flags"] & MessageFlag.EPHEMERAL:
            await self._broadcast_message_delete(message)
        return web.Response(status=204)

    def _webhook_interaction(self, request: web.Request) -> _Interaction | web.Response:
        """The interaction behind an interaction webhook (application id + interaction token)."""
        token = request.match_info["webhook_token"]
        interaction = next((i for i in self._interactions.values() if i.token == token), None)
        if interaction is None or request.match_info["webhook_id"] != str(self.application_id):
            return _error(404, 10015)
        if time.monotonic() - interaction.dispatched_at > self.interaction_token_ttl:
            return _error(401, 50027)
        if interaction.response_type is None:
            return _error(404, 10015)  # no webhook exists before the initial response
        return interaction

    async def _create_followup(self, request: web.Request) -> web.Response:
        interaction = self._webhook_interaction(request)
        if isinstance(interaction, web.Response):
            return interaction
        payload = _payload() or {}
        uploads = self._new_message_uploads(interaction.channel, payload)
        if isinstance(uploads, web.Response):
            return uploads
        if (invalid := _component_errors(payload.get("components"))) is not None:
            return invalid
        if interaction.loading:
            # After a deferral the first followup fills the "thinking" message instead of
            # creating one, keeping its ephemeral state (Create Followup Message, DAPI).
            message = self._edit(self._original(interaction), payload, uploads)
            if isinstance(message, web.Response):
                return message
            interaction.loading = False
            event = "MESSAGE_UPDATE"
        else:
            message = self._interaction_message(interaction, payload, uploads)
            event = "MESSAGE_CREATE"
        interaction.replies.append(InteractionReply("followup", None, payload, _files(), message))
        if not message["flags"] & MessageFlag.EPHEMERAL:
            await self._broadcast_message(event, message)
        return _json(message)

    async def _webhook_message(self, request: web.Request) -> web.Response:
        interaction = self._webhook_interaction(request)
        if isinstance(interaction, web.Response):
            return interaction
        wanted = request.match_info.get("message_id")
        message_id = interaction.message_ids[0] if wanted is None else int(wanted)
        if message_id not in interaction.message_ids:
            return _error(404, 10008)
        message = self._find_message(interaction.channel.id, message_id)
        if message is None:
            return _error(404, 10008)
        if request.method == "GET":
            return _json(message)
        payload = _payload() or {}
        uploads = self._uploads(payload, _files())
        if isinstance(uploads, web.Response):
            return uploads
        edited = self._edit(message, payload, uploads)
        if isinstance(edited, web.Response):
            return edited
        if message_id == interaction.message_ids[0]:
            interaction.loading = False
        interaction.replies.append(InteractionReply("edit", None, payload, _files(), edited))
        if not edited["flags"] & MessageFlag.EPHEMERAL:
            await self._broadcast_message("MESSAGE_UPDATE", edited)
        return _json(edited)

    @staticmethod
    def _integration_owners(channel: FakeChannel) -> dict[str, str]:
        # GUILD_INSTALL ("0") owner: the guild, or "0" in a DM with the bot.
        return {"0": str(channel.guild_id or 0)}

    def _original(self, interaction: _Interaction) -> dict[str, Any]:
        message = self._find_message(interaction.channel.id, interaction.message_ids[0])
        assert message is not None
        return message

    def _interaction_message(
        self, interaction: _Interaction, data: Mapping[str, Any], uploads: Sequence[FakeFile], *, loading: bool = False
    ) -> dict[str, Any]:
        """A message the app posts through an interaction: the original response or a followup."""
        original = not interaction.message_ids
        is_context_menu = interaction.command["type"] == CommandType.MESSAGE
        extra: dict[str, Any] = {
            "webhook_id": str(self.application_id),
            "application_id": str(self.application_id),
            "interaction_metadata": {
                "id": str(interaction.id),
                "type": 2,
                "user": interaction.user.payload(),
                "authorizing_integration_owners": self._integration_owners(interaction.channel),
                "name": interaction.command["name"],
                "command_type": interaction.command["type"],
            },
        }
        message_type = MessageType.DEFAULT
        if original:
            message_type = MessageType.CONTEXT_MENU_COMMAND if is_context_menu else MessageType.CHAT_INPUT_COMMAND
        if original and interaction.target is not None:
            # A context-menu response points at the message the command was used on.
            extra["interaction_metadata"]["target_message_id"] = interaction.target["id"]
            extra["message_reference"] = self._reference_to(interaction.target)
            extra["referenced_message"] = interaction.target
        message = self._new_message(
            interaction.channel,
            self.bot_user,
            content=data.get("content") or "",
            attachments=[self.add_attachment(interaction.channel.id, upload) for upload in uploads],
            embeds=data.get("embeds") or [],
            flags=data.get("flags", 0) & _SETTABLE_INTERACTION_FLAGS | (MessageFlag.LOADING if loading else 0),
            allowed_mentions=data.get("allowed_mentions"),
            message_type=message_type,
            extra={**extra, "components": data.get("components") or []},
        )
        interaction.message_ids.append(int(message["id"]))
        return message

    # --------------------------------------------------------------------------------------------
    # Message rules

    def _uploads(self, payload: Mapping[str, Any], files: Sequence[RecordedFile]) -> list[FakeFile] | web.Response:
        """Pair ``files[n]`` with their ``attachments`` metadata (matched by placeholder id n)."""
        metadata = {str(entry.get("id")): entry for entry in payload.get("attachments") or []}
        uploads = []
        for index, file in enumerate(files):
            placeholder = file.field[len("files["):-1] if file.field.startswith("files[") else str(index)
            meta = metadata.get(placeholder, {})
            filename = meta.get("filename") or file.filename or "unknown"
            waveform = None
            if meta.get("waveform") is not None:
                try:
                    waveform = base64.b64decode(meta["waveform"], validate=True)
                except ValueError:
                    return _form_error(f"attachments.{index}.waveform", "BASE_TYPE_INVALID", "Invalid base64 string.")
            uploads.append(FakeFile(
                file.data, filename, self._attachment_content_type(file.content_type, filename),
                meta.get("duration_secs"), waveform, meta.get("description"),
            ))
        return uploads

    @staticmethod
    def _attachment_content_type(declared: str | None, filename: str) -> str | None:
        # Discord derives an attachment's type itself: discord.py declares every file as
        # application/octet-stream, yet such voice uploads are reported to work (platforms.md
        # §2.2), so a generic declaration defers to the file name.
        if declared and declared != "application/octet-stream":
            return declared
        return mimetypes.guess_type(filename)[0] or declared

    def _new_message_uploads(self, channel: FakeChannel, payload: Mapping[str, Any]) -> list[FakeFile] | web.Response:
        """The files of a new message, or Discord's answer to a body that breaks its rules."""
        uploads = self._uploads(payload, _files())
        if isinstance(uploads, web.Response):
            return uploads
        return self._message_error(channel, payload, uploads) or uploads

    def _message_error(
        self, channel: FakeChannel, payload: Mapping[str, Any], uploads: Sequence[FakeFile]
    ) -> web.Response | None:
        """Body rules shared by channel messages and interaction responses (not permissions)."""
        guild = self._guild_of(channel)
        limit = guild.upload_limit if guild is not None else DEFAULT_UPLOAD_LIMIT
        if any(len(upload.data) > limit for upload in uploads):
            return _error(413, 40005)
        content = payload.get("content") or ""
        if len(content) > MAX_CONTENT_LENGTH:
            return _form_error("content", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT_LENGTH} or fewer in length.")
        extra_content = any(payload.get(key) for key in ("content", "embeds", "sticker_ids", "components", "poll"))
        if payload.get("flags", 0) & MessageFlag.IS_VOICE_MESSAGE:
            if extra_content:
                return _error(400, 50159)
            if len(uploads) != 1 or not (uploads[0].content_type or "").startswith("audio/"):
                return _error(400, 50160)
            if uploads[0].duration_secs is None or not uploads[0].waveform:
                return _error(400, 50161)
            if not channel.voice_messages_allowed:
                return _error(403, 50173)
        elif not extra_content and not uploads:
            return _error(400, 50006)
        return None

    def _edit(
        self, message: dict[str, Any], payload: Mapping[str, Any], uploads: Sequence[FakeFile]
    ) -> dict[str, Any] | web.Response:
        """Apply an edit (channel PATCH, webhook PATCH, or the followup that fills a deferral)."""
        if message["flags"] & MessageFlag.IS_VOICE_MESSAGE:
            return _error(400, 50162)
        content = payload.get("content", message["content"]) or ""
        if len(content) > MAX_CONTENT_LENGTH:
            return _form_error("content", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT_LENGTH} or fewer in length.")
        if (invalid := _component_errors(payload.get("components"))) is not None:
            return invalid
        if "components" in payload:
            message["components"] = payload["components"] or []
        channel = self._channels[int(message["channel_id"])]
        attachments = message["attachments"]
        if "attachments" in payload:
            # Existing attachments survive only if listed; placeholders are the new files.
            kept_ids = {str(entry.get("id")) for entry in payload["attachments"] or []}
            attachments = [a for a in attachments if a["id"] in kept_ids]
        attachments = [*attachments, *(self.add_attachment(channel.id, upload) for upload in uploads)]
        loading = message["flags"] & MessageFlag.LOADING
        message.update(
            content=content,
            embeds=payload.get("embeds", message["embeds"]) or [],
            attachments=attachments,
            flags=message["flags"] & ~MessageFlag.LOADING,
            # Filling a "thinking" message is not an edit in the client.
            edited_timestamp=message["edited_timestamp"] if loading else _now_iso(),
        )
        return message

    def _new_message(
        self,
        channel: FakeChannel,
        author: FakeUser,
        *,
        content: str = "",
        attachments: Sequence[dict[str, Any]] = (),
        embeds: Sequence[dict[str, Any]] = (),
        flags: int = 0,
        referenced: dict[str, Any] | None = None,
        allowed_mentions: Mapping[str, Any] | None = None,
        tts: bool = False,
        nonce: int | str | None = None,
        message_type: MessageType | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create, store and return a message object (REST shape)."""
        mentions, roles, everyone = self._mentions(channel, author, content, allowed_mentions, referenced)
        if message_type is None:
            message_type = MessageType.REPLY if referenced is not None else MessageType.DEFAULT
        message: dict[str, Any] = {
            "id": str(self._new_id()),
            "channel_id": str(channel.id),
            "author": author.payload(),
            "content": content,
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "tts": tts,
            "mention_everyone": everyone,
            "mentions": mentions,
            "mention_roles": roles,
            "attachments": list(attachments),
            "embeds": [{"type": "rich", **embed} for embed in embeds],
            "pinned": False,
            "type": int(message_type),
            "flags": int(flags),
            "components": [],
        }
        if nonce is not None:
            message["nonce"] = nonce
        if referenced is not None:
            message["message_reference"] = self._reference_to(referenced)
            message["referenced_message"] = referenced
        message.update(extra or {})
        self._messages.setdefault(channel.id, []).append(message)
        return message

    def _reference_to(self, message: Mapping[str, Any]) -> dict[str, Any]:
        reference = {"type": 0, "channel_id": message["channel_id"], "message_id": message["id"]}
        guild_id = self._channels[int(message["channel_id"])].guild_id
        if guild_id is not None:
            reference["guild_id"] = str(guild_id)
        return reference

    def _mentions(
        self,
        channel: FakeChannel,
        author: FakeUser,
        content: str,
        allowed_mentions: Mapping[str, Any] | None,
        referenced: Mapping[str, Any] | None,
    ) -> tuple[list[dict[str, Any]], list[str], bool]:
        """Who a message pings (users, roles, @everyone), honouring ``allowed_mentions``."""
        if allowed_mentions is None:
            parse = {"users", "roles", "everyone"}
            # Without allowed_mentions a reply pings the replied-to author; with it, only on request.
            replied_user = True
        else:
            parse = set(allowed_mentions.get("parse") or [])
            replied_user = bool(allowed_mentions.get("replied_user", False))
        allowed_users = {str(u) for u in (allowed_mentions or {}).get("users") or []}
        allowed_roles = {str(r) for r in (allowed_mentions or {}).get("roles") or []}
        user_ids = [u for u in _USER_MENTION.findall(content) if "users" in parse or u in allowed_users]
        if referenced is not None and replied_user and referenced["author"]["id"] != str(author.id):
            user_ids.append(referenced["author"]["id"])
        users = [self._users[int(u)].payload() for u in dict.fromkeys(user_ids) if int(u) in self._users]
        roles: list[str] = []
        everyone = False
        guild = self._guild_of(channel)
        if guild is not None:
            guild_roles = {str(role.id) for role in guild.roles}
            roles = [r for r in dict.fromkeys(_ROLE_MENTION.findall(content))
                     if r in guild_roles and ("roles" in parse or r in allowed_roles)]
            everyone = (
                ("@everyone" in content or "@here" in content)
                and "everyone" in parse
                and bool(self._permissions(channel, author.id) & Permission.MENTION_EVERYONE)
            )
        return users, roles, everyone

    def _find_message(self, channel_id: int, message_id: int | str | None) -> dict[str, Any] | None:
        return next((m for m in self._messages.get(channel_id, []) if m["id"] == str(message_id)), None)

    # --------------------------------------------------------------------------------------------
    # Permissions

    def _permissions(self, channel: FakeChannel, user_id: int) -> int:
        """Discord's permission computation: base roles, then @everyone/role/member overwrites."""
        guild = self._guild_of(channel)
        if guild is None:
            return _DM_PERMISSIONS
        member = guild.members.get(user_id)
        if member is None:
            return 0
        if user_id == guild.owner_id:
            return ALL_PERMISSIONS
        permissions = guild.role(guild.id).permissions
        for role_id in member.roles:
            permissions |= guild.role(role_id).permissions
        if permissions & Permission.ADMINISTRATOR:
            return ALL_PERMISSIONS
        for overwrite in channel.overwrites:
            if overwrite.type == OVERWRITE_ROLE and overwrite.id == guild.id:
                permissions = permissions & ~overwrite.deny | overwrite.allow
        role_overwrites = [o for o in channel.overwrites if o.type == OVERWRITE_ROLE and o.id in member.roles]
        permissions &= ~reduce(or_, (o.deny for o in role_overwrites), 0)
        permissions |= reduce(or_, (o.allow for o in role_overwrites), 0)
        for overwrite in channel.overwrites:
            if overwrite.type == OVERWRITE_MEMBER and overwrite.id == user_id:
                permissions = permissions & ~overwrite.deny | overwrite.allow
        if not permissions & Permission.VIEW_CHANNEL:
            return 0
        if not permissions & Permission.SEND_MESSAGES:
            permissions &= ~_NEEDS_SEND_MESSAGES
        return permissions

    # --------------------------------------------------------------------------------------------
    # CDN

    def _cdn_signature(self, path: str, expires_hex: str, issued_hex: str) -> str:
        # Discord signs attachment URLs so they expire (ex = expiry, is = issue time, both hex).
        return hmac.new(self._cdn_secret, f"{path}|{expires_hex}|{issued_hex}".encode(), hashlib.sha256).hexdigest()

    async def _cdn_file(self, request: web.Request) -> web.Response:
        path = "/" + request.rel_url.raw_path.split("/", 2)[2]  # drop the "/cdn" or "/media" host stand-in
        expires, issued = request.query.get("ex", ""), request.query.get("is", "")
        signature_ok = hmac.compare_digest(self._cdn_signature(path, expires, issued), request.query.get("hm", ""))
        if path not in self._cdn or not signature_ok or int(expires or "0", 16) < time.time():
            return web.Response(status=404, text="This content is no longer available.")
        data, content_type = self._cdn[path]
        return web.Response(body=data, content_type=content_type or "application/octet-stream")

    # --------------------------------------------------------------------------------------------
    # Gateway

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        connection = GatewayConnection(request.path, dict(request.query))
        self.gateway_connections.append(connection)
        session: _Session | None = None
        hello = {"op": 10, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}, "s": None, "t": None}
        await ws.send_str(json.dumps(hello))
        try:
            async for frame in ws:
                if frame.type is not WSMsgType.TEXT:
                    await self._close(ws, connection, 4002)
                    break
                try:
                    op, data = self._decode_gateway_frame(frame.data)
                except ValueError:
                    await self._close(ws, connection, 4002)
                    break
                if op == 1:  # HEARTBEAT
                    connection.heartbeats += 1
                    await ws.send_str(json.dumps({"op": 11, "d": None, "s": None, "t": None}))
                elif op == 2:  # IDENTIFY
                    if session is not None:
                        await self._close(ws, connection, 4005)
                        break
                    connection.identify = data
                    session = await self._identify(ws, connection, data)
                elif op == 6:  # RESUME
                    connection.resume = data
                    session = await self._resume(ws, connection, data)
                elif session is None:
                    await self._close(ws, connection, 4003)
                    break
                elif op not in (3, 4, 8):  # presence, voice state and member requests: accepted, not modelled
                    await self._close(ws, connection, 4001)
                    break
        finally:
            if connection.close_code is None:
                connection.close_code = ws.close_code
            if session is not None and session.ws is ws:
                session.ws = None
                if connection.close_code in (1000, 1001):
                    # A client closing normally ends its session; any other close can be resumed.
                    del self._sessions[session.id]
            await self.notify()
        return ws

    @staticmethod
    def _decode_gateway_frame(text: str) -> tuple[Any, Any]:
        frame = json.loads(text)
        if not isinstance(frame, dict) or (frame.get("op") in (2, 6) and not isinstance(frame.get("d"), dict)):
            raise ValueError("a gateway payload is an object, and so is the data of IDENTIFY and RESUME")
        return frame.get("op"), frame.get("d")

    @staticmethod
    async def _close(ws: web.WebSocketResponse, connection: GatewayConnection, code: int) -> None:
        # Recorded before closing: aiohttp then reports the code of the client's reply frame.
        connection.close_code = code
        await ws.close(code=code, message=_GATEWAY_CLOSE_REASONS[code].encode())

    async def _identify(
        self, ws: web.WebSocketResponse, connection: GatewayConnection, data: Mapping[str, Any]
    ) -> _Session | None:
        intents = data.get("intents")
        shard = data.get("shard")
        if data.get("token") != self.token:
            await self._close(ws, connection, 4004)
            return None
        if not isinstance(intents, int) or intents & ~_KNOWN_INTENTS:
            await self._close(ws, connection, 4013)
            return None
        if intents & _PRIVILEGED_INTENTS & ~self.approved_intents:
            await self._close(ws, connection, 4014)
            return None
        if shard is not None and not (len(shard) == 2 and 0 <= shard[0] < shard[1]):
            await self._close(ws, connection, 4010)
            return None
        session = _Session(secrets.token_hex(16), intents, shard, ws)
        self._sessions[session.id] = session
        guilds = [g for g in self._guilds.values() if shard is None or (g.id >> 22) % shard[1] == shard[0]]
        ready: dict[str, Any] = {
            "v": API_VERSION,
            "user": self._current_user_payload(),
            "guilds": [{"id": str(guild.id), "unavailable": True} for guild in guilds],
            "session_id": session.id,
            "resume_gateway_url": self.resume_gateway_url,
            "session_type": "normal",
            "application": {"id": str(self.application_id), "flags": self.application_flags},
            "private_channels": [],
            "presences": [],
            "relationships": [],
            "guild_join_requests": [],
            "user_settings": {},
            "geo_ordered_rtc_regions": ["us-east"],
            "auth": {},
        }
        if shard is not None:
            ready["shard"] = shard
        await self._send_dispatch(session, "READY", ready)
        if intents & Intent.GUILDS:
            for guild in guilds:
                await self._send_dispatch(session, "GUILD_CREATE", self._guild_create(guild, intents))
        return session

    async def _resume(
        self, ws: web.WebSocketResponse, connection: GatewayConnection, data: Mapping[str, Any]
    ) -> _Session | None:
        if data.get("token") != self.token:
            await self._close(ws, connection, 4004)
            return None
        session = self._sessions.get(data.get("session_id", ""))
        if session is None:
            # Invalid Session, not resumable: the client must identify on a new connection.
            await ws.send_str(json.dumps({"op": 9, "d": False, "s": None, "t": None}))
            return None
        async with session.lock:
            session.ws = ws
            for frame in session.log:
                if frame["s"] > (data.get("seq") or 0):
                    await ws.send_str(json.dumps(frame))
        await self._send_dispatch(session, "RESUMED", {})
        return session

    def _guild_create(self, guild: FakeGuild, intents: int) -> dict[str, Any]:
        # Without GUILD_PRESENCES Discord sends only the bot's own member (and voice members).
        members = [guild.members[self.bot_user.id]]
        if intents & Intent.GUILD_PRESENCES:
            members = list(guild.members.values())
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(guild.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "features": [],
            "roles": [role.payload() for role in guild.roles],
            "emojis": [],
            "stickers": [],
            "application_id": None,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "premium_tier": guild.premium_tier,
            "premium_subscription_count": (0, 2, 7, 14)[guild.premium_tier],
            "premium_progress_bar_enabled": False,
            "preferred_locale": "en-US",
            "max_members": 500_000,
            "max_video_channel_users": 25,
            "incidents_data": None,
            # Gateway-only fields
            "joined_at": guild.members[self.bot_user.id].joined_at,
            "large": False,
            "unavailable": False,
            "member_count": len(guild.members),
            "members": [member.payload() for member in members],
            "channels": [channel.payload() for channel in guild.channels],
            "threads": [],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    async def _send_dispatch(self, session: _Session, event: str, data: Any) -> None:
        async with session.lock:
            session.seq += 1
            frame = {"op": 0, "t": event, "s": session.seq, "d": data}
            session.log.append(frame)
            if session.ws is not None and not session.ws.closed:
                try:
                    await session.ws.send_str(json.dumps(frame))
                except ConnectionResetError:
                    pass  # the client is gone; the frame is replayed if it resumes

    async def _broadcast(self, event: str, build: Callable[[_Session], Any], guild: FakeGuild | None) -> None:
        """Send ``event`` to every session that gets ``guild``'s events; ``build`` gives its data,
        or None to skip the session. A sharded session gets a guild's events only on the guild's
        shard, ``(guild_id >> 22) % num_shards``, and DMs only on shard 0 (DAPI topics/gateway.md,
        "Sharding")."""
        for session in list(self._sessions.values()):
            if session.shard is not None:
                shard_id, shard_count = session.shard
                if shard_id != (0 if guild is None else (guild.id >> 22) % shard_count):
                    continue
            data = build(session)
            if data is not None:
                await self._send_dispatch(session, event, data)

    @staticmethod
    def _message_intent(channel: FakeChannel) -> Intent:
        return Intent.DIRECT_MESSAGES if channel.guild_id is None else Intent.GUILD_MESSAGES

    async def _broadcast_message(self, event: str, message: dict[str, Any]) -> None:
        channel = self._channels[int(message["channel_id"])]
        guild = self._guild_of(channel)
        gateway_extra: dict[str, Any] = {}
        if guild is not None:
            gateway_extra["guild_id"] = str(guild.id)
            member = guild.members.get(int(message["author"]["id"]))
            if member is not None and "webhook_id" not in message:
                gateway_extra["member"] = member.payload(with_user=False)

        def build(session: _Session) -> dict[str, Any] | None:
            if not session.intents & self._message_intent(channel):
                return None
            has_intent = bool(session.intents & Intent.MESSAGE_CONTENT)
            return {**self._as_seen(message, channel.guild_id, has_intent), **gateway_extra}

        await self._broadcast(event, build, guild)

    def _as_seen(self, message: dict[str, Any], guild_id: int | None, has_content_intent: bool) -> dict[str, Any]:
        """The message as an app sees it: without the message-content intent, guild messages
        lose content, embeds, attachments, components and poll — unless the app wrote them or
        is mentioned in them (DAPI events/gateway.mdx, "Message Content Intent")."""
        bot_id = str(self.bot_user.id)
        visible = (
            has_content_intent
            or guild_id is None
            or message["author"]["id"] == bot_id
            or any(user["id"] == bot_id for user in message["mentions"])
        )
        seen = dict(message)
        if not visible:
            seen.update(content="", embeds=[], attachments=[], components=[])
            seen.pop("poll", None)
        if message.get("referenced_message"):
            seen["referenced_message"] = self._as_seen(message["referenced_message"], guild_id, has_content_intent)
        return seen

    async def _close_gateway_connections(self, app: web.Application) -> None:
        for session in list(self._sessions.values()):  # closing one may end another
            if session.ws is not None:
                await session.ws.close(code=1001, message=b"Going away.")

    # --------------------------------------------------------------------------------------------
    # Small helpers

    def _new_id(self) -> int:
        """A snowflake: milliseconds since the Discord epoch in the top bits, strictly increasing."""
        candidate = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last_id = max(candidate, self._last_id + 1)
        return self._last_id

    def _guild_of(self, channel: FakeChannel) -> FakeGuild | None:
        return self._guilds[channel.guild_id] if channel.guild_id is not None else None

    def _require_offline(self) -> None:
        if self._sessions:
            raise RuntimeError("build guilds, channels and members before the bot connects")

    def _require_session(self) -> None:
        if not self._sessions:
            raise RuntimeError("no gateway session: start the bot and wait until it is ready")
