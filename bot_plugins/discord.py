"""``await bot.load_extension("voicebridge.discord")``: voice notes in a discord.py bot."""

from .adapters.discord import setup

__all__ = ["setup"]
