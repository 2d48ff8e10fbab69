"""A Coze agent's spoken answer: how long after the agent's last words the voice note is ready,
spoken sentence by sentence while the answer streams (``SpokenAnswer``, what the plugin does)
vs synthesized whole once the answer is complete.

The answer (default 6 sentences, ~560 characters) arrives in 6-character pieces every 30 ms, as a
model writes. Coze TTS is modelled by a transport in front of the local fake that answers after
``--tts-base`` seconds plus ``--tts-per-char`` seconds per character (real TTS takes longer for
longer text); both ways use the same REST TTS, PCM pieces joined and encoded once to OGG/Opus.
The fake runs in this process: the times measured are waits, not CPU.

    PYTHONPATH=. .venv/bin/python bench/agent_voice.py [--sentences 6] [--repeat 5] [--tts-base 0.3] [--tts-per-char 0.008]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import httpx

from bench.common import print_environment  # first: it silences cozepy's import-time warning
from voicebridge.speech.coze_common import CozeEndpoint
from voicebridge.speech.coze_tts import CozeSpeechSynthesizer
from voicebridge.speech.models import AudioFormat, SynthesizeOptions
from voicebridge.speech.service import SpeechService
from voicebridge.voice_notes.answers import SPEECH_RATE, SpokenAnswer
from voicebridge.voice_notes.model import ChatKind, ChatRef
from tests.fakes.coze import DEFAULT_TOKEN, DEFAULT_VOICES, FakeCoze

SENTENCE = "The weather in Hangzhou stays mild this week, with light wind from the lake and a little rain. "
PIECE = 6
PIECE_SECONDS = 0.03


class SlowTts(httpx.AsyncBaseTransport):
    """The fake's TTS, answering as slowly as a real one: a base delay plus a delay per character."""

    def __init__(self, base: float, per_char: float) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.base = base
        self.per_char = per_char

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        characters = len(json.loads(request.content).get("input", "")) if request.url.path == "/v1/audio/speech" else 0
        await asyncio.sleep(self.base + self.per_char * characters)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def allow_all(where: ChatRef, characters: int, lang: str | None) -> str | None:
    return None


def pieces(answer: str) -> list[str]:
    return [answer[start:start + PIECE] for start in range(0, len(answer), PIECE)]


async def streamed(service: SpeechService, answer: str) -> float:
    voice = SpokenAnswer(service, allow_all, ChatRef("telegram", "1", ChatKind.PRIVATE), DEFAULT_VOICES[0].voice_id,
                         False, None)
    written = ""
    for piece in pieces(answer):
        await asyncio.sleep(PIECE_SECONDS)
        written += piece
        voice.heard(written)
    last_words = time.perf_counter()
    note = await voice.finish(written)
    assert note is not None
    return time.perf_counter() - last_words


async def whole(service: SpeechService, answer: str) -> float:
    for _ in pieces(answer):
        await asyncio.sleep(PIECE_SECONDS)
    last_words = time.perf_counter()
    audio = await service.synthesize(answer, SynthesizeOptions(voice_id=DEFAULT_VOICES[0].voice_id, format=AudioFormat.PCM,
                                                               sample_rate=SPEECH_RATE))
    await service.converter.encode(audio.data, SPEECH_RATE, AudioFormat.OGG_OPUS)
    return time.perf_counter() - last_words


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tts-base", type=float, default=0.3)
    parser.add_argument("--tts-per-char", type=float, default=0.008)
    args = parser.parse_args()
    print_environment()
    answer = SENTENCE * args.sentences
    async with FakeCoze() as fake:
        endpoint = CozeEndpoint(DEFAULT_TOKEN, fake.base_url, fake.ws_base_url)
        synthesizer = CozeSpeechSynthesizer(endpoint, DEFAULT_VOICES[0].voice_id, SlowTts(args.tts_base, args.tts_per_char))
        service = SpeechService(synthesizers=[synthesizer], tts_chain=("coze",))
        results: dict[str, list[float]] = {"sentence by sentence": [], "whole answer": []}
        for _ in range(args.repeat):  # alternating, so a busy moment costs both
            results["sentence by sentence"].append(await streamed(service, answer))
            results["whole answer"].append(await whole(service, answer))
        await service.aclose()
    print(f"\nanswer: {len(answer)} characters in {len(answer) // PIECE} pieces, one per {PIECE_SECONDS * 1000:.0f} ms; "
          f"TTS {args.tts_base * 1000:.0f} ms + {args.tts_per_char * 1000:.0f} ms per character")
    print(f"{'voice note ready after the last words':40} {'median':>8} {'min':>8} {'max':>8}")
    for name, times in results.items():
        print(f"{name:40} {statistics.median(times) * 1000:7.0f}ms {min(times) * 1000:7.0f}ms {max(times) * 1000:7.0f}ms")
    ratio = statistics.median(results["sentence by sentence"]) / statistics.median(results["whole answer"])
    print(f"ratio (sentence by sentence / whole): {ratio:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
