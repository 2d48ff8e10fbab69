"""Plugin configuration (from the environment) and per-chat settings (changed by chat commands)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from ..speech.config import SpeechSettings, choice, number, problem
from ..speech.languages import AUTO, language_code

# VOICEBRIDGE_RESPONDER: who answers transcripts when the host passes no responder of its own
# ("none": the plugin answers with the transcript). voicebridge.responders.RESPONDERS builds each.
RESPONDER_CHOICES = ("none", "coze-agent")


SPEAK_IN_GROUPS = ("admins", "everyone", "off")  # the first is the default


class ReplyMode(StrEnum):
    TEXT = "text"
    VOICE = "voice"
    BOTH = "both"

    @property
    def has_text(self) -> bool:
        return self is not ReplyMode.VOICE

    @property
    def has_voice(self) -> bool:
        return self is not ReplyMode.TEXT


@dataclass(frozen=True)
class PluginSettings:
    reply_mode: ReplyMode = ReplyMode.TEXT
    max_duration_seconds: int = 1800
    allowed_chats: frozenset[str] = frozenset()  # empty: every chat
    database: str = "voicebridge.db"  # VOICEBRIDGE_DB: a SQLite path or a postgresql:// URL
    retention_hours: float = 168.0
    language: str = AUTO  # ASR language default (VOICEBRIDGE_LANGUAGE, checked by the speech settings)
    voice_id: str | None = None  # TTS voice default (COZE_VOICE_ID)
    daily_minutes: float | None = None  # per chat; None: no limit
    daily_minutes_per_user: float | None = None  # per user in each group chat; None: no limit
    shutdown_grace_seconds: float = 30.0  # notes in flight get this long to finish at shutdown
    responder_timeout_seconds: float = 60.0  # a host's responder gets this long to answer
    delivery_deadline_seconds: float = 600.0  # an answer waits out flood control this long before it is given up
    daily_tts_characters: int | None = None  # characters read aloud per chat per day; None: no limit
    speak_in_groups: str = "admins"  # who may /speak in groups: everyone, admins, off
    responder: str = "none"  # VOICEBRIDGE_RESPONDER
    coze_bot_id: str | None = None  # COZE_BOT_ID: the Coze agent that VOICEBRIDGE_RESPONDER=coze-agent talks to
    buttons: bool = True  # VOICEBRIDGE_BUTTONS: buttons under transcripts, and choices for /mode, /language, /voice

    @classmethod
    def from_values(cls, values: Mapping[str, str], problems: list[str]) -> PluginSettings:
        mode_text = choice(values, "VOICEBRIDGE_REPLY", tuple(ReplyMode), problems)  # the first, text, by default
        chats = frozenset(chat.strip() for chat in (values.get("VOICEBRIDGE_ALLOWED_CHATS") or "").split(",") if chat.strip())
        for chat in chats:
            if not chat.removeprefix("-").isdigit():  # one minus sign (a group), not "--5"
                problems.append(problem("VOICEBRIDGE_ALLOWED_CHATS", "must be comma-separated numeric chat ids", chat))
        responder = choice(values, "VOICEBRIDGE_RESPONDER", RESPONDER_CHOICES, problems)
        bot_id = (values.get("COZE_BOT_ID") or "").strip() or None
        if bot_id is not None and not bot_id.isdigit():
            problems.append(problem("COZE_BOT_ID", "must be the numeric id of a Coze agent (the digits after /bot/ in "
                                                   "its address on coze.cn or coze.com)", bot_id))
        elif responder == "coze-agent" and bot_id is None:
            problems.append("COZE_BOT_ID is not set; VOICEBRIDGE_RESPONDER=coze-agent needs the id of a Coze agent "
                            "published to the API channel")
        return cls(
            reply_mode=ReplyMode(mode_text),
            max_duration_seconds=int(number(values, "VOICEBRIDGE_MAX_DURATION", 1800, 1, 24 * 3600, problems)),
            allowed_chats=chats,
            database=(values.get("VOICEBRIDGE_DB") or "").strip() or "voicebridge.db",
            retention_hours=number(values, "VOICEBRIDGE_RETENTION_HOURS", 168, 0, 24 * 365 * 10, problems),
            language=language_code(values.get("VOICEBRIDGE_LANGUAGE") or AUTO) or AUTO,
            voice_id=(values.get("COZE_VOICE_ID") or "").strip() or None,
            daily_minutes=number(values, "VOICEBRIDGE_DAILY_MINUTES", None, 0, 24 * 60, problems),
            daily_minutes_per_user=number(values, "VOICEBRIDGE_DAILY_MINUTES_PER_USER", None, 0, 24 * 60, problems),
            shutdown_grace_seconds=number(values, "VOICEBRIDGE_SHUTDOWN_GRACE", 30.0, 0, 3600, problems),
            responder_timeout_seconds=number(values, "VOICEBRIDGE_RESPONDER_TIMEOUT", 60.0, 0.1, 3600, problems),
            delivery_deadline_seconds=number(values, "VOICEBRIDGE_DELIVERY_DEADLINE", 600.0, 1, 24 * 3600, problems),
            daily_tts_characters=_optional_int(number(values, "VOICEBRIDGE_DAILY_TTS_CHARACTERS", None, 0, 10**8, problems)),
            speak_in_groups=choice(values, "VOICEBRIDGE_SPEAK_IN_GROUPS", SPEAK_IN_GROUPS, problems),
            responder=responder,
            coze_bot_id=bot_id,
            buttons=choice(values, "VOICEBRIDGE_BUTTONS", ("on", "off"), problems) == "on",
        )


def _optional_int(value: float | None) -> int | None:
    return int(value) if value is not None else None


def responder_problems(plugin: PluginSettings, speech: SpeechSettings) -> list[str]:
    """What the chosen responder needs from the speech settings (the agent talks to Coze with
    the same credentials)."""
    if plugin.responder == "coze-agent" and not speech.has_coze_credentials:
        return ["COZE_API_TOKEN is not set (nor a Coze JWT app: COZE_JWT_CLIENT_ID, …); VOICEBRIDGE_RESPONDER=coze-agent "
                "talks to the Coze agent with it"]
    return []


SETTING_KEYS = ("reply_mode", "language", "voice_id", "auto_transcribe", "hot_words")


@dataclass(frozen=True)
class ChatSettings:
    """What one chat has chosen; a chat stores only what it changed, the rest are defaults."""

    reply_mode: ReplyMode
    language: str
    voice_id: str | None = None
    auto_transcribe: bool = True  # groups: every voice note, or only on /transcribe
    hot_words: tuple[str, ...] = field(default_factory=tuple)
    # A language the chat chose that the speech service can no longer recognise (the operator
    # changed providers): the default is used instead, and /settings says so.
    unavailable_language: str | None = None

    @classmethod
    def defaults(cls, settings: PluginSettings) -> ChatSettings:
        return cls(reply_mode=settings.reply_mode, language=settings.language, voice_id=settings.voice_id)

    def with_stored(self, stored: Mapping[str, str], languages: Collection[str]) -> ChatSettings:
        """Apply stored overrides; ``languages`` are the ones recognition honours now. Stored
        values of older versions (``common``, ``cant``) are read as today's codes."""
        chosen = self
        if stored.get("reply_mode") in ReplyMode.__members__.values():
            chosen = replace(chosen, reply_mode=ReplyMode(stored["reply_mode"]))
        if "language" in stored:
            language = language_code(stored["language"])
            if language in languages:
                chosen = replace(chosen, language=language)
            else:
                chosen = replace(chosen, unavailable_language=language or stored["language"])
        if stored.get("voice_id"):
            chosen = replace(chosen, voice_id=stored["voice_id"])
        if "auto_transcribe" in stored:
            chosen = replace(chosen, auto_transcribe=stored["auto_transcribe"] == "on")
        if "hot_words" in stored:
            chosen = replace(chosen, hot_words=parse_hot_words(stored["hot_words"]))
        return chosen


def parse_hot_words(text: str) -> tuple[str, ...]:
    """``a, b，c`` → ("a", "b", "c"): ASCII and full-width commas, duplicates dropped."""
    words = (word.strip() for word in text.replace("，", ",").replace("、", ",").split(","))
    return tuple(dict.fromkeys(word for word in words if word))
