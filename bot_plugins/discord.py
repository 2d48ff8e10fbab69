"""``await bot.load_extension("voicebridge.discord")``: voice notes in a discord.py bot,
configured by ``bot.voicebridge_options`` (a :class:`voicebridge.Options`) when set."""

from .adapters.discord import setup, teardown

__all__ = ["setup", "teardown"]
