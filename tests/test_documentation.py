"""The README stays the front door: every configuration variable the code reads is documented
there, and nothing documented is unused."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIABLE = re.compile(r'"((?:COZE|FEISHU|TELEGRAM|DISCORD|VOICEBRIDGE)_[A-Z0-9_]+)"')


def variables_in_code() -> set[str]:
    names: set[str] = set()
    for path in [*ROOT.joinpath("bot_plugins").rglob("*.py"), *ROOT.joinpath("adapters").rglob("*.py")]:
        names.update(VARIABLE.findall(path.read_text(encoding="utf-8")))
    return names


def variables_in_readme() -> set[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return set(re.findall(r"^\| `([A-Z0-9_]+)` \|", readme, flags=re.MULTILINE))


def test_configuration_reference_matches_the_code() -> None:
    in_code, documented = variables_in_code(), variables_in_readme()
    assert in_code, "no configuration variables found in the code"
    assert in_code - documented == set(), "read by the code but missing from README's configuration table"
    assert documented - in_code == set(), "documented in README but never read by the code"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "scripts/test" in readme and "exec scripts/test" in ci
