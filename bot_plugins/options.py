"""How a host bot configures voicebridge: one :class:`Options` for Telegram and Discord, and
the plugin built from it."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from .config import Settings
from .responders import RESPONDERS, CozeAgent
from .speech.retry import Retrier
from .speech.service import SpeechService
from .voice_notes.model import Responder
from .voice_notes.plugin import GUEST_COMMANDS, AsyncResource, NoteObserver, VoiceNotesPlugin, resolve_commands
from .voice_notes.store import Store, open_store

MENU_CHOICES = ("merge", "replace", "none")
SYNC_CHOICES = ("own", "all", "none")


@dataclass
class Options:
    """voicebridge in a host bot.

    - ``responder``: the host's answer to each transcript (``str``, :class:`voicebridge.Reply`,
      None, or an async iterable of text pieces), or an agent such as
      :class:`voicebridge.responders.CozeAgent`; None: ``VOICEBRIDGE_RESPONDER`` (by default
      none: the plugin is a transcriber).
    - ``commands``: the command names the plugin answers (None: transcribe, speak, settings, mode,
      language, voice, voices, auto, hotwords, usage, privacy, forget — never /start or /help).
    - ``menu`` (Telegram): ``merge`` the plugin's commands into the host's menus, ``replace`` them,
      or ``none`` (never call setMyCommands).
    - ``sync`` (Discord): register only the plugin's ``own`` application commands, one by one;
      ``all`` (bulk-overwrite the whole tree: for a bot voicebridge owns); ``none``.
    - ``group``: the python-telegram-bot handler group.
    - ``settings``: a :class:`voicebridge.Settings`; None reads the environment and ``.env``.
    - ``store``: a path, ``":memory:"``, or an object implementing :class:`voicebridge.Store`;
      None: ``VOICEBRIDGE_DB``. A store object passed in stays the host's to close.
    - ``transcript_as_text`` (Telegram): hand the transcript to the host's own handlers as if the
      user had typed it, instead of answering it.
    """

    responder: Responder | None = None
    commands: Iterable[str] | None = None
    menu: str = "merge"
    sync: str = "own"
    group: int = 10
    settings: Settings | None = None
    store: str | os.PathLike[str] | Store | None = None
    transcript_as_text: bool = False

    def __post_init__(self) -> None:
        if self.menu not in MENU_CHOICES:
            raise ValueError(f"Options.menu must be one of {', '.join(MENU_CHOICES)}, not {self.menu!r}")
        if self.sync not in SYNC_CHOICES:
            raise ValueError(f"Options.sync must be one of {', '.join(SYNC_CHOICES)}, not {self.sync!r}")
        if self.commands is not None:
            self.commands = resolve_commands(self.commands)  # an unknown name fails here, at install


def build_plugin(options: Options, *, default_commands: Iterable[str] = GUEST_COMMANDS, retrier: Retrier | None = None,
                 observer: NoteObserver | None = None, edit_interval: float = 1.0) -> VoiceNotesPlugin:
    """The plugin ``options`` describe, owning (and closing) the service and store it creates."""
    commands = resolve_commands(options.commands if options.commands is not None else default_commands)
    settings = options.settings or Settings.load()
    retrier = retrier or Retrier()
    responder = options.responder
    if responder is None and settings.plugin.responder in RESPONDERS:
        responder = RESPONDERS[settings.plugin.responder](settings)
    if isinstance(responder, CozeAgent):
        responder.bind(settings, retrier)  # the same Coze credentials and retries as speech
    service = SpeechService.from_settings(settings.speech, retrier=retrier)
    owned: list[AsyncResource] = [service]
    store = options.store
    if store is None or isinstance(store, str | os.PathLike):
        store = open_store(settings.plugin.database if store is None else store)
        owned.append(store)
    return VoiceNotesPlugin(service, store, settings.plugin, responder=responder, commands=commands,
                            closes=owned, observer=observer, edit_interval=edit_interval)
