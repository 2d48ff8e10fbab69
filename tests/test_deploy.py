"""The self-hosting files (deploy/, .env.example) stay in step with the project: the variables
they set or list are the ones README documents, the paths and commands they name exist, and the
stop timeouts leave the bot its shutdown grace. No Docker or systemd is needed to run these."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from voicebridge.cli import EXIT_CONFIG
from voicebridge.config import RunnerSettings, TelegramSettings, parse_dotenv
from voicebridge.voice_notes.settings import PluginSettings
from tests.test_documentation import ROOT, variables_in_readme

DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
UNIT = DEPLOY / "voicebridge.service"
ENV_EXAMPLE = ROOT / ".env.example"

# The bot waits this long on SIGTERM by default; whatever stops it must wait longer.
DEFAULT_SHUTDOWN_GRACE = PluginSettings.shutdown_grace_seconds

DOCKERFILE_INSTRUCTIONS = frozenset({
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
})


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def duration_seconds(text: str | int | float) -> float:
    """A Compose ("1m30s") or systemd ("90", "1min 30s") duration, in seconds."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
    part = r"(\d+(?:\.\d+)?)\s*(us|ms|min|h|m|s)?\s*"  # a bare number is seconds (systemd)
    spec = str(text).strip()
    if not re.fullmatch(f"(?:{part})+", spec):
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(number) * units[unit or "s"] for number, unit in re.findall(part, spec))


# ----------------------------------------------------------------------- Dockerfile


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    line: int  # where it starts, for messages


def dockerfile_instructions(text: str) -> list[Instruction]:
    """One entry per instruction, continuation lines joined (comment and blank lines inside a
    continuation are dropped, as Docker does)."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        keyword, _, arguments = " ".join([*pending, line]).partition(" ")
        instructions.append(Instruction(keyword, arguments.strip(), start))
        pending = []
    if pending:
        raise ValueError(f"line {start}: the last instruction ends with a line continuation")
    return instructions


def instructions(keyword: str) -> list[Instruction]:
    return [instruction for instruction in dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))
            if instruction.keyword == keyword]


def exec_form(arguments: str) -> list[str]:
    """The JSON array of CMD / ENTRYPOINT / HEALTHCHECK CMD (no shell in between, so signals reach the bot)."""
    command = json.loads(arguments)
    assert isinstance(command, list) and all(isinstance(item, str) for item in command), arguments
    return command


def assignments(words: list[str]) -> dict[str, str]:
    """``NAME=value`` words (already unquoted) as a mapping."""
    return {name: value for name, _, value in (word.partition("=") for word in words)}


def dockerfile_env() -> dict[str, str]:
    variables: dict[str, str] = {}
    for instruction in instructions("ENV"):
        words = shlex.split(instruction.arguments)
        if "=" in words[0]:
            variables.update(assignments(words))
        else:  # legacy form: ENV NAME value with spaces
            variables[words[0]] = " ".join(words[1:])
    return variables


def healthcheck_command() -> list[str]:
    """The image's HEALTHCHECK command, Compose-style (["CMD", ...])."""
    (healthcheck,) = instructions("HEALTHCHECK")
    _, separator, command = healthcheck.arguments.partition("CMD ")
    assert separator, "HEALTHCHECK needs a CMD"
    return ["CMD", *exec_form(command)]


def data_directory() -> str:
    """Where the image keeps its database: the directory of its VOICEBRIDGE_DB."""
    return str(PurePosixPath(dockerfile_env()["VOICEBRIDGE_DB"]).parent)


def test_duration_parser_reads_compose_and_systemd_spans() -> None:
    assert [duration_seconds(text) for text in ("45", "45s", "1m30s", "1min 30s", "500ms", 45)] == [45, 45, 90, 90, 0.5, 45]
    with pytest.raises(ValueError):
        duration_seconds("forever")


def test_dockerfile_parser_joins_continuations_and_rejects_a_dangling_one() -> None:
    parsed = dockerfile_instructions("FROM x\n# note\nRUN a \\\n    # inside\n    && b\n")
    assert parsed == [Instruction("FROM", "x", 1), Instruction("RUN", "a && b", 3)]
    with pytest.raises(ValueError, match="continuation"):
        dockerfile_instructions("FROM x\nRUN a \\\n")


