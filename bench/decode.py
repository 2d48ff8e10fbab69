"""Decoding: the project's decoders vs the bare ffmpeg CLI.

Decodes a speech-like OGG/Opus voice note (48 kHz mono, 32 kbps) to 16 kHz mono s16 PCM
(a) with ``AudioConverter().pcm(clip, 16000)``, consuming every chunk, in process (PyAV, the
default) and through ffmpeg processes (the fallback), from bytes in memory (how chat platforms
hand voice notes over) and from a path on disk, and (b) with the ffmpeg CLI on the same file,
same arguments, output to a pipe read to its end. Runs alternate between the methods after
warm-up. "CPU" is this process's CPU plus its children's (ffmpeg), from ``getrusage``; "Python
CPU" is this process's alone. Every method's PCM is compared with the CLI's on the audio: the
same number of samples, and the largest difference between two samples. Target: the project's
median wall time at most 1.25x the CLI's.

    PYTHONPATH=. .venv/bin/python bench/decode.py [--seconds 60] [--repeat 20]
"""

from __future__ import annotations

import argparse
import array
import asyncio
import gc
import resource
import subprocess
import time
from collections.abc import Awaitable, Callable

from bench.common import (
    PCM_RATE,
    Summary,
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


def cpu_now() -> tuple[float, float]:
    """(this process, this process and its children) CPU seconds."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    mine = own.ru_utime + own.ru_stime
    return mine, mine + children.ru_utime + children.ru_stime


def largest_difference(pcm: bytes, reference: bytes) -> int:
    ours, theirs = array.array("h", pcm), array.array("h", reference)
    return max((abs(a - b) for a, b in zip(ours, theirs)), default=0)


async def measure(seconds: int, repeat: int) -> None:
    path = voice_note(seconds)
    data = path.read_bytes()
    in_process, processes = AudioConverter(in_process=True), AudioConverter(in_process=False)
    command = ffmpeg_pcm_command(str(path))
    methods: dict[str, Callable[[], Awaitable[bytes]]] = {
        "ffmpeg CLI (file -> pipe)": lambda: cli_pcm(command),
        "pcm(), in process (PyAV), bytes": lambda: project_pcm(in_process, AudioClip(data=data)),
        "pcm(), in process (PyAV), path": lambda: project_pcm(in_process, AudioClip.from_path(path)),
        "pcm(), ffmpeg process, bytes": lambda: project_pcm(processes, AudioClip(data=data)),
        "pcm(), ffmpeg process, path": lambda: project_pcm(processes, AudioClip.from_path(path)),
    }
    names = list(methods)
    expected = await methods[names[0]]()
    differences = {}
    for name in names:  # warm-up, and the PCM of each method against the CLI's
        for _ in range(WARM_UP_RUNS):
            pcm = await methods[name]()
        if len(pcm) != len(expected):
            raise SystemExit(f"{name}: {len(pcm)} bytes of PCM where the ffmpeg CLI gives {len(expected)}")
        differences[name] = largest_difference(pcm, expected)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    python: dict[str, list[float]] = {name: [] for name in names}
    for run in range(repeat):
        for name in names[run % len(names):] + names[:run % len(names)]:  # rotate the order: no method always goes first
            gc.collect()
            (own, everything), started = cpu_now(), time.perf_counter()
            await methods[name]()
            wall[name].append(time.perf_counter() - started)
            own_after, everything_after = cpu_now()
            cpu[name].append(everything_after - everything)
            python[name].append(own_after - own)
    in_process.close()

    cli, cli_cpu = Summary.of(wall[names[0]]), Summary.of(cpu[names[0]])
    rows = []
    for name in names:
        timing, used, own = Summary.of(wall[name]), Summary.of(cpu[name]), Summary.of(python[name])
        ratio = timing.median / cli.median
        rows.append([name, ms(timing.median), ms(timing.p90), ms(used.median), f"{used.median / cli_cpu.median:.2f}x",
                     ms(own.median), differences[name], f"{ratio:.2f}x",
                     "(baseline)" if name == names[0] else verdict(ratio, TARGET_RATIO)])
    print(f"\ninput: {path} ({len(data) / 1024:.0f} KiB, {seconds} s OGG/Opus 48 kHz mono 32 kbps) -> "
          f"{len(expected) / 1e6:.2f} MB of {PCM_RATE} Hz s16 mono PCM; {repeat} timed runs each after "
          f"{WARM_UP_RUNS} warm-up runs, in rotating order")
    print_table(f"Decode {seconds} s voice note (target: median wall <= {TARGET_RATIO}x the CLI)",
                ["method", "median ms", "p90 ms", "CPU ms (median)", "CPU vs CLI", "Python CPU ms", "largest sample difference",
                 "wall vs CLI", "target"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="length of the voice note (default 60)")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per method (default 20)")
    arguments = parser.parse_args()
    print_environment()
    asyncio.run(measure(arguments.seconds, arguments.repeat))


if __name__ == "__main__":
    main()
