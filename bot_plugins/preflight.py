"""What ``voicebridge run`` needs before it may say it is running, checked by ``run`` and ``doctor``.

Every problem is one sentence that names what to fix: a variable, or ffmpeg. ``run`` refuses to
start on any of them; ``doctor`` prints them, and with ``--network`` also asks every configured
service whether it takes its credentials.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from .config import DiscordSettings, RunnerSettings, TelegramSettings
from .speech.audio import find_ffmpeg
from .speech.decoders import child_environment
from .speech.errors import SpeechError
from .speech.health import CREDENTIAL_KINDS
from .speech.service import SpeechService
from .postgres import display_url
from .voice_notes.store import StoreError, is_postgres_url, open_store

# Every example value in .env.example contains this: a value still holding it was never filled in.
PLACEHOLDER_MARK = "replace-with-your"
CONFIGURATION_PREFIXES = ("COZE_", "FEISHU_", "TELEGRAM_", "DISCORD_", "VOICEBRIDGE_")
TELEGRAM_API_BASE = "https://api.telegram.org/bot"
NETWORK_TIMEOUT = 15.0
# The variable naming where each speech provider's check went.
PROVIDER_BASE_VARIABLES = {"coze": "COZE_API_BASE", "coze-stream": "COZE_WS_BASE", "feishu": "FEISHU_BASE_URL"}


@dataclass(frozen=True)
class Ffmpeg:
    path: str | None
    version: str | None = None
    has_opus: bool = False
    problem: str | None = None


def ffmpeg_status() -> Ffmpeg:
    ffmpeg = find_ffmpeg()
    if ffmpeg is None:
        return Ffmpeg(None, problem="ffmpeg is not installed or not on PATH: voice notes cannot be decoded "
                                    "(Debian/Ubuntu: apt-get install ffmpeg)")
    try:
        # A child process never inherits the bot's tokens (child_environment).
        version = subprocess.run([ffmpeg, "-hide_banner", "-version"], capture_output=True, text=True, timeout=10,
                                 env=child_environment()).stdout
        encoders = subprocess.run([ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=10,
                                  env=child_environment()).stdout
    except (OSError, subprocess.TimeoutExpired) as error:
        return Ffmpeg(ffmpeg, problem=f"ffmpeg ({ffmpeg}) does not run: {error}")
    match = re.search(r"ffmpeg version (\S+)", version)
    return Ffmpeg(ffmpeg, match.group(1) if match else None, re.search(r"\blibopus\b", encoders) is not None)


def placeholders(values: Mapping[str, str]) -> list[str]:
    return [f"{name} still holds the example value from .env.example; put your own in"
            for name, value in sorted(values.items())
            if name.startswith(CONFIGURATION_PREFIXES) and PLACEHOLDER_MARK in value.lower()]


async def store_problem(settings: RunnerSettings) -> str | None:
    """Open the store (SQLite or PostgreSQL) and write to it, as the bot will."""
    database = settings.plugin.database
    shown = display_url(database) if is_postgres_url(database) else database  # never a password
    store = open_store(database)
    try:
        await store.set_marker("voicebridge.started", str(int(time.time())))
    except (StoreError, OSError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        return f"VOICEBRIDGE_DB: the store {shown} cannot be opened for writing: {reason}"
    finally:
        await store.aclose()
    return None


async def startup_problems(values: Mapping[str, str]) -> tuple[RunnerSettings | None, list[str]]:
    """The settings (None when they do not validate) and every reason ``run`` would not work."""
    settings, problems = RunnerSettings.validated(values)
    problems = [*placeholders(values), *problems]
    if not any((values.get(name) or "").strip() for name in ("TELEGRAM_BOT_TOKEN", "DISCORD_BOT_TOKEN")):
        problems.append("no chat platform configured: set TELEGRAM_BOT_TOKEN and/or DISCORD_BOT_TOKEN")
    ffmpeg = ffmpeg_status()
    if ffmpeg.problem:
        problems.append(ffmpeg.problem)
    if settings is None:
        return None, problems
    if ffmpeg.path and not ffmpeg.problem and not ffmpeg.has_opus and settings.speech.tts_chain:
        problems.append(f"ffmpeg ({ffmpeg.path}) has no libopus encoder, so voice replies cannot be made: install a full "
                        "ffmpeg build, or leave VOICEBRIDGE_TTS empty")
    if (store := await store_problem(settings)) is not None:
        problems.append(store)
    return settings, problems


def startup_report(problems: list[str]) -> str:
    """What ``run`` prints before it exits: one line for one problem, a list for several."""
    hint = "every variable is explained in .env.example"
    if len(problems) == 1:
        return f"voicebridge: cannot start: {problems[0]} ({hint})"
    return "\n".join([f"voicebridge: cannot start, {len(problems)} problems ({hint}):", *(f"  - {p}" for p in problems)])


# ----------------------------------------------------------------------------- network (doctor --network)


@dataclass(frozen=True)
class NetworkCheck:
    name: str
    problem: str | None  # None: it works
    detail: str = ""  # shown when it works (the bot's name, say)


def _json(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


def _not_the_api(variable: str, shown_url: str, response: httpx.Response) -> str:
    page = " with an HTML page" if "html" in response.headers.get("content-type", "") else ""
    return f"{variable}: {shown_url} answered HTTP {response.status_code}{page}; that is not the API it should be"


async def check_telegram(settings: TelegramSettings) -> NetworkCheck:
    base = settings.base_url or TELEGRAM_API_BASE
    shown = f"{base}<TELEGRAM_BOT_TOKEN>/getMe"  # the token is in the URL: never shown
    async with httpx.AsyncClient(timeout=NETWORK_TIMEOUT) as client:
        try:
            response = await client.get(f"{base}{settings.token}/getMe")
        except (httpx.HTTPError, httpx.InvalidURL) as error:  # never the message: it holds the URL, token and all
            return NetworkCheck("Telegram", f"TELEGRAM_BASE_URL: cannot reach {shown} ({type(error).__name__})")
    body = _json(response)
    if response.status_code == 200 and isinstance(body, dict) and isinstance(body.get("result"), dict):
        return NetworkCheck("Telegram", None, f"@{body['result'].get('username')}")
    if response.status_code in (401, 404) and isinstance(body, dict) and body.get("ok") is False:
        return NetworkCheck("Telegram", f"TELEGRAM_BOT_TOKEN: Telegram refused it ({body.get('description')}); "
                                        "check it with @BotFather")
    return NetworkCheck("Telegram", _not_the_api("TELEGRAM_BASE_URL", shown, response))


async def check_discord(settings: DiscordSettings) -> NetworkCheck:
    url = f"{settings.api_base}/users/@me"
    async with httpx.AsyncClient(timeout=NETWORK_TIMEOUT) as client:
        try:
            response = await client.get(url, headers={"Authorization": f"Bot {settings.token}"})
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            return NetworkCheck("Discord", f"DISCORD_API_BASE: cannot reach {url} ({type(error).__name__})")
    body = _json(response)
    if response.status_code == 200 and isinstance(body, dict) and body.get("id"):
        return NetworkCheck("Discord", None, str(body.get("username")))
    if response.status_code == 401 and isinstance(body, dict):
        return NetworkCheck("Discord", "DISCORD_BOT_TOKEN: Discord refused it (401 Unauthorized); copy it again from "
                                       "the Developer Portal (Bot page)")
    return NetworkCheck("Discord", _not_the_api("DISCORD_API_BASE", url, response))


def describe_speech_problem(service: SpeechService, probe: str, error: SpeechError) -> str:
    """A failed speech check, naming the variable to fix: the credentials when they were refused,
    else the base URL the check went to."""
    provider = probe.split(" ", 1)[1]
    if error.kind in CREDENTIAL_KINDS:
        return service.credentials.describe(provider, error)
    return f"{PROVIDER_BASE_VARIABLES.get(provider, provider)}: {error}"


async def network_checks(settings: RunnerSettings) -> list[NetworkCheck]:
    checks: list[NetworkCheck] = []
    if settings.telegram.token:
        checks.append(await check_telegram(settings.telegram))
    if settings.discord.token:
        checks.append(await check_discord(settings.discord))
    service = SpeechService.from_settings(settings.speech)
    try:
        for probe, failure in (await service.check()).items():
            checks.append(NetworkCheck(probe, None if failure is None else describe_speech_problem(service, probe, failure)))
    finally:
        await service.aclose()
    return checks
