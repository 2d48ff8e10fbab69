"""``voicebridge run``: the self-hosted bot, one process serving Telegram, Discord, or both.

Runs until SIGINT or SIGTERM, then stops taking updates, gives the notes in flight up to
``VOICEBRIDGE_SHUTDOWN_GRACE`` seconds to finish, closes the connections and returns.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import AsyncExitStack
from dataclasses import replace
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import discord
from discord.ext import commands
from telegram import Update
from telegram.error import InvalidToken, NetworkError, TelegramError, TimedOut
from telegram.ext import AIORateLimiter, Application, ApplicationBuilder

from voicebridge.config import DiscordSettings, RunnerSettings, TelegramSettings
from voicebridge.liveness import ConnectionLost, Liveness
from voicebridge.metrics import Metrics, serve_status
from voicebridge.options import Options, build_plugin
from voicebridge.postgres import Database
from voicebridge.speech.errors import ConfigError
from voicebridge.speech.retry import LoggingObserver, Observers, Retrier
from voicebridge.voice_notes.plugin import ALL_COMMANDS, VoiceNotesPlugin
from voicebridge.voice_notes.store import StoreError

from .discord import DEFAULT_API_BASE, VoiceNotesCog, use_api_base
from .liveness import WatchedGetUpdates, watch_discord, watch_telegram_polling, watch_telegram_webhook
from .telegram import TelegramInstall
from .telegram_webhook import TelegramWebhook

log = logging.getLogger("voicebridge.runner")
# Messages (notes, commands) and presses of the plugin's buttons.
TELEGRAM_UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY]
# The runner owns its bots: its menu and command registry are voicebridge's alone.
RUNNER_OPTIONS = Options(commands=ALL_COMMANDS, menu="replace", sync="all")
DISCORD_READY_TIMEOUT = 60.0
BOT_API_CONNECTIONS = 32  # 16 notes at once (plugin) × a download or reply and a chat action each
BOT_API_POOL_TIMEOUT = 30.0  # seconds a Bot API call may wait for a free connection
FLOOD_RETRIES = 5  # 429s the rate limiter waits out itself before the plugin's own deadline takes over
GET_ME_ATTEMPTS = 3  # a getMe that times out is tried again (1 s, then 2 s later) before start-up fails


class StartupError(Exception):
    """The bot could not start; the message says why in one line."""


def telegram_application(settings: TelegramSettings, liveness: Liveness) -> Application[Any, Any, Any, Any, Any, Any]:
    builder = ApplicationBuilder().token(settings.token or "")
    if settings.base_url:
        builder = builder.base_url(settings.base_url)
    if settings.base_file_url:
        builder = builder.base_file_url(settings.base_file_url)
    # Voice uploads can take a while on slow links; text calls keep PTB's defaults. A second
    # getUpdates connection lets the last call at shutdown confirm the updates already handled
    # while the cancelled long poll still holds the first; otherwise they come again on restart.
    # httpcore checks every pooled connection at the start and end of every request (quadratic in
    # the pool), so PTB's default of 256 connections stalls the loop for tens of milliseconds
    # after a burst of notes; a smaller pool, and a request waiting its turn instead of failing.
    # Sends are throttled per chat and overall before they go out (Telegram's flood limits), and a
    # 429 pauses every send for its retry_after; what is still refused is waited out by the plugin
    # until VOICEBRIDGE_DELIVERY_DEADLINE.
    get_updates = WatchedGetUpdates(liveness, settings.token or "", connection_pool_size=2)
    return (builder.media_write_timeout(60).get_updates_request(get_updates)
            .connection_pool_size(BOT_API_CONNECTIONS).pool_timeout(BOT_API_POOL_TIMEOUT)
            .rate_limiter(AIORateLimiter(max_retries=FLOOD_RETRIES)).build())


async def open_database(url: str, cleanup: AsyncExitStack) -> Database:
    """The PostgreSQL database of the scale-out processes, connected now (closed by ``cleanup``):
    an unreachable one stops start-up with one line naming the variable."""
    database = Database(url)
    cleanup.push_async_callback(database.aclose)
    try:
        await database.pool()
    except StoreError as error:
        raise StartupError(str(error)) from None
    return database


async def check_telegram_token(initialize: Callable[[], Awaitable[object]]) -> None:
    """``initialize`` (getMe) as every process starts: a rejected token or an unreachable Bot API
    is one line naming what to fix; a call that only timed out is tried again a few times first
    (a busy host or network at boot must not kill a process that would start a second later)."""
    for attempt in range(1, GET_ME_ATTEMPTS + 1):
        try:
            await initialize()
            return
        except InvalidToken:
            raise ConfigError("TELEGRAM_BOT_TOKEN was rejected by Telegram (check it with @BotFather)") from None
        except TimedOut as error:
            if attempt == GET_ME_ATTEMPTS:
                raise StartupError(f"cannot reach the Telegram Bot API: {error.message}") from None
            log.warning("Telegram's getMe timed out (attempt %d of %d); trying again", attempt, GET_ME_ATTEMPTS)
            await asyncio.sleep(attempt)
        except NetworkError as error:
            raise StartupError(f"cannot reach the Telegram Bot API: {error.message}") from None


class TelegramRunner:
    """Polling for one bot token: started, stopped in two steps (intake, then connections)."""

    def __init__(self, settings: TelegramSettings, plugin: VoiceNotesPlugin, liveness: Liveness | None = None) -> None:
        self.settings = settings
        self.liveness = liveness or Liveness(timeout=60.0)
        self.application = telegram_application(settings, self.liveness)
        self.adapter = TelegramInstall(self.application, plugin, RUNNER_OPTIONS, owns_plugin=False)
        self.webhook: TelegramWebhook | None = None
        self._webhook_watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await check_telegram_token(self.application.initialize)
        await self.adapter.start()
        await self.application.start()
        updater = self.application.updater
        assert updater is not None
        if self.settings.webhook_url:
            # Telegram sends the secret with every update; requests without it get 403, unread.
            assert self.settings.webhook_secret is not None  # made with the settings when none is configured
            self.webhook = TelegramWebhook(self.settings.webhook_listen, self.settings.webhook_port,
                                           urlsplit(self.settings.webhook_url).path, self.settings.webhook_secret,
                                           self._queue_update)
            self.webhook.start()
            await self.application.bot.set_webhook(self.settings.webhook_url, secret_token=self.settings.webhook_secret,
                                                   allowed_updates=TELEGRAM_UPDATES)
            self._webhook_watch = asyncio.create_task(watch_telegram_webhook(
                self.liveness, self.application, self.settings.webhook_url, min(30.0, self.liveness.timeout / 2)))
            log.info("Telegram: running as @%s, webhook on %s:%d", self.application.bot.username,
                     self.settings.webhook_listen, self.settings.webhook_port)
        else:
            await updater.start_polling(allowed_updates=TELEGRAM_UPDATES)
            watch_telegram_polling(self.liveness)
            log.info("Telegram: running as @%s, polling", self.application.bot.username)

    async def _queue_update(self, data: dict[str, Any]) -> None:
        """A webhook update into the application's queue, as PTB's own webhook server does."""
        await self.application.update_queue.put(Update.de_json(data, self.application.bot))

    async def stop_intake(self, grace: float) -> None:
        """No more updates taken in; those already taken are still handled (within ``grace``)."""
        if self.webhook is not None:
            await self.webhook.stop()
        else:
            try:
                await self.application.updater.stop()  # type: ignore[union-attr]
            except TelegramError as error:  # polling had already ended with it (liveness reports that)
                log.warning("Telegram: polling had stopped: %s", error)
        try:
            async with asyncio.timeout(grace):
                await self.application.stop()  # waits for the running (non-blocking) handlers
        except TimeoutError:
            log.warning("Telegram: notes still running after %.0fs; stopping anyway", grace)

    async def close(self) -> None:
        if self._webhook_watch is not None:
            self._webhook_watch.cancel()
        if self.webhook is not None:
            await self.webhook.stop()
        if self.application.running:
            await self.application.stop()
        await self.application.shutdown()


def discord_bot(message_content: bool, **options: Any) -> commands.AutoShardedBot:
    intents = discord.Intents.default()
    intents.message_content = message_content
    # AutoShardedBot asks the REST base for its gateway (GET /gateway/bot), as Discord advises;
    # a plain Bot would dial the public gateway whatever DISCORD_API_BASE says.
    return commands.AutoShardedBot(command_prefix=commands.when_mentioned, intents=intents, help_command=None, **options)


async def start_discord(settings: DiscordSettings, plugin: VoiceNotesPlugin, *, liveness: Liveness | None = None,
                        **bot_options: Any) -> commands.AutoShardedBot:
    if settings.api_base != DEFAULT_API_BASE:
        use_api_base(settings.api_base)
    liveness = liveness or Liveness(timeout=60.0)
    bot = await _connected_discord_bot(settings, plugin, discord_bot(True, **bot_options), liveness)
    if bot is None:
        log.warning("Discord: the Message Content intent is not enabled for this application; "
                    "running without it (DMs and the Transcribe context menu work, server channels "
                    "are not transcribed automatically)")
        bot = await _connected_discord_bot(settings, plugin, discord_bot(False, **bot_options), liveness)
        assert bot is not None
    return bot


async def _connected_discord_bot(settings: DiscordSettings, plugin: VoiceNotesPlugin, bot: commands.AutoShardedBot,
                                 liveness: Liveness) -> commands.AutoShardedBot | None:
    """``bot`` logged in and ready, its commands registered; None when Discord refuses the
    Message Content intent."""
    cog = VoiceNotesCog(bot, plugin, sync=RUNNER_OPTIONS.sync)
    await bot.add_cog(cog)
    try:
        await bot.login(settings.token or "")
    except discord.LoginFailure:
        await bot.close()
        raise ConfigError("DISCORD_BOT_TOKEN was rejected by Discord (check it in the Developer Portal)") from None
    except (discord.HTTPException, OSError) as error:
        await bot.close()
        raise StartupError(f"cannot reach the Discord API: {error}") from None
    connection = asyncio.create_task(bot.connect())
    ready = asyncio.create_task(bot.wait_until_ready())
    done, _ = await asyncio.wait({connection, ready}, timeout=DISCORD_READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    if ready in done:
        watch_discord(liveness, bot, connection)
        await cog.commands_synced.wait()
        log.info("Discord: running as %s", bot.user)
        return bot
    ready.cancel()
    await bot.close()
    if connection in done and isinstance(connection.exception(), discord.PrivilegedIntentsRequired):
        return None
    detail = connection.exception() if connection in done else "no READY within a minute"
    raise StartupError(f"cannot connect to the Discord gateway: {detail}")


async def run_bot(settings: RunnerSettings, stop: asyncio.Event | None = None) -> None:
    """Serve every platform that has a token until ``stop`` is set (by default: SIGINT/SIGTERM).

    Raises :class:`ConnectionLost`, after the same orderly stop, when a chat connection stayed
    down too long or its task ended (liveness.py).
    """
    if not settings.telegram.token and not settings.discord.token:
        raise ConfigError("no chat platform configured: set TELEGRAM_BOT_TOKEN and/or DISCORD_BOT_TOKEN")
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
    metrics = Metrics()
    plugin = build_plugin(replace(RUNNER_OPTIONS, settings=settings), default_commands=ALL_COMMANDS,
                          retrier=Retrier(observer=Observers(LoggingObserver(), metrics)), observer=metrics)
    metrics.gauge("voicebridge_in_flight", lambda: plugin.in_flight)
    grace = settings.plugin.shutdown_grace_seconds
    serving = False
    liveness = Liveness(settings.liveness_timeout)

    def health() -> str | None:
        problem = liveness.problem() or plugin.service.credentials.problem()
        return problem or (None if serving and plugin.accepting else "not serving")

    async with AsyncExitStack() as cleanup:
        cleanup.push_async_callback(plugin.aclose)
        if settings.metrics_port is not None:
            status = await serve_status(settings.metrics_port, metrics, health)
            cleanup.callback(status.close)
        telegram = None
        if settings.telegram.token:
            telegram = TelegramRunner(settings.telegram, plugin, liveness)
            cleanup.push_async_callback(telegram.close)
            await telegram.start()
        if settings.discord.token:
            cleanup.push_async_callback((await start_discord(settings.discord, plugin, liveness=liveness)).close)
        serving = True
        log.info("voicebridge is running; stop with Ctrl+C")
        lost = await _until_stopped(stop, liveness)
        if lost:
            log.error("stopping: %s", lost)
        liveness.stop_watching()
        log.info("stopping: no new updates; finishing the notes in flight")
        if telegram is not None:
            await telegram.stop_intake(grace)
        await plugin.drain(grace)
    log.info("stopped")
    if lost:
        raise ConnectionLost(lost)


async def _until_stopped(stop: asyncio.Event, liveness: Liveness) -> str | None:
    """Wait for ``stop``, or for a lost chat connection: then its description."""
    stopped, lost = asyncio.create_task(stop.wait()), asyncio.create_task(liveness.lost())
    await asyncio.wait({stopped, lost}, return_when=asyncio.FIRST_COMPLETED)
    problem = lost.result() if lost.done() else None
    for task in (stopped, lost):
        task.cancel()
    await asyncio.gather(stopped, lost, return_exceptions=True)
    return problem
