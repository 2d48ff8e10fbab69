"""``voicebridge ingress``: receives — Telegram by polling or webhook, Discord gateway shards —
and turns each voice note, command and interaction into a job in PostgreSQL. Nothing slow
happens here: no download, no speech service, no answer (but Discord's interaction deferral).

Telegram is told an update was received (the next getUpdates offset, or the webhook's 200) only
after its job is committed; the update id makes a redelivered update the same job. Run several
ingress processes to split Discord's shards (``DISCORD_SHARD_COUNT`` / ``DISCORD_SHARD_IDS``) or
to serve a Telegram webhook behind a load balancer; a bot token is polled by one process only.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import urlsplit

import discord
import yarl
from telegram import Update
from telegram.ext import Updater

from voicebridge.config import DiscordSettings, RunnerSettings, TelegramSettings
from voicebridge.jobs import PostgresQueue
from voicebridge.liveness import ConnectionLost, Liveness
from voicebridge.metrics import Metrics, serve_status
from voicebridge.postgres import PostgresStore
from voicebridge.speech.errors import ConfigError
from voicebridge.speech.languages import honoured_by_all
from voicebridge.speech.registry import chain_languages
from voicebridge.voice_notes.plugin import ALL_COMMANDS

from .discord import DEFAULT_API_BASE, use_api_base
from .discord_jobs import DiscordIntake
from .liveness import watch_telegram_polling
from .runner import TELEGRAM_UPDATES, StartupError, check_telegram_token, open_database, start_discord, telegram_application
from .telegram_jobs import JobIntake, TelegramJobs
from .telegram_webhook import TelegramWebhook

log = logging.getLogger("voicebridge.ingress")


async def start_telegram_intake(settings: TelegramSettings, queue: PostgresQueue, liveness: Liveness,
                                cleanup: AsyncExitStack) -> JobIntake:
    """Telegram updates into the job queue: python-telegram-bot's Updater polling, or the webhook
    server."""
    bot = telegram_application(settings, liveness).bot
    intake = JobIntake(queue, bot, TelegramJobs(ALL_COMMANDS))
    updater = Updater(bot, intake)
    await check_telegram_token(updater.initialize)
    cleanup.push_async_callback(updater.shutdown)
    if settings.webhook_url:
        # The runner's hardened server (secret and size checked before a body is read); Telegram
        # gets its 200 only once the update's job is committed (JobIntake.put returned).
        assert settings.webhook_secret is not None  # made with the settings when none is configured

        async def commit(data: dict[str, Any]) -> None:
            update = Update.de_json(data, bot)
            if update is not None:
                await intake.put(update)

        webhook = TelegramWebhook(settings.webhook_listen, settings.webhook_port, urlsplit(settings.webhook_url).path,
                                  settings.webhook_secret, commit)
        webhook.start()
        cleanup.push_async_callback(webhook.stop)
        await bot.set_webhook(settings.webhook_url, secret_token=settings.webhook_secret, allowed_updates=TELEGRAM_UPDATES)
        log.info("Telegram: @%s, webhook on %s:%d", bot.username, settings.webhook_listen, settings.webhook_port)
    else:
        await updater.start_polling(allowed_updates=TELEGRAM_UPDATES)
        cleanup.push_async_callback(updater.stop)
        watch_telegram_polling(liveness)
        log.info("Telegram: @%s, polling", bot.username)
    return intake


async def use_gateway_of(settings: DiscordSettings) -> None:
    """With a fixed shard count discord.py dials Discord's public gateway instead of asking the
    API for one; behind another API base, the gateway is the one that API names."""
    use_api_base(settings.api_base)
    client = discord.Client(intents=discord.Intents.none())
    try:
        await client.login(settings.token or "")
        _, url, _ = await client.http.get_bot_gateway()
    except (discord.HTTPException, discord.GatewayNotFound, OSError) as error:
        raise StartupError(f"cannot reach the Discord API: {error}") from None
    finally:
        await client.close()
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)


async def serve_ingress(settings: RunnerSettings, stop: asyncio.Event) -> None:
    """Receive until ``stop`` is set (or the database stays away: then exit with an error)."""
    if not settings.telegram.token and not settings.discord.token:
        raise ConfigError("no chat platform configured: set TELEGRAM_BOT_TOKEN and/or DISCORD_BOT_TOKEN")
    metrics = Metrics()
    serving = False
    async with AsyncExitStack() as cleanup:
        database = await open_database(settings.plugin.database, cleanup)
        queue = PostgresQueue(database)
        if settings.metrics_port is not None:
            status = await serve_status(settings.metrics_port, metrics, lambda: serving and not stop.is_set())
            cleanup.callback(status.close)
        failed = asyncio.Event()
        liveness = Liveness(settings.liveness_timeout)  # a connection down too long: exit, to be restarted
        if settings.telegram.token:
            intake = await start_telegram_intake(settings.telegram, queue, liveness, cleanup)
            failed = intake.failed
        if settings.discord.token:
            discord_intake = DiscordIntake(queue, PostgresStore(database), settings.plugin,
                                           recognition_languages=honoured_by_all(chain_languages(settings.speech.asr_chain)))
            shards = {} if settings.discord.shard_count is None else {"shard_count": settings.discord.shard_count}
            if settings.discord.shard_ids is not None:
                shards["shard_ids"] = list(settings.discord.shard_ids)
            if settings.discord.shard_count is not None and settings.discord.api_base != DEFAULT_API_BASE:
                await use_gateway_of(settings.discord)
            bot = await start_discord(settings.discord, discord_intake, liveness=liveness,  # type: ignore[arg-type]
                                      **shards)
            cleanup.push_async_callback(discord_intake.drain, settings.plugin.shutdown_grace_seconds)
            cleanup.push_async_callback(bot.close)
            log.info("Discord: shards %s of %s", ",".join(map(str, bot.shard_ids or [])) or "all", bot.shard_count)
        serving = True
        log.info("ingress is running; stop with Ctrl+C")
        lost = asyncio.create_task(liveness.lost())
        waits = [asyncio.create_task(stop.wait()), asyncio.create_task(failed.wait()), lost]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for wait in waits:
            wait.cancel()
        liveness.stop_watching()
        log.info("stopping: no new updates")
    if lost.done() and not lost.cancelled():
        raise ConnectionLost(lost.result())
    if failed.is_set():
        raise StartupError("the job queue's database could not be reached; updates were left with Telegram")
    log.info("stopped")
