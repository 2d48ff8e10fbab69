"""Feishu streaming ASR on long notes: how much parallel segments win over one-by-one requests.

Every 200 ms chunk is one HTTP round trip to stream_recognize, so an hour of audio is ~18,000
requests; at the fake's 20 ms simulated latency per request, sending them one by one takes at
least requests x 20 ms. Transcribes 1, 10 and 60 minute speech-like OGG/Opus notes through
``SpeechService`` + ``FeishuStreamTranscriber`` with the default settings (200 ms chunks, 30 s
segments, 4 parallel segments, 20 max streams), then again with ``parallel_segments=1``, and
reports requests, streams, wall time, client CPU, that lower bound and the speed-up over it.
The fake runs in a separate process.

    PYTHONPATH=. .venv/bin/python bench/feishu_long_notes.py [--minutes 1 10 60] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import re
from dataclasses import dataclass, replace

from bench.common import (
    PCM_RATE,
    SAMPLE_WIDTH,
    FakeServerProcess,
    Timings,
    feishu_service,
    print_environment,
    print_table,
    voice_note,
)
from voicebridge.speech.feishu_asr import FeishuStreamSettings
from voicebridge.speech.models import AudioClip

LATENCY_SECONDS = 0.02
DEFAULTS = FeishuStreamSettings()


@dataclass(frozen=True)
class Run:
    minutes: int
    parallel_segments: int
    requests: int
    streams: int
    max_open_streams: int
    failed: int
    wall: float
    client_cpu: float
    heard_seconds: float  # audio the fake accepted: proof that all of it arrived
    described_segments: int  # segment descriptions in the final transcript; one per stream expected

    @property
    def lower_bound(self) -> float:
        """Requests sent one by one, each waiting only for the simulated latency."""
        return self.requests * LATENCY_SECONDS


async def transcribe(fake: FakeServerProcess, minutes: int, settings: FeishuStreamSettings) -> Run:
    clip = AudioClip.from_path(voice_note(minutes * 60))
    service = feishu_service(fake.base_url, settings)
    await fake.reset()
    timings = Timings()
    transcript = await timings.run(lambda: service.transcribe(clip))
    await service.aclose()
    seen = await fake.stats()
    # The fake describes each stream's audio as "tone <f> hz <seconds> s".
    described = len(re.findall(r"\btone \d+ hz [\d.]+ s\b", transcript.text))
    return Run(minutes, settings.parallel_segments, seen["stream_recognize"], seen["streams"], seen["max_open_streams"],
               seen["failed"], timings.wall[0], timings.cpu[0], seen["audio_bytes"] / (PCM_RATE * SAMPLE_WIDTH), described)


async def measure(minutes: list[int], quick: bool) -> None:
    plans = [(length, DEFAULTS) for length in minutes]
    plans += [(length, replace(DEFAULTS, parallel_segments=1)) for length in minutes if not (quick and length >= 60)]
    for length in minutes:
        voice_note(length * 60)  # generate (once) before anything is timed
    runs: list[Run] = []
    async with FakeServerProcess("feishu", latency=LATENCY_SECONDS) as fake:
        print(f"setup: {fake.description}; client in this process")
        for length, settings in plans:
            run = await transcribe(fake, length, settings)
            print(f"  {length} min, parallel_segments={settings.parallel_segments}: {run.wall:.1f} s", flush=True)
            runs.append(run)
    rows = [[run.minutes, run.parallel_segments, run.requests, run.streams, run.max_open_streams, run.failed,
             f"{run.wall:.1f}", f"{run.client_cpu:.1f}", f"{run.lower_bound:.1f}", f"{run.lower_bound / run.wall:.2f}x",
             f"{run.heard_seconds:.1f}", run.described_segments] for run in runs]
    print_table(f"Feishu stream_recognize, {LATENCY_SECONDS * 1000:.0f} ms latency per request "
                f"(chunks {DEFAULTS.chunk_ms} ms, segments {DEFAULTS.segment_seconds:.0f} s, max streams {DEFAULTS.max_streams})",
                ["minutes", "parallel", "requests", "streams", "max open", "failed", "wall s", "client CPU s",
                 "one-by-one bound s", "speed-up", "audio heard s", "texts in transcript"], rows)
    if any(run.described_segments != run.streams for run in runs):
        print("\nWARNING: the final transcript does not hold exactly one text per stream: the client joined "
              "partial answers into the final text (see docs/performance.md)")
    if any(run.failed or abs(run.heard_seconds - run.minutes * 60) > 1 for run in runs):
        raise SystemExit("a run lost audio or needed retries: see 'failed' and 'audio heard s'")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, nargs="+", default=[1, 10, 60], help="note lengths (default 1 10 60)")
    parser.add_argument("--quick", action="store_true",
                        help="skip parallel_segments=1 for notes of 60 minutes or more (about 6 minutes each)")
    arguments = parser.parse_args()
    print_environment()
    asyncio.run(measure(arguments.minutes, arguments.quick))


if __name__ == "__main__":
    main()
