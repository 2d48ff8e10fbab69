"""Answers from a responder (a host bot's own logic, or an agent), in the chat's reply mode.

A responder answers with ``str``, :class:`Reply` or None, or with an async iterable of text
pieces as they come (an agent's stream). A streamed answer grows in one reply, edited within the
platform's limits (:class:`LiveMessage`), and, when the chat wants voice, is synthesized sentence
by sentence while it streams, so the voice note is ready soon after the last piece.

The responder runs outside the transcription slots, within VOICEBRIDGE_RESPONDER_TIMEOUT (a
stream: before its first piece and between pieces, so a long answer that keeps coming is not cut
off). Every failure ends as one short message that repeats what the user said.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from collections.abc import AsyncIterable, Awaitable, Callable
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass
from typing import Any

from ..speech.errors import SpeechError
from ..speech.models import AudioClip, AudioFormat, SynthesizeOptions
from ..speech.service import SYNTHESIS_PARALLELISM, SpeechService
from ..speech.text import sentences_end
from .conversations import StoredConversation
from .delivery import ELLIPSIS, LiveMessage, send_text, send_voice
from .messages import text
from .model import (
    Activity,
    AnswerFailed,
    ChatPort,
    ChatRef,
    Person,
    Reply,
    Responder,
    ResponderContext,
    VoiceReply,
)
from .settings import ChatSettings, PluginSettings
from .store import Store

log = logging.getLogger(__name__)

SPEAK_LIMIT_CHARACTERS = 2000  # longer answers are not read aloud (minutes of audio)
MAX_ANSWER_CHARACTERS = 20_000  # a stream that goes on is cut here: five Telegram messages
# A streamed answer is spoken in pieces of whole sentences, at least this long: few TTS calls
# (each is billed), yet the first starts while the answer is still coming.
MIN_SPOKEN_CHARACTERS = 80
SPEECH_RATE = 24000  # pieces are synthesized as PCM at this rate, joined, and encoded once

# Markup an agent writes that must not be read aloud: code blocks, link targets, bare URLs,
# heading / quote / bullet marks, emphasis marks (an underscore only at a word's edge).
_UNSPOKEN = (
    (re.compile(r"```.*?```", re.DOTALL), " "),
    (re.compile(r"!?\[([^\]]*)\]\([^)\s]*\)"), r"\1"),
    (re.compile(r"https?://\S+"), ""),
    (re.compile(r"^[ \t]*(?:#{1,6}|>|[-*+])[ \t]+", re.MULTILINE), ""),
    (re.compile(r"[*`~]+|(?<!\w)_+|_+(?!\w)"), ""),
)

Deliver = Callable[[ChatPort, ChatSettings, ChatRef, "str | None", str, str, "LiveMessage | None", "str | None"], Awaitable[None]]
# Counts characters against the chat's daily allowance before they are spoken: None when they
# may be, else the reason for the user (in their language).
AllowSpeech = Callable[[ChatRef, int, "str | None"], Awaitable["str | None"]]


def spoken_form(written: str) -> str:
    """``written`` as it should be read aloud: the words without their markup."""
    for pattern, replacement in _UNSPOKEN:
        written = pattern.sub(replacement, written)
    return written.strip()


@dataclass(frozen=True)
class Question:
    """What a responder is asked: a voice note's transcript, or a typed question."""

    text: str
    chat: ChatRef
    sender: Person
    reply_to: str | None  # the message the answer replies to
    spoken: bool  # a transcript: a failure message repeats what was heard, so it is never lost
    chat_language: str | None = None
    message: Any = None  # the platform's own message object, for the responder
    context: Any = None
    duration: float = 0.0

    @property
    def answer_language(self) -> str | None:
        return self.sender.language or self.chat_language