def test_dockerfile_is_well_formed() -> None:
    parsed = dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))
    unknown = [f"line {item.line}: {item.keyword}" for item in parsed if item.keyword not in DOCKERFILE_INSTRUCTIONS]
    assert unknown == [], "not Dockerfile instructions (or not in upper case)"
    assert [item.keyword for item in parsed if item.keyword != "ARG"][0] == "FROM"
    assert all(item.arguments for item in parsed), "an instruction without arguments"
    ports = [port for item in parsed if item.keyword == "EXPOSE" for port in item.arguments.split()]
    assert all(re.fullmatch(r"\d+(/tcp|/udp)?", port) for port in ports), f"EXPOSE takes ports: {ports}"


def test_dockerfile_uses_a_slim_python_base_the_project_supports() -> None:
    (base,) = instructions("FROM")  # one stage
    match = re.fullmatch(r"python:3\.(\d+)-slim(-[a-z]+)?", base.arguments)
    assert match, f"expected an official python:3.X-slim image with the minor version pinned, got {base.arguments}"
    assert f"3.{match.group(1)}" in SpecifierSet(pyproject()["project"]["requires-python"])


def test_dockerfile_installs_ffmpeg_without_recommends_and_cleans_apt_lists() -> None:
    installs = [item.arguments for item in instructions("RUN") if "apt-get install" in item.arguments]
    assert len(installs) == 1
    assert re.search(r"apt-get install .*--no-install-recommends.* ffmpeg\b", installs[0])
    assert "rm -rf /var/lib/apt/lists" in installs[0], "the apt lists would stay in the layer"


def test_dockerfile_installs_the_project_with_the_tested_versions() -> None:
    copied = [source for item in instructions("COPY") for source in shlex.split(item.arguments)[:-1]]
    missing = [source for source in copied if not source.startswith("--") and not (ROOT / source).exists()]
    assert missing == [], "COPY sources missing from the build context (the repository root)"
    assert "constraints.txt" in copied
    (install,) = [item.arguments for item in instructions("RUN") if "pip install" in item.arguments]
    assert "--no-cache-dir" in install and "-c constraints.txt" in install and " -e " not in install
    extras = re.search(r'"\.\[([a-z,]+)\]"', install)
    assert extras, "expected pip install ... \".[extras]\""
    assert set(extras.group(1).split(",")) == {"telegram", "discord", "postgres"}
    assert {"telegram", "discord", "postgres"} <= pyproject()["project"]["optional-dependencies"].keys()


def test_dockerfile_runs_the_bot_as_an_unprivileged_user() -> None:
    parsed = dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))
    keywords = [item.keyword for item in parsed]
    assert "USER" in keywords
    last_user_index = max(index for index, keyword in enumerate(keywords) if keyword == "USER")
    assert parsed[last_user_index].arguments.split(":")[0] not in ("root", "0")
    for keyword in ("ENTRYPOINT", "CMD"):
        assert keywords.index(keyword) > last_user_index, f"{keyword} before the last USER"
    (entrypoint,), (command,) = instructions("ENTRYPOINT"), instructions("CMD")
    assert exec_form(entrypoint.arguments) == ["voicebridge"] and "voicebridge" in pyproject()["project"]["scripts"]
    assert exec_form(command.arguments) == ["run"]


def test_dockerfile_keeps_the_database_in_a_volume_and_checks_health() -> None:
    env = dockerfile_env()
    volumes = [path for item in instructions("VOLUME") for path in shlex.split(item.arguments)]
    assert data_directory() in volumes
    exposed = {port.split("/")[0] for item in instructions("EXPOSE") for port in item.arguments.split()}
    assert {env["VOICEBRIDGE_METRICS_PORT"], str(TelegramSettings.webhook_port)} <= exposed  # status server, webhook
    command = healthcheck_command()
    assert command[1] == "python" and "/healthz" in command[-1], "health check: python's urllib, no curl in the image"
    assert "VOICEBRIDGE_METRICS_PORT" in command[-1], "the check must follow the configured port"


def test_dockerfile_sets_only_documented_variables() -> None:
    assert dockerfile_env().keys() - variables_in_readme() == set()


# ----------------------------------------------------------------------- compose.yaml


def compose_service() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]["voicebridge"]


