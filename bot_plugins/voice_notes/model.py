"""What adapters hand to the plugin, and the port through which the plugin answers.

Nothing here knows a platform: an adapter turns a Telegram update or a Discord message into a
:class:`VoiceNote` or a :class:`CommandRequest`, and implements :class:`ChatPort` with its
framework's calls. The plugin decides; the port only carries out.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable


class ChatKind(StrEnum):
    PRIVATE = "private"
    GROUP = "group"  # groups, supergroups, guild channels


class Activity(StrEnum):
    """What the chat shows while the bot works."""

    TYPING = "typing"
    RECORDING_VOICE = "record_voice"


@dataclass(frozen=True)
class Person:
    id: str
    name: str
    # The user's own client language tag (e.g. "zh-hans") when the platform tells it; None otherwise.
    language: str | None = None


@dataclass(frozen=True)
class ChatRef:
    platform: str  # "telegram", "discord"
    id: str
    kind: ChatKind


@dataclass(frozen=True)
class VoiceNote:
    """A voice message, video note or audio file, described without downloading it."""

    chat: ChatRef
    message_id: str
    sender: Person
    cache_key: str  # stable across re-sends and forwards: Telegram file_unique_id, a content hash…
    fetch: Callable[[], Awaitable[bytes]]  # downloads the bytes, only when needed
    mime_type: str | None = None
    file_name: str | None = None
    declared_seconds: float | None = None  # as the platform reports it: checked before download
    declared_bytes: int | None = None
    download_limit: int | None = None  # the platform's own cap on downloads, in bytes
    speaker: str | None = None  # who spoke: the sender, or the original sender of a forward
    # The chat's own language (a Discord server's locale): answers use it when the sender's is unknown.
    chat_language: str | None = None
    # The platform's own objects, passed through untouched to a host's responder.
    message: Any = None  # the PTB Message or discord.Message of the note
    context: Any = None  # the PTB CallbackContext (None on Discord)
    # Set when the host's own handlers take the transcript instead of the plugin answering it
    # (Telegram transcript_as_text); returns once they have it. Discord's event is in `announce`.
    hand_off: Callable[[str], Awaitable[None]] | None = None
    # Called with every transcript before it is answered (Discord's on_voice_transcript event).
    announce: Callable[[str], None] | None = None
    # Sent as a reply to one of the bot's own messages: said to the bot (an agent answers it in groups).
    addressed: bool = False


@dataclass(frozen=True)
class CommandRequest:
    """A chat command, parsed once by the adapter: ``/mode voice`` → name "mode", args "voice"."""

    name: str
    args: str
    chat: ChatRef
    sender: Person
    message_id: str | None
    replied_note: VoiceNote | None = None  # the voice message the command replies to
    replied_text: str | None = None  # the text message the command replies to
    chat_language: str | None = None  # as VoiceNote.chat_language


@dataclass(frozen=True)
class TextMessage:
    """A typed message in a private chat, for a responder that converses (an agent)."""

    chat: ChatRef
    message_id: str
    sender: Person
    text: str
    message: Any = None  # the PTB Message or discord.Message
    context: Any = None  # the PTB CallbackContext (None on Discord)


@dataclass(frozen=True)
class VoiceReply:
    """A synthesized OGG/Opus voice note, ready to send."""

    data: bytes
    seconds: float
    waveform: bytes = b""  # Discord-style, when the port asked for one


@dataclass(frozen=True)
class Button:
    """A button under a message: ``data`` comes back when it is pressed (Telegram callback_data,
    a Discord custom_id), at most 64 bytes."""

    label: str
    data: str


@dataclass(frozen=True)
class ButtonPress:
    """One of the plugin's buttons was pressed (its ``data`` starts with the plugin's prefix)."""

    chat: ChatRef
    sender: Person
    data: str
    message_id: str  # the message the button is under
    # Says the press was seen, with a short text for the presser alone (None: nothing to say).
    acknowledge: Callable[[str | None], Awaitable[None]]
    # The voice note that message answers, found again on the platform (None: it is gone).
    note: Callable[[], Awaitable[VoiceNote | None]]
    chat_language: str | None = None
    origin: Any = None  # the platform's own object of the press: the PTB CallbackQuery or the discord.Interaction


class VoiceNotAllowed(Exception):
    """The platform refused a voice (or audio) message here: privacy setting, permission, channel."""


class DownloadFailed(Exception):
    """The platform would not hand over a note's file. The message must carry no URL: platform
    file URLs can contain the bot token."""


class ChatPort(Protocol):
    """One conversation as the plugin sees it. ``reply_to`` is a platform message id."""

    max_text_length: int
    needs_waveform: bool
    # Seconds between edits of one message that stay within the platform's flood limits here.
    min_edit_interval: float

    def text_length(self, text: str) -> int:
        """Length of ``text`` as the platform counts it against :attr:`max_text_length`."""
        ...

    async def send_text(self, text: str, reply_to: str | None, buttons: Sequence[Button] = ()) -> str: ...

    async def edit_text(self, message_id: str, text: str, buttons: Sequence[Button] = ()) -> None:
        """Replace the text (and the buttons: none given removes them)."""
        ...

    async def send_voice(self, voice: VoiceReply, reply_to: str | None) -> str:
        """Send as a voice message; raise :class:`VoiceNotAllowed` when refused."""
        ...

    async def send_audio(self, voice: VoiceReply, reply_to: str | None) -> str:
        """Send as an ordinary audio file; raise :class:`VoiceNotAllowed` when refused."""
        ...

    def activity(self, kind: Activity) -> AbstractAsyncContextManager[None]:
        """Show ``kind`` (typing…) in the chat for as long as the context lasts."""
        ...

    async def is_admin(self, user_id: str) -> bool: ...

    async def undeliverable(self, error: BaseException) -> None:
        """A reply could not be delivered even after waiting and retrying: tell the host's own
        error handling (PTB error handlers, discord.py ``on_error``). Called inside the ``except``
        block that caught ``error``."""
        ...


@runtime_checkable
class NoticePort(Protocol):
    """A port that can show a text to the user who asked only (Discord: an ephemeral followup)."""

    async def send_notice(self, text: str, reply_to: str | None) -> str:
        """A refusal or an error about a command: for whoever asked, not the whole chat."""
        ...


class ConversationState(Protocol):
    """Where a responder keeps the id of its own conversation with one chat (one per user in
    groups), e.g. a Coze conversation: in the plugin's store, cleared by /new and /forget."""

    async def get(self) -> str | None: ...

    async def set(self, value: str | None) -> None: ...


