"""Coze streaming ASR: the project's WebSocket client vs cozepy's, against the same fake.

Transcribes the same speech-like voice note (default 60 s) three ways, alternating runs:

* ``ours (direct)``: ``CozeStreamTranscriber`` fed a ``PcmStream`` of pre-decoded 200 ms chunks
  (decoding excluded);
* ``cozepy``: ``AsyncWebsocketsAudioTranscriptionsClient`` sending the same ``input_audio``, the same
  chunks via ``input_audio_buffer_append``, ``complete``, then waiting for
  ``transcriptions.message.completed``;
* ``ours (service)``: ``SpeechService.transcribe`` on the OGG file end to end (ffmpeg decoding
  included), for reference.

The fake Coze server runs in a separate process. Target: ours (direct) median <= 1.0x cozepy.

    PYTHONPATH=. .venv/bin/python bench/coze_stream.py [--seconds 60] [--repeat 20]
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Sequence

from bench.common import (  # first: it silences cozepy's import-time warning
    CHUNK_SECONDS,
    PCM_RATE,
    FakeServerProcess,
    Summary,
    Timings,
    coze_endpoint,
    coze_stream_service,
    decode_with_cli,
    ms,
    pcm_chunks,
    print_environment,
    print_table,
    replay,
    verdict,
    voice_note,
)
from voicebridge.speech.coze_asr_stream import CozeStreamTranscriber
from voicebridge.speech.coze_common import CozeEndpoint
from voicebridge.speech.models import AudioClip, PcmStream, TranscribeOptions
from voicebridge.speech.service import SpeechService
from cozepy import TokenAuth
from cozepy.request import Requester
from cozepy.websockets.audio.transcriptions import (
    AsyncWebsocketsAudioTranscriptionsClient,
    InputAudioBufferAppendEvent,
    TranscriptionsMessageUpdateEvent,
    TranscriptionsUpdateEvent,
)
from cozepy.websockets.ws import InputAudio, WebsocketsEventType
from tests.fakes.coze import DEFAULT_TOKEN

TARGET_RATIO = 1.0
WARM_UP_RUNS = 2
RESULT_TIMEOUT = 60.0
OURS, COZEPY, SERVICE = "ours (direct)", "cozepy", "ours (service, incl. decoding)"


async def ours_direct(endpoint: CozeEndpoint, chunks: Sequence[bytes]) -> str:
    transcriber = CozeStreamTranscriber(endpoint)
    audio = PcmStream(sample_rate=PCM_RATE, chunks=replay(chunks))
    return (await transcriber.transcribe(audio, TranscribeOptions(language="auto"))).text


async def ours_service(service: SpeechService, clip: AudioClip) -> str:
    return (await service.transcribe(clip)).text


async def with_cozepy(ws_base_url: str, chunks: Sequence[bytes]) -> str:
    texts: list[str] = []

    async def on_update(_client: AsyncWebsocketsAudioTranscriptionsClient, event: TranscriptionsMessageUpdateEvent) -> None:
        texts.append(event.data.content)

    # cozepy derives the WS URL from an https API base; the fake is plain ws://, so build the client directly.
    client = AsyncWebsocketsAudioTranscriptionsClient(
        base_url=ws_base_url,
        requester=Requester(auth=TokenAuth(DEFAULT_TOKEN)),
        on_event={WebsocketsEventType.TRANSCRIPTIONS_MESSAGE_UPDATE: on_update},
    )
    input_audio = InputAudio(format="pcm", codec="pcm", sample_rate=PCM_RATE, channel=1, bit_depth=16)
    async with client() as session:
        await session.transcriptions_update(TranscriptionsUpdateEvent.Data(input_audio=input_audio))
        for chunk in chunks:
            await session.input_audio_buffer_append(InputAudioBufferAppendEvent.Data(delta=chunk))
        await session.input_audio_buffer_complete()
        async with asyncio.timeout(RESULT_TIMEOUT):  # cozepy's wait() never ends if the session failed
            await session.wait()
    return texts[-1].strip() if texts else ""


async def measure(seconds: int, repeat: int) -> None:
    path = voice_note(seconds)
    chunks = pcm_chunks(decode_with_cli(path))
    async with FakeServerProcess("coze") as fake:
        endpoint = coze_endpoint(fake.base_url, fake.ws_base_url)
        service = coze_stream_service(fake.base_url, fake.ws_base_url)
        clip = AudioClip.from_path(path)
        clients: dict[str, Callable[[], Awaitable[str]]] = {
            OURS: lambda: ours_direct(endpoint, chunks),
            COZEPY: lambda: with_cozepy(fake.ws_base_url, chunks),
            SERVICE: lambda: ours_service(service, clip),
        }
        names = list(clients)
        transcripts = {name: await clients[name]() for name in names}
        for name in names:
            for _ in range(WARM_UP_RUNS - 1):
                await clients[name]()
        timings = {name: Timings() for name in names}
        # The two contenders alternate (ABBA), so drift and after-effects hit both alike; the
        # end-to-end reference runs on its own afterwards, leaving its ffmpeg work out of their runs.
        for run in range(repeat):
            for name in (OURS, COZEPY) if run % 2 == 0 else (COZEPY, OURS):
                transcripts[name] = await timings[name].run(clients[name])
        for _ in range(repeat):
            transcripts[SERVICE] = await timings[SERVICE].run(clients[SERVICE])
        await service.aclose()
        fake_saw = await fake.stats()
        setup = fake.description

    baseline = Summary.of(timings[COZEPY].wall)
    rows = []
    for name in names:
        wall, cpu = Summary.of(timings[name].wall), Summary.of(timings[name].cpu)
        ratio = wall.median / baseline.median
        target = verdict(ratio, TARGET_RATIO) if name == OURS else "(baseline)" if name == COZEPY else "(reference)"
        rows.append([name, ms(wall.median), ms(wall.p90), ms(cpu.median), f"{ratio:.2f}x", target])
    print(f"\nsetup: {setup}; client in this process, one event loop")
    print(f"audio: {path.name}, {seconds} s as {len(chunks)} chunks of {CHUNK_SECONDS * 1000:.0f} ms 16 kHz PCM; "
          f"{repeat} timed runs per client after {WARM_UP_RUNS} warm-up runs; ours (direct) and cozepy alternate")
    print_table(f"Coze streaming ASR, {seconds} s of audio (target: ours (direct) median <= {TARGET_RATIO}x cozepy)",
                ["client", "median ms", "p90 ms", "client CPU ms (median)", "vs cozepy", "target"], rows)
    same = len(set(transcripts.values())) == 1
    print(f"\ntranscripts {'identical' if same else 'DIFFER'}: " + "; ".join(f"{name}: {text!r}" for name, text in transcripts.items()))
    print(f"the fake heard {fake_saw['sessions']} sessions, {fake_saw['audio_bytes'] / 1e6:.1f} MB of PCM")
    if not same:
        raise SystemExit("the clients' transcripts differ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="length of the audio (default 60)")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per client (default 20)")
    arguments = parser.parse_args()
    print_environment()
    asyncio.run(measure(arguments.seconds, arguments.repeat))


if __name__ == "__main__":
    main()
