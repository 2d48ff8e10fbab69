"""Coze file ASR: POST /v1/audio/transcriptions with the whole clip as multipart field ``file``."""

from __future__ import annotations

import httpx

from .coze_common import CozeEndpoint, CozeRest
from .errors import ErrorKind, SpeechError
from .models import EncodedAudio, ProviderAudio, TranscribeOptions, TranscriberCapabilities, Transcript

# Containers both the big and the small Coze ASR models take (spec §7); others are converted.
COZE_FILE_CONTAINERS = frozenset({"ogg", "mp3", "wav", "m4a", "mp4"})
_MIME_TYPES = {"ogg": "audio/ogg", "mp3": "audio/mpeg", "wav": "audio/wav", "m4a": "audio/mp4", "mp4": "video/mp4"}


class CozeFileTranscriber:
    name = "coze"
    capabilities = TranscriberCapabilities(
        containers=COZE_FILE_CONTAINERS,
        max_bytes=10 * 1024 * 1024,
        max_seconds=30 * 60,
        streaming=False,
        hot_words=False,  # the REST call takes no recognition options (spec §7)…
        # …nor a language: `auto` only (the default)
    )

    def __init__(self, endpoint: CozeEndpoint, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.rest = CozeRest(endpoint, self.name, transport)

    async def transcribe(self, audio: ProviderAudio, options: TranscribeOptions) -> Transcript:
        if not isinstance(audio, EncodedAudio):
            raise TypeError("Coze file ASR takes an encoded file")
        files = {"file": (audio.filename, audio.data, _MIME_TYPES.get(audio.container, "application/octet-stream"))}
        # Recognising a long upload takes a while before the first byte of the answer.
        read_timeout = max(self.rest.endpoint.read_timeout, audio.seconds)
        body = await self.rest.json("POST", "/v1/audio/transcriptions", files=files, read_timeout=read_timeout)
        data = body.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            raise SpeechError(ErrorKind.SERVER, "Coze answered without data.text", provider=self.name,
                              logid=(body.get("detail") or {}).get("logid"), retryable=False)
        return Transcript(text=data["text"].strip(), provider=self.name, seconds=audio.seconds)

    async def check(self) -> None:
        await self.rest.probe("POST", "/v1/audio/transcriptions", files={"file": ("probe.wav", b"", "audio/wav")})

    async def aclose(self) -> None:
        await self.rest.aclose()
