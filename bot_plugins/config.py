"""Configuration sources: the environment, a ``.env`` file and an optional TOML file.

Precedence, highest first: process environment, the TOML file given with ``--config``, ``.env``
in the working directory. Every later component receives the validated :class:`Settings`;
nothing else reads ``os.environ``.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from .speech.config import SpeechSettings, problem
from .speech.errors import ConfigError
from .voice_notes.settings import PluginSettings

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def parse_dotenv(text: str) -> dict[str, str]:
    """``KEY=value`` lines; ``export`` prefixes, comments, and single/double quotes are understood."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        key, separator, value = line.partition("=")
        key = key.strip()
        if not separator or not key.isidentifier():
            raise ConfigError(f".env line {number}: expected KEY=value, got {raw.strip()[:40]!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


def _toml_values(path: Path) -> dict[str, str]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--config: file not found: {path}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"--config: cannot read {path}: {error}") from None
    values: dict[str, str] = {}
    for key, value in document.items():
        if isinstance(value, dict):
            raise ConfigError(f"--config {path}: tables are not used; write {key} keys as top-level NAME = value")
        if isinstance(value, bool):
            values[key] = "true" if value else "false"
        elif isinstance(value, list):
            values[key] = ",".join(str(item) for item in value)
        else:
            values[key] = str(value)
    return values


def load_values(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    dotenv: Path | None = Path(".env"),
) -> dict[str, str]:
    """Merge the three sources into one mapping of variable name to string value."""
    values: dict[str, str] = {}
    if dotenv is not None and dotenv.is_file():
        values.update(parse_dotenv(dotenv.read_text(encoding="utf-8")))
    if config_file is not None:
        values.update(_toml_values(config_file))
    values.update(os.environ if environ is None else environ)
    return values


@dataclass(frozen=True)
class TelegramSettings:
    token: str | None = None
    base_url: str | None = None  # a local Bot API server, e.g. http://localhost:8081/bot
    base_file_url: str | None = None

    @classmethod
    def from_values(cls, values: Mapping[str, str], problems: list[str]) -> TelegramSettings:
        urls = {}
        for variable in ("TELEGRAM_BASE_URL", "TELEGRAM_BASE_FILE_URL"):
            url = (values.get(variable) or "").strip() or None
            if url is not None and urlsplit(url).scheme not in ("http", "https"):
                problems.append(problem(variable, "must be an http(s) URL such as http://localhost:8081/bot", url))
            urls[variable] = url
        return cls(
            token=(values.get("TELEGRAM_BOT_TOKEN") or "").strip() or None,
            base_url=urls["TELEGRAM_BASE_URL"],
            base_file_url=urls["TELEGRAM_BASE_FILE_URL"],
        )


@dataclass(frozen=True)
class DiscordSettings:
    token: str | None = None
    api_base: str = "https://discord.com/api/v10"

    @classmethod
    def from_values(cls, values: Mapping[str, str], problems: list[str]) -> DiscordSettings:
        api_base = (values.get("DISCORD_API_BASE") or "").strip().rstrip("/") or cls.api_base
        if urlsplit(api_base).scheme not in ("http", "https"):
            problems.append(problem("DISCORD_API_BASE", "must be an http(s) URL such as https://discord.com/api/v10", api_base))
        return cls(token=(values.get("DISCORD_BOT_TOKEN") or "").strip() or None, api_base=api_base)


@dataclass(frozen=True)
class Settings:
    speech: SpeechSettings
    plugin: PluginSettings
    telegram: TelegramSettings
    discord: DiscordSettings
    log_level: str | None = None  # None: each command picks its default (the bot INFO, tools WARNING)
    shutdown_grace_seconds: float = 30.0

    @classmethod
    def from_values(cls, values: Mapping[str, str]) -> Settings:
        """Validate everything and report every problem at once, each naming its variable."""
        problems: list[str] = []
        log_level = (values.get("VOICEBRIDGE_LOG_LEVEL") or "").strip().upper() or None
        if log_level is not None and log_level not in LOG_LEVELS:
            problems.append(problem("VOICEBRIDGE_LOG_LEVEL", f"must be one of {', '.join(LOG_LEVELS)}", log_level))
        speech = SpeechSettings.from_values(values, problems)
        plugin = PluginSettings.from_values(values, problems)
        telegram = TelegramSettings.from_values(values, problems)
        discord = DiscordSettings.from_values(values, problems)
        grace = (values.get("VOICEBRIDGE_SHUTDOWN_GRACE") or "30").strip()
        try:
            shutdown_grace = float(grace)
        except ValueError:
            shutdown_grace = -1.0
        if not 0 <= shutdown_grace <= 3600:
            problems.append(problem("VOICEBRIDGE_SHUTDOWN_GRACE", "must be a number of seconds from 0 to 3600", grace))
        if problems:
            raise ConfigError("; ".join(problems))
        return cls(speech=speech, plugin=plugin, telegram=telegram, discord=discord, log_level=log_level,
                   shutdown_grace_seconds=shutdown_grace)

    @classmethod
    def load(cls, config_file: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
        return cls.from_values(load_values(config_file, environ))

    def secrets(self) -> list[str]:
        """Every secret value, for log redaction."""
        tokens = [token for token in (self.telegram.token, self.discord.token) if token]
        return [*self.speech.secrets(), *tokens]


def configure_logging(level: str, secrets: list[str]) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redactor = SecretRedactor(secrets)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redactor)
    # httpx logs every request URL at INFO; keep that out of normal logs.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(level)))


class SecretRedactor(logging.Filter):
    """Replaces secret values in every log record with a placeholder."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        # URL-quoted forms too: a Telegram file URL carries the token with ":" as "%3A".
        forms = {form for secret in secrets if len(secret) >= 6 for form in (secret, quote(secret, safe=""))}
        # Longest first, so a secret containing another is replaced whole.
        self.secrets = sorted(forms, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[REDACTED]")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = self.redact(record.getMessage())
            record.args = None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        return True