@dataclass(frozen=True)
class ResponderContext:
    """What a host's responder gets besides the transcript."""

    platform: str  # "telegram" | "discord"
    chat: ChatRef
    sender: Person
    message: Any  # the PTB Message or discord.Message of the note (None without a platform)
    context: Any  # the PTB CallbackContext on Telegram, None on Discord
    language: str  # the recognition language used for this note ("auto": detected automatically)
    user_language: str | None  # the sender's client language when the platform tells it
    duration: float  # seconds of audio (0 for a typed question)
    message_id: str = ""
    conversation: ConversationState | None = None


@dataclass(frozen=True)
class Reply:
    """A responder's answer: ``text`` is written, ``voice_text`` (default: ``text``) is spoken
    when the chat's reply mode includes a voice message."""

    text: str
    voice_text: str | None = None


class AnswerFailed(Exception):
    """Raised by a responder that could not answer for a reason the user should be told in its
    own words (an agent that failed): the plugin sends :meth:`user_message` with the user's
    words, and does not report it to the host's error handlers as a bug."""

    def user_message(self, lang: str | None) -> str:
        raise NotImplementedError


Answer = str | Reply | AsyncIterable[str] | None
Responder = Callable[[str, ResponderContext], "Awaitable[Answer] | Answer"]
"""A host's answer to a transcript: an async (or plain) function returning ``str``, a
:class:`Reply`, None for no answer — or an async iterable of text pieces (an async generator),
which the plugin shows growing in its reply and speaks sentence by sentence as they arrive.

A responder object with ``converses = True`` (an agent such as
:class:`voicebridge.responders.CozeAgent`) holds the conversation itself: it also gets the
private chats' text messages and ``/ask``, ``/new`` starts a fresh conversation, and in groups it
answers only what is said to the bot (replies to its messages, ``/ask``); its ``service_name``
(where what users say goes) is shown by /privacy."""


def converses(responder: Responder | None) -> bool:
    return bool(getattr(responder, "converses", False))
