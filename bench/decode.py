"""Decoding overhead: the project's ffmpeg pipeline vs the bare ffmpeg CLI.

Decodes a speech-like OGG/Opus voice note (48 kHz mono, 32 kbps) to 16 kHz mono s16 PCM
(a) with ``AudioConverter().pcm(clip, 16000)``, consuming every chunk, from bytes in memory (how
chat platforms hand voice notes over) and from a path on disk, and (b) with the ffmpeg CLI on
the same file, same arguments, output to a pipe read to its end. Runs alternate between the three
after warm-up. "Python CPU" is this process's own CPU (ffmpeg, a child, is not in it): the cost of
the project's asyncio plumbing. Target: the project's median at most 1.25x the CLI's.

    PYTHONPATH=. .venv/bin/python bench/decode.py [--seconds 60] [--repeat 20]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
from collections.abc import Awaitable, Callable

from bench.common import (
    PCM_RATE,
    Summary,
    Timings,
    ffmpeg_pcm_command,
    ms,
    print_environment,
    print_table,
    verdict,
    voice_note,
)
from voicebridge.speech.audio import AudioConverter
from voicebridge.speech.models import AudioClip

TARGET_RATIO = 1.25
WARM_UP_RUNS = 3


async def project_pcm(converter: AudioConverter, clip: AudioClip) -> bytes:
    async with converter.pcm(clip, PCM_RATE) as chunks:
        return b"".join([chunk async for chunk in chunks])


async def cli_pcm(command: list[str]) -> bytes:
    # A blocking call is the honest baseline: nothing else runs on the loop meanwhile.
    return subprocess.run(command, check=True, capture_output=True).stdout


async def measure(seconds: int, repeat: int) -> None:
    path = voice_note(seconds)
    data = path.read_bytes()
    converter = AudioConverter()
    command = ffmpeg_pcm_command(str(path))
    methods: dict[str, Callable[[], Awaitable[bytes]]] = {
        "ffmpeg CLI (file -> pipe)": lambda: cli_pcm(command),
        "project pcm(), bytes in memory": lambda: project_pcm(converter, AudioClip(data=data)),
        "project pcm(), AudioClip.from_path": lambda: project_pcm(converter, AudioClip.from_path(path)),
    }
    names = list(methods)
    expected = await methods[names[0]]()
    for name in names:  # warm-up, and proof that every path yields the same PCM
        for _ in range(WARM_UP_RUNS):
            if await methods[name]() != expected:
                raise SystemExit(f"{name} produced different PCM than the ffmpeg CLI")
    timings = {name: Timings() for name in names}
    for run in range(repeat):
        for name in names[run % len(names):] + names[:run % len(names)]:  # rotate the order: no method always goes first
            await timings[name].run(methods[name])

    cli = Summary.of(timings[names[0]].wall)
    rows = []
    for name in names:
        wall, cpu = Summary.of(timings[name].wall), Summary.of(timings[name].cpu)
        ratio = wall.median / cli.median
        rows.append([name, ms(wall.median), ms(wall.p90), ms(cpu.median), f"{ratio:.2f}x",
                     "(baseline)" if name == names[0] else verdict(ratio, TARGET_RATIO)])
    print(f"\ninput: {path} ({len(data) / 1024:.0f} KiB, {seconds} s OGG/Opus 48 kHz mono 32 kbps) -> "
          f"{len(expected) / 1e6:.2f} MB of {PCM_RATE} Hz s16 mono PCM; {repeat} timed runs each after "
          f"{WARM_UP_RUNS} warm-up runs, in rotating order")
    print_table(f"Decode {seconds} s voice note (target: median <= {TARGET_RATIO}x the CLI)",
                ["method", "median ms", "p90 ms", "Python CPU ms (median)", "vs CLI", "target"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="length of the voice note (default 60)")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per method (default 20)")
    arguments = parser.parse_args()
    print_environment()
    asyncio.run(measure(arguments.seconds, arguments.repeat))


if __name__ == "__main__":
    main()
