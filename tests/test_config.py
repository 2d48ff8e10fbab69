"""Configuration: sources, precedence, and start-up errors that name the variable."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from voicebridge.config import RunnerSettings, load_values, parse_dotenv
from voicebridge.speech.errors import ConfigError
from voicebridge.speech.languages import LANGUAGE_CODES
from voicebridge.voice_notes.settings import ChatSettings, PluginSettings, ReplyMode, parse_hot_words, responder_problems

TOKEN = "pat_example_token_123"


def settings(**values: str) -> RunnerSettings:
    return RunnerSettings.from_values(values)


def test_defaults_with_only_a_token() -> None:
    speech = settings(COZE_API_TOKEN=TOKEN).speech
    assert speech.coze_api_base == "https://api.coze.cn"
    assert speech.coze_ws_base == "wss://ws.coze.cn"
    assert speech.asr_chain == ("coze",)
    assert speech.tts_chain == ("coze",)
    assert speech.language == "auto"
    assert speech.coze_voice_id is None


def test_switching_to_coze_com_needs_only_the_two_base_urls() -> None:
    speech = settings(COZE_API_TOKEN=TOKEN, COZE_API_BASE="https://api.coze.com/", COZE_WS_BASE="wss://ws.coze.com").speech
    assert (speech.coze_api_base, speech.coze_ws_base) == ("https://api.coze.com", "wss://ws.coze.com")


def test_coze_stream_input_is_ogg_unless_pcm_is_asked_for() -> None:
    assert settings(COZE_API_TOKEN=TOKEN).speech.coze_stream_input == "ogg"
    assert settings(COZE_API_TOKEN=TOKEN, COZE_STREAM_INPUT=" PCM ").speech.coze_stream_input == "pcm"


def test_provider_chains_and_language() -> None:
    speech = settings(COZE_API_TOKEN=TOKEN, VOICEBRIDGE_ASR="coze-stream, coze", VOICEBRIDGE_TTS="coze-stream").speech
    assert speech.asr_chain == ("coze-stream", "coze")
    assert speech.tts_chain == ("coze-stream",)
    assert settings(COZE_API_TOKEN=TOKEN, VOICEBRIDGE_ASR="coze-stream", VOICEBRIDGE_LANGUAGE="en").speech.language == "en"


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({}, "COZE_API_TOKEN"),
        ({"VOICEBRIDGE_ASR": "coze"}, "COZE_API_TOKEN"),
        ({"COZE_API_TOKEN": TOKEN, "VOICEBRIDGE_ASR": "whisper"}, "VOICEBRIDGE_ASR"),
        ({"COZE_API_TOKEN": TOKEN, "VOICEBRIDGE_TTS": "coze,elevenlabs"}, "VOICEBRIDGE_TTS"),
        ({"COZE_API_TOKEN": TOKEN, "COZE_API_BASE": "api.coze.cn"}, "COZE_API_BASE"),
        ({"COZE_API_TOKEN": TOKEN, "COZE_WS_BASE": "https://ws.coze.cn"}, "COZE_WS_BASE"),
        ({"COZE_API_TOKEN": TOKEN, "VOICEBRIDGE_LANGUAGE": "klingon"}, "VOICEBRIDGE_LANGUAGE"),
        ({"COZE_API_TOKEN": TOKEN, "COZE_STREAM_INPUT": "wav"}, "COZE_STREAM_INPUT"),
        ({"COZE_API_TOKEN": TOKEN, "VOICEBRIDGE_LOG_LEVEL": "loud"}, "VOICEBRIDGE_LOG_LEVEL"),
        ({"COZE_API_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_URL": "http://bot.example.org/hook"}, "TELEGRAM_WEBHOOK_URL"),
        ({"COZE_API_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": "has spaces"}, "TELEGRAM_WEBHOOK_SECRET"),
        ({"COZE_API_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_PORT": "99999"}, "TELEGRAM_WEBHOOK_PORT"),
        ({"COZE_API_TOKEN": TOKEN, "VOICEBRIDGE_METRICS_PORT": "http"}, "VOICEBRIDGE_METRICS_PORT"),
        ({"COZE_API_TOKEN": TOKEN, "VOICEBRIDGE_LOG_FORMAT": "xml"}, "VOICEBRIDGE_LOG_FORMAT"),
        ({"COZE_API_TOKEN": TOKEN, "VOICEBRIDGE_DAILY_MINUTES": "-5"}, "VOICEBRIDGE_DAILY_MINUTES"),
        ({"COZE_API_TOKEN": TOKEN, "VOICEBRIDGE_SHUTDOWN_GRACE": "forever"}, "VOICEBRIDGE_SHUTDOWN_GRACE"),
        ({"COZE_API_TOKEN": TOKEN, "DISCORD_API_BASE": "discord.com"}, "DISCORD_API_BASE"),
    ],
)
def test_misconfiguration_names_the_variable(values: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        RunnerSettings.from_values(values)
    assert named in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        settings(VOICEBRIDGE_ASR="nope", COZE_WS_BASE="ftp://x", VOICEBRIDGE_LANGUAGE="xx")
    message = str(caught.value)
    for variable in ("VOICEBRIDGE_ASR", "COZE_WS_BASE", "VOICEBRIDGE_LANGUAGE"):
        assert variable in message


def test_dotenv_parsing() -> None:
    text = """
