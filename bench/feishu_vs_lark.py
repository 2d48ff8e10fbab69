"""Feishu streaming ASR: the project's client vs lark-oapi's, against the same fake, same audio.

Sends the same speech-like voice note (default 60 s), pre-decoded to 16 kHz PCM in 200 ms chunks,
three ways, in rotating order:

* ``lark-oapi``: the official SDK's sync ``speech_to_text.v1.speech.stream_recognize``, one stream
  of every chunk in order (action 1, then 0…, then 2 on the last), a 16-character hex stream_id as
  ours makes, run in a worker thread: lark-oapi's async calls fetch the token with blocking
  ``requests`` inside the coroutine, so on the event loop they would block it;
* ``ours, 1 segment at a time``: ``FeishuStreamTranscriber`` with ``parallel_segments=1``, the
  like-for-like comparison (requests one by one; the note is still cut into 30 s streams);
* ``ours, defaults``: the same with the default 4 parallel segments.

Each client keeps its tenant token between runs (lark-oapi caches it process-wide, ours per
client). The fake runs in a separate process; "client CPU" is this whole process (the worker
thread included). No fixed target.

    PYTHONPATH=. .venv/bin/python bench/feishu_vs_lark.py [--seconds 60] [--repeat 5] [--latency 0]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

import lark_oapi as lark
from lark_oapi.api.speech_to_text.v1 import (
    Speech,
    StreamConfig,
    StreamRecognizeSpeechRequest,
    StreamRecognizeSpeechRequestBody,
)

from bench.common import (
    CHUNK_SECONDS,
    PCM_RATE,
    FakeServerProcess,
    Summary,
    Timings,
    decode_with_cli,
    feishu_transcriber,
    ms,
    pcm_chunks,
    print_environment,
    print_table,
    replay,
    voice_note,
)
from voicebridge.speech.feishu_asr import ACTION_FIRST, ACTION_LAST, ACTION_MIDDLE, FeishuStreamSettings, FeishuStreamTranscriber
from voicebridge.speech.models import PcmStream, TranscribeOptions
from tests.fakes.feishu import DEFAULT_APP_ID, DEFAULT_APP_SECRET

WARM_UP_RUNS = 1
LARK, OURS_ONE, OURS_DEFAULT = "lark-oapi (sync, worker thread)", "ours, parallel_segments=1", "ours, defaults"
DEFAULTS = FeishuStreamSettings()


def lark_stream(client: lark.Client, chunks: Sequence[bytes]) -> str:
    """One stream through lark-oapi; the final text is the last (action 2) answer."""
    stream_id = secrets.token_hex(8)
    text = ""
    for sequence, chunk in enumerate(chunks):
        action = ACTION_FIRST if sequence == 0 else ACTION_LAST if sequence == len(chunks) - 1 else ACTION_MIDDLE
        config = (StreamConfig.builder().stream_id(stream_id).sequence_id(sequence).action(action)
                  .format("pcm").engine_type("16k_auto").build())
        speech = Speech.builder().speech(base64.b64encode(chunk).decode("ascii")).build()
        body = StreamRecognizeSpeechRequestBody.builder().speech(speech).config(config).build()
        response = client.speech_to_text.v1.speech.stream_recognize(StreamRecognizeSpeechRequest.builder().request_body(body).build())
        if not response.success():
            raise RuntimeError(f"lark-oapi: code {response.code}: {response.msg}")
        text = response.data.recognition_text or text
    return text


async def ours(transcriber: FeishuStreamTranscriber, chunks: Sequence[bytes]) -> str:
    audio = PcmStream(sample_rate=PCM_RATE, chunks=replay(chunks))
    return (await transcriber.transcribe(audio, TranscribeOptions(language="auto"))).text


async def measure(seconds: int, repeat: int, latency: float) -> None:
    path = voice_note(seconds)
    chunks = pcm_chunks(decode_with_cli(path))
    async with FakeServerProcess("feishu", latency=latency) as fake:
        lark_client = (lark.Client.builder().app_id(DEFAULT_APP_ID).app_secret(DEFAULT_APP_SECRET).domain(fake.base_url)
                       .log_level(lark.LogLevel.ERROR).build())
        one_at_a_time = feishu_transcriber(fake.base_url, replace(DEFAULTS, parallel_segments=1))
        defaults = feishu_transcriber(fake.base_url, DEFAULTS)
        clients: dict[str, Callable[[], Awaitable[str]]] = {
            LARK: lambda: asyncio.to_thread(lark_stream, lark_client, chunks),
            OURS_ONE: lambda: ours(one_at_a_time, chunks),
            OURS_DEFAULT: lambda: ours(defaults, chunks),
        }
        names = list(clients)
        for name in names:  # warm-up: connections, and each client's tenant token
            for _ in range(WARM_UP_RUNS):
                await clients[name]()
        timings = {name: Timings() for name in names}
        requests: dict[str, list[tuple[int, int]]] = {name: [] for name in names}  # (speech, token) per run
        transcripts: dict[str, str] = {}
        for run in range(repeat):
            for name in names[run % len(names):] + names[:run % len(names)]:  # rotate: no client always goes first
                await fake.reset()
                transcripts[name] = await timings[name].run(clients[name])
                seen = await fake.stats()
                if seen["failed"]:
                    raise SystemExit(f"{name}: {seen['failed']} requests failed")
                requests[name].append((seen["stream_recognize"], seen["token_fetches"]))
        for transcriber in (one_at_a_time, defaults):
            await transcriber.aclose()
        setup = fake.description

    baseline = Summary.of(timings[LARK].wall)
    rows = []
    for name in names:
        wall, cpu = Summary.of(timings[name].wall), Summary.of(timings[name].cpu)
        speech_requests, token_requests = max(requests[name])
        rows.append([name, ms(wall.median), ms(wall.p90), ms(cpu.median), speech_requests, token_requests,
                     f"{wall.median / baseline.median:.2f}x"])
    print(f"\nsetup: {setup}; clients in this process (lark-oapi in a worker thread)")
    print(f"audio: {path.name}, {seconds} s as {len(chunks)} chunks of {CHUNK_SECONDS * 1000:.0f} ms 16 kHz PCM; "
          f"{repeat} timed runs per client after {WARM_UP_RUNS} warm-up run, in rotating order; "
          f"ours cut the note into {DEFAULTS.segment_seconds:.0f} s streams at pauses")
    print_table(f"Feishu streaming ASR, {seconds} s of audio, {latency * 1000:.0f} ms fake latency per request",
                ["client", "median ms", "p90 ms", "client CPU ms (median)", "speech requests", "token requests", "vs lark-oapi"],
                rows)
    print("\ntranscripts: " + "; ".join(f"{name}: {text!r}" for name, text in transcripts.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="length of the audio (default 60)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per client (default 5)")
    parser.add_argument("--latency", type=float, default=0.0,
                        help="seconds the fake holds each speech request before answering (default 0)")
    arguments = parser.parse_args()
    print_environment()
    asyncio.run(measure(arguments.seconds, arguments.repeat, arguments.latency))


if __name__ == "__main__":
    main()