class Answerer:
    """Asks the responder and delivers its answer; one per plugin."""

    def __init__(self, responder: Responder, service: SpeechService, store: Store, settings: PluginSettings,
                 deliver: Deliver, allow_speech: AllowSpeech, edit_interval: float) -> None:
        """``deliver`` sends a finished answer (text and/or voice per the reply mode): the
        plugin's own delivery, shared with transcripts; ``allow_speech`` keeps a streamed
        answer's voice within the chat's daily allowance."""
        self.responder = responder
        self.service = service
        self.store = store
        self.settings = settings
        self.deliver = deliver
        self.allow_speech = allow_speech
        self.edit_interval = edit_interval

    async def answer(self, question: Question, chat: ChatPort, settings: ChatSettings,
                     placeholder: LiveMessage | None = None) -> None:
        """``placeholder``: a voice note's "Transcribing…" reply, which the answer replaces (with
        no answer, it shows what was heard: it is never left behind)."""
        lang = question.answer_language
        context = ResponderContext(
            platform=question.chat.platform, chat=question.chat, sender=question.sender, message=question.message,
            context=question.context, language=settings.language, user_language=question.sender.language,
            duration=question.duration, message_id=question.reply_to or "",
            conversation=StoredConversation(self.store, question.chat, question.sender))
        mode = settings.reply_mode
        live = placeholder
        if live is None and mode.has_text:
            live = LiveMessage(chat, question.reply_to, max(self.edit_interval, chat.min_edit_interval))
        voice = None
        if mode.has_voice and self.service.can_synthesize:
            voice = SpokenAnswer(self.service, self.allow_speech, question.chat, settings.voice_id, chat.needs_waveform, lang)
        try:
            try:
                async with chat.activity(Activity.TYPING if mode.has_text else Activity.RECORDING_VOICE):
                    answer = await self._ask(question, context, live, voice)
                failure = None
            except TimeoutError:
                log.warning("the responder gave no answer within %gs", self.settings.responder_timeout_seconds)
                failure = text("responder_timeout", lang)
            except AnswerFailed as error:
                log.warning("the responder could not answer: %s", error)
                failure = error.user_message(lang)
            except Exception as error:
                log.exception("the responder failed")
                await chat.report_error(error)
                failure = text("responder_failed", lang)
            if failure is not None:
                message = failure + (text("heard", lang, transcript=question.text) if question.spoken else "")
                # A partial answer on screen must not pass for the whole: it becomes the message.
                await (live.finish(message) if live and live.started else send_text(chat, message, question.reply_to))
            elif isinstance(answer, Reply):
                await self.deliver(chat, settings, question.chat, question.reply_to, answer.text,
                                   answer.voice_text or answer.text, placeholder, lang)
            elif answer:
                await self._deliver_streamed(answer, question, chat, settings, live, voice)
            elif placeholder is not None:
                await placeholder.finish(text("heard_placeholder", lang, transcript=question.text))
        finally:
            if voice is not None:
                await voice.cancel()  # nothing left running when the answer failed or was empty

    async def _ask(self, question: Question, context: ResponderContext, live: LiveMessage | None,
                   voice: SpokenAnswer | None) -> Reply | str | None:
        """The responder's answer: a :class:`Reply`, the whole text of a stream (shown and
        spoken while it came), or None for no answer."""
        timeout = self.settings.responder_timeout_seconds
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout) as deadline:
            answer: Any = self.responder(question.text, context)
            if inspect.isawaitable(answer):
                answer = await answer
            if isinstance(answer, str):
                answer = Reply(answer)
            if isinstance(answer, Reply):
                answer = Reply(answer.text.strip(), answer.voice_text.strip() if answer.voice_text else None)
                return answer if answer.text else None  # the host chose not to answer
            if answer is None:
                return None
            if not isinstance(answer, AsyncIterable):
                raise TypeError(f"a responder returns str, Reply, None or an async iterable of str, not {type(answer).__name__}")
            written = ""
            async with AsyncExitStack() as stream:
                if hasattr(answer, "aclose"):
                    await stream.enter_async_context(aclosing(answer))  # type: ignore[arg-type]  # its connection closes with it
                async for piece in answer:
                    if not isinstance(piece, str):
                        raise TypeError(f"a streaming responder yields str, not {type(piece).__name__}")
                    deadline.reschedule(loop.time() + timeout)
                    written += piece
                    if len(written) > MAX_ANSWER_CHARACTERS:
                        log.warning("the answer goes on past %d characters; cut there", MAX_ANSWER_CHARACTERS)
                        written = written[:MAX_ANSWER_CHARACTERS] + ELLIPSIS
                        break
                    if live is not None:
                        live.show(written)
                    if voice is not None:
                        voice.heard(written)
        return written.strip() or None

    async def _deliver_streamed(self, written: str, question: Question, chat: ChatPort, settings: ChatSettings,
                                live: LiveMessage | None, voice: SpokenAnswer | None) -> None:
        """The whole answer in place of the growing one, then its voice (already mostly made);
        a voice note that cannot be made or sent falls back to the text."""
        mode = settings.reply_mode
        if live is not None:
            await live.finish(written)
        if not mode.has_voice:
            return
        note = None
        if voice is not None:
            async with chat.activity(Activity.RECORDING_VOICE):
                note = await voice.finish(written)
        if voice is not None and voice.refusal is not None:  # over the chat's daily allowance: say so
            await send_text(chat, voice.refusal if mode.has_text else f"{written}\n\n{voice.refusal}", question.reply_to)
            return
        sent = note is not None and await send_voice(chat, note, question.reply_to)
        if not sent and not mode.has_text:
            await send_text(chat, written, question.reply_to)


