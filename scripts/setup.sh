#!/usr/bin/env bash
# Prepares a fresh Debian/Ubuntu machine: ffmpeg, Python >= 3.11 with venv, and .venv with the
# project installed with the extras given as $1 (e.g. "telegram,discord" or "dev").
# Re-running is cheap: the install is skipped while pyproject.toml and constraints.txt are unchanged.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
extras="${1:-telegram,discord}"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else echo "setup: need root (or sudo) to run: $*" >&2; exit 1
    fi
}

apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "setup: please install $* with your package manager, then run this again" >&2
        exit 1
    fi
    if [ -z "${APT_UPDATED:-}" ]; then
        as_root apt-get update -qq
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! command -v ffmpeg >/dev/null 2>&1; then
    echo "setup: installing ffmpeg" >&2
    apt_install ffmpeg
fi

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
    apt_install python3 python3-venv
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup: voicebridge needs Python 3.11 or newer; $("$python" --version 2>&1) found (set PYTHON=/path/to/python3.11)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    if ! "$python" -m venv .venv 2>/dev/null; then
        rm -rf .venv
        apt_install python3-venv
        "$python" -m venv .venv
    fi
fi

stamp=".venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)-${extras//,/-}"
if [ ! -e "$stamp" ]; then
    echo "setup: installing voicebridge[$extras] into .venv" >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[$extras]"
    rm -f .venv/.installed-*
    touch "$stamp"
fi
