"""The installed distribution is one import package, ``voicebridge``: no generic top-level name
(``adapters``, ``bot_plugins``) that another distribution could overwrite."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_installs_one_top_level_package_with_every_module(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--wheel-dir", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, cwd=tmp_path)
    [wheel] = tmp_path.glob("voicebridge-*.whl")
    names = [name for name in zipfile.ZipFile(wheel).namelist() if ".dist-info/" not in name]
    assert {name.split("/", 1)[0] for name in names} == {"voicebridge"}
    sources = {f"voicebridge/{path.relative_to(ROOT / 'bot_plugins').as_posix()}" for path in (ROOT / "bot_plugins").rglob("*.py")}
    sources |= {f"voicebridge/adapters/{path.relative_to(ROOT / 'adapters').as_posix()}" for path in (ROOT / "adapters").rglob("*.py")}
    assert sources <= set(names), "modules missing from the wheel (add new subpackages to pyproject's packages)"
    assert {"voicebridge/telegram.py", "voicebridge/discord.py", "voicebridge/adapters/runner.py"} <= set(names)
