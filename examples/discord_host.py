"""A discord.py host bot with voicebridge loaded as an extension.

The bot has its own slash commands (/ping, and a /settings of its own, which voicebridge leaves
to it), a dev-guild command, a prefix command and an on_message handler. voicebridge adds voice
messages, the Transcribe menu and its commands, and answers each voice message with the bot's
own reply (a responder); every transcript also arrives as an ``on_voice_transcript`` event.

Run it (speech configuration as in the README, from the environment or .env)::

    DISCORD_BOT_TOKEN=... COZE_API_TOKEN=... python examples/discord_host.py

``DISCORD_API_BASE`` points it at another Discord API (a proxy or a local test server);
``DEV_GUILD_ID`` registers the dev command in that guild.
"""

from __future__ import annotations

import logging
import os

import discord
from discord import app_commands
from discord.ext import commands

import voicebridge

log = logging.getLogger("host")
DEV_GUILD = discord.Object(int(os.environ.get("DEV_GUILD_ID", "1")))


async def answer(transcript: str, context: voicebridge.ResponderContext) -> voicebridge.Reply:
    """The bot's own logic: here, a friendly echo (an LLM call would go here)."""
    return voicebridge.Reply(text=f"You said: {transcript}")


def build_bot() -> commands.AutoShardedBot:
    intents = discord.Intents.default()
    intents.message_content = True
    bot = commands.AutoShardedBot(command_prefix="!", intents=intents)
    bot.voicebridge_options = voicebridge.Options(responder=answer)  # type: ignore[attr-defined]

    @bot.tree.command(name="ping", description="Is the bot there?")
    async def ping(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("pong")

    @bot.tree.command(name="settings", description="The host bot's own settings")
    async def settings(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("host settings", ephemeral=True)

    @bot.tree.command(name="deploy", description="Developers only", guild=DEV_GUILD)
    @app_commands.default_permissions(administrator=True)
    async def deploy(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("deployed")

    @bot.command(name="hello")
    async def hello(ctx: commands.Context[commands.AutoShardedBot]) -> None:
        await ctx.send("hello!")

    @bot.event
    async def on_message(message: discord.Message) -> None:
        await bot.process_commands(message)

    @bot.event
    async def on_voice_transcript(message: discord.Message, transcript: str) -> None:
        log.info("voice message %s says: %s", message.id, transcript)

    @bot.event
    async def setup_hook() -> None:
        await bot.load_extension("voicebridge.discord")  # voicebridge: the one line
        await bot.tree.sync(guild=DEV_GUILD)  # the host's own dev-guild commands, its own business

    return bot


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if api_base := os.environ.get("DISCORD_API_BASE"):
        discord.http.Route.BASE = api_base.rstrip("/")  # AutoShardedBot asks it for the gateway too
    build_bot().run(os.environ["DISCORD_BOT_TOKEN"], log_handler=None)


if __name__ == "__main__":
    main()
