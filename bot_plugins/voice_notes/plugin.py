"""The voice-notes plugin: what happens to a voice note, and to each chat command.

One instance serves every adapter (Telegram, Discord): a rule written here holds on both.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from ..logs import new_request_id
from ..speech.errors import AudioError, SpeechError
from ..speech.languages import language_code
from ..speech.metering import AllowanceExceeded, AudioUsage
from ..speech.models import AudioClip, SynthesizeOptions, TranscribeOptions
from ..speech.service import SpeechService
from . import messages
from .answers import SPEAK_LIMIT_CHARACTERS, Answerer, Question
from .conversations import StoredConversation, forget_conversations
from .buttons import ButtonAction, ButtonBook
from .delivery import LiveMessage, send_text, send_voice
from .messages import duration, language_name, text, time_left
from .model import (
    Activity,
    Button,
    ButtonPress,
    ChatKind,
    ChatPort,
    ChatRef,
    CommandRequest,
    DownloadFailed,
    NoticePort,
    Person,
    Responder,
    TextMessage,
    VoiceNote,
    VoiceReply,
    converses,
)
from .settings import ChatSettings, PluginSettings, ReplyMode, parse_hot_words
from .quota import STORE_WAIT_ON_ANSWER, Account, AudioQuota, Bookkeeper, DailyLimitReached
from .store import CachedTranscript, Store, StoreError, today

log = logging.getLogger(__name__)

MAX_CONCURRENT_NOTES = 16  # across all chats; each chat handles its notes one at a time, in order
# Downloads are held in memory: a cap where the platform sets none (Telegram's is 20 MB).
MAX_DOWNLOAD_BYTES = 100_000_000
VOICES_LISTED = 30
SWEEP_INTERVAL_SECONDS = 3600.0
# Usage totals are kept for the daily limits and /usage ("this month"), then deleted.
USAGE_RETENTION_DAYS = 31
# Recognition that takes longer than this shows its progress in the placeholder.
PROGRESS_AFTER_SECONDS = 5.0
# The languages a transcript's buttons offer to recognise it again in, named in their own language.
RETRY_LANGUAGES = {"zh": "中文", "en": "English"}
CHOICE_VOICES = 24  # /voice without an id offers this many voices as buttons
MIN_BUTTON_LIFETIME_SECONDS = 24 * 3600.0  # a choice keyboard works this long even without transcript retention
STORE_WRITES_AT_CLOSE_SECONDS = 5.0  # store writes still under way get this long when the plugin closes
SETTINGS_COMMANDS = frozenset({"mode", "language", "voice", "auto", "hotwords"})  # admins only, in groups, to change
ADMIN_COMMANDS = frozenset({"forget", "usage"})  # admins only, in groups
# In a group's menu for its admins only: what only they may use, and /voices (the choices for /voice).
GROUP_ADMIN_MENU = SETTINGS_COMMANDS | ADMIN_COMMANDS | {"voices"}
# Every command the plugin knows, in menu order.
ALL_COMMANDS = ("start", "help", "ask", "new", "transcribe", "speak", "settings", "mode", "language", "voice", "voices",
                "auto", "hotwords", "usage", "privacy", "forget")
AGENT_COMMANDS = frozenset({"ask", "new"})  # offered only with a responder that converses (an agent)
# In someone else's bot: never /start or /help, which the host answers itself.
GUEST_COMMANDS = tuple(name for name in ALL_COMMANDS if name not in ("start", "help"))


def resolve_commands(names: Iterable[str]) -> tuple[str, ...]:
    """Command names as given (``/x`` or ``X`` accepted), checked against the plugin's own."""
    resolved = tuple(dict.fromkeys(name.strip().lstrip("/").lower() for name in names))
    unknown = [name for name in resolved if name not in ALL_COMMANDS]
    if unknown:
        raise ValueError(f"unknown voicebridge command {unknown[0]!r}; the commands are: {', '.join(ALL_COMMANDS)}")
    return resolved


class MenuAudience(StrEnum):
    """Who sees a command menu: a platform publishes one per audience where it can."""

    PRIVATE = "private"
    GROUP = "group"  # every member of a group
    GROUP_ADMINS = "group_admins"


class AsyncResource(Protocol):
    async def aclose(self) -> None: ...


class NoteObserver(Protocol):
    """Hears what happens to voice notes (metrics live behind this)."""

    def note_received(self, platform: str) -> None: ...

    def note_transcribed(self, platform: str, provider: str, audio_seconds: float, cached: bool) -> None: ...

    def note_failed(self, platform: str, reason: str) -> None: ...


class _Unobserved:
    def note_received(self, platform: str) -> None:
        pass

    def note_transcribed(self, platform: str, provider: str, audio_seconds: float, cached: bool) -> None:
        pass

    def note_failed(self, platform: str, reason: str) -> None:
        pass


