"""Configuration sources: the environment, a ``.env`` file and an optional TOML file.

Precedence, highest first: process environment, the TOML file given with ``--config``, ``.env``
in the working directory. Every later component receives the validated :class:`Settings`;
nothing else reads ``os.environ``.
"""

from __future__ import annotations

import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .speech.config import SpeechSettings, choice, number, problem
from .speech.errors import ConfigError
from .voice_notes.settings import PluginSettings, responder_problems

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def parse_dotenv(text: str) -> dict[str, str]:
    """``KEY=value`` lines; ``export`` prefixes, comments, and single/double quotes are understood."""
    values: dict[str, str] = {}
    for line_number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        key, separator, value = line.partition("=")
        key = key.strip()
        if not separator or not key.isidentifier():
            raise ConfigError(f".env line {line_number}: expected KEY=value, got {raw.strip()[:40]!r}")
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
        try:
            values.update(parse_dotenv(dotenv.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"cannot read {dotenv}: {error}") from None
    if config_file is not None:
        values.update(_toml_values(config_file))
    values.update(os.environ if environ is None else environ)
    return values


@dataclass(frozen=True)
class TelegramSettings:
    token: str | None = None
    base_url: str | None = None  # a local Bot API server, e.g. http://localhost:8081/bot
    base_file_url: str | None = None
    webhook_url: str | None = None  # set: Telegram posts updates here instead of long polling
    webhook_listen: str = "0.0.0.0"
    webhook_port: int = 8443
    webhook_secret: str | None = None  # with a webhook URL and none configured: a random one per start

    @classmethod
    def from_values(cls, values: Mapping[str, str], problems: list[str]) -> TelegramSettings:
        urls = {}
        for variable in ("TELEGRAM_BASE_URL", "TELEGRAM_BASE_FILE_URL", "TELEGRAM_WEBHOOK_URL"):
            url = (values.get(variable) or "").strip() or None
            # Telegram only delivers webhooks over HTTPS (TLS may end at a reverse proxy).
            schemes = ("https",) if variable == "TELEGRAM_WEBHOOK_URL" else ("http", "https")
            if url is not None and urlsplit(url).scheme not in schemes:
                problems.append(problem(variable, f"must be an {' or '.join(schemes)} URL", url))
            urls[variable] = url
        secret = (values.get("TELEGRAM_WEBHOOK_SECRET") or "").strip() or None
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
            problems.append("TELEGRAM_WEBHOOK_SECRET must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
        if secret is None and urls["TELEGRAM_WEBHOOK_URL"]:
            # Made here, not at start: a secret in the settings is redacted from logs like the others.
            secret = secrets.token_urlsafe(32)
        return cls(
            token=(values.get("TELEGRAM_BOT_TOKEN") or "").strip() or None,
            base_url=urls["TELEGRAM_BASE_URL"],
            base_file_url=urls["TELEGRAM_BASE_FILE_URL"],
            webhook_url=urls["TELEGRAM_WEBHOOK_URL"],
            webhook_listen=(values.get("TELEGRAM_WEBHOOK_LISTEN") or "0.0.0.0").strip(),
            webhook_port=int(number(values, "TELEGRAM_WEBHOOK_PORT", 8443, 1, 65535, problems)),
            webhook_secret=secret,
        )


@dataclass(frozen=True)
class DiscordSettings:
    token: str | None = None
    api_base: str = "https://discord.com/api/v10"
    shard_count: int | None = None  # None: as many as Discord recommends (GET /gateway/bot)
    shard_ids: tuple[int, ...] | None = None  # the shards this process runs; None: all of them

    @classmethod
    def from_values(cls, values: Mapping[str, str], problems: list[str]) -> DiscordSettings:
        api_base = (values.get("DISCORD_API_BASE") or "").strip().rstrip("/") or cls.api_base
        if urlsplit(api_base).scheme not in ("http", "https"):
            problems.append(problem("DISCORD_API_BASE", "must be an http(s) URL such as https://discord.com/api/v10", api_base))
        count = number(values, "DISCORD_SHARD_COUNT", None, 1, 100_000, problems)
        shard_count = int(count) if count is not None else None
        raw_ids = (values.get("DISCORD_SHARD_IDS") or "").strip()
        shard_ids: tuple[int, ...] | None = None
        if raw_ids:
            parts = [part.strip() for part in raw_ids.split(",") if part.strip()]
            if not all(part.isdigit() for part in parts):
                problems.append(problem("DISCORD_SHARD_IDS", "must be comma-separated shard numbers such as 0,1", raw_ids))
            elif shard_count is None:
                problems.append("DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT (the total number of shards of the bot)")
            elif any(int(part) >= shard_count for part in parts):
                problems.append(problem("DISCORD_SHARD_IDS", f"must be numbers below DISCORD_SHARD_COUNT ({shard_count})", raw_ids))
            else:
                shard_ids = tuple(dict.fromkeys(int(part) for part in parts))
        return cls(token=(values.get("DISCORD_BOT_TOKEN") or "").strip() or None, api_base=api_base,
                   shard_count=shard_count, shard_ids=shard_ids)


@dataclass(frozen=True)
class Settings:
    """What the plugin reads, in a host bot and in ``voicebridge run``: the speech and plugin
    variables only, so a host's own variables (its webhook port, say) never stop it loading."""

    speech: SpeechSettings
    plugin: PluginSettings

    @classmethod
    def from_values(cls, values: Mapping[str, str]) -> Settings:
        """Validate everything and report every problem at once, each naming its variable."""
        problems: list[str] = []
        settings = cls(speech=SpeechSettings.from_values(values, problems), plugin=PluginSettings.from_values(values, problems))
        problems += responder_problems(settings.plugin, settings.speech)
        if problems:
            raise ConfigError("; ".join(problems))
        return settings

    @classmethod
    def load(cls, config_file: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
        """From the environment, ``config_file`` (TOML) and ``.env`` in the working directory."""
        return cls.from_values(load_values(config_file, environ))

    def secrets(self) -> list[str]:
        """Every secret value, for log redaction."""
        return self.speech.secrets()


@dataclass(frozen=True)
class RunnerSettings(Settings):
    """``voicebridge run`` and the tools: the plugin's settings plus the chat platforms, logs and
    the status server."""

    telegram: TelegramSettings = TelegramSettings()
    discord: DiscordSettings = DiscordSettings()
    log_level: str | None = None  # None: each command picks its default (the bot INFO, tools WARNING)
    log_format: str = "text"  # or "json"
    metrics_port: int | None = None  # None: no health / metrics endpoint
    liveness_timeout: float = 60.0  # seconds a chat connection may be down before the runner gives up
    job_lease_seconds: float = 30.0  # voicebridge worker: a job of a worker that died is taken over after this

    @classmethod
    def from_values(cls, values: Mapping[str, str]) -> RunnerSettings:
        settings, problems = cls.validated(values)
        if settings is None:
            raise ConfigError("; ".join(problems))
        return settings

    @classmethod
    def validated(cls, values: Mapping[str, str]) -> tuple[RunnerSettings | None, list[str]]:
        """The settings, or None and every problem found, one sentence each (start-up checks
        list them together with their own)."""
        problems: list[str] = []
        log_level = (values.get("VOICEBRIDGE_LOG_LEVEL") or "").strip().upper() or None
        if log_level is not None and log_level not in LOG_LEVELS:
            problems.append(problem("VOICEBRIDGE_LOG_LEVEL", f"must be one of {', '.join(LOG_LEVELS)}", log_level))
        speech = SpeechSettings.from_values(values, problems)
        plugin = PluginSettings.from_values(values, problems)
        problems += responder_problems(plugin, speech)
        telegram = TelegramSettings.from_values(values, problems)
        discord = DiscordSettings.from_values(values, problems)
        log_format = choice(values, "VOICEBRIDGE_LOG_FORMAT", ("text", "json"), problems)
        metrics_port = number(values, "VOICEBRIDGE_METRICS_PORT", None, 1, 65535, problems)
        liveness_timeout = number(values, "VOICEBRIDGE_LIVENESS_TIMEOUT", 60.0, 1, 3600, problems)
        job_lease = number(values, "VOICEBRIDGE_JOB_LEASE", 30.0, 2, 3600, problems)
        if problems:
            return None, problems
        return cls(speech=speech, plugin=plugin, telegram=telegram, discord=discord, log_level=log_level,
                   log_format=log_format, metrics_port=int(metrics_port) if metrics_port is not None else None,
                   liveness_timeout=liveness_timeout, job_lease_seconds=job_lease), []

    @classmethod
    def load(cls, config_file: Path | None = None, environ: Mapping[str, str] | None = None) -> RunnerSettings:
        return cls.from_values(load_values(config_file, environ))

    def secrets(self) -> list[str]:
        tokens = [token for token in (self.telegram.token, self.discord.token, self.telegram.webhook_secret) if token]
        return [*super().secrets(), *tokens]