def test_compose_builds_the_image_from_the_repository() -> None:
    build = compose_service()["build"]
    context = (DEPLOY / build["context"]).resolve()  # Compose resolves paths from its file's directory
    assert context == ROOT
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE


def test_compose_reads_the_repository_env_file() -> None:
    env_files = compose_service()["env_file"]
    entries = env_files if isinstance(env_files, list) else [env_files]
    paths = [(DEPLOY / (entry["path"] if isinstance(entry, dict) else entry)).resolve() for entry in entries]
    assert paths == [ROOT / ".env"], "the .env made from .env.example (deploy/README.md)"


def test_compose_keeps_the_database_in_a_named_volume() -> None:
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    declared = set(document.get("volumes") or {})
    mounts: list[tuple[str | None, str]] = []
    for volume in compose_service()["volumes"]:
        if isinstance(volume, dict):
            mounts.append((volume.get("source"), volume["target"]))
        else:
            source, target = volume.split(":")[:2]
            mounts.append((source, target))
    (source,) = [source for source, target in mounts if target == data_directory()]
    assert source in declared, f"{data_directory()} must be a named volume declared under top-level volumes:"


def test_compose_restarts_and_stops_gracefully() -> None:
    service = compose_service()
    assert service["restart"] in ("always", "unless-stopped")
    assert duration_seconds(service["stop_grace_period"]) > DEFAULT_SHUTDOWN_GRACE, \
        "docker would kill the bot while it finishes the notes in flight"
    logging = service["logging"]
    if logging["driver"] in ("json-file", "local"):
        assert "max-size" in logging.get("options", {}), "logs would grow without bound"


def test_compose_health_check_is_the_images() -> None:
    healthcheck = compose_service()["healthcheck"]
    assert not healthcheck.get("disable", False)
    assert healthcheck["test"] == healthcheck_command()


def test_compose_sets_only_documented_variables() -> None:
    environment = compose_service().get("environment") or {}
    names = set(environment) if isinstance(environment, dict) else {entry.split("=", 1)[0] for entry in environment}
    assert names - variables_in_readme() == set()


# ----------------------------------------------------------------------- systemd unit


def unit_entries() -> dict[str, list[str]]:
    """``Section.Key`` to its values, in order (systemd allows keys such as Environment= repeatedly)."""
    entries: dict[str, list[str]] = {}
    section = ""
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, separator, value = line.partition("=")
        assert separator, f"not Key=value: {line}"
        entries.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return entries


def unit_environment() -> dict[str, str]:
    """The unit's own Environment= assignments (each line may hold several, shell-quoted)."""
    return {name: value for line in unit_entries().get("Service.Environment", [])
            for name, value in assignments(shlex.split(line)).items()}


def unit_value(key: str) -> str:
    values = unit_entries().get(f"Service.{key}")
    assert values, f"{key}= missing from [Service]"
    return values[-1]


