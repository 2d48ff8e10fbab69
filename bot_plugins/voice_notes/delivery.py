"""Getting replies into a chat: text split to the platform's limit, a live message edited with
a growing transcript, and the voice → audio → text ladder. Send failures are contained here:
a reply that cannot be delivered is logged and reported to the host's error handling (the port
has already waited out flood control and retried), never raised into the pipeline."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from ..speech.text import split_text
from .model import Button, ChatPort, VoiceNotAllowed, VoiceReply

log = logging.getLogger(__name__)

ELLIPSIS = "…"
PART_MARKER_ROOM = " (999/999)"  # kept free in every part of a split text for its "(i/n)"


def split_for(chat: ChatPort, text: str, header: str = "") -> list[str]:
    """``header + text`` in messages the platform takes. When it takes more than one, ``header``
    (a speaker's name) stays with the first part's words and every part ends with its "(i/n)"."""
    whole = header + text
    if chat.text_length(whole) <= chat.max_text_length:
        return [whole]
    room = chat.max_text_length - chat.text_length(header) - chat.text_length(PART_MARKER_ROOM)
    pieces = split_text(text, room, length=chat.text_length) or [text]
    return [f"{header if number == 1 else ''}{piece} ({number}/{len(pieces)})" for number, piece in enumerate(pieces, 1)]


async def send_text(chat: ChatPort, text: str, reply_to: str | None, *, header: str = "",
                    buttons: Sequence[Button] = ()) -> list[str]:
    """Send ``text`` as one or more replies (``buttons`` under the last); returns the ids of the
    messages that went out."""
    return await send_parts(chat, split_for(chat, text, header), reply_to, buttons)


async def send_parts(chat: ChatPort, parts: Sequence[str], reply_to: str | None, buttons: Sequence[Button] = ()) -> list[str]:
    sent: list[str] = []
    for index, piece in enumerate(parts):
        try:
            sent.append(await chat.send_text(piece, reply_to, buttons if index == len(parts) - 1 else ()))
        except Exception as error:
            log.exception("could not send a text reply")
            await chat.report_error(error)
            break
    return sent


async def send_voice(chat: ChatPort, voice: VoiceReply, reply_to: str | None) -> bool:
    """A voice message; if refused, an audio file; returns False when neither could be sent."""
    for kind, send in (("voice message", chat.send_voice), ("audio file", chat.send_audio)):
        try:
            await send(voice, reply_to)
            return True
        except VoiceNotAllowed as refusal:
            log.info("%s refused here: %s", kind, refusal)
        except Exception:
            log.exception("could not send a %s", kind)
    return False


class LiveMessage:
    """One reply that shows a growing transcript, edited at most once per ``interval``.

    With :meth:`open`, a placeholder ("Transcribing…") goes out at once and everything after it
    is an edit of it. Without, partials start to show only once ``interval`` has passed since
    the message was set up: a note recognised faster than that gets one message with its full
    text and no edit to wait for. Later updates are edits, skipped while the last change is too
    recent or still on its way. Updates go out in the background, so a slow chat (flood control
    waited out) never holds up recognition. :meth:`finish` puts the full text at once — the
    answer is what the user waits for, and one early edit is a burst the platforms allow —
    spilling text beyond the platform's limit into further messages.
    """

    def __init__(self, chat: ChatPort, reply_to: str | None, interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.chat = chat
        self.reply_to = reply_to
        self.interval = interval
        self.clock = clock
        self.message_id: str | None = None
        self.shown = ""
        self.partial_shown = False  # a partial transcript is on screen (progress then stays out of its way)
        self._last_change = clock()  # as if changed now: nothing shows within the first interval
        self._broken = False
        self._update: asyncio.Task[bool] | None = None

    @property
    def started(self) -> bool:
        return self.message_id is not None or self._update is not None

    def open(self, placeholder: str) -> None:
        """Send ``placeholder`` now (in the background): the message the transcript replaces."""
        if not self.started:
            self._update = asyncio.create_task(self._put(placeholder))

    async def opened(self) -> str | None:
        """The placeholder's message id, once it is out (None: it could not be sent)."""
        if self._update is not None and self.message_id is None:
            await asyncio.wait([self._update])  # not gather: a waiter cancelled must not cancel the placeholder
        return self.message_id

    def show(self, text: str, *, partial: bool = True) -> None:
        """Show ``text`` if the pace allows; a ``partial`` transcript is marked as unfinished (…)."""
        text = text.strip()
        if partial and text:
            text = text.removesuffix(ELLIPSIS) + ELLIPSIS
        if not text or text == self.shown or self._broken:
            return
        if self._update is not None and not self._update.done():
            return
        if self.clock() - self._last_change < self.interval:
            return
        self.partial_shown = self.partial_shown or partial
        self._update = asyncio.create_task(self._put(self._fit(text)))

    async def finish(self, text: str, *, header: str = "", buttons: Sequence[Button] = ()) -> None:
        """The final text (``header``: see :func:`split_for`), ``buttons`` under its last part."""
        if self._update is not None:
            if self.message_id is not None:
                self._update.cancel()  # a partial still waiting out flood control is overtaken by the final text
            await asyncio.gather(self._update, return_exceptions=True)  # the message must exist before it can be edited
        pieces = split_for(self.chat, text, header)
        if self.message_id is None or self._broken:
            await send_parts(self.chat, pieces, self.reply_to, buttons)
            return
        first_buttons = buttons if len(pieces) == 1 else ()
        if (pieces[0] != self.shown or first_buttons) and not await self._put(pieces[0], first_buttons):
            # The final edit failed: a partial must not pass for the whole, so the text goes anew.
            await send_parts(self.chat, pieces[:1], self.reply_to, first_buttons)
        await send_parts(self.chat, pieces[1:], self.reply_to, buttons)

    def _fit(self, text: str) -> str:
        """A partial longer than one message shows its beginning; the rest comes at the end."""
        if self.chat.text_length(text) <= self.chat.max_text_length:
            return text
        return split_text(text, self.chat.max_text_length - 1, length=self.chat.text_length)[0].removesuffix(ELLIPSIS) + ELLIPSIS

    async def _put(self, text: str, buttons: Sequence[Button] = ()) -> bool:
        """Show ``text`` (a new message or an edit); False if the platform would not take it."""
        try:
            if self.message_id is None:
                self.message_id = await self.chat.send_text(text, self.reply_to, buttons)
            else:
                await self.chat.edit_text(self.message_id, text, buttons)
        except Exception:
            # Live updates are a courtesy: if they fail, the final text still goes out.
            log.exception("could not update the live transcript")
            self._broken = self.message_id is None
            return False
        self.shown = text
        self._last_change = self.clock()
        return True
