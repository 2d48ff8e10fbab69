"""voicebridge: voice notes for python-telegram-bot and discord.py bots.

In a python-telegram-bot application::

    import voicebridge.telegram
    voicebridge.telegram.install(application)          # or install(application, responder=answer)

In a discord.py bot::

    bot.voicebridge_options = voicebridge.Options(responder=answer)   # optional
    await bot.load_extension("voicebridge.discord")

The platform modules are imported only when used: each needs its framework installed
(``voicebridge[telegram]``, ``voicebridge[discord]``).
"""

from . import responders  # voicebridge.responders.CozeAgent after a plain `import voicebridge`
from .config import Settings
from .options import Options
from .speech.service import SpeechService
from .voice_notes.model import Reply, ResponderContext
from .voice_notes.store import Store

__all__ = ["Options", "Reply", "ResponderContext", "Settings", "SpeechService", "Store", "responders"]
