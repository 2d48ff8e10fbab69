"""What adapters hand to the plugin, and the port through which the plugin answers.

Nothing here knows a platform: an adapter turns a Telegram update or a Discord message into a
:class:`VoiceNote` or a :class:`CommandRequest`, and implements :class:`ChatPort` with its
framework's calls. The plugin decides; the port only carries out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


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
    language: str | None = None  # the user's interface language tag, e.g. "zh-hans"


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


@dataclass(frozen=True)
class VoiceReply:
    """A synthesized OGG/Opus voice note, ready to send."""

    data: bytes
    seconds: float
    waveform: bytes = b""  # Discord-style, when the port asked for one


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

    async def send_text(self, text: str, reply_to: str | None) -> str: ...

    async def edit_text(self, message_id: str, text: str) -> None: ...

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


@dataclass(frozen=True)
class ResponderContext:
    """What a host's responder gets besides the transcript."""

    chat: ChatRef
    sender: Person
    message_id: str
    language: str  # recognition language in effect


Responder = Callable[[str, ResponderContext], Awaitable[str | None]]
