"""The ``voicebridge`` command, run as a real process against the local fakes."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.audio_tools import analyse, decode, make_tone, probe
from tests.fakes.coze import DEFAULT_TOKEN, DEFAULT_VOICES, FakeCoze
from tests.fakes.feishu import DEFAULT_APP_ID, DEFAULT_APP_SECRET, FakeFeishu

VOICEBRIDGE = str(Path(sys.executable).with_name("voicebridge"))


@dataclass
class Run:
    status: int
    stdout: str
    stderr: str


@pytest.fixture
async def coze() -> AsyncIterator[FakeCoze]:
    async with FakeCoze() as fake:
        yield fake


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, so no stray .env is read."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def coze_env(fake: FakeCoze, **extra: str) -> dict[str, str]:
    return {"COZE_API_TOKEN": DEFAULT_TOKEN, "COZE_API_BASE": fake.base_url, "COZE_WS_BASE": fake.ws_base_url, **extra}


async def voicebridge(*args: str, env: dict[str, str], cwd: Path) -> Run:
    """Run the installed console script with only the given configuration in its environment."""
    base = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    process = await asyncio.create_subprocess_exec(
        VOICEBRIDGE, *args, env={**base, **env}, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    run = Run(process.returncode or 0, stdout.decode(), stderr.decode())
    assert "Traceback" not in run.stderr and "Traceback" not in run.stdout
    return run


def write_tone(directory: Path, name: str, container: str, frequency: float = 440.0, seconds: float = 2.0) -> Path:
    path = directory / name
    path.write_bytes(make_tone(container, frequency, seconds))
    return path


async def test_transcribe_one_file(coze: FakeCoze, workdir: Path) -> None:
    note = write_tone(workdir, "note.ogg", "ogg")
    run = await voicebridge("transcribe", str(note), env=coze_env(coze), cwd=workdir)
    assert (run.status, run.stdout) == (0, "tone 440 hz 2.0 s\n")


async def test_transcribe_several_files_names_each(coze: FakeCoze, workdir: Path) -> None:
    first = write_tone(workdir, "a.mp3", "mp3", 300.0)
    second = write_tone(workdir, "b.m4a", "m4a", 600.0, 1.0)
    run = await voicebridge("transcribe", str(first), str(second), env=coze_env(coze), cwd=workdir)
    assert run.status == 0
    assert run.stdout.splitlines() == [f"{first}: tone 300 hz 2.0 s", f"{second}: tone 600 hz 1.0 s"]


async def test_live_partials_go_to_stderr_and_options_reach_the_provider(coze: FakeCoze, workdir: Path) -> None:
    note = write_tone(workdir, "note.ogg", "ogg", seconds=3.0)
    run = await voicebridge("transcribe", str(note), "--asr", "coze-stream", "--live", "--language", "en",
                            "--hot-words", "voicebridge, Coze", env=coze_env(coze), cwd=workdir)
    assert run.status == 0 and run.stdout == "tone 440 hz 3.0 s\n"
    # A partial while the note streams: the Ogg pages go as they are, and the first holds 0.99 s
    # once Opus's pre-skip is dropped, so the fake's first whole-second partial comes at 1.99 s.
    assert "… tone 440 hz 2.0 s" in run.stderr.splitlines()
    (session,) = coze.sessions_to("ws_transcriptions")
    assert session.asr_config is not None
    assert (session.asr_config["user_language"], session.asr_config["hot_words"]) == ("en", ["voicebridge", "Coze"])


async def test_transcribe_with_feishu(workdir: Path) -> None:
    async with FakeFeishu() as fake:
        env = {"FEISHU_APP_ID": DEFAULT_APP_ID, "FEISHU_APP_SECRET": DEFAULT_APP_SECRET, "FEISHU_BASE_URL": fake.base_url}
        note = write_tone(workdir, "note.wav", "wav", seconds=1.0)
        run = await voicebridge("transcribe", str(note), "--asr", "feishu", env=env, cwd=workdir)
        only_feishu = await voicebridge("transcribe", str(note), env=env, cwd=workdir)  # Feishu is then the default
    assert (run.status, run.stdout) == (0, "tone 440 hz 1.0 s\n")
    assert (only_feishu.status, only_feishu.stdout) == (0, "tone 440 hz 1.0 s\n")


@pytest.mark.parametrize(("name", "codec"), [("reply.ogg", "opus"), ("reply.mp3", "mp3"), ("reply.wav", "pcm_s16le")])
async def test_speak_writes_audio_in_the_chosen_voice(coze: FakeCoze, workdir: Path, name: str, codec: str) -> None:
    jay = DEFAULT_VOICES[1]
    output = workdir / name
    run = await voicebridge("speak", "Hello from the command line.", "-o", str(output), "--voice", jay.voice_id,
                            env=coze_env(coze), cwd=workdir)
    assert run.status == 0, run.stderr
    data = output.read_bytes()
    assert probe(data)["codec_name"] == codec
    samples, rate = decode(data)
    report = analyse(samples, rate)
    assert report.frequency == pytest.approx(jay.frequency, rel=0.01)
    assert report.seconds == pytest.approx(len("Hello from the command line.") * 0.06, abs=0.08)


async def test_voices_lists_the_catalogue(coze: FakeCoze, workdir: Path) -> None:
    run = await voicebridge("voices", env=coze_env(coze), cwd=workdir)
    assert run.status == 0
    listed = [line.split("\t")[:2] for line in run.stdout.splitlines()]
    assert listed == [[voice.voice_id, voice.name] for voice in DEFAULT_VOICES]


async def test_doctor_lists_configuration_problems(workdir: Path) -> None:
    run = await voicebridge("doctor", env={"VOICEBRIDGE_ASR": "whisper"}, cwd=workdir)
    assert run.status == 1
    assert "configuration: PROBLEMS" in run.stdout and "VOICEBRIDGE_ASR" in run.stdout


@pytest.mark.parametrize(
    ("env", "named"),
    [({}, "COZE_API_TOKEN"), ({"COZE_API_TOKEN": "x", "COZE_API_BASE": "not a url"}, "COZE_API_BASE"),
     ({"COZE_API_TOKEN": "x", "VOICEBRIDGE_TTS": "say"}, "VOICEBRIDGE_TTS")],
)
async def test_misconfiguration_is_one_line_naming_the_variable(workdir: Path, env: dict[str, str], named: str) -> None:
    run = await voicebridge("voices", env=env, cwd=workdir)
    assert run.status == 2
    assert len(run.stderr.strip().splitlines()) == 1 and named in run.stderr


async def test_dotenv_and_toml_configuration(coze: FakeCoze, workdir: Path) -> None:
    (workdir / ".env").write_text(f"COZE_API_TOKEN={DEFAULT_TOKEN}\nCOZE_API_BASE={coze.base_url}\n")
    (workdir / "bot.toml").write_text(f'COZE_WS_BASE = "{coze.ws_base_url}"\nVOICEBRIDGE_ASR = "coze-stream"\n')
    note = write_tone(workdir, "note.ogg", "ogg")
    run = await voicebridge("transcribe", "--config", "bot.toml", str(note), env={}, cwd=workdir)
    assert (run.status, run.stdout) == (0, "tone 440 hz 2.0 s\n")
    assert len(coze.sessions_to("ws_transcriptions")) == 1


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "no such file"), (b"", "This audio is empty"), (b"not audio " * 100, "could not be read as audio")],
)
async def test_bad_files_get_one_clear_line(coze: FakeCoze, workdir: Path, content: bytes | None, expected: str) -> None:
    path = workdir / "input.ogg"
    if content is not None:
        path.write_bytes(content)
    run = await voicebridge("transcribe", str(path), env=coze_env(coze), cwd=workdir)
    assert run.status == 1 and run.stdout == ""
    assert len(run.stderr.strip().splitlines()) == 1 and expected in run.stderr
    assert coze.rest_calls == []


async def test_provider_errors_are_one_line_with_operator_detail(coze: FakeCoze, workdir: Path) -> None:
    note = write_tone(workdir, "note.ogg", "ogg")
    run = await voicebridge("transcribe", str(note), env=coze_env(coze, COZE_API_TOKEN="pat_revoked"), cwd=workdir)
    assert run.status == 1
    assert ("coze refused the credentials (COZE_API_TOKEN): expired, revoked, or for the other region (coze.cn vs coze.com) "
            "[code 4100 logid ") in run.stderr
    assert "pat_revoked" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