class VoiceNotesPlugin:
    def __init__(
        self,
        service: SpeechService,
        store: Store,
        settings: PluginSettings,
        *,
        responder: Responder | None = None,
        commands: Iterable[str] | None = None,
        closes: Sequence[AsyncResource] = (),
        max_concurrent_notes: int = MAX_CONCURRENT_NOTES,
        edit_interval: float = 1.0,
        observer: NoteObserver | None = None,
        progress_after: float = PROGRESS_AFTER_SECONDS,
    ) -> None:
        """``commands``: the command names this plugin answers (None: all of them); ``closes``:
        what :meth:`aclose` closes — the resources this plugin created, never a host's."""
        self.service = service
        self.store = store
        self.settings = settings
        self.responder = responder
        self.converses = converses(responder)
        self.observer = observer or _Unobserved()
        self.edit_interval = edit_interval
        self.progress_after = progress_after
        self.buttons = ButtonBook(store)
        self._closes = tuple(closes)
        self._notes = asyncio.Semaphore(max_concurrent_notes)
        self._chat_queues: dict[tuple[str, str], _ChatQueue] = {}
        self._refused_groups: set[tuple[str, str]] = set()
        self._user_languages: dict[tuple[str, str], str] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.bookkeeper = Bookkeeper()  # store work for answers: bounded reads, background writes
        self.accepting = True  # False while shutting down: new notes and commands are ignored
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        handlers: dict[str, Callable[[CommandRequest, ChatPort, str | None], Awaitable[None]]] = {
            "start": self._start_command,
            "help": self._help,
            "ask": self._ask,
            "new": self._new_conversation,
            "transcribe": self._transcribe_command,
            "speak": self._speak,
            "settings": self._show_settings,
            "mode": self._set_mode,
            "language": self._set_language,
            "voice": self._set_voice,
            "voices": self._list_voices,
            "auto": self._set_auto,
            "hotwords": self._set_hot_words,
            "usage": self._usage,
            "privacy": self._privacy,
            "forget": self._forget,
        }
        self._commands = {name: handlers[name] for name in resolve_commands(ALL_COMMANDS if commands is None else commands)
                          if self.converses or name not in AGENT_COMMANDS}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the retention sweep; idempotent."""
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever())

    def run_in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a note's or a command's work as a task the plugin owns: :meth:`drain` waits for
        it, and cancels it once the grace period is over (a framework would wait forever)."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float) -> bool:
        """Stop taking new work and wait up to ``timeout`` for the work in flight, then cancel
        what is left; False if some had to be cancelled."""
        self.accepting = False
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
                await self.bookkeeper.flush()
            return True
        except TimeoutError:
            log.warning("%d notes or commands and %d store writes still running after %.0fs; stopping them",
                        self._in_flight, self.bookkeeper.pending, timeout)
            return False
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    @asynccontextmanager
    async def _busy(self) -> AsyncIterator[None]:
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def aclose(self) -> None:
        """Stop everything this plugin started and close what it created; idempotent."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.bookkeeper.settle(STORE_WRITES_AT_CLOSE_SECONDS)
        await self.bookkeeper.aclose()
        resources, self._closes = self._closes, ()
        for resource in resources:
            await resource.aclose()
        if self.converses and hasattr(self.responder, "aclose"):
            await self.responder.aclose()  # an agent's connection; it opens a new one if used again

    async def _sweep_forever(self) -> None:
        while True:
            try:
                removed = await self.store.sweep(self.settings.retention_hours * 3600)
                if removed:
                    log.info("removed %d transcripts older than %g hours", removed, self.settings.retention_hours)
                oldest_day = (datetime.now(UTC) - timedelta(days=USAGE_RETENTION_DAYS)).strftime("%Y-%m-%d")
                await self.store.sweep_usage(oldest_day)
                await self.buttons.sweep(self._button_lifetime)
            except StoreError as error:
                log.warning("transcript sweep failed: %s", error)
            await asyncio.sleep(SWEEP_INTERVAL_SECONDS)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def command_names(self) -> tuple[str, ...]:
        return tuple(self._commands)

    @property
    def recognition_languages(self) -> tuple[str, ...]:
        """The language codes /language takes: those every provider of the ASR chain honours."""
        return self.service.recognition_languages

    async def voice_choices(self, typed: str, limit: int) -> list[tuple[str, str]]:
        """(id, name) of up to ``limit`` of the provider's voices whose name or id contains
        ``typed`` (any case), for a platform's autocomplete; none when the list cannot be had."""
        if not self.service.can_synthesize:
            return []
        try:
            voices = await self.service.voices()
        except SpeechError as error:
            log.info("voice list unavailable for autocomplete: %s", error)
            return []
        wanted = typed.strip().casefold()
        matches = [voice for voice in voices if wanted in voice.name.casefold() or wanted in voice.id]
        return [(voice.id, f"{voice.name} ({voice.language_name})" if voice.language_name else voice.name)
                for voice in matches[:limit]]

    def command_descriptions(self, language: str, audience: MenuAudience | None = None) -> list[tuple[str, str]]:
        """(command, description) pairs for a platform's command menu, in ``language``: the
        commands that work for ``audience`` (None: all of them)."""
        return [(name, messages.COMMAND_DESCRIPTIONS[name][language]) for name in self._commands
                if audience is None or self._offered_to(name, audience)]

    def _offered_to(self, name: str, audience: MenuAudience) -> bool:
        """Private chats: all but /auto (a group setting). Groups: what every member may use;
        settings, /usage, /forget (and /speak unless everyone may) for the admins."""
        if audience is MenuAudience.PRIVATE:
            return name != "auto"
        if name == "speak":
            policy = self.settings.speak_in_groups
            return policy == "everyone" or (policy == "admins" and audience is MenuAudience.GROUP_ADMINS)
        return audience is MenuAudience.GROUP_ADMINS or name not in GROUP_ADMIN_MENU

    # ------------------------------------------------------------------ voice notes

    async def handle_voice_note(self, note: VoiceNote, chat: ChatPort) -> None:
        """A voice note arrived: transcribe and answer it if this chat wants that."""
        new_request_id()
        log.info("voice note %s in %s chat %s (%s s declared)", note.message_id, note.chat.platform, note.chat.id,
                 note.declared_seconds)
        if not self.accepting:
            log.info("shutting down: note not taken")
            return
        self.observer.note_received(note.chat.platform)
        # A note behind others in its chat shows its placeholder now, not when its turn comes;
        # placeholders go out one after the other, in the order the notes came.
        queue = self._chat_queues.setdefault((note.chat.platform, note.chat.id), _ChatQueue())
        ahead, shown = queue.placeholder_shown, asyncio.get_running_loop().create_future()
        queue.placeholder_shown = shown
        early = asyncio.create_task(self._early_placeholder(note, chat, ahead, shown)) if queue.lock.locked() else None
        try:
            # The chat's turn is taken before anything else is awaited: answers keep the notes' order.
            async with self._busy(), self._chat_turn(note.chat):
                if early is not None:
                    decided = await early
                    if decided is not None:
                        live, note, settings, ask = decided  # decided on arrival: the placeholder promised an answer
                        await self._answer_note(note, chat, settings, ask=ask, live=live)
                        return
                if not await self._admitted(note.chat, note.sender, chat, note.message_id):
                    return
                note = replace(note, sender=await self._with_known_language(note.chat.platform, note.sender))
                settings = await self.chat_settings(note.chat)
                ask = self._asks_responder(note)
                if note.chat.kind is ChatKind.GROUP and not settings.auto_transcribe and not (ask and self.converses):
                    return
                await self._answer_note(note, chat, settings, ask=ask, shown=shown)
        finally:
            _settle(shown)
            if early is not None and not early.done():
                early.cancel()  # stopped while waiting for its turn

    async def _early_placeholder(self, note: VoiceNote, chat: ChatPort, ahead: asyncio.Future[None] | None,
                                 shown: asyncio.Future[None]) -> tuple[LiveMessage, VoiceNote, ChatSettings, bool] | None:
        """For a note that waits for its chat's turn: when it will be transcribed into a text
        reply, its placeholder, sent once the note ahead has shown its own (``ahead``), with what
        was decided; ``shown`` is settled then. None (nothing sent): its turn decides, and says
        what it must (a refusal, a limit) in the chat's order."""
        try:
            return await self._decide_early(note, chat, ahead)
        finally:
            _settle(shown)

    async def _decide_early(self, note: VoiceNote, chat: ChatPort, ahead: asyncio.Future[None] | None
                            ) -> tuple[LiveMessage, VoiceNote, ChatSettings, bool] | None:
        allowed = self.settings.allowed_chats
        if (allowed and note.chat.id not in allowed) or note.hand_off is not None:
            return None
        note = replace(note, sender=await self._with_known_language(note.chat.platform, note.sender))
        settings = await self.chat_settings(note.chat)
        ask = self._asks_responder(note)
        lang = _answer_language(note.sender, note.chat_language)
        skipped = note.chat.kind is ChatKind.GROUP and not settings.auto_transcribe and not (ask and self.converses)
        if skipped or not settings.reply_mode.has_text or self._limit_refusal(note, lang):
            return None
        if ahead is not None:
            await ahead
        live = self._placeholder(note, chat, lang)
        await live.opened()
        return live, note, settings, ask

    def _placeholder(self, note: VoiceNote, chat: ChatPort, lang: str | None) -> LiveMessage:
        live = LiveMessage(chat, note.message_id, max(self.edit_interval, chat.min_edit_interval))
        live.open(text("transcribing", lang, length=_clock(note.declared_seconds)).strip())
        return live

    def _asks_responder(self, note: VoiceNote) -> bool:
        """Whether the responder answers this note. An agent in a group answers only what is
        said to the bot; the chat's other notes are transcribed."""
        if self.responder is None or note.hand_off is not None:
            return False
        return not self.converses or note.chat.kind is ChatKind.PRIVATE or note.addressed

    async def handle_text(self, message: TextMessage, chat: ChatPort) -> None:
        """A typed message in a private chat: a responder that converses answers it."""
        if not self.converses or not self.accepting or message.chat.kind is not ChatKind.PRIVATE or not message.text.strip():
            return
        new_request_id()
        log.info("text message %s in %s chat %s", message.message_id, message.chat.platform, message.chat.id)
        async with self._busy(), self._chat_turn(message.chat):
            if not await self._admitted(message.chat, message.sender, chat, message.message_id):
                return
            sender = await self._with_known_language(message.chat.platform, message.sender)
            question = Question(message.text.strip(), message.chat, sender, message.message_id, spoken=False,
                                message=message.message, context=message.context)
            await self._answerer().answer(question, chat, await self.chat_settings(message.chat))

    def _answerer(self) -> Answerer:
        assert self.responder is not None
        return Answerer(self.responder, self.service, self.store, self.settings, self._deliver, self._speech_allowed,
                        self.edit_interval)

    async def _answer_note(self, note: VoiceNote, chat: ChatPort, settings: ChatSettings, *, ask: bool,
                           live: LiveMessage | None = None, shown: asyncio.Future[None] | None = None) -> None:
        """Transcribe and answer (``ask``: the responder answers the transcript), in the chat's
        turn (the caller holds it); every failure ends as one message in the user's language.
        ``live``: the note's placeholder, when it was sent already; ``shown`` is settled once
        this note's placeholder is out (the next note's may follow)."""
        lang = _answer_language(note.sender, note.chat_language)
        platform = note.chat.platform
        if refusal := self._limit_refusal(note, lang):
            self.observer.note_failed(platform, "limits")
            await send_text(chat, refusal, note.message_id)
            return
        # The placeholder (or "typing…") shows from the note's turn on (or from its arrival, when
        # other notes of the chat were ahead of it), also while it waits for a free slot.
        async with AsyncExitStack() as typing:
            if live is None and note.hand_off is None and settings.reply_mode.has_text:
                # The placeholder goes out at once, before the note waits for a slot or its file:
                # the user sees at once that it was heard; the transcript (or the error) replaces
                # it. It is the chat's status too: no "typing…" beside it (a message clears that
                # status anyway), which halves the requests a burst of notes queues up behind a
                # rate limiter (PTB's AIORateLimiter in `voicebridge run`: docs/performance.md §11).
                live = self._placeholder(note, chat, lang)
                if shown is not None:
                    self.run_in_background(_settle_when_opened(live, shown))
            elif live is None:
                await typing.enter_async_context(chat.activity(Activity.TYPING))
            try:
                async with self._notes:  # a slot for the speech work only, never for a host's answer
                    transcript, seconds, cache_key = await self._transcript(note, settings, live, lang)
                await typing.aclose()  # recognised: the answer is on its way
                await self._answer_transcript(note, chat, settings, transcript, seconds, live, cache_key, ask=ask)
                return
            except DailyLimitReached as reached:
                reason = "daily_limit"
                message = text("daily_limit_user" if reached.per_user else "daily_limit", lang,
                               limit=duration(reached.limit_seconds, lang),
                               used=duration(min(reached.used_seconds, reached.limit_seconds), lang, round_down=True),
                               reset=time_left(_seconds_to_reset(), lang))
            except AudioError as error:
                log.info("unusable audio: %s", error)
                reason, message = f"audio_{error.problem.value}", error.user_message(lang)
            except SpeechError as error:
                log.warning("speech service failed: %s (%s)", error, error.kind)
                reason, message = error.kind.value, error.user_message(lang)
            except DownloadFailed as error:
                log.warning("download failed: %s", error)
                reason, message = "download", text("download_failed", lang)
            except Exception:
                log.exception("voice note failed")
                reason, message = "unexpected", text("unexpected_error", lang)
            self.observer.note_failed(platform, reason)
            await typing.aclose()
            # A partial transcript on screen must not pass for the whole: it becomes the error.
            await (live.finish(message) if live and live.started else send_text(chat, message, note.message_id))

    def _limit_refusal(self, note: VoiceNote, lang: str | None) -> str | None:
        """Checked on what the platform declares, before anything is downloaded."""
        limit = min(note.download_limit or MAX_DOWNLOAD_BYTES, MAX_DOWNLOAD_BYTES)
        if note.declared_bytes and note.declared_bytes > limit:
            return text("too_big", lang, limit=round(limit / 1_000_000))
        if note.declared_seconds and note.declared_seconds > self.settings.max_duration_seconds:
            return text("too_long", lang, limit=duration(self.settings.max_duration_seconds, lang))
        return None

    async def _answer_transcript(self, note: VoiceNote, chat: ChatPort, settings: ChatSettings, transcript: str,
                                 seconds: float, live: LiveMessage | None, cache_key: str, *, ask: bool) -> None:
        lang = _answer_language(note.sender, note.chat_language)
        if not transcript:
            message = text("nothing_heard", lang)
            await (live.finish(message) if live else send_text(chat, message, note.message_id))
            return
        if note.announce is not None:
            note.announce(transcript)
        if note.hand_off is not None:
            await note.hand_off(transcript)  # the host's own handlers answer it
            return
        if not ask:
            buttons = await self._transcript_buttons(note, settings, lang, cache_key)
            await self._deliver(chat, settings, note.chat, note.message_id, transcript, transcript, live, lang,
                                header=self._header(note), buttons=buttons)
            return
        question = Question(transcript, note.chat, note.sender, note.message_id, spoken=True, chat_language=note.chat_language,
                            message=note.message, context=note.context, duration=seconds)
        await self._answerer().answer(question, chat, settings, live)  # the answer replaces the placeholder

    async def _transcript(self, note: VoiceNote, settings: ChatSettings, live: LiveMessage | None,
                          lang: str | None) -> tuple[str, float, str]:
        """The note's transcript, the seconds of audio it covers and its cache key."""
        options = TranscribeOptions(language=settings.language, hot_words=settings.hot_words,
                                    max_seconds=self.settings.max_duration_seconds)
        cache_key = self._cache_key(note, options)
        cached = await self._cached(cache_key)
        if cached is not None:
            log.info("answered from the transcript cache")
            self.observer.note_transcribed(note.chat.platform, "cache", 0.0, cached=True)
            return cached.text, cached.seconds or note.declared_seconds or 0.0, cache_key
        # The daily allowances are reserved by the declared duration before any provider is called,
        # then settled to the audio really handed to providers (every attempt, whatever the
        # outcome); what is left of them bounds what may be handed over at all.
        quota = AudioQuota(self.store, self.bookkeeper, note.chat.platform, self._accounts(note), note.declared_seconds or 0.0)
        allowance = await quota.reserve()
        usage = AudioUsage()
        progress = asyncio.create_task(self._show_progress(live, note, usage, lang)) if live else None
        try:
            data = await note.fetch()
            clip = AudioClip(data=data, mime_type=note.mime_type, filename=note.file_name,
                             declared_seconds=note.declared_seconds)
            final = None
            async for transcript in self.service.stream(clip, replace(options, allowance_seconds=allowance), meter=usage):
                if transcript.final:
                    final = transcript
                elif live:
                    live.show(self._header(note) + transcript.text)
        except AllowanceExceeded as exceeded:
            raise quota.exceeded(exceeded.allowance_seconds) from None
        finally:
            if progress is not None:
                progress.cancel()
                await asyncio.gather(progress, return_exceptions=True)
            quota.settle(usage.seconds)
        assert final is not None
        seconds = final.seconds or note.declared_seconds or 0.0
        log.info("transcribed %.1f s of audio with %s", seconds, final.provider)
        self.observer.note_transcribed(note.chat.platform, final.provider or "unknown", seconds, cached=False)
        if final.text and self.settings.retention_hours > 0:
            self.bookkeeper.write(lambda: self.store.cache_transcript(cache_key, note.chat.platform, note.chat.id,
                                                                      final.text, seconds), "transcript cache")
        return final.text, seconds, cache_key

    async def _show_progress(self, live: LiveMessage, note: VoiceNote, usage: AudioUsage, lang: str | None) -> None:
        """While a note takes long, its placeholder says how far it got: the share of the audio
        a streaming provider has been given (it recognises as it hears), else the time spent.
        Partial text, once shown, is progress enough; edits keep the chat's pace."""
        await live.opened()
        started = asyncio.get_running_loop().time()
        await asyncio.sleep(self.progress_after)
        length = _clock(note.declared_seconds)
        while not live.partial_shown:
            elapsed = _clock(asyncio.get_running_loop().time() - started)
            if self.service.streams_partials and note.declared_seconds:
                # The share handed to the recogniser, which recognises as it hears (the time spent
                # too: a provider may take the last of the audio before it has recognised it).
                share = min(99, round(100 * usage.seconds / note.declared_seconds))
                progress = text("transcribing_share", lang, length=length, percent=share, elapsed=elapsed)
            else:
                progress = text("transcribing_elapsed", lang, length=length, elapsed=elapsed)
            live.show(progress.strip(), partial=False)
            await asyncio.sleep(live.interval)
    def _accounts(self, note: VoiceNote) -> list[Account]:
        """The daily allowances a note draws on: its chat's, and in groups its sender's own."""
        minutes = self.settings.daily_minutes
        accounts = [Account(note.chat.id, minutes * 60 if minutes is not None else None)]
        per_user = self.settings.daily_minutes_per_user
        if note.chat.kind is ChatKind.GROUP and per_user is not None:
            accounts.append(Account(f"{note.chat.id}:{note.sender.id}", per_user * 60, per_user=True))
        return accounts

    def _header(self, note: VoiceNote) -> str:
        """Who spoke, in groups: what stands before the transcript (in its first part)."""
        if note.chat.kind is ChatKind.GROUP and note.speaker:
            return text("speaker", _answer_language(note.sender, note.chat_language), name=note.speaker, text="")
        return ""

    async def _transcript_buttons(self, note: VoiceNote, settings: ChatSettings, lang: str | None,
                                  cache_key: str) -> list[Button]:
        """"Speak" (while the transcript is kept to read it from) and "Recognise as …" in the
        languages recognition can be asked for, other than the one just used."""
        if not self.settings.buttons:
            return []
        offered: list[tuple[str, ButtonAction]] = []
        if self.service.can_synthesize and self.settings.retention_hours > 0:
            offered.append((text("button_speak", lang), ButtonAction("speak")))
        for code, name in RETRY_LANGUAGES.items():
            if code != settings.language and code in self.service.recognition_languages:
                offered.append((text("button_recognise", lang, language=name), ButtonAction("recognise", code)))
        return await self.bookkeeper.read(
            self.buttons.issue(note.chat, offered, transcript_key=cache_key, note_id=note.message_id), "buttons", [])

    def _cache_key(self, note: VoiceNote, options: TranscribeOptions) -> str:
        """The note plus everything that changes its transcript."""
        parts = (note.chat.platform, note.cache_key, options.language or "", ",".join(options.hot_words), ",".join(self.service.asr_chain))
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()

    async def _cached(self, cache_key: str) -> CachedTranscript | None:
        if self.settings.retention_hours <= 0:
            return None
        return await self.bookkeeper.read(self.store.cached_transcript(cache_key, self.settings.retention_hours * 3600),
                                          "transcript cache", None)

    async def _deliver(self, chat: ChatPort, settings: ChatSettings, where: ChatRef, reply_to: str | None, written: str,
                       spoken: str, live: LiveMessage | None, lang: str | None, *, header: str = "",
                       buttons: Sequence[Button] = ()) -> None:
        """Text and/or voice per the reply mode; a voice reply that fails falls back to the text,
        and one over the chat's daily allowance says so. ``header`` (who spoke) stands before
        the written text, ``buttons`` under it."""
        if settings.reply_mode.has_text:
            await (live.finish(written, header=header, buttons=buttons) if live
                   else send_text(chat, written, reply_to, header=header, buttons=buttons))
        if not settings.reply_mode.has_voice:
            return
        try:
            voice = await self._voice_reply(chat, settings, where, spoken)
        except TtsLimitReached as reached:
            why = text("voice_reply_over_limit", lang, limit=reached.limit)
            await send_text(chat, why if settings.reply_mode.has_text else f"{written}\n\n{why}", reply_to,
                            header="" if settings.reply_mode.has_text else header)
            return
        sent = voice is not None and await send_voice(chat, voice, reply_to)
        if not sent and not settings.reply_mode.has_text:
            await send_text(chat, written, reply_to, header=header)

    async def _voice_reply(self, chat: ChatPort, settings: ChatSettings, where: ChatRef, spoken: str) -> VoiceReply | None:
        """Synthesize ``spoken``; None (logged) when that is not possible here. Raises
        :class:`TtsLimitReached` when the chat's daily allowance would not cover it."""
        if not self.service.can_synthesize or len(spoken) > SPEAK_LIMIT_CHARACTERS:
            return None
        try:
            async with chat.activity(Activity.RECORDING_VOICE):
                return await self._synthesize(chat, settings, where, spoken)
        except SpeechError as error:
            log.warning("voice reply failed, answering in text: %s", error)
            return None

    async def _synthesize(self, chat: ChatPort, settings: ChatSettings, where: ChatRef, spoken: str) -> VoiceReply:
        await self._reserve_characters(where, len(spoken))
        audio = await self.service.synthesize(spoken, SynthesizeOptions(voice_id=settings.voice_id))
        waveform = b""
        if chat.needs_waveform:
            waveform = (await self.service.converter.analyse(AudioClip(data=audio.data))).waveform()
        return VoiceReply(data=audio.data, seconds=audio.seconds or 0.0, waveform=waveform)

    async def _speech_allowed(self, where: ChatRef, characters: int, lang: str | None) -> str | None:
        """Count ``characters`` against the chat's daily allowance: None when they may be spoken,
        else why not, for the user."""
        try:
            await self._reserve_characters(where, characters)
        except TtsLimitReached as reached:
            return text("voice_reply_over_limit", lang, limit=reached.limit)
        return None

    async def _reserve_characters(self, where: ChatRef, characters: int) -> None:
        """Count ``characters`` against the chat's daily allowance before they are synthesized
        (spaces included; kept even if synthesis then fails: the provider may have charged)."""
        limit = self.settings.daily_tts_characters
        if limit is None:
            self.bookkeeper.write(lambda: self.store.add_usage(where.platform, where.id, tts_characters=characters), "usage")
            return
        if await self.bookkeeper.read(self.store.reserve_characters(where.platform, where.id, today(), characters, limit),
                                      "speech synthesis limit", True):
            return
        usage = await self.bookkeeper.read(self.store.usage(where.platform, where.id, today()), "usage", None)
        raise TtsLimitReached(usage.tts_characters if usage else limit, limit, characters)

    # ------------------------------------------------------------------ buttons

    @property
    def _button_lifetime(self) -> float:
        return max(self.settings.retention_hours * 3600, MIN_BUTTON_LIFETIME_SECONDS)

    async def handle_button(self, press: ButtonPress, chat: ChatPort) -> None:
        """One of the plugin's buttons was pressed: every press is acknowledged, a button that
        does nothing (any more) with a short text for the presser alone."""
        if not self.accepting:
            return
        new_request_id()
        log.info("button in %s chat %s", press.chat.platform, press.chat.id)
        async with self._busy():
            sender = await self._with_known_language(press.chat.platform, press.sender)
            lang = _answer_language(sender, press.chat_language)
            acknowledged = False

            async def acknowledge(message: str | None) -> None:
                nonlocal acknowledged
                if acknowledged:
                    return
                acknowledged = True
                try:
                    await press.acknowledge(message)
                except Exception:
                    log.exception("could not acknowledge a button press")

            try:
                if not await self._admitted(press.chat, sender, chat, None):
                    return await acknowledge(None)
                try:
                    found = await self.buttons.look_up(press.chat, press.data, self._button_lifetime)
                except StoreError as error:
                    log.warning("button record unavailable: %s", error)
                    found = None
                if found is None:
                    return await acknowledge(text("button_expired", lang))
                record, action = found
                if action.verb in ("mode", "language", "voice"):
                    await self._choose(press, chat, sender, action, lang, acknowledge)
                elif action.verb == "speak":
                    await self._speak_transcript(press, chat, sender, record.transcript_key, lang, acknowledge)
                elif action.verb == "recognise":
                    await self._recognise_again(press, chat, sender, action.value, acknowledge)
                else:
                    await acknowledge(text("button_expired", lang))
            except Exception:
                log.exception("a button press failed")
                await acknowledge(text("unexpected_error", lang))
            finally:
                await acknowledge(None)

    async def _choose(self, press: ButtonPress, chat: ChatPort, sender: Person, action: ButtonAction, lang: str | None,
                      acknowledge: Callable[[str | None], Awaitable[None]]) -> None:
        """A choice from /mode, /language or /voice: set, and the choice's message says so by name."""
        if press.chat.kind is ChatKind.GROUP and not await chat.is_admin(sender.id):
            return await acknowledge(text("admins_only", lang))
        await acknowledge(None)
        if action.verb == "mode":
            await self.store.set_chat_setting(press.chat.platform, press.chat.id, "reply_mode", action.value)
            confirmation = text("mode_set", lang, mode=text(f"mode.{action.value}", lang))
        elif action.verb == "language":
            await self.store.set_chat_setting(press.chat.platform, press.chat.id, "language", action.value)
            confirmation = text("language_set", lang, language=language_name(action.value, lang))
        else:
            await self.store.set_chat_setting(press.chat.platform, press.chat.id, "voice_id", action.value)
            names = {voice.id: voice.name for voice in await self.service.voices()}
            confirmation = text("voice_set", lang, voice=names.get(action.value, action.value))
        try:
            await chat.edit_text(press.message_id, confirmation)
        except Exception:
            log.exception("could not confirm a choice in its message")
            await send_text(chat, confirmation, press.message_id)

    async def _speak_transcript(self, press: ButtonPress, chat: ChatPort, sender: Person, transcript_key: str,
                                lang: str | None, acknowledge: Callable[[str | None], Awaitable[None]]) -> None:
        """"Speak": the transcript as a voice reply, on the same terms as /speak."""
        if refusal := await self._speak_refusal(press.chat, sender, chat):
            return await acknowledge(text(refusal, lang))
        cached = await self._cached(transcript_key) if transcript_key else None
        if cached is None:
            return await acknowledge(text("button_expired", lang))
        if len(cached.text) > SPEAK_LIMIT_CHARACTERS:
            return await acknowledge(text("speak_too_long", lang, limit=SPEAK_LIMIT_CHARACTERS))
        await acknowledge(None)
        settings = await self.chat_settings(press.chat)
        try:
            async with self._chat_turn(press.chat), self._notes, chat.activity(Activity.RECORDING_VOICE):
                voice = await self._synthesize(chat, settings, press.chat, cached.text)
        except TtsLimitReached as reached:
            await send_notice(chat, _tts_limit_text(reached, lang), press.message_id)
            return
        except SpeechError as error:
            await send_text(chat, error.user_message(lang), press.message_id)
            return
        if not await send_voice(chat, voice, press.message_id):
            await send_text(chat, text("voice_not_allowed", lang), press.message_id)

    async def _recognise_again(self, press: ButtonPress, chat: ChatPort, sender: Person, language: str,
                               acknowledge: Callable[[str | None], Awaitable[None]]) -> None:
        """"Recognise as …": the same note, recognised in ``language``, answered as a new transcript."""
        lang = _answer_language(sender, press.chat_language)
        if language not in self.service.recognition_languages:
            return await acknowledge(text("button_expired", lang))
        note = await press.note()
        if note is None:
            return await acknowledge(text("button_expired", lang))
        await acknowledge(None)
        # The presser reads the answer in their language; the note keeps its speaker.
        note = replace(note, sender=replace(note.sender, language=sender.language), chat_language=press.chat_language)
        settings = replace(await self.chat_settings(press.chat), language=language, unavailable_language=None)
        async with self._chat_turn(press.chat):
            await self._answer_note(note, chat, settings, ask=False)

    async def _offer_choices(self, request: CommandRequest, chat: ChatPort, prompt: str,
                             choices: Sequence[tuple[str, ButtonAction]]) -> bool:
        """``prompt`` with a button per choice; False when buttons cannot be offered here."""
        if not self.settings.buttons or not choices:
            return False
        try:
            buttons = await self.buttons.issue(request.chat, choices)
        except StoreError as error:
            log.warning("no choice buttons: %s", error)
            return False
        await send_text(chat, prompt, request.message_id, buttons=buttons)
        return True

    # ------------------------------------------------------------------ commands

    async def handle_command(self, request: CommandRequest, chat: ChatPort) -> None:
        handler = self._commands.get(request.name)
        if handler is None or not self.accepting:
            return
        new_request_id()
        log.info("/%s in %s chat %s", request.name, request.chat.platform, request.chat.id)
        async with self._busy():
            await self._run_command(handler, request, chat)

    async def _run_command(self, handler: Callable[[CommandRequest, ChatPort, str | None], Awaitable[None]],
                           request: CommandRequest, chat: ChatPort) -> None:
        if not await self._admitted(request.chat, request.sender, chat, request.message_id):
            return
        request = replace(request, sender=await self._with_known_language(request.chat.platform, request.sender))
        lang = _answer_language(request.sender, request.chat_language)
        try:
            changes_settings = request.name in SETTINGS_COMMANDS and request.args.strip()
            if (changes_settings or request.name in ADMIN_COMMANDS) and not await self._may_change_settings(request, chat):
                refusal = "admins_only" if changes_settings else "admins_only_command"
                await send_notice(chat, text(refusal, lang), request.message_id)
                return
            await handler(request, chat, lang)
        except SpeechError as error:
            await send_notice(chat, error.user_message(lang), request.message_id)
        except Exception:
            log.exception("/%s in %s/%s failed", request.name, request.chat.platform, request.chat.id)
            await send_notice(chat, text("unexpected_error", lang), request.message_id)

    async def _may_change_settings(self, request: CommandRequest, chat: ChatPort) -> bool:
        return request.chat.kind is ChatKind.PRIVATE or await chat.is_admin(request.sender.id)

    async def _start_command(self, request: CommandRequest, chat: ChatPort, lang: str | None) -> None:
        await send_text(chat, text("start_agent" if self.converses else "start", lang), request.message_id)

    async def _help(self, request: CommandRequest, chat: ChatPort, lang: str | None) -> None:
        languages = ", ".join(language_name(code, lang) for code in self.service.recognition_languages)
        help_text = text("help", lang, request.chat.platform, languages=languages)
        if self.converses:
            help_text = f"{text('help_agent', lang)}\n\n{help_text}"
        await send_text(chat, help_text, request.message_id)

    async def _ask(self, request: CommandRequest, chat: ChatPort, lang: str | None) -> None:
        """/ask with a question, or as a reply to a text or a voice note: the agent answers, in
        the asker's own conversation."""
        question = request.args.strip() or (request.replied_text or "").strip()
        settings = await self.chat_settings(request.chat)
        if question:
            async with self._chat_turn(request.chat):
                await self._answerer().answer(Question(question, request.chat, request.sender, request.message_id,
                                                       spoken=False, chat_language=request.chat_language), chat, settings)
        elif request.replied_note is not None:
            # The answer goes to the asker: a reply to their /ask, in their conversation.
            note = replace(request.replied_note, sender=request.sender, chat_language=request.chat_language,
                           message_id=request.message_id or request.replied_note.message_id)
            async with self._chat_turn(request.chat):
                await self._answer_note(note, chat, settings, ask=True)
        else:
            await send_notice(chat, text("ask_usage", lang), request.message_id)

    async def _new_conversation(self, request: CommandRequest, chat: ChatPort, lang: str | None) -> None:
        await StoredConversation(self.store, request.chat, request.sender).set(None)
        await send_text(chat, text("new_conversation", lang), request.message_id)

    async def _transcribe_command(self, request: CommandRequest, chat: ChatPort, lang: str | None) -> None:
        if request.replied_note is None:
            await send_notice(chat, text("transcribe_usage", lang, request.chat.platform), request.message_id)
            return
        # Whoever asked reads the answer in their language; the note keeps its own speaker.
        note = replace(request.replied_note, sender=replace(request.replied_note.sender, language=request.sender.language),
                       chat_language=request.chat_language)
        async with self._chat_turn(request.chat):
            # An agent's bot still transcribes here; a host's responder answers, as for any note.
            ask = self.responder is not None and not self.converses
            await self._answer_note(note, chat, await self.chat_settings(request.chat), ask=ask)

    async def _speak(self, request: CommandRequest, chat: ChatPort, lang: str | None) -> None:
        words = request.args.strip() or (request.replied_text or "").strip()
        refusal = await self._speak_refusal(request.chat, request.sender, chat)
        if refusal:
            await send_notice(chat, text(refusal, lang), request.message_id)
        elif not words:
            await send_notice(chat, text("speak_usage", lang), request.message_id)
        elif len(words) > SPEAK_LIMIT_CHARACTERS:
            await send_notice(chat, text("speak_too_long", lang, limit=SPEAK_LIMIT_CHARACTERS), request.message_id)
        elif not self.service.can_synthesize:
            await send_notice(chat, text("no_tts", lang), request.message_id)
        else:
            settings = await self.chat_settings(request.chat)
            try:
                async with self._chat_turn(request.chat), self._notes, chat.activity(Activity.RECORDING_VOICE):
                    voice = await self._synthesize(chat, settings, request.chat, words)
            except TtsLimitReached as reached:
                await send_notice(chat, _tts_limit_text(reached, lang), request.message_id)
                return
            if not await send_voice(chat, voice, request.message_id):
                await send_notice(chat, text("voice_not_allowed", lang), request.message_id)

    async def _speak_refusal(self, where: ChatRef, sender: Person, chat: ChatPort) -> str | None:
        """Who may have texts read aloud in a group (VOICEBRIDGE_SPEAK_IN_GROUPS); private chats always may."""
        policy = self.settings.speak_in_groups
        if where.kind is ChatKind.PRIVATE or policy == "everyone":
            return None
        if policy == "off":
            return "speak_off"
        return None if await chat.is_admin(sender.id) else "speak_admins_only"

    async def _show_settings(self, request: CommandRequest, chat: ChatPort, lang: str | None) -> None:
        settings = await self.chat_settings(request.chat)
        language = language_name(settings.language, lang)
        if settings.unavailable_language:
            language = text("language_unavailable", lang, language=language,
                            chosen=language_name(settings.unavailable_language, lang))
        await send_text(chat, text(
            "settings", lang,
            mode=text(f"mode.{settings.reply_mode.value}", lang),
            language=language,
            voice=await self._voice_name(settings.voice_id, lang),
            auto=text("on" if settings.auto_transcribe else "off", lang),
            hot_words=", ".join(settings.hot_words) or text("none", lang),
        ), request.message_id)

    async def _set_mode(self, request: CommandRequest, chat: ChatPort, lang: str | None) -> None:
        choice = request.args.strip().lower()
        if not choice:
            current = (await self.chat_settings(request.chat)).reply_mode
            offered = [(text(f"button_mode_{mode.value}", lang), ButtonAction("mode", mode.value)) for mode in ReplyMode]
            if await self._offer_choices(request, chat, text("mode_choose", lang, mode=text(f"mode.{current.value}", lang)), offered):
                return
        if choice not in ReplyMode.__members__.values():
            await send_text(chat, text("mode_usage", lang), request.message_id)
            return
        await self.store.set_chat_setting(request.chat.platform, request.chat.id, "reply_mode", choice)
        await send_text(chat, text("mode_set", lang, mode=text(f"mode.{choice}", lang)), request.message_id)

    async def _set_language(self, request: CommandRequest, chat: ChatPort, lang: str | None) -> None:
        """Only a language every provider of the ASR chain honours is taken (a fallback provider
        would otherwise ignore it); the answer names the provider that cannot."""
        choice = language_code(request.args) if request.args.strip() else None
        languages = ", ".join(language_name(code, lang) for code in self.service.recognition_languages)
        if choice is None:
            if not request.args.strip():
                current = (await self.chat_settings(request.chat)).language
                offered = [(language_name(code, lang), ButtonAction("language", code))
                           for code in self.service.recognition_languages]
                prompt = text("language_choose", lang, language=language_name(current, lang))
                if await self._offer_choices(request, chat, prompt, offered):
                    return
            await send_text(chat, text("language_usage", lang, languages=languages), request.message_id)
            return
        if refusal := self.service.language_refusal(choice):
            provider, honoured = refusal
            await send_text(chat, text("language_refused", lang, language=language_name(choice, lang),
                                       provider=messages.PROVIDER_NAMES.get(provider, provider),
                                       honoured=", ".join(language_name(code, lang) for code in honoured),
                                       languages=languages), request.message_id)
            return
        await self.store.set_chat_setting(request.chat.platform, request.chat.id, "language", choice)
        await send_text(chat, text("language_set", lang, language=language_name(choice, lang)), request.message_id)

    async def _set_voice(self, request: CommandRequest, chat: ChatPort, lang: str | None) -> None:
        choice = request.args.strip()
        if not choice and self.service.can_synthesize:
            voices = await self.service.voices()
            current = (await self.chat_settings(request.chat)).voice_id
            names = {voice.id: voice.name for voice in voices}
            offered = [(voice.name, ButtonAction("voice", voice.id)) for voice in voices[:CHOICE_VOICES]]
            prompt = text("voice_choose", lang, voice=names.get(current or "", current or text("default_voice", lang)))
            if await self._offer_choices(request, chat, prompt, offered):
                return
        if not choice:
            await send_text(chat, text("voice_usage", lang), request.message_id)
            return
        if not self.service.can_synthesize:
            await send_text(chat, text("no_tts", lang), request.message_id)
            return
        names = {voice.id: voice.name for voice in await self.service.voices()}
        if choice not in names:
            await send_text(chat, text("voice_unknown", lang, voice=choice), request.message_id)
            return
        await self.store.set_chat_setting(request.chat.platform, request.chat.id, "voice_id", choice)
        await send_text(chat, text("voice_set", lang, voice=names[choice] or choice), request.message_id)

    async def _voice_name(self, voice_id: str | None, lang: str | None) -> str:
        """A voice as people know it: its name in the provider's voice list (never a bare id
        when the list has it); the id itself when the list cannot be had or lacks it."""
        if voice_id is None:
            return text("default_voice", lang)
        if not self.service.can_synthesize:
            return voice_id
        try:
            voices = await self.service.voices()
        except SpeechError as error:
            log.info("voice list unavailable, showing the voice id: %s", error)
            return voice_id
        return next((voice.name for voice in voices if voice.id == voice_id and voice.name), voice_id)

    async def _list_voices(self, request: CommandRequest, chat: ChatPort, lang: str | None) -> None:
        if not self.service.can_synthesize:
            await send_text(chat, text("no_tts", lang), request.message_id)
            return
        voices = await self.service.voices()
        lines = [f"{voice.id} — {voice.name}" + (f" ({voice.language_name})" if voice.language_name else "")
                 for voice in voices[:VOICES_LISTED]]
        if len(voices) > VOICES_LISTED:
            lines.append(text("voices_more", lang, count=len(voices) - VOICES_LISTED))
        await send_text(chat, text("voices", lang, voices="\n".join(lines)), request.message_id)

    async def _set_auto(self, request: CommandRequest, chat: ChatPort, lang: str | None) -> None:
        if request.chat.kind is ChatKind.PRIVATE:  # every note is answered in private: nothing to change
            await send_text(chat, text("auto_private", lang), request.message_id)
            return
        choice = request.args.strip().lower()
        if choice not in ("on", "off"):
            await send_text(chat, text("auto_usage", lang), request.message_id)
            return
        await self.store.set_chat_setting(request.chat.platform, request.chat.id, "auto_transcribe", choice)
        await send_text(chat, text(f"auto_set_{choice}", lang, request.chat.platform), request.message_id)

    async def _set_hot_words(self, request: CommandRequest, chat: ChatPort, lang: str | None) -> None:
        argument = request.args.strip()
        if not argument:
            current = ", ".join((await self.chat_settings(request.chat)).hot_words) or text("none", lang)
            await send_text(chat, text("hot_words_current", lang, hot_words=current), request.message_id)
            return
        words = () if argument.lower() in ("off", "none", "-") else parse_hot_words(argument)
        await self.store.set_chat_setting(request.chat.platform, request.chat.id, "hot_words", ",".join(words) or None)
        reply = text("hot_words_set", lang, hot_words=", ".join(words)) if words else text("hot_words_cleared", lang)
        await send_text(chat, reply, request.message_id)

    async def _usage(self, request: CommandRequest, chat: ChatPort, lang: str | None) -> None:
        await self.bookkeeper.settle(STORE_WAIT_ON_ANSWER)  # the notes just answered count too
        day = today()
        today_usage = await self.store.usage(request.chat.platform, request.chat.id, day)
        month_usage = await self.store.usage(request.chat.platform, request.chat.id, day[:8] + "01")
        limit = self.settings.daily_minutes
        await send_text(chat, text(
            "usage", lang,
            today_audio=duration(today_usage.audio_seconds, lang), today_characters=today_usage.tts_characters,
            month_audio=duration(month_usage.audio_seconds, lang), month_characters=month_usage.tts_characters,
            limit=duration(limit * 60, lang) if limit is not None else text("no_limit", lang),
        ), request.message_id)

    async def _privacy(self, request: CommandRequest, chat: ChatPort, lang: str | None) -> None:
        def providers(chain: tuple[str, ...]) -> str:
            return " / ".join(dict.fromkeys(messages.PROVIDER_NAMES.get(name, name) for name in chain))

        tts = providers(self.service.tts_chain) or text("no_speech_synthesis", lang)
        privacy = text("privacy", lang, asr=providers(self.service.asr_chain), tts=tts,
                       hours=f"{self.settings.retention_hours:g}", usage_days=USAGE_RETENTION_DAYS)
        if self.converses:
            service = getattr(self.responder, "service_name", None) or "?"
            privacy += "\n\n" + text("privacy_agent", lang, service=service)
        await send_text(chat, privacy, request.message_id)

    async def _forget(self, request: CommandRequest, chat: ChatPort, lang: str | None) -> None:
        # Writes still under way (a transcript just cached) land first, or they would outlive the deletion.
        await self.bookkeeper.settle(STORE_WRITES_AT_CLOSE_SECONDS)
        removed = await self.store.forget_chat(request.chat.platform, request.chat.id)
        await self.buttons.forget_chat(request.chat.platform, request.chat.id)
        await forget_conversations(self.store, request.chat.platform, request.chat.id)
        log.info("forgot %d transcripts and the settings of %s chat %s", removed, request.chat.platform, request.chat.id)
        await send_text(chat, text("forgotten", lang, count=removed), request.message_id)

    # ------------------------------------------------------------------ shared

    async def chat_settings(self, where: ChatRef) -> ChatSettings:
        defaults = ChatSettings.defaults(self.settings)
        stored = await self.bookkeeper.read(self.store.chat_settings(where.platform, where.id), "chat settings", {})
        return defaults.with_stored(stored, self.service.recognition_languages)

    async def _admitted(self, where: ChatRef, sender: Person, chat: ChatPort, message_id: str | None) -> bool:
        """The allowlist: other chats get a short refusal (a group only once) and nothing more."""
        allowed = self.settings.allowed_chats
        if not allowed or where.id in allowed:
            return True
        log.info("refused %s chat %s (not in VOICEBRIDGE_ALLOWED_CHATS)", where.platform, where.id)
        key = (where.platform, where.id)
        if where.kind is ChatKind.PRIVATE or key not in self._refused_groups:
            self._refused_groups.add(key)
            await send_text(chat, text("not_allowed", sender.language), message_id)
        return False

    async def _with_known_language(self, platform: str, sender: Person) -> Person:
        """``sender`` with their client language: as the platform reports it now, else as it was
        last seen (Discord tells it only in interactions, never with a DM)."""
        key = (platform, sender.id)
        marker = f"language:{platform}:{sender.id}"
        if sender.language:
            if self._user_languages.get(key) != sender.language:
                self._user_languages[key] = sender.language
                language = sender.language
                self.bookkeeper.write(lambda: self.store.set_marker(marker, language), "user language")
            return sender
        if key not in self._user_languages:
            remembered = await self.bookkeeper.read(self.store.marker(marker), "user language", None)
            if remembered is None:
                return sender
            self._user_languages[key] = remembered
        return replace(sender, language=self._user_languages[key] or None)

    @asynccontextmanager
    async def _chat_turn(self, where: ChatRef) -> AsyncIterator[None]:
        """One note (or spoken answer) at a time per chat, so answers keep the chat's order."""
        key = (where.platform, where.id)
        queue = self._chat_queues.setdefault(key, _ChatQueue())
        queue.users += 1
        try:
            async with queue.lock:
                yield
        finally:
            queue.users -= 1
            if queue.users == 0:
                del self._chat_queues[key]


