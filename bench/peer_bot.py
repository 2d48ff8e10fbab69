"""A typical peer bot, for comparison: a voice-to-text Telegram bot written the way popular ones
are, on Coze file ASR like the voicebridge bot it is compared with.

python-telegram-bot with concurrent updates; per voice note: "typing…", download to a temporary
file, pydub converts it to MP3 in another temporary file (``AudioSegment.from_file(...).export(...,
format="mp3")``, the pattern of countless speech-to-text bots, run in a thread so the event loop
stays free), cozepy's async client uploads it, the text is sent as a reply. No retries, no limits,
no silence check: it is the baseline, not a product. Run by ``bench/bot_server.py --peer``.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from cozepy import AsyncCoze, AsyncTokenAuth
from pydub import AudioSegment
from telegram import Update
from telegram.constants import ChatAction
from telegram.ext import Application, ApplicationBuilder, ContextTypes, MessageHandler, filters


def to_mp3(source: Path, target: Path) -> None:
    AudioSegment.from_file(source).export(target, format="mp3")


class PeerBot:
    def __init__(self, token: str, base_url: str, base_file_url: str, coze_token: str, coze_base_url: str) -> None:
        self.application: Application = (ApplicationBuilder().token(token).base_url(base_url).base_file_url(base_file_url)
                                         .concurrent_updates(True).build())
        self.application.add_handler(MessageHandler(filters.VOICE | filters.AUDIO | filters.Document.AUDIO, self.on_voice))
        self.coze = AsyncCoze(auth=AsyncTokenAuth(coze_token), base_url=coze_base_url)
        self.received = 0
        self.in_flight = 0

    async def on_voice(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        self.received += 1
        self.in_flight += 1
        try:
            message = update.effective_message
            assert message is not None
            media = message.voice or message.audio or message.document
            assert media is not None
            await context.bot.send_chat_action(message.chat_id, ChatAction.TYPING)
            telegram_file = await media.get_file()
            with tempfile.TemporaryDirectory() as folder:
                source, target = Path(folder) / "voice.ogg", Path(folder) / "voice.mp3"
                await telegram_file.download_to_drive(source)
                await asyncio.to_thread(to_mp3, source, target)
                with target.open("rb") as upload:
                    result = await self.coze.audio.transcriptions.create(file=upload)
            await message.reply_text(result.text, do_quote=True)
        finally:
            self.in_flight -= 1

    async def start(self) -> None:
        await self.application.initialize()
        await self.application.start()
        assert self.application.updater is not None
        await self.application.updater.start_polling(allowed_updates=[Update.MESSAGE])

    async def stop(self) -> None:
        assert self.application.updater is not None
        await self.application.updater.stop()
        await self.application.stop()
        await self.application.shutdown()
