"""A python-telegram-bot host bot with voicebridge installed in two lines.

The bot is a small pizza shop: its own /start and /help, an /order conversation, HTML replies by
default, its own command menu, persistence and an error handler. voicebridge adds voice: with
``transcript_as_text=True`` a voice note is handed to the bot's handlers as if it had been typed,
so "large" said aloud answers the conversation's question.

Run it (configuration of the speech services as in the README, from the environment or .env)::

    TELEGRAM_BOT_TOKEN=123:ABC COZE_API_TOKEN=... python examples/telegram_host.py

``TELEGRAM_BASE_URL`` / ``TELEGRAM_BASE_FILE_URL`` point it at a local Bot API server.
"""

from __future__ import annotations

import html
import logging
import os
from pathlib import Path

from telegram import BotCommand, Update
from telegram.constants import ParseMode
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CommandHandler,
    ContextTypes,
    ConversationHandler,
    Defaults,
    MessageHandler,
    PicklePersistence,
    filters,
)

import voicebridge.telegram  # voicebridge: the import…

log = logging.getLogger("pizza")
CHOOSING_SIZE = 0
SIZES = ("small", "medium", "large")


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.effective_message.reply_text("Welcome to <b>Pizza Bot</b>! Send /order, by text or by voice.")


async def help_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.effective_message.reply_text("/order — order a pizza\n/cancel — stop ordering")


async def order(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    await update.effective_message.reply_text(f"What size? ({', '.join(SIZES)})")
    return CHOOSING_SIZE


async def choose_size(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    said = (update.effective_message.text or "").strip().lower().rstrip(".!。")
    size = next((size for size in SIZES if size in said), None)
    if size is None:
        await update.effective_message.reply_text(f"Sorry, {html.escape(said)!s} is not a size. Small, medium or large?")
        return CHOOSING_SIZE
    context.user_data["orders"] = context.user_data.get("orders", 0) + 1
    await update.effective_message.reply_text(f"Ordered: one <b>{size}</b> pizza.")
    return ConversationHandler.END


async def cancel(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    await update.effective_message.reply_text("Order cancelled.")
    return ConversationHandler.END


async def publish_menu(application: Application) -> None:  # type: ignore[type-arg]
    await application.bot.set_my_commands([BotCommand("start", "Welcome"), BotCommand("help", "What this bot does"),
                                           BotCommand("order", "Order a pizza")])


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    log.error("pizza bot error: %r", context.error)


def build_application(token: str, persistence_file: Path) -> Application:  # type: ignore[type-arg]
    builder = ApplicationBuilder().token(token).defaults(Defaults(parse_mode=ParseMode.HTML))
    if base_url := os.environ.get("TELEGRAM_BASE_URL"):
        builder = builder.base_url(base_url).base_file_url(os.environ.get("TELEGRAM_BASE_FILE_URL", base_url))
    application = (builder.persistence(PicklePersistence(persistence_file)).post_init(publish_menu)
                   .connection_pool_size(32).pool_timeout(30).build())
    application.add_handler(CommandHandler("start", start))
    application.add_handler(CommandHandler("help", help_command))
    application.add_handler(ConversationHandler(
        entry_points=[CommandHandler("order", order)],
        states={CHOOSING_SIZE: [MessageHandler(filters.TEXT & ~filters.COMMAND, choose_size)]},
        fallbacks=[CommandHandler("cancel", cancel)],
        name="order", persistent=True,
    ))
    application.add_error_handler(on_error)
    voicebridge.telegram.install(application, transcript_as_text=True)  # …and the one call
    return application


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    application = build_application(os.environ["TELEGRAM_BOT_TOKEN"], Path(os.environ.get("PIZZA_STATE", "pizza.pickle")))
    application.run_polling(allowed_updates=Update.ALL_TYPES)  # voicebridge starts and stops with it


if __name__ == "__main__":
    main()
