"""Feishu / Lark streaming ASR: POST /open-apis/speech_to_text/v1/speech/stream_recognize (spec §3).

One stream is a sequence of requests sharing a 16-character ``stream_id``: base64 PCM chunks of
100–200 ms with ``sequence_id`` 0, 1, 2… and ``action`` 1 (first), 0 (middle), 2 (last, wait for the
final text), or 3 (abort). Every request is a round trip, so a long note is cut at pauses into
segments that run as parallel streams (bounded, and all streams of this client share the
tenant's 20-stream limit); their texts are joined in order.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import itertools
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from .audio import SAMPLE_WIDTH, split_at_pauses
from .errors import ErrorKind, SpeechError
from .feishu_auth import FEISHU_CODE_KINDS, FeishuClient
from .models import PcmStream, ProviderAudio, TranscribeOptions, TranscriberCapabilities, Transcript
from .providers import as_dict, last_transcript
from .retry import Retrier
from .slots import StreamSlots

log = logging.getLogger(__name__)

STREAM_PATH = "/open-apis/speech_to_text/v1/speech/stream_recognize"
SAMPLE_RATE = 16000  # engine 16k_auto: 16 kHz mono s16le
ACTION_FIRST, ACTION_MIDDLE, ACTION_LAST, ACTION_ABORT = 1, 0, 2, 3


class TextMode(StrEnum):
    """How a server reports ``recognition_text``; the docs do not say (spec §3.4)."""

    AUTO = "auto"  # recognised from the answers themselves (StreamText)
    CUMULATIVE = "cumulative"  # each answer is the whole text so far: the documented client advice
    DELTA = "delta"  # each answer holds only the words its chunk added


@dataclass(frozen=True)
class FeishuStreamSettings:
    chunk_ms: int = 200  # the documented advice is 100–200 ms per chunk
    max_streams: int = 20  # the tenant-wide limit of open streams
    segment_seconds: float = 30.0  # long notes are cut into segments of about this length…
    parallel_segments: int = 4  # …of which one note runs at most this many at once
    text_mode: TextMode = TextMode.AUTO


class FeishuStreamTranscriber:
    name = "feishu"
    capabilities = TranscriberCapabilities(
        pcm_sample_rate=SAMPLE_RATE,
        pcm_chunk_seconds=1.0,  # cut into segments, then into chunk_ms requests, here
        streaming=True,
        hot_words=False,
        # languages: `auto` only (the default). The one engine, 16k_auto, recognises Mandarin and
        # English mixed; the API has no language parameter (spec §3.2).
    )

    def __init__(self, client: FeishuClient, settings: FeishuStreamSettings = FeishuStreamSettings(),
                 retrier: Retrier | None = None, slots: StreamSlots | None = None) -> None:
        """``slots``: the tenant's stream limit when it is shared beyond this process."""
        self.client = client
        self.settings = settings
        self.retrier = retrier or Retrier()
        self._stream_slots: StreamSlots = slots or asyncio.Semaphore(settings.max_streams)
        self._aborts: set[asyncio.Task[None]] = set()

    async def transcribe(self, audio: ProviderAudio, options: TranscribeOptions) -> Transcript:
        return await last_transcript(self.stream(audio, options))

    async def stream(self, audio: ProviderAudio, options: TranscribeOptions) -> AsyncIterator[Transcript]:
        if not isinstance(audio, PcmStream) or audio.sample_rate != SAMPLE_RATE:
            raise TypeError("Feishu ASR takes a 16 kHz PCM stream")
        updates: asyncio.Queue[_Update] = asyncio.Queue()
        runner = asyncio.create_task(self._run_segments(audio, updates))
        texts: dict[int, str] = {}
        shown = ""
        try:
            while not isinstance(update := await updates.get(), _Finished):
                if isinstance(update, _Failed):
                    raise update.error
                texts[update.segment] = update.text
                joined = join_texts(texts[index] for index in sorted(texts))
                if joined != shown:
                    shown = joined
                    yield Transcript(text=joined, final=False, provider=self.name)
        finally:
            if not runner.done():
                runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        yield Transcript(text=shown, final=True, provider=self.name, seconds=update.seconds)

    async def _run_segments(self, audio: PcmStream, updates: asyncio.Queue[_Update]) -> None:
        """Cut the audio into segments and recognise up to ``parallel_segments`` at a time.

        A segment is cut only once a stream slot is free for it: decoding follows the cutting,
        so a note waiting for the tenant's streams holds its encoded file, not decoded audio.
        """
        segments = split_at_pauses(audio.chunks, SAMPLE_RATE, self.settings.segment_seconds)
        cutting = asyncio.Lock()  # one segment cut at a time, in order
        counter = itertools.count()
        total_bytes = 0

        async def next_segment() -> tuple[int, bytes] | None:
            nonlocal total_bytes
            async with cutting:
                try:
                    segment = await anext(segments)
                except StopAsyncIteration:
                    return None
                total_bytes += len(segment)
                return next(counter), segment

        async def recognise_next() -> bool:
            """One segment, in a stream slot; False when there is none left. (A function of its
            own so that the segment is let go before the wait for the next slot.)"""
            await self._stream_slots.acquire()
            try:
                item = await next_segment()
            except BaseException:
                self._stream_slots.release()
                raise
            if item is None:
                self._stream_slots.release()
                return False
            index, segment = item
            # The note's very first request is not retried here: until Feishu has answered once, a
            # retry of the whole note costs nothing more, and the service may send it to a
            # fallback provider instead of waiting out another timeout.
            text = await self._recognise_segment(segment, functools.partial(_report, updates, index), index > 0)
            updates.put_nowait(_Text(index, text))
            return True

        async def recognise() -> None:
            while await recognise_next():
                pass

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(self.settings.parallel_segments):
                    group.create_task(recognise())
        except BaseExceptionGroup as failures:
            updates.put_nowait(_Failed(_first_error(failures)))
            return
        finally:
            await segments.aclose()
        updates.put_nowait(_Finished(total_bytes / (SAMPLE_WIDTH * SAMPLE_RATE)))

    async def _recognise_segment(self, pcm: bytes, on_text: Callable[[str], None], retry_opening: bool) -> str:
        """One stream, in the stream slot the caller holds (and this releases): the whole segment
        in chunks; the final text comes from the action-2 answer.

        A chunk whose answer was lost (timeout) may already have reached the server, and a
        repeated ``sequence_id`` is then refused: the segment restarts once as a new stream.
        """
        try:
            return await self._one_stream(pcm, on_text, retry_opening, slot_held=True)
        except _StreamBroken as broken:
            log.info("Feishu stream broke after a lost answer (%s); restarting the segment", broken.error)
            try:
                return await self._one_stream(pcm, on_text, retry_opening=True)
            except _StreamBroken as again:
                raise again.error from None

    async def _one_stream(self, pcm: bytes, on_text: Callable[[str], None], retry_opening: bool, slot_held: bool = False) -> str:
        chunk_bytes = SAMPLE_RATE * SAMPLE_WIDTH * self.settings.chunk_ms // 1000
        # Views, not copies: a hundred notes in flight would each hold their segment twice.
        view = memoryview(pcm)
        chunks: list[bytes | memoryview] = [view[start:start + chunk_bytes] for start in range(0, len(pcm), chunk_bytes)] or [b""]
        if len(chunks) == 1:
            chunks.append(b"")  # a stream needs a first and a last packet
        stream_id = secrets.token_hex(8)  # 16 characters of [0-9a-f]
        stream_text = StreamText(self.settings.text_mode)
        answered = 0
        unanswered = False  # a request whose fate is unknown (cancelled or timed out)
        completed = False
        if not slot_held:
            await self._stream_slots.acquire()
        try:
            try:
                for sequence, chunk in enumerate(chunks):
                    action = ACTION_FIRST if sequence == 0 else ACTION_LAST if sequence == len(chunks) - 1 else ACTION_MIDDLE
                    unanswered = True
                    try:
                        text = await self._send_chunk(stream_id, sequence, action, chunk, retry_opening or sequence > 0)
                    except SpeechError as error:
                        unanswered = error.kind is ErrorKind.TIMEOUT
                        raise
                    unanswered = False
                    answered += 1
                    if action == ACTION_LAST:
                        completed = True
                        return stream_text.final(text)
                    on_text(stream_text.partial(text))
            finally:
                if not completed and (answered or unanswered):
                    self._abort_later(stream_id, (answered + 1, answered) if unanswered else (answered,))
        finally:
            self._stream_slots.release()
        raise AssertionError("unreachable: the last chunk returns")

    async def _send_chunk(self, stream_id: str, sequence: int, action: int, chunk: bytes | memoryview,
                          retry_transient: bool) -> str:
        payload = {
            "speech": {"speech": base64.b64encode(chunk).decode("ascii")},
            "config": {"stream_id": stream_id, "sequence_id": sequence, "action": action,
                       "format": "pcm", "engine_type": "16k_auto"},
        }
        attempt = 0
        lost_answer = False
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                body = await self.client.post(STREAM_PATH, payload)
                break
            except SpeechError as error:
                if lost_answer and error.kind is ErrorKind.INVALID_INPUT:
                    raise _StreamBroken(error) from error
                delay = self.retrier.next_delay(self.name, "stream chunk", attempt, started, error, retry_transient)
                if delay is None:
                    raise
                lost_answer = lost_answer or error.kind is ErrorKind.TIMEOUT
                await asyncio.sleep(delay)
        return str(as_dict(body.get("data")).get("recognition_text") or "")

    def _abort_later(self, stream_id: str, sequence_ids: tuple[int, ...]) -> None:
        """Tell the server to drop an unfinished stream (frees a tenant slot); best effort, in the
        background so that cancellation is never delayed by it. When the last request's fate is
        unknown, the abort tries the id after it, then its own."""

        async def abort() -> None:
            for sequence in sequence_ids:
                payload = {"speech": {"speech": ""}, "config": {"stream_id": stream_id, "sequence_id": sequence,
                                                                "action": ACTION_ABORT, "format": "pcm", "engine_type": "16k_auto"}}
                try:
                    async with asyncio.timeout(5):
                        await self.client.post(STREAM_PATH, payload)
                    return
                except (SpeechError, TimeoutError) as error:
                    log.debug("Feishu stream %s abort at %d failed: %s", stream_id, sequence, error)

        task = asyncio.create_task(abort())
        self._aborts.add(task)
        task.add_done_callback(self._aborts.discard)

    async def check(self) -> None:
        """The token proves app id and secret; aborting a stream that was never opened proves the
        speech endpoint, the app's scope and the tenant's edition: "invalid parameter" is the
        answer of a service that would have taken a real stream."""
        payload = {"speech": {"speech": ""}, "config": {"stream_id": secrets.token_hex(8), "sequence_id": 0,
                                                        "action": ACTION_ABORT, "format": "pcm", "engine_type": "16k_auto"}}
        try:
            await self.client.post(STREAM_PATH, payload)
        except SpeechError as error:
            if error.kind is not ErrorKind.INVALID_INPUT or error.code not in FEISHU_CODE_KINDS:
                raise

    async def aclose(self) -> None:
        if self._aborts:
            await asyncio.gather(*self._aborts, return_exceptions=True)
        await self.client.aclose()