def test_systemd_unit_runs_what_setup_creates() -> None:
    checkout = PurePosixPath(unit_value("WorkingDirectory"))
    setup = (ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8")
    assert "-m venv .venv" in setup and "pip install" in setup, "scripts/setup.sh no longer creates .venv"
    assert unit_value("ExecStart") == f"{checkout / '.venv/bin/voicebridge'} run"
    assert "voicebridge" in pyproject()["project"]["scripts"]
    assert unit_value("EnvironmentFile").lstrip("-") == str(checkout / ".env"), "the .env the bot also reads from its directory"
    assert unit_value("User") not in ("root", "0")


def test_systemd_unit_stops_gracefully_and_restarts_on_failure() -> None:
    assert unit_value("KillSignal") == "SIGTERM"
    # SIGTERM to the bot only: with the default KillMode, ffmpeg decoding a note would die too.
    assert unit_value("KillMode") == "mixed"
    assert duration_seconds(unit_value("TimeoutStopSec")) > DEFAULT_SHUTDOWN_GRACE
    assert unit_value("Restart") == "on-failure"
    assert str(EXIT_CONFIG) in unit_value("RestartPreventExitStatus").split(), "a configuration error does not heal by restarting"


def test_systemd_unit_is_hardened_but_can_write_its_database() -> None:
    assert unit_value("NoNewPrivileges") == "yes"
    assert unit_value("PrivateTmp") == "yes"
    assert unit_value("ProtectHome") in ("yes", "read-only", "tmpfs")
    assert unit_value("ProtectSystem") == "strict"
    writable = unit_value("ReadWritePaths").split()
    database = PurePosixPath(unit_environment()["VOICEBRIDGE_DB"])
    assert str(database.parent) in writable, "ProtectSystem=strict: the database directory must be writable"


def test_systemd_unit_sets_only_documented_variables() -> None:
    assert unit_environment().keys() - variables_in_readme() == set()


# ----------------------------------------------------------------------- .env.example

ENV_EXAMPLE_LINE = re.compile(r"^(?P<comment>#\s?)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


@dataclass(frozen=True)
class ExampleEntry:
    name: str
    value: str
    active: bool  # not commented out
    explained: bool  # a comment line right above it


def env_example_entries() -> list[ExampleEntry]:
    entries: list[ExampleEntry] = []
    previous = ""
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = ENV_EXAMPLE_LINE.match(line)
        if match:
            explained = previous.startswith("#") and not ENV_EXAMPLE_LINE.match(previous)
            entries.append(ExampleEntry(match["name"], match["value"], match["comment"] is None, explained))
        previous = line
    return entries


def readme_literal_defaults() -> dict[str, str]:
    """Variables whose README default is a single literal (`1800`), not prose ("everyone")."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return dict(re.findall(r"^\| `([A-Z0-9_]+)` \| `([^`]*)` \|", readme, flags=re.MULTILINE))


def test_env_example_lists_every_documented_variable() -> None:
    listed = {entry.name for entry in env_example_entries()}
    documented = variables_in_readme()
    assert documented - listed == set(), "documented in README but missing from .env.example"
    assert listed - documented == set(), "in .env.example but not in README's configuration table"


def test_env_example_lists_each_variable_once_with_an_explanation() -> None:
    names = [entry.name for entry in env_example_entries()]
    assert sorted({name for name in names if names.count(name) > 1}) == []
    assert [entry.name for entry in env_example_entries() if not entry.explained] == []


def test_env_example_shows_the_documented_defaults() -> None:
    shown = {entry.name: entry.value for entry in env_example_entries() if not entry.active}
    defaults = readme_literal_defaults()
    assert {name: shown.get(name) for name in defaults} == defaults


def test_env_example_needs_only_real_tokens_to_start() -> None:
    active = {entry.name: entry.value for entry in env_example_entries() if entry.active}
    # The bot, Compose and systemd all read this file: systemd's EnvironmentFile= keeps a trailing
    # "# comment" in the value, and a line the bot reads but these tests do not ("export NAME=")
    # would make the two differ.
    assert [name for name, value in active.items() if " #" in value] == []
    assert parse_dotenv(ENV_EXAMPLE.read_text(encoding="utf-8")) == active
    assert {"TELEGRAM_BOT_TOKEN", "DISCORD_BOT_TOKEN"} & active.keys(), "a chat platform token"
    assert {"COZE_API_TOKEN", "FEISHU_APP_ID"} & active.keys(), "a speech service credential"
    settings = RunnerSettings.from_values(active)
    assert settings.speech.asr_chain


def test_env_example_values_are_all_valid() -> None:
    """Uncommenting any line, as is, is never a configuration error."""
    every = {entry.name: entry.value for entry in env_example_entries()}
    RunnerSettings.from_values(every)


def test_compose_scale_out_services_share_postgresql() -> None:
    services = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    single = services["voicebridge"]
    assert "profiles" not in single, "`docker compose up` keeps starting the single-process bot"
    for name, command in (("ingress", ["ingress"]), ("worker", ["worker"])):
        service = services[name]
        assert service["profiles"] == ["scale"] and service["command"] == command
        assert service["image"] == single["image"]
        assert service["environment"]["VOICEBRIDGE_DB"].startswith("postgresql://")
        assert urlsplit(service["environment"]["VOICEBRIDGE_DB"]).hostname == "postgres"
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert duration_seconds(service["stop_grace_period"]) > DEFAULT_SHUTDOWN_GRACE
        assert service["healthcheck"]["test"] == healthcheck_command()
        assert "ports" not in service and "container_name" not in service  # --scale worker=4 needs neither
    assert services["postgres"]["profiles"] == ["scale"] and "ports" not in services["postgres"]
