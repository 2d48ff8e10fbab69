"""``voicebridge.telegram.install(application, options=None, **fields)``: voice notes in a
python-telegram-bot application. See :func:`voicebridge.adapters.telegram.install`."""

from .adapters.telegram import TelegramInstall, install

__all__ = ["TelegramInstall", "install"]
