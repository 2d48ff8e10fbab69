"""A host bot for end-to-end tests: a real python-telegram-bot Application with the plugin
installed, polling the local Bot API fake, speaking to the local speech fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from telegram.ext import Application, ApplicationBuilder

from voicebridge.adapters.telegram import TelegramInstall
from voicebridge.config import Settings
from voicebridge.options import Options
from voicebridge.speech.retry import Retrier
from voicebridge.speech.service import SpeechService
from voicebridge.voice_notes.plugin import ALL_COMMANDS, VoiceNotesPlugin
from voicebridge.voice_notes.store import SQLiteStore
from tests.fakes.coze import DEFAULT_TOKEN, DEFAULT_VOICES, FakeCoze
from tests.fakes.feishu import DEFAULT_APP_ID, DEFAULT_APP_SECRET, FakeFeishu
from tests.fakes.telegram import Call, FakeTelegram


def speech_values(coze: FakeCoze | None = None, feishu: FakeFeishu | None = None) -> dict[str, str]:
    """Configuration pointing the speech providers at the fakes."""
    values: dict[str, str] = {}
    if coze is not None:
        values |= {"COZE_API_TOKEN": DEFAULT_TOKEN, "COZE_API_BASE": coze.base_url, "COZE_WS_BASE": coze.ws_base_url,
                   "COZE_VOICE_ID": DEFAULT_VOICES[0].voice_id}
    if feishu is not None:
        values |= {"FEISHU_APP_ID": DEFAULT_APP_ID, "FEISHU_APP_SECRET": DEFAULT_APP_SECRET, "FEISHU_BASE_URL": feishu.base_url}
    return values


@asynccontextmanager
async def telegram_bot(telegram: FakeTelegram, values: dict[str, str], retrier: Retrier, *, db: str = ":memory:",
                       store_timeout: float = 5.0) -> AsyncIterator[Application[Any, Any, Any, Any, Any, Any]]:
    """A host application with the plugin installed (group 10, non-blocking), polling the fake."""
    settings = Settings.from_values(values)
    service = SpeechService.from_settings(settings.speech, retrier=retrier)
    store = SQLiteStore(db, timeout=store_timeout)
    plugin = VoiceNotesPlugin(service, store, settings.plugin, edit_interval=0.2, closes=(service, store))
    application = (ApplicationBuilder().token(telegram.token).base_url(telegram.api_base_url)
                   .base_file_url(telegram.file_base_url).get_updates_connection_pool_size(2).build())
    voice_notes = TelegramInstall(application, plugin, Options(commands=ALL_COMMANDS, menu="replace"), owns_plugin=True)
    async with application:
        await voice_notes.start()
        await application.start()
        await application.updater.start_polling(timeout=1)  # type: ignore[union-attr]
        try:
            yield application
        finally:
            await application.updater.stop()  # type: ignore[union-attr]
            await application.stop()
            await voice_notes.stop()


def replies_to(message: dict[str, Any]) -> Callable[[Call], bool]:
    """Matches a call that answers ``message`` (message ids are per chat)."""
    return lambda call: (int(call.params.get("chat_id", 0)) == message["chat"]["id"]
                         and (call.params.get("reply_parameters") or {}).get("message_id") == message["message_id"])


PLACEHOLDER_STARTS = ("🎙 Transcribing…", "🎙 正在转写…", "🎙 正在轉錄…")


def is_placeholder(text: str) -> bool:
    return text.startswith(PLACEHOLDER_STARTS)


async def transcript_reply(telegram: FakeTelegram, note: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """The bot's reply to ``note`` as the chat shows it, once it is no longer the
    "Transcribing…" placeholder (the transcript, or an error, edited into it)."""

    def settled() -> dict[str, Any] | None:
        for message in telegram.messages_sent(note["chat"]["id"]):
            replied = (message.get("reply_to_message") or {}).get("message_id")
            if replied == note["message_id"] and "text" in message and not is_placeholder(message["text"]):
                return message
        return None

    return await telegram.wait_for(settled, timeout)  # type: ignore[no-any-return]


async def discord_transcript(fake: Any, note: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """The bot's message answering ``note`` in a FakeDiscord channel as it shows now, once it is
    no longer the "Transcribing…" placeholder."""

    def settled() -> dict[str, Any] | None:
        for message in fake.messages_in(int(note["channel_id"])):
            replied = str((message.get("message_reference") or {}).get("message_id"))
            if replied == str(note["id"]) and message.get("content") and not is_placeholder(message["content"]):
                return message  # type: ignore[no-any-return]
        return None

    return await fake.wait_for(settled, timeout)  # type: ignore[no-any-return]