# comment
export COZE_API_TOKEN="pat_quoted # not a comment"
COZE_VOICE_ID=7426720361733144585   # trailing comment
VOICEBRIDGE_LANGUAGE='zh'
EMPTY=
"""
    assert parse_dotenv(text) == {
        "COZE_API_TOKEN": "pat_quoted # not a comment",
        "COZE_VOICE_ID": "7426720361733144585",
        "VOICEBRIDGE_LANGUAGE": "zh",
        "EMPTY": "",
    }
    with pytest.raises(ConfigError, match="line 2"):
        parse_dotenv("A=1\nthis line is wrong\n")


def test_precedence_environment_over_toml_over_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("COZE_API_TOKEN=from_dotenv\nCOZE_VOICE_ID=dotenv_voice\nVOICEBRIDGE_LANGUAGE=zh\n")
    toml = tmp_path / "voicebridge.toml"
    toml.write_text('COZE_VOICE_ID = "toml_voice"\nVOICEBRIDGE_LANGUAGE = "en"\nVOICEBRIDGE_ASR = ["coze-stream", "coze"]\n')
    values = load_values(toml, environ={"VOICEBRIDGE_LANGUAGE": "auto"})
    assert values["COZE_API_TOKEN"] == "from_dotenv"
    assert values["COZE_VOICE_ID"] == "toml_voice"
    assert values["VOICEBRIDGE_LANGUAGE"] == "auto"
    assert RunnerSettings.from_values(values).speech.asr_chain == ("coze-stream", "coze")


def test_bad_toml_is_a_config_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("COZE_API_TOKEN = \n")
    with pytest.raises(ConfigError, match="--config"):
        load_values(broken, environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_values(tmp_path / "missing.toml", environ={})


def test_an_unreadable_dotenv_is_a_config_error(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_bytes(b"COZE_API_TOKEN=\xff\xfe broken")
    with pytest.raises(ConfigError, match="cannot read"):
        load_values(None, environ={}, dotenv=dotenv)


def test_the_plugin_settings_are_read_and_each_bad_value_is_named() -> None:
    plugin = settings(COZE_API_TOKEN=TOKEN, VOICEBRIDGE_REPLY="both", VOICEBRIDGE_ALLOWED_CHATS=" -100123, 42 ,").plugin
    assert (plugin.reply_mode.value, plugin.allowed_chats) == ("both", frozenset({"-100123", "42"}))
    assert settings(COZE_API_TOKEN=TOKEN).plugin.reply_mode.value == "text"
    with pytest.raises(ConfigError) as raised:
        settings(COZE_API_TOKEN=TOKEN, VOICEBRIDGE_REPLY="loud", VOICEBRIDGE_ALLOWED_CHATS="42,@group")
    message = str(raised.value)
    assert "VOICEBRIDGE_REPLY" in message and "loud" in message
    assert "VOICEBRIDGE_ALLOWED_CHATS" in message and "must be comma-separated numeric chat ids" in message
    assert "@group" in message


def test_a_chats_stored_choices_override_the_defaults() -> None:
    plugin = settings(COZE_API_TOKEN=TOKEN, COZE_VOICE_ID="7426720361733046281").plugin
    defaults = ChatSettings.defaults(plugin)
    assert defaults.voice_id == plugin.voice_id == "7426720361733046281"
    assert defaults.with_stored({"auto_transcribe": "on"}, LANGUAGE_CODES).auto_transcribe is True
    assert defaults.with_stored({"auto_transcribe": "off"}, LANGUAGE_CODES).auto_transcribe is False
    # A stored value no code knows is shown back as it was stored.
    assert defaults.with_stored({"language": "klingon"}, LANGUAGE_CODES).unavailable_language == "klingon"
    assert parse_hot_words("扣子、voicebridge，扣子, bot") == ("扣子", "voicebridge", "bot")


def test_the_coze_agent_responder_needs_a_numeric_bot_id() -> None:
    plugin = settings(COZE_API_TOKEN=TOKEN, VOICEBRIDGE_RESPONDER="coze-agent", COZE_BOT_ID=" 7391234567 ").plugin
    assert (plugin.responder, plugin.coze_bot_id) == ("coze-agent", "7391234567")
    assert (settings(COZE_API_TOKEN=TOKEN).plugin.responder, settings(COZE_API_TOKEN=TOKEN).plugin.coze_bot_id) == ("none", None)
    for values, expected in (({"COZE_BOT_ID": "bot/abc"}, ["COZE_BOT_ID", "must be the numeric id of a Coze agent", "bot/abc"]),
                             ({"VOICEBRIDGE_RESPONDER": "coze-agent"}, ["COZE_BOT_ID is not set"]),
                             ({"VOICEBRIDGE_RESPONDER": "gpt"}, ["VOICEBRIDGE_RESPONDER", "gpt"])):
        with pytest.raises(ConfigError) as raised:
            settings(COZE_API_TOKEN=TOKEN, **values)
        assert all(part in str(raised.value) for part in expected), str(raised.value)


def plugin_settings(**values: str) -> tuple[PluginSettings, list[str]]:
    problems: list[str] = []
    return PluginSettings.from_values(values, problems), problems


def test_the_plugin_settings_default_to_the_documented_values() -> None:
    plugin, problems = plugin_settings()
    assert problems == []
    assert plugin == PluginSettings(
        reply_mode=ReplyMode.TEXT, max_duration_seconds=1800, allowed_chats=frozenset(), database="voicebridge.db",
        retention_hours=168.0, language="auto", voice_id=None, daily_minutes=None, daily_minutes_per_user=None,
        shutdown_grace_seconds=30.0, responder_timeout_seconds=60.0, delivery_deadline_seconds=600.0,
        daily_tts_characters=None, speak_in_groups="admins", responder="none", coze_bot_id=None, buttons=True)


def test_every_plugin_variable_is_read_into_its_own_setting() -> None:
    plugin, problems = plugin_settings(
        VOICEBRIDGE_REPLY="Voice", VOICEBRIDGE_MAX_DURATION="90.7", VOICEBRIDGE_ALLOWED_CHATS="-100123,,7",
        VOICEBRIDGE_DB=" postgresql://vb@db/vb ", VOICEBRIDGE_RETENTION_HOURS="12", VOICEBRIDGE_LANGUAGE="ja",
        COZE_VOICE_ID=" 7426720361733046281 ", VOICEBRIDGE_DAILY_MINUTES="30", VOICEBRIDGE_DAILY_MINUTES_PER_USER="5",
        VOICEBRIDGE_SHUTDOWN_GRACE="7", VOICEBRIDGE_RESPONDER_TIMEOUT="20", VOICEBRIDGE_DELIVERY_DEADLINE="120",
        VOICEBRIDGE_DAILY_TTS_CHARACTERS="5000.9", VOICEBRIDGE_SPEAK_IN_GROUPS="everyone",
        VOICEBRIDGE_RESPONDER="coze-agent", COZE_BOT_ID="7391234567", VOICEBRIDGE_BUTTONS="off")
    assert problems == []
    assert plugin == PluginSettings(
        reply_mode=ReplyMode.VOICE, max_duration_seconds=90, allowed_chats=frozenset({"-100123", "7"}),
        database="postgresql://vb@db/vb", retention_hours=12.0, language="ja", voice_id="7426720361733046281",
        daily_minutes=30.0, daily_minutes_per_user=5.0, shutdown_grace_seconds=7.0, responder_timeout_seconds=20.0,
        delivery_deadline_seconds=120.0, daily_tts_characters=5000, speak_in_groups="everyone", responder="coze-agent",
        coze_bot_id="7391234567", buttons=False)
    assert plugin_settings(VOICEBRIDGE_BUTTONS="on")[0].buttons is True
    assert plugin_settings(VOICEBRIDGE_DB="  ")[0].database == "voicebridge.db"  # blank: the default file
    assert plugin_settings(VOICEBRIDGE_LANGUAGE="klingon")[0].language == "auto"  # no such code: detected


# Each numeric variable: its lowest and highest accepted value, and the first refused beyond each.
NUMERIC_BOUNDS = (
    ("VOICEBRIDGE_MAX_DURATION", "max_duration_seconds", 1, 24 * 3600),
    ("VOICEBRIDGE_RETENTION_HOURS", "retention_hours", 0, 24 * 365 * 10),
    ("VOICEBRIDGE_DAILY_MINUTES", "daily_minutes", 0, 24 * 60),
    ("VOICEBRIDGE_DAILY_MINUTES_PER_USER", "daily_minutes_per_user", 0, 24 * 60),
    ("VOICEBRIDGE_SHUTDOWN_GRACE", "shutdown_grace_seconds", 0, 3600),
    ("VOICEBRIDGE_RESPONDER_TIMEOUT", "responder_timeout_seconds", 0.1, 3600),
    ("VOICEBRIDGE_DELIVERY_DEADLINE", "delivery_deadline_seconds", 1, 24 * 3600),
    ("VOICEBRIDGE_DAILY_TTS_CHARACTERS", "daily_tts_characters", 0, 10**8),
)


@pytest.mark.parametrize(("variable", "field", "low", "high"), NUMERIC_BOUNDS, ids=[row[0] for row in NUMERIC_BOUNDS])
def test_each_plugin_number_keeps_to_its_range(variable: str, field: str, low: float, high: float) -> None:
    for accepted in (low, high):
        plugin, problems = plugin_settings(**{variable: str(accepted)})
        assert problems == [] and getattr(plugin, field) == accepted
    for refused in (low - 0.05, high + 1):
        plugin, problems = plugin_settings(**{variable: str(refused)})
        assert len(problems) == 1 and problems[0].startswith(f"{variable} must be a number from {low:g} to {high:g}")
        assert getattr(plugin, field) == getattr(PluginSettings(), field)  # refused: the default stands


def test_chat_ids_may_be_negative_but_only_numeric() -> None:
    assert plugin_settings(VOICEBRIDGE_ALLOWED_CHATS=" -1001 ")[1] == []
    for bad in ("12a", "--5", "1-2"):
        assert plugin_settings(VOICEBRIDGE_ALLOWED_CHATS=bad)[1] == [
            f"VOICEBRIDGE_ALLOWED_CHATS must be comma-separated numeric chat ids (got {bad!r})"]


def test_a_coze_agent_responder_needs_coze_credentials() -> None:
    agent = PluginSettings(responder="coze-agent", coze_bot_id="1")
    with_token = settings(COZE_API_TOKEN=TOKEN).speech
    without = replace(with_token, coze_api_token=None)
    assert responder_problems(agent, with_token) == []
    assert responder_problems(PluginSettings(), without) == []  # the plugin's own answers need none
    assert responder_problems(agent, without) == [
        "COZE_API_TOKEN is not set (nor a Coze JWT app: COZE_JWT_CLIENT_ID, …); VOICEBRIDGE_RESPONDER=coze-agent "
        "talks to the Coze agent with it"]


def test_reply_modes_say_what_they_send() -> None:
    assert [(mode.has_text, mode.has_voice) for mode in ReplyMode] == [(True, False), (False, True), (True, True)]


def test_stored_choices_apply_one_by_one_and_unknown_ones_are_ignored() -> None:
    plugin = PluginSettings(reply_mode=ReplyMode.VOICE, language="ja", voice_id="v1")
    assert ChatSettings.defaults(plugin) == ChatSettings(reply_mode=ReplyMode.VOICE, language="ja", voice_id="v1")
    defaults = ChatSettings(reply_mode=ReplyMode.TEXT, language="auto", voice_id="default-voice")
    assert defaults.with_stored({}, LANGUAGE_CODES) == defaults
    chosen = defaults.with_stored({"reply_mode": "both", "language": "cant", "voice_id": "v2", "hot_words": "a, b"},
                                  LANGUAGE_CODES)
    assert chosen == ChatSettings(reply_mode=ReplyMode.BOTH, language="yue", voice_id="v2", hot_words=("a", "b"))
    # A mode no version wrote, and an empty voice, leave the defaults.
    assert defaults.with_stored({"reply_mode": "loud", "voice_id": ""}, LANGUAGE_CODES) == defaults
    # A language the service no longer recognises: the default stays, and is named as unavailable.
    unavailable = defaults.with_stored({"language": "ja"}, {"auto", "en", "zh"})
    assert (unavailable.language, unavailable.unavailable_language) == ("auto", "ja")
    assert defaults.with_stored({"language": "ja"}, LANGUAGE_CODES).unavailable_language is None


def test_the_responder_problems_say_what_to_set() -> None:
    assert plugin_settings(COZE_BOT_ID="bot/abc")[1] == [
        "COZE_BOT_ID must be the numeric id of a Coze agent (the digits after /bot/ in its address on coze.cn or "
        "coze.com) (got 'bot/abc')"]
    assert plugin_settings(VOICEBRIDGE_RESPONDER="coze-agent")[1] == [
        "COZE_BOT_ID is not set; VOICEBRIDGE_RESPONDER=coze-agent needs the id of a Coze agent published to the API "
        "channel"]


@pytest.mark.parametrize(("variable", "choices"), [
    ("VOICEBRIDGE_REPLY", "text, voice, both"), ("VOICEBRIDGE_SPEAK_IN_GROUPS", "admins, everyone, off"),
    ("VOICEBRIDGE_RESPONDER", "none, coze-agent"), ("VOICEBRIDGE_BUTTONS", "on, off")])
def test_a_choice_outside_its_list_is_one_problem_naming_the_choices(variable: str, choices: str) -> None:
    plugin, problems = plugin_settings(**{variable: "sometimes"})
    assert problems == [f"{variable} must be one of {choices} (got 'sometimes')"]
    assert plugin == PluginSettings()  # the default stands
