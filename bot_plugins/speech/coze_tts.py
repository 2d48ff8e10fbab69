"""Coze REST TTS: POST /v1/audio/speech; the answer body is the audio itself (spec §2.2)."""

from __future__ import annotations

import httpx

from .coze_common import LOGID_HEADER, CozeEndpoint, CozeRest, CozeVoiceCatalogue
from .errors import ErrorKind, SpeechError
from .models import AudioFormat, SpeechAudio, SynthesizeOptions, SynthesizerCapabilities, Voice


class CozeSpeechSynthesizer:
    name = "coze"
    capabilities = SynthesizerCapabilities(
        formats=frozenset({AudioFormat.OGG_OPUS, AudioFormat.MP3, AudioFormat.WAV, AudioFormat.PCM}),
        max_text_bytes=1024,
        lists_voices=True,
    )

    def __init__(self, endpoint: CozeEndpoint, default_voice_id: str | None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.rest = CozeRest(endpoint, self.name, transport)
        self.catalogue = CozeVoiceCatalogue(self.rest, default_voice_id)

    async def synthesize(self, text: str, options: SynthesizeOptions) -> SpeechAudio:
        request = {
            "input": text,
            "voice_id": await self.catalogue.resolve(options.voice_id),
            "response_format": options.format.value,
            "speed": options.speed,
            "sample_rate": options.sample_rate,
        }
        response = await self.rest.request("POST", "/v1/audio/speech", json=request)
        content_type = response.headers.get("content-type", "")
        if "json" in content_type or "text/" in content_type or not response.content:
            # A success status with no audio: never hand a JSON or HTML page on as sound.
            raise SpeechError(ErrorKind.SERVER, f"Coze answered {content_type or 'nothing'} instead of audio",
                              provider=self.name, logid=response.headers.get(LOGID_HEADER), retryable=False)
        seconds = len(response.content) / 2 / options.sample_rate if options.format is AudioFormat.PCM else None
        return SpeechAudio(data=response.content, format=options.format, sample_rate=options.sample_rate, seconds=seconds)

    async def voices(self) -> list[Voice]:
        return await self.catalogue.voices()

    async def check(self) -> None:
        await self.rest.probe("POST", "/v1/audio/speech", json={"input": "", "voice_id": ""})

    async def aclose(self) -> None:
        await self.rest.aclose()
