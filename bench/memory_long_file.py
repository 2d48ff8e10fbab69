"""Client memory while an hour-long voice note is transcribed: does it stay flat?

A 60-minute speech-like OGG/Opus file on disk (``AudioClip.from_path``) goes through
``SpeechService`` with Coze streaming ASR (``coze-stream``), then with Feishu. Each provider is
measured in a fresh process (so one run's peak cannot hide the next one's), after a 1-minute
warm-up note: the resident set is sampled from /proc/self/status every 10 ms and
``getrusage(RUSAGE_SELF).ru_maxrss`` is read before and after. ffmpeg, a child process, is not
counted. The fakes run in separate processes. Target: growth < 100 MB.

    PYTHONPATH=. .venv/bin/python bench/memory_long_file.py [--minutes 60] [--providers coze-stream feishu]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    FakeServerProcess,
    PeakSampler,
    coze_stream_service,
    feishu_service,
    print_environment,
    print_table,
    resident_mb,
    verdict,
    voice_note,
)
from voicebridge.speech.models import AudioClip
from voicebridge.speech.service import SpeechService

TARGET_GROWTH_MB = 100.0
FEISHU_LATENCY_SECONDS = 0.02  # as in feishu_long_notes.py: requests overlap as on a real network
WARM_UP_SECONDS = 60
PROVIDERS = ("coze-stream", "feishu")


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


@dataclass(frozen=True)
class Footprint:
    provider: str
    baseline: float  # MB resident after imports and service construction
    warm_up_growth: float  # sampled peak during the 1-minute note, over the baseline
    long_growth: float  # sampled peak during the long note, over the baseline
    maxrss_growth: float  # ru_maxrss after the long note minus before anything ran
    end_growth: float  # resident after the long note, over the baseline (what stays)
    seconds: float  # wall time of the long note


def build_service(provider: str, base_url: str, ws_base_url: str) -> SpeechService:
    return coze_stream_service(base_url, ws_base_url) if provider == "coze-stream" else feishu_service(base_url)


async def footprint(provider: str, base_url: str, ws_base_url: str, long_note: Path, warm_up_note: Path) -> Footprint:
    service = build_service(provider, base_url, ws_base_url)
    baseline, maxrss_before = resident_mb(), max_rss_mb()
    with PeakSampler() as warm_up:
        await service.transcribe(AudioClip.from_path(warm_up_note))
    started = time.perf_counter()
    with PeakSampler() as long_run:
        await service.transcribe(AudioClip.from_path(long_note))
    seconds = time.perf_counter() - started
    await service.aclose()
    return Footprint(provider, baseline, warm_up.peak - baseline, long_run.peak - baseline, max_rss_mb() - maxrss_before,
                     resident_mb() - baseline, seconds)


def footprint_in_this_process(provider: str, base_url: str, ws_base_url: str, long_note: Path,
                              warm_up_note: Path) -> Footprint:
    """Entry point of a fresh worker process."""
    return asyncio.run(footprint(provider, base_url, ws_base_url, long_note, warm_up_note))


async def measure(minutes: int, providers: list[str]) -> None:
    long_note, warm_up_note = voice_note(minutes * 60), voice_note(WARM_UP_SECONDS)
    loop = asyncio.get_running_loop()
    results: list[Footprint] = []
    for provider in providers:
        kind = "coze" if provider == "coze-stream" else "feishu"
        latency = FEISHU_LATENCY_SECONDS if kind == "feishu" else 0.0
        async with FakeServerProcess(kind, latency=latency) as fake:
            print(f"{provider}: {fake.description}; client in a fresh worker process", flush=True)
            # One fresh process per provider: ru_maxrss only ever grows within a process.
            with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as worker:
                results.append(await loop.run_in_executor(worker, footprint_in_this_process, provider, fake.base_url,
                                                          fake.ws_base_url, long_note, warm_up_note))
    rows = [[result.provider, f"{result.baseline:.1f}", f"{result.warm_up_growth:.1f}", f"{result.long_growth:.1f}",
             f"{result.maxrss_growth:.1f}", f"{result.end_growth:.1f}", f"{result.seconds:.1f}",
             verdict(max(result.long_growth, result.maxrss_growth), TARGET_GROWTH_MB)] for result in results]
    print(f"\ninput: {long_note} ({long_note.stat().st_size / 1e6:.1f} MB, {minutes} min OGG/Opus 32 kbps), "
          f"after a {WARM_UP_SECONDS} s warm-up note")
    print_table(f"Client memory growth in MB, {minutes} min note from disk (target: < {TARGET_GROWTH_MB:.0f} MB)",
                ["provider", "baseline RSS", f"peak +{WARM_UP_SECONDS}s note", f"peak +{minutes}min note",
                 "ru_maxrss +", "RSS after +", "wall s", "target"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=60, help="length of the long note (default 60)")
    parser.add_argument("--providers", nargs="+", choices=PROVIDERS, default=list(PROVIDERS),
                        help="providers to measure (default: both)")
    arguments = parser.parse_args()
    print_environment()
    asyncio.run(measure(arguments.minutes, arguments.providers))


if __name__ == "__main__":
    main()
