"""Coze streaming TTS over WebSocket /v1/audio/speech (spec §5).

One session per text piece: ``speech.update`` (PCM at the wanted rate, voice, speed), the text,
``input_text_buffer.complete``, then PCM ``speech.audio.update`` deltas until
``speech.audio.completed``. A fresh connection per piece works whether or not the server keeps a
session open for a second text (spec §5.3 leaves that open).
"""

from __future__ import annotations

import base64
import binascii

import httpx

from .coze_common import CozeEndpoint, CozeRest, CozeVoiceCatalogue, open_coze_socket, probe_coze_socket
from .errors import ErrorKind, SpeechError
from .models import AudioFormat, SpeechAudio, SynthesizeOptions, SynthesizerCapabilities, Voice

AUDIO_TIMEOUT = 30.0  # longest silence between two server events


def speech_rate(speed: float) -> int:
    """Speed factor → Coze ``speech_rate`` (−50 = 0.5×, 0 = 1×, 100 = 2×)."""
    return max(-50, min(100, round((speed - 1.0) * 100)))


class CozeStreamSynthesizer:
    name = "coze-stream"
    capabilities = SynthesizerCapabilities(
        formats=frozenset({AudioFormat.PCM}),
        max_text_bytes=1024,
        streaming=True,
        lists_voices=True,
    )

    def __init__(self, endpoint: CozeEndpoint, default_voice_id: str | None,
                 transport: httpx.AsyncBaseTransport | None = None, audio_timeout: float = AUDIO_TIMEOUT) -> None:
        self.endpoint = endpoint
        self.audio_timeout = audio_timeout
        self.rest = CozeRest(endpoint, self.name, transport)
        self.catalogue = CozeVoiceCatalogue(self.rest, default_voice_id)

    async def synthesize(self, text: str, options: SynthesizeOptions) -> SpeechAudio:
        voice_id = await self.catalogue.resolve(options.voice_id)
        pcm = bytearray()
        async with open_coze_socket(self.endpoint, "/v1/audio/speech", self.name) as socket:
            output_audio = {
                "codec": "pcm",
                "pcm_config": {"sample_rate": options.sample_rate},
                "speech_rate": speech_rate(options.speed),
                "voice_id": voice_id,
            }
            try:
                await socket.send("speech.update", {"output_audio": output_audio})
                await socket.send("input_text_buffer.append", {"delta": text})
                await socket.send("input_text_buffer.complete")
            except SpeechError as error:
                raise (await socket.reason_for_drop(error)) if error.kind is ErrorKind.CONNECTIVITY else error from error
            while True:
                event = await socket.receive(timeout=self.audio_timeout)
                event_type, data = event.type, event.data
                if event_type == "speech.updated":
                    self._check_echo(data.get("output_audio"), options.sample_rate, socket.logid)
                elif event_type == "speech.audio.update":
                    try:
                        pcm += base64.b64decode(data.get("delta") or "", validate=True)
                    except (binascii.Error, ValueError) as error:
                        raise SpeechError(ErrorKind.SERVER, "Coze sent audio that is not base64", provider=self.name,
                                          logid=socket.logid, retryable=False) from error
                elif event_type == "speech.audio.completed":
                    break
                # created, input_text_buffer.completed, sentence_start, unknown events: nothing to do
        return SpeechAudio(data=bytes(pcm), format=AudioFormat.PCM, sample_rate=options.sample_rate,
                           seconds=len(pcm) / 2 / options.sample_rate)

    def _check_echo(self, effective: object, sample_rate: int, logid: str | None) -> None:
        """Refuse audio whose format differs from the one asked for: it would play as noise."""
        if not isinstance(effective, dict):
            return
        codec = effective.get("codec")
        rate = (effective.get("pcm_config") or {}).get("sample_rate", sample_rate)
        if codec not in (None, "pcm") or rate != sample_rate:
            raise SpeechError(ErrorKind.INVALID_INPUT, f"Coze would send {codec} at {rate} Hz, not pcm at {sample_rate} Hz",
                              provider=self.name, logid=logid, retryable=False)

    async def voices(self) -> list[Voice]:
        return await self.catalogue.voices()

    async def check(self) -> None:
        await probe_coze_socket(self.endpoint, "/v1/audio/speech", self.name)

    async def aclose(self) -> None:
        await self.rest.aclose()
