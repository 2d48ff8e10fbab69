"""Honest start-up: ``voicebridge run`` refuses to start, and ``voicebridge doctor`` fails, whenever
the bot could not work — each problem one line naming what to fix. Through the real CLI."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.coze import DEFAULT_TOKEN, FakeCoze
from tests.fakes.discord import FakeDiscord
from tests.fakes.telegram import FakeTelegram
from tests.test_cli import Run, voicebridge

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def services() -> AsyncIterator[tuple[FakeTelegram, FakeDiscord, FakeCoze]]:
    async with FakeTelegram() as telegram, FakeDiscord() as discord_api, FakeCoze() as coze:
        yield telegram, discord_api, coze


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def bot_env(services: tuple[FakeTelegram, FakeDiscord, FakeCoze], workdir: Path, **extra: str) -> dict[str, str]:
    telegram, discord_api, coze = services
    return {"TELEGRAM_BOT_TOKEN": telegram.token, "TELEGRAM_BASE_URL": telegram.api_base_url,
            "DISCORD_BOT_TOKEN": discord_api.token, "DISCORD_API_BASE": discord_api.api_base,
            "COZE_API_TOKEN": DEFAULT_TOKEN, "COZE_API_BASE": coze.base_url, "COZE_WS_BASE": coze.ws_base_url,
            "VOICEBRIDGE_DB": str(workdir / "bot.db"), **extra}


def not_a_folder(workdir: Path) -> str:
    (workdir / "a-file").write_text("")
    return str(workdir / "a-file" / "state" / "bot.db")  # its folder cannot be created, not even by root


def path_without_ffmpeg(workdir: Path) -> str:
    """A PATH with the tools the tests need but no ffmpeg."""
    bin_dir = workdir / "bin"
    bin_dir.mkdir()
    for tool in ("ffprobe",):
        if found := shutil.which(tool):
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


# ------------------------------------------------------------------------------------ run


async def run_refusal(env: dict[str, str], workdir: Path) -> Run:
    run = await voicebridge("run", env=env, cwd=workdir)
    assert run.status == 2 and run.stdout == ""
    return run


@pytest.mark.parametrize(
    ("change", "named"),
    [({"PATH": "no ffmpeg"}, "ffmpeg is not installed or not on PATH: voice notes cannot be decoded"),
     ({"VOICEBRIDGE_DB": "not a folder"}, "VOICEBRIDGE_DB: the store "),
     ({"TELEGRAM_BOT_TOKEN": "", "DISCORD_BOT_TOKEN": ""}, "no chat platform configured: set TELEGRAM_BOT_TOKEN and/or "
                                                            "DISCORD_BOT_TOKEN"),
     ({"COZE_API_TOKEN": "pat_replace-with-your-coze-token"}, "COZE_API_TOKEN still holds the example value from "
                                                                ".env.example")],
)
async def test_run_refuses_to_start_with_one_line_naming_the_problem(services: tuple[FakeTelegram, FakeDiscord, FakeCoze],
                                                                     workdir: Path, change: dict[str, str], named: str) -> None:
    env = bot_env(services, workdir, **change)
    if change.get("PATH"):
        env["PATH"] = path_without_ffmpeg(workdir)
    if change.get("VOICEBRIDGE_DB"):
        env["VOICEBRIDGE_DB"] = not_a_folder(workdir)
    run = await run_refusal(env, workdir)
    assert run.stderr.startswith(f"voicebridge: cannot start: {named}")
    assert run.stderr.rstrip().endswith("(every variable is explained in .env.example)")
    assert len(run.stderr.strip().splitlines()) == 1
    telegram, discord_api, coze = services
    assert telegram.calls == [] and discord_api.gateway_connections == [] and coze.rest_calls == []  # it never started


async def test_run_with_nothing_configured_lists_every_problem(workdir: Path) -> None:
    run = await run_refusal({"PATH": path_without_ffmpeg(workdir), "VOICEBRIDGE_DB": not_a_folder(workdir)}, workdir)
    lines = run.stderr.strip().splitlines()
    assert lines[0] == "voicebridge: cannot start, 3 problems (every variable is explained in .env.example):"
    assert lines[1].startswith("  - no speech recognition configured: set COZE_API_TOKEN")
    assert lines[2] == "  - no chat platform configured: set TELEGRAM_BOT_TOKEN and/or DISCORD_BOT_TOKEN"
    assert lines[3].startswith("  - ffmpeg is not installed")
    assert len(lines) == 4  # the store is checked once the configuration is valid


async def test_run_with_the_unedited_env_example_names_each_placeholder(workdir: Path) -> None:
    shutil.copy(ROOT / ".env.example", workdir / ".env")
    run = await run_refusal({"PATH": os.environ["PATH"], "VOICEBRIDGE_DB": str(workdir / "bot.db")}, workdir)
    lines = run.stderr.strip().splitlines()
    assert lines[0].startswith("voicebridge: cannot start, 2 problems")
    assert lines[1:] == ["  - COZE_API_TOKEN still holds the example value from .env.example; put your own in",
                         "  - TELEGRAM_BOT_TOKEN still holds the example value from .env.example; put your own in"]


def test_every_example_value_in_env_example_is_recognised_as_a_placeholder() -> None:
    from voicebridge.preflight import PLACEHOLDER_MARK

    for line in (ROOT / ".env.example").read_text().splitlines():
        name, _, value = line.lstrip("# ").partition("=")
        if "replace" in value.lower() or "your" in value.lower():
            assert PLACEHOLDER_MARK in value.lower(), f"{name}: example value not marked as a placeholder"


# ------------------------------------------------------------------------------------ doctor


async def test_doctor_checks_platform_tokens_and_every_speech_service(services: tuple[FakeTelegram, FakeDiscord, FakeCoze],
                                                                      workdir: Path) -> None:
    telegram, discord_api, coze = services
    env = bot_env(services, workdir, VOICEBRIDGE_ASR="coze-stream,coze", VOICEBRIDGE_TTS="coze,coze-stream")
    run = await voicebridge("doctor", "--network", env=env, cwd=workdir)
    assert run.status == 0, run.stdout
    for line in (f"network: Telegram: ok @{telegram.bot_user.username}", f"network: Discord: ok {discord_api.bot_user.username}",
                 "network: ASR coze-stream: ok", "network: ASR coze: ok", "network: TTS coze: ok",
                 "network: TTS coze-stream: ok", "configuration: ok"):
        assert line in run.stdout.splitlines(), line
    assert telegram.calls_to("getMe") and any(request.path.endswith("/users/@me") for request in discord_api.requests)
    for secret in (telegram.token, discord_api.token, DEFAULT_TOKEN):
        assert secret not in run.stdout + run.stderr


@pytest.mark.parametrize(
    ("change", "failure"),
    [({"TELEGRAM_BOT_TOKEN": "123:revoked"}, "network: Telegram: FAILED — TELEGRAM_BOT_TOKEN: Telegram refused it"),
     ({"DISCORD_BOT_TOKEN": "revoked"}, "network: Discord: FAILED — DISCORD_BOT_TOKEN: Discord refused it"),
     ({"COZE_API_TOKEN": "pat_expired"}, "network: ASR coze: FAILED — coze refused the credentials (COZE_API_TOKEN): "
                                         "expired, revoked, or for the other region (coze.cn vs coze.com)"),
     ({"COZE_API_BASE": "/wrong"}, "network: ASR coze: FAILED — COZE_API_BASE: HTTP 404: {coze}/wrong/v1/audio/transcriptions"),
     ({"COZE_WS_BASE": "/wrong"}, "network: TTS coze-stream: FAILED — COZE_WS_BASE: HTTP 404: {ws}/wrong/v1/audio/speech"),
     ({"TELEGRAM_BASE_URL": "coze"}, "network: Telegram: FAILED — TELEGRAM_BASE_URL: {coze}/bot<TELEGRAM_BOT_TOKEN>/getMe "
                                     "answered HTTP 404")],
)
async def test_doctor_fails_naming_the_variable(services: tuple[FakeTelegram, FakeDiscord, FakeCoze], workdir: Path,
                                                change: dict[str, str], failure: str) -> None:
    coze = services[2]
    env = bot_env(services, workdir, VOICEBRIDGE_TTS="coze,coze-stream")
    for name, value in change.items():
        env[name] = {"/wrong": env[name] + "/wrong", "coze": f"{coze.base_url}/bot"}.get(value, value)
    run = await voicebridge("doctor", "--network", env=env, cwd=workdir)
    assert run.status == 1
    expected = failure.format(coze=coze.base_url, ws=coze.ws_base_url)
    assert any(line.startswith(expected) for line in run.stdout.splitlines()), run.stdout
    assert "The bot owner" not in run.stdout  # worded for the operator, not for chat users
    for secret in ("123:revoked", "pat_expired"):
        assert secret not in run.stdout


async def test_doctor_fails_on_an_html_page_where_coze_should_answer(services: tuple[FakeTelegram, FakeDiscord, FakeCoze],
                                                                     workdir: Path) -> None:
    coze = services[2]
    coze.fail_next("transcriptions", raw_body="<html><body>Welcome to nginx!</body></html>", http_status=200)
    run = await voicebridge("doctor", "--network", env=bot_env(services, workdir), cwd=workdir)
    assert run.status == 1
    assert (f"network: ASR coze: FAILED — COZE_API_BASE: {coze.base_url}/v1/audio/transcriptions accepted an empty "
            "request: is COZE_API_BASE the Coze API?") in run.stdout


async def test_doctor_fails_whenever_run_would(services: tuple[FakeTelegram, FakeDiscord, FakeCoze], workdir: Path) -> None:
    no_platform = await voicebridge("doctor", env=bot_env(services, workdir, TELEGRAM_BOT_TOKEN="", DISCORD_BOT_TOKEN=""),
                                    cwd=workdir)
    bad_store = await voicebridge("doctor", env=bot_env(services, workdir, VOICEBRIDGE_DB=not_a_folder(workdir)), cwd=workdir)
    no_ffmpeg = await voicebridge("doctor", env={**bot_env(services, workdir), "PATH": path_without_ffmpeg(workdir)},
                                  cwd=workdir)
    shutil.copy(ROOT / ".env.example", workdir / ".env")
    example = await voicebridge("doctor", env={"PATH": os.environ["PATH"]}, cwd=workdir)
    assert (no_platform.status, bad_store.status, no_ffmpeg.status, example.status) == (1, 1, 1, 1)
    assert "  - no chat platform configured: set TELEGRAM_BOT_TOKEN and/or DISCORD_BOT_TOKEN" in no_platform.stdout
    assert "  - VOICEBRIDGE_DB: the store " in bad_store.stdout and "cannot be opened for writing" in bad_store.stdout
    assert no_ffmpeg.stdout.startswith("ffmpeg: NOT FOUND\n") and "  - ffmpeg is not installed" in no_ffmpeg.stdout
    assert "  - TELEGRAM_BOT_TOKEN still holds the example value from .env.example; put your own in" in example.stdout
    for run in (no_platform, bad_store, no_ffmpeg, example):
        assert "configuration: PROBLEMS (every variable is explained in .env.example)" in run.stdout