def _report(updates: asyncio.Queue[_Update], segment: int, text: str) -> None:
    updates.put_nowait(_Text(segment, text))


class _StreamBroken(Exception):
    def __init__(self, error: SpeechError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class _Text:
    segment: int
    text: str


@dataclass(frozen=True)
class _Finished:
    seconds: float


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_Update = _Text | _Finished | _Failed


def _first_error(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    return _first_error(first) if isinstance(first, BaseExceptionGroup) else first


class StreamText:
    """The text of one stream, read the way the configured :class:`TextMode` says.

    ``auto`` keeps both readings (the latest answer; all answers joined) and weighs each new
    answer against the one before: a cumulative service answers with the previous text again,
    grown or with its last words revised, so most of it is a common start; a delta service
    answers with new words only, which share a start with the previous ones only when a speaker
    repeats themselves. A cumulative service revising an early guess ("是" → "时间") looks like a
    delta once, so the reading follows the count so far, not the first pair, and a partial shown
    early may change reading later.
    """

    def __init__(self, mode: TextMode) -> None:
        self.mode = mode
        self.latest = ""  # the last non-empty answer: the whole text, read cumulatively
        self.joined = ""  # every answer joined: the whole text, read as deltas
        self.continuations = 0  # answers that began with most of the previous one
        self.fresh_starts = 0  # answers that did not

    @property
    def cumulative(self) -> bool:
        if self.mode is not TextMode.AUTO:
            return self.mode is TextMode.CUMULATIVE
        # Until answers say otherwise, the documented client advice: each is the whole text so far.
        return self.continuations >= self.fresh_starts

    @property
    def text(self) -> str:
        return self.latest if self.cumulative else self.joined

    def partial(self, answer: str) -> str:
        answer = answer.strip()
        if answer:
            previous, current = _letters(self.latest), _letters(answer)
            if previous and current != previous:
                shared = len(os.path.commonprefix([previous, current]))
                if shared * 2 >= len(previous):
                    self.continuations += 1
                else:
                    self.fresh_starts += 1
            self.latest = answer
            self.joined = join_texts([self.joined, answer])
        return self.text

    def final(self, answer: str) -> str:
        """The action-2 answer: the whole text, unless (read as deltas) it brings only the last words."""
        answer = answer.strip()
        if not answer:
            return self.text
        if self.cumulative or _squashed(self.joined) in _squashed(answer):
            return answer
        return join_texts([self.joined, answer])


def _squashed(text: str) -> str:
    return "".join(text.split())  # CJK text may come back with or without spaces between words


def _letters(text: str) -> str:
    """Letters and digits only: CJK text may come back with or without spaces between words, and
    with punctuation added as the recogniser learns where sentences end."""
    return "".join(char for char in text if char.isalnum()).lower()


def join_texts(parts: Iterable[str]) -> str:
    """Join transcript pieces: a space between Latin words, nothing between CJK characters."""
    joined = ""
    for part in parts:
        part = part.strip()
        if not part:
            continue
        if joined and (joined[-1].isascii() and joined[-1].isalnum() or joined[-1] in ".,!?;:") and not _is_cjk(part[0]):
            joined += " "
        joined += part
    return joined


def _is_cjk(char: str) -> bool:
    return "\u2e80" <= char <= "\u9fff" or "\uf900" <= char <= "\ufaff" or "\uff00" <= char <= "\uffef"