class SpokenAnswer:
    """A streamed answer read aloud piece by piece: each run of whole sentences is synthesized
    as soon as it is complete, and the pieces become one voice note at the end."""

    def __init__(self, service: SpeechService, allow_speech: AllowSpeech, where: ChatRef, voice_id: str | None,
                 needs_waveform: bool, lang: str | None) -> None:
        self.service = service
        self.allow_speech = allow_speech
        self.where = where
        self.voice_id = voice_id
        self.needs_waveform = needs_waveform
        self.lang = lang
        self.refusal: str | None = None  # why the chat's daily allowance does not cover the answer
        self.characters = 0  # spoken so far, counted against SPEAK_LIMIT_CHARACTERS
        self._queued = 0  # characters of the written answer handed to synthesis
        self._pieces: list[asyncio.Task[bytes]] = []
        self._slots = asyncio.Semaphore(SYNTHESIS_PARALLELISM)  # as SpeechService speaks a long text
        self._too_long = False

    def heard(self, written: str) -> None:
        """The answer so far: its new whole sentences go to synthesis once there are enough."""
        pending = written[self._queued:]
        end = sentences_end(pending)
        if end and len(pending[:end].strip()) >= MIN_SPOKEN_CHARACTERS:
            self._queued += end
            self._speak(pending[:end])

    async def finish(self, written: str) -> VoiceReply | None:
        """The voice note of the whole answer; None (logged) when it cannot be made."""
        self._speak(written[self._queued:])
        self._queued = len(written)
        if self._too_long or not self._pieces:
            return None
        try:
            pcm = b"".join(await asyncio.gather(*self._pieces))
            data = await self.service.converter.encode(pcm, SPEECH_RATE, AudioFormat.OGG_OPUS)
            waveform = b""
            if self.needs_waveform:
                waveform = (await self.service.converter.analyse(AudioClip(data=data))).waveform()
        except _OverAllowance:
            return None
        except (SpeechError, RuntimeError) as error:
            log.warning("voice answer failed, answering in text: %s", error)
            return None
        return VoiceReply(data=data, seconds=len(pcm) / 2 / SPEECH_RATE, waveform=waveform)

    async def cancel(self) -> None:
        for piece in self._pieces:
            piece.cancel()
        await asyncio.gather(*self._pieces, return_exceptions=True)

    def _speak(self, written: str) -> None:
        spoken = spoken_form(written)
        if not spoken or self._too_long:
            return
        self.characters += len(spoken)
        if self.characters > SPEAK_LIMIT_CHARACTERS:
            log.info("the answer is longer than %d characters: not read aloud", SPEAK_LIMIT_CHARACTERS)
            self._too_long = True
            for piece in self._pieces:
                piece.cancel()
            return
        self._pieces.append(asyncio.create_task(self._synthesize(spoken)))

    async def _synthesize(self, spoken: str) -> bytes:
        refusal = await self.allow_speech(self.where, len(spoken), self.lang)
        if refusal is not None:
            self.refusal = self.refusal or refusal
            raise _OverAllowance
        async with self._slots:
            audio = await self.service.synthesize(spoken, SynthesizeOptions(voice_id=self.voice_id, format=AudioFormat.PCM,
                                                                             sample_rate=SPEECH_RATE))
        return audio.data


class _OverAllowance(Exception):
    """A piece the chat's daily allowance does not cover: the answer is not spoken."""
