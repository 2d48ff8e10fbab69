"""``voicebridge run``: the self-hosted bot, one process serving the configured platforms.

Runs until SIGINT or SIGTERM, then stops taking updates and lets the notes in flight finish.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from telegram import Update
from telegram.error import InvalidToken, NetworkError
from telegram.ext import Application, ApplicationBuilder

from bot_plugins.config import Settings, TelegramSettings
from bot_plugins.speech.errors import ConfigError
from bot_plugins.speech.service import SpeechService
from bot_plugins.voice_notes.plugin import VoiceNotesPlugin
from bot_plugins.voice_notes.store import Store

from .telegram import VoiceNotesTelegram

log = logging.getLogger("voicebridge.runner")


class StartupError(Exception):
    """The bot could not start; the message says why in one line."""


def telegram_application(settings: TelegramSettings) -> Application[Any, Any, Any, Any, Any, Any]:
    builder = ApplicationBuilder().token(settings.token or "")
    if settings.base_url:
        builder = builder.base_url(settings.base_url)
    if settings.base_file_url:
        builder = builder.base_file_url(settings.base_file_url)
    # Voice uploads can take a while on slow links; text calls keep PTB's defaults. A second
    # getUpdates connection lets the last call at shutdown confirm the updates already handled
    # while the cancelled long poll still holds the first; otherwise they come again on restart.
    return builder.media_write_timeout(60).get_updates_connection_pool_size(2).build()


async def run_bot(settings: Settings) -> None:
    if not settings.telegram.token:
        raise ConfigError("no chat platform configured: set TELEGRAM_BOT_TOKEN")
    service = SpeechService.from_settings(settings.speech)
    plugin = VoiceNotesPlugin(service, Store(settings.plugin.db_path), settings.plugin)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    application = telegram_application(settings.telegram)
    telegram = VoiceNotesTelegram(plugin)
    telegram.install(application)
    try:
        try:
            await application.initialize()  # getMe: checks the token
        except InvalidToken:
            raise ConfigError("TELEGRAM_BOT_TOKEN was rejected by Telegram (check it with @BotFather)") from None
        except NetworkError as error:
            raise StartupError(f"cannot reach the Telegram Bot API: {error.message}") from None
        async with application:
            await telegram.start(application.bot)
            await application.start()
            await application.updater.start_polling(allowed_updates=[Update.MESSAGE])  # type: ignore[union-attr]
            log.info("voicebridge is running as @%s; stop with Ctrl+C", application.bot.username)
            await stop.wait()
            log.info("stopping: no new updates; finishing the notes in flight")
            await application.updater.stop()  # type: ignore[union-attr]
            await application.stop()  # waits for the running (non-blocking) handlers
    finally:
        await plugin.aclose()
        await service.aclose()
        log.info("stopped")
