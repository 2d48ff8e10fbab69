"""How ``voicebridge run`` tells whether its Telegram and Discord connections are alive
(reported to :class:`voicebridge.liveness.Liveness`).

- Telegram polling: every getUpdates outcome (through the request object PTB polls with), and
  the polling task itself, which PTB ends for good when Telegram refuses the token.
- Telegram webhook: Telegram's own view, from getWebhookInfo: the webhook still ours, and no
  delivery errors with updates piling up.
- Discord: each shard's connect / disconnect events, and the task that runs the gateway, which
  discord.py ends for good on a close it cannot recover from (a revoked token, say).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from discord.ext import commands
from telegram.error import TelegramError
from telegram.ext import Application
from telegram.request import HTTPXRequest

from voicebridge.liveness import Liveness

log = logging.getLogger(__name__)

TELEGRAM_POLLING = "Telegram polling"
TELEGRAM_WEBHOOK = "Telegram webhook"
DISCORD_GATEWAY = "Discord gateway"
POLLING_TASK_NAME = "Updater:start_polling:polling_task"  # as python-telegram-bot names it


class WatchedGetUpdates(HTTPXRequest):
    """The request object PTB sends getUpdates through, reporting each outcome."""

    def __init__(self, liveness: Liveness, token: str, **options: Any) -> None:
        super().__init__(**options)
        self.liveness = liveness
        self._token = token  # kept out of the reasons /healthz shows

    async def do_request(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        try:
            status, payload = await super().do_request(*args, **kwargs)
        except TelegramError as error:
            self.liveness.down(TELEGRAM_POLLING, str(error).replace(self._token, "<TELEGRAM_BOT_TOKEN>"))
            raise
        if status == 200:
            self.liveness.up(TELEGRAM_POLLING)
        else:
            self.liveness.down(TELEGRAM_POLLING, f"getUpdates answered HTTP {status}")
        return status, payload


def watch_telegram_polling(liveness: Liveness) -> None:
    """Watch the task PTB polls in (started by ``start_polling``)."""
    task = next((task for task in asyncio.all_tasks() if task.get_name() == POLLING_TASK_NAME), None)
    if task is None:  # a PTB that names it differently: getUpdates outcomes still tell
        log.debug("Telegram polling task not found; watching getUpdates outcomes only")
        return
    liveness.watch(TELEGRAM_POLLING, task)


async def watch_telegram_webhook(liveness: Liveness, application: Application[Any, Any, Any, Any, Any, Any], url: str,
                                 interval: float) -> None:
    """Ask Telegram every ``interval`` seconds how the webhook fares; runs until cancelled."""
    since = datetime.now(UTC)
    while True:
        await asyncio.sleep(interval)
        try:
            info = await application.bot.get_webhook_info()
        except TelegramError as error:
            liveness.down(TELEGRAM_WEBHOOK, f"getWebhookInfo failed: {type(error).__name__}")
            continue
        if info.url != url:
            liveness.down(TELEGRAM_WEBHOOK, f"Telegram now delivers to {info.url or 'nobody (webhook deleted)'}")
        elif info.last_error_date and info.last_error_date > since and info.pending_update_count:
            liveness.down(TELEGRAM_WEBHOOK, f"Telegram cannot deliver updates: {info.last_error_message}")
        else:
            liveness.up(TELEGRAM_WEBHOOK)


def watch_discord(liveness: Liveness, bot: commands.AutoShardedBot, gateway: asyncio.Task[None]) -> None:
    liveness.watch(DISCORD_GATEWAY, gateway)

    async def disconnected(shard_id: int) -> None:
        liveness.down(f"{DISCORD_GATEWAY} (shard {shard_id})", "disconnected")

    async def connected(shard_id: int) -> None:
        liveness.up(f"{DISCORD_GATEWAY} (shard {shard_id})")

    bot.add_listener(disconnected, "on_shard_disconnect")
    for event in ("on_shard_connect", "on_shard_ready", "on_shard_resumed"):
        bot.add_listener(connected, event)
