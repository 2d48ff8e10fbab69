"""Coze streaming ASR over WebSocket /v1/audio/transcriptions (spec §4).

Session: ``transcriptions.update`` declaring exactly the audio that follows, then
``input_audio_buffer.append`` chunks, then ``input_audio_buffer.complete``. The server answers
with ``transcriptions.message.update`` events (each the full text so far), surfaced as partials,
and ends with ``transcriptions.message.completed``. Audio is sent while events are read, so
partials arrive during upload.

The audio is either PCM or an Ogg/Opus note's own pages (``format`` ogg, ``codec`` opus, spec
§4.1), which spares the bot decoding the note at all. When the server refuses the Ogg/Opus form
(an echo that is not ogg/opus, error 4000) this raises :class:`InputFormatRefused`, and the
service sends the note again as PCM.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from .coze_common import DROP_GRACE_SECONDS, CozeEndpoint, CozeEvent, CozeSocket, open_coze_socket, probe_coze_socket
from .errors import ErrorKind, InputFormatRefused, SpeechError
from .languages import AUTO
from .models import AudioFormat, OggOpusStream, PcmStream, ProviderAudio, TranscribeOptions, TranscriberCapabilities, Transcript
from .providers import last_transcript

STREAM_SAMPLE_RATE = 16000
# Neutral language code → Coze `user_language` (spec §4.1): the big model's `common` detects
# Chinese and English itself; the others select a small model.
USER_LANGUAGES = {
    AUTO: "common", "zh": "zh", "yue": "cant", "zh-sichuan": "sc", "en": "en", "ja": "ja", "ko": "ko",
    "fr": "fr", "es": "es", "pt": "pt", "ru": "ru", "id": "id", "ms": "ms",
}
# After the last audio frame, how long the server may stay silent before we give up.
RESULT_TIMEOUT = 30.0
# The Coze code for an invalid parameter, the audio included (spec §3: "The parameter audio is invalid…").
INVALID_PARAMETER = 4000


class CozeStreamTranscriber:
    name = "coze-stream"
    capabilities = TranscriberCapabilities(
        pcm_sample_rate=STREAM_SAMPLE_RATE,
        # One append per second of audio: the docs set no size (a real server took a 111 kB
        # frame), and each frame costs both sides a JSON and base64 round.
        pcm_chunk_seconds=1.0,
        streaming=True,
        hot_words=True,
        languages=frozenset(USER_LANGUAGES),
        stream_formats=frozenset({AudioFormat.OGG_OPUS}),  # spec §4.1: format ogg, codec opus
    )

    def __init__(self, endpoint: CozeEndpoint, result_timeout: float = RESULT_TIMEOUT, *, ogg_opus: bool = True) -> None:
        """``ogg_opus``: False sends every note as PCM (``COZE_STREAM_INPUT=pcm``)."""
        self.endpoint = endpoint
        self.result_timeout = result_timeout
        if not ogg_opus:
            self.capabilities = replace(self.capabilities, stream_formats=frozenset())

    async def transcribe(self, audio: ProviderAudio, options: TranscribeOptions) -> Transcript:
        return await last_transcript(self.stream(audio, options))

    async def stream(self, audio: ProviderAudio, options: TranscribeOptions) -> AsyncIterator[Transcript]:
        if isinstance(audio, PcmStream):
            declared = {"format": "pcm", "codec": "pcm", "sample_rate": audio.sample_rate, "channel": audio.channels,
                        "bit_depth": audio.bit_depth}
        elif isinstance(audio, OggOpusStream) and AudioFormat.OGG_OPUS in self.capabilities.stream_formats:
            # bit_depth means nothing for Opus; the server's default (16) is declared.
            declared = {"format": "ogg", "codec": "opus", "sample_rate": audio.sample_rate, "channel": audio.channels,
                        "bit_depth": 16}
        else:
            raise TypeError(f"Coze streaming ASR takes PCM or Ogg/Opus, not {type(audio).__name__}")
        encoded = declared["format"] != "pcm"
        async with open_coze_socket(self.endpoint, "/v1/audio/transcriptions", self.name) as socket:
            update = {"input_audio": declared, "asr_config": asr_config(options)}
            sender = asyncio.create_task(self._send_audio(socket, update, audio))
            text = ""
            seconds = 0.0
            try:
                while True:
                    event = await self._next_event(socket, sender)
                    event_type, data = event.type, event.data
                    if event_type == "transcriptions.updated":
                        _check_echo(declared, data.get("input_audio"), socket)
                    elif event_type == "transcriptions.message.update":
                        text = str(data.get("content") or "")
                        yield Transcript(text=text, final=False, provider=self.name)
                    elif event_type == "transcriptions.message.completed":
                        # Docs give this event no data; one SDK's types give it data.content.
                        text = str(data.get("content") or text)
                        seconds = sender.result() if sender.done() else 0.0
                        break
                    # Anything else (created, completed, unknown new events) needs no action.
            except SpeechError as error:
                if encoded and _refuses_audio(error):
                    # Refused config or audio: the service sends the same note as PCM at once.
                    raise InputFormatRefused(f"Coze refused Ogg/Opus input: {error.message}", provider=self.name,
                                             code=error.code, logid=error.logid) from error
                raise
            finally:
                if not sender.done():
                    sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
        yield Transcript(text=text.strip(), final=True, provider=self.name, seconds=seconds or None)

    async def _send_audio(self, socket: CozeSocket, update: dict[str, Any], audio: PcmStream | OggOpusStream) -> float:
        await socket.send("transcriptions.update", update)
        sent = 0
        async for chunk in audio.chunks:
            await socket.send_audio("input_audio_buffer.append", chunk)
            sent += len(chunk)
        await socket.send("input_audio_buffer.complete")
        if isinstance(audio, OggOpusStream):
            return audio.seconds
        return sent / (audio.sample_rate * audio.channels * audio.bit_depth // 8)

    async def _next_event(self, socket: CozeSocket, sender: asyncio.Task[float]) -> CozeEvent:
        """The next server event, while watching the sender: its failure (bad audio, dropped
        socket) ends the session. The result timeout only runs once all audio is out."""
        receiver = asyncio.ensure_future(socket.receive(timeout=None))
        try:
            if not sender.done():
                await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
            failure = _failure(sender)
            if failure is not None and not receiver.done():
                if isinstance(failure, SpeechError) and failure.kind is ErrorKind.CONNECTIVITY:
                    # A server refusing a session (bad token) sends its reason just before it
                    # drops the socket: that error event, if it comes, explains more.
                    await asyncio.wait({receiver}, timeout=DROP_GRACE_SECONDS)
                if not receiver.done():
                    raise failure
            async with asyncio.timeout(self.result_timeout):
                return await receiver
        except TimeoutError:
            raise SpeechError(ErrorKind.TIMEOUT, "Coze sent no result in time", provider=self.name,
                              logid=socket.logid) from None
        finally:
            if not receiver.done():
                receiver.cancel()
                await asyncio.gather(receiver, return_exceptions=True)

    async def check(self) -> None:
        await probe_coze_socket(self.endpoint, "/v1/audio/transcriptions", self.name)

    async def aclose(self) -> None:
        return None


def _failure(task: asyncio.Task[float]) -> BaseException | None:
    return task.exception() if task.done() and not task.cancelled() else None


def asr_config(options: TranscribeOptions) -> dict[str, Any]:
    """``asr_config`` from the request options; unset options are left to the server's defaults."""
    config: dict[str, Any] = {"user_language": USER_LANGUAGES[options.language or AUTO]}
    if options.hot_words:
        config["hot_words"] = list(options.hot_words)
    if options.context:
        config["context"] = options.context
    for key, value in (
        ("enable_ddc", options.remove_disfluencies),
        ("enable_itn", options.inverse_text_normalization),
        ("enable_punc", options.punctuation),
    ):
        if value is not None:
            config[key] = value
    return config


def _refuses_audio(error: SpeechError) -> bool:
    """Error 4000 about the audio or its format ("The parameter audio is invalid. It should follow
    the format: …", spec §3). Code 4000 alone also covers every other parameter (a bad hot-word
    list, say), which PCM would not get past either."""
    if isinstance(error, InputFormatRefused) or error.code != INVALID_PARAMETER:
        return False
    return any(word in error.message.lower() for word in ("audio", "format", "codec"))


def _check_echo(declared: dict[str, Any], effective: object, socket: CozeSocket) -> None:
    """The server echoes the audio format it will decode; anything else would be garbage text.
    For Ogg/Opus that is a refusal of the form, which PCM may well get past."""
    if not isinstance(effective, dict):
        return
    mismatched = {key: effective.get(key) for key, value in declared.items() if key in effective and effective[key] != value}
    if mismatched and declared["format"] != "pcm":
        raise InputFormatRefused(f"Coze did not take Ogg/Opus input as declared: {mismatched}", provider=socket.provider,
                                 logid=socket.logid, refused_config=True)
    if mismatched:
        raise SpeechError(ErrorKind.INVALID_INPUT, f"Coze did not accept the declared audio format: {mismatched}",
                          provider=socket.provider, logid=socket.logid, retryable=False)