async def send_notice(chat: ChatPort, notice: str, reply_to: str | None) -> None:
    """A refusal or an error about a command: only to whoever asked where the port can do that
    (a Discord interaction: ephemeral), else as any reply."""
    if isinstance(chat, NoticePort):
        await chat.send_notice(notice, reply_to)
    else:
        await send_text(chat, notice, reply_to)


class TtsLimitReached(Exception):
    def __init__(self, used: int, limit: int, requested: int) -> None:
        super().__init__(f"{used} of {limit} characters read aloud today; {requested} more asked for")
        self.used = used
        self.limit = limit
        self.requested = requested


def _tts_limit_text(reached: TtsLimitReached, lang: str | None) -> str:
    """The refusal of a text to read aloud past the day's characters, for /speak and Speak alike."""
    return text("tts_limit", lang, limit=reached.limit, used=reached.used, requested=reached.requested,
                reset=time_left(_seconds_to_reset(), lang))


def _answer_language(sender: Person, chat_language: str | None) -> str | None:
    """The language to answer in: the sender's own, else the chat's."""
    return sender.language or chat_language


def _seconds_to_reset() -> float:
    """Seconds until the daily limits reset, at the next midnight UTC."""
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


def _clock(seconds: float | None) -> str:
    """``0:42``, ``12:05``: a length as a player shows it ("" when unknown)."""
    if seconds is None:
        return ""
    whole = max(0, round(seconds))
    return f"{whole // 60}:{whole % 60:02d}"


class _ChatQueue:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0
        # Settled once the last note to arrive has shown its placeholder (or will show none).
        self.placeholder_shown: asyncio.Future[None] | None = None


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _settle_when_opened(live: LiveMessage, shown: asyncio.Future[None]) -> None:
    await live.opened()
    _settle(shown)

