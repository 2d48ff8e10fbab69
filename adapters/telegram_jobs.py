"""Telegram updates as jobs: the ingress side (which updates become jobs, committed before
Telegram is told they were received), the worker side (a job answered through the Bot API), and
the embedded mode's receipts (the same jobs, written down in SQLite).

A job carries the update itself; the worker reads the note or command from it with the same
functions the in-process adapter uses, so both modes behave alike.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from telegram import Bot, Message, Update
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, MessageHandler, filters

from voicebridge.jobs import MAX_ATTEMPTS, RECORD_PATIENCE_SECONDS, DeliveryLog, Job, NewJob, PostgresQueue, RecordedChat, SQLiteJournal
from voicebridge.voice_notes.delivery import send_text
from voicebridge.voice_notes.messages import text
from voicebridge.voice_notes.model import ChatPort
from voicebridge.voice_notes.plugin import VoiceNotesPlugin
from voicebridge.voice_notes.store import StoreError

from .telegram import BUTTON_PATTERN, MEDIA, PLATFORM, TelegramChat, button_press, command_request, person, voice_note

log = logging.getLogger(__name__)

ENQUEUE_PATIENCE_SECONDS = 60.0  # the database may be away this long before the ingress gives up


async def _ignore(update: object, context: object) -> None:
    """The handlers below only match updates; nothing runs them."""


class TelegramJobs:
    """Which updates are work: the voice notes, the plugin's commands and presses of its buttons,
    matched by the same python-telegram-bot handlers the in-process adapter installs."""

    def __init__(self, commands: Iterable[str]) -> None:
        self._handlers = (CommandHandler(list(commands), _ignore, filters=filters.UpdateType.MESSAGE),
                          MessageHandler(filters.UpdateType.MESSAGE & MEDIA, _ignore),
                          CallbackQueryHandler(_ignore, pattern=BUTTON_PATTERN))

    def job(self, update: Update, bot_id: int) -> NewJob | None:
        message = update.effective_message
        if message is None or not any(handler.check_update(update) for handler in self._handlers):
            return None
        return NewJob(source=f"{PLATFORM}:{bot_id}:{update.update_id}", chat=f"{PLATFORM}:{message.chat.id}",
                      payload={"platform": PLATFORM, "update": update.to_dict()})


class JobIntake(asyncio.Queue[object]):
    """python-telegram-bot's update queue for the ingress: :meth:`put` returns once the update's
    job is committed. The Updater moves the getUpdates offset past an update (confirming it to
    Telegram), and the ingress's webhook server answers 200, only after ``put`` returned: an
    update is never confirmed before it is safe. A redelivered update is the same job."""

    def __init__(self, queue: PostgresQueue, bot: Bot, jobs: TelegramJobs,
                 patience: float = ENQUEUE_PATIENCE_SECONDS) -> None:
        super().__init__()
        self.queue = queue
        self.bot = bot
        self.jobs = jobs
        self.patience = patience
        self.failed = asyncio.Event()  # the database stayed away: the ingress must stop, not confirm

    async def put(self, item: object) -> None:
        if not isinstance(item, Update) or (job := self.jobs.job(item, self.bot.id)) is None:
            return
        deadline = time.monotonic() + self.patience
        pause = 0.5
        while True:
            try:
                if await self.queue.enqueue(job):
                    log.info("update %d queued", item.update_id)
                return
            except StoreError as error:
                if time.monotonic() + pause > deadline:
                    log.error("cannot queue Telegram updates: %s; stopping (Telegram keeps them until a restart)", error)
                    self.failed.set()
                    raise
                log.warning("cannot queue update %d yet, trying again: %s", item.update_id, error)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 8.0)


class TelegramJobRunner:
    """Answers Telegram jobs through the Bot API, each reply sent at most once across runs."""

    def __init__(self, application: Application[Any, Any, Any, Any, Any, Any], plugin: VoiceNotesPlugin) -> None:
        self.application = application
        self.plugin = plugin

    async def run(self, job: Job, deliveries: DeliveryLog) -> None:
        if (found := self._message(job, deliveries)) is None:
            return
        update, message, chat = found
        if update.callback_query is not None:  # a button pressed under the bot's message
            _, press = button_press(self.application, update, self.plugin.settings.delivery_deadline_seconds)
            await self.plugin.handle_button(press, chat)
        elif message.text and message.text.startswith("/"):
            await self.plugin.handle_command(command_request(message), chat)
        elif (note := voice_note(message)) is not None:
            await self.plugin.handle_voice_note(note, chat)

    async def give_up(self, job: Job, deliveries: DeliveryLog) -> None:
        # A press that keeps failing is let go: its button can be pressed again.
        if (found := self._message(job, deliveries)) is not None and found[0].callback_query is None:
            _, message, chat = found
            await send_text(chat, text("unexpected_error", person(message).language), str(message.message_id))

    def _message(self, job: Job, deliveries: DeliveryLog) -> tuple[Update, Message, RecordedChat] | None:
        update = Update.de_json(job.payload["update"], self.application.bot)
        message = update.effective_message if update is not None else None
        if update is None or message is None:
            log.warning("job %d holds no message; dropped", job.id)
            return None
        port = TelegramChat(self.application, update, message, delivery_deadline=self.plugin.settings.delivery_deadline_seconds)
        return update, message, RecordedChat(port, deliveries, job.id)


class ReceiptBook:
    """The embedded mode's ``kill -9`` durability for a Telegram install (``voicebridge run``, or
    the plugin in a host bot with a SQLite store): each note and command is written down in the
    store's journal when it is received and crossed out once answered; what a crash left written
    down is answered at the next start, each reply still sent only once."""

    def __init__(self, journal: SQLiteJournal, application: Application[Any, Any, Any, Any, Any, Any],
                 plugin: VoiceNotesPlugin, commands: Iterable[str]) -> None:
        self.journal = journal
        self.started = journal.store.clock()  # receipts from before this are the last run's
        self.jobs = TelegramJobs(commands)
        self.runner = TelegramJobRunner(application, plugin)

    async def handle(self, update: Update, chat: ChatPort, answer: Callable[[ChatPort], Awaitable[None]]) -> None:
        """Write ``update`` down, ``answer`` it through a recorded port, cross it out."""
        job = self.jobs.job(update, update.get_bot().id)
        if job is None:
            await answer(chat)
            return
        # A locked store holds the answer up by a second at most: the receipt then lands late
        # (and is crossed out once it has), or not at all (no crash recovery for this one).
        writing = asyncio.ensure_future(self.journal.receive(job))
        try:
            async with asyncio.timeout(RECORD_PATIENCE_SECONDS):
                received = await asyncio.shield(writing)
            if received is None:
                log.info("update %d was received before; not answered again", update.update_id)
                return
        except (StoreError, TimeoutError) as error:
            log.warning("update %d not written down in time (answered without crash recovery): %s", update.update_id,
                        error or "the store is slow")
            received = None
        await answer(RecordedChat(chat, self.journal, received.id) if received is not None else chat)
        if received is None:
            try:
                received = await writing  # a receipt that landed late is crossed out all the same
            except StoreError:
                return  # it never landed: nothing to cross out
        if received is not None:
            try:
                await self.journal.answered(received)
            except StoreError as error:
                log.warning("update %d not crossed out; it may be answered again after a restart: %s",
                            update.update_id, error)

    async def recover(self) -> None:
        """Answer what was received but not answered before the last stop."""
        try:
            unanswered = await self.journal.unanswered(received_before=self.started)
        except StoreError as error:
            log.warning("cannot read the notes left unanswered at the last stop: %s", error)
            return
        if unanswered:
            log.info("answering %d notes or commands left unanswered at the last stop", len(unanswered))
        for job in unanswered:
            try:
                if job.attempts > MAX_ATTEMPTS:
                    log.error("%s made the bot stop %d times; apologising instead", job.source, job.attempts - 1)
                    await self.runner.give_up(job, self.journal)
                else:
                    await self.runner.run(job, self.journal)
                await self.journal.answered(job)
            except StoreError as error:
                log.warning("%s: %s", job.source, error)
