"""Tests of the Coze fake itself (tests/fakes/coze.py) and of the wire contract (tests/cozepy_contract.py).

cozepy's own clients are the reference: its REST client runs against ``fake.base_url`` and its
async WebSocket clients against ``fake.ws_base_url``. Lower-level checks (frame order, raw bodies,
handshake headers) use httpx and websockets directly.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import websockets
from cozepy import AsyncCoze, AsyncHTTPClient, AsyncTokenAuth, CozeAPIError
from cozepy.request import Requester
from cozepy.websockets.audio.speech import (
    AsyncWebsocketsAudioSpeechClient,
    InputTextBufferAppendEvent,
    SpeechUpdateEvent,
)
from cozepy.websockets.audio.transcriptions import (
    AsyncWebsocketsAudioTranscriptionsClient,
    InputAudioBufferAppendEvent,
    TranscriptionsUpdateEvent,
)
from cozepy.websockets.ws import InputAudio, OutputAudio, PCMConfig, WebsocketsEventType

from tests.audio_tools import analyse, decode, make_tone, ogg_pages, pcm_samples, probe, tone_pcm
from tests.cozepy_contract import ContractError, cozepy_dropped_fields, validate_downlink, validate_uplink
from tests.fakes.coze import TEXT_LIMIT_BYTES, UPLOAD_LIMIT_BYTES, FakeCoze, FakeVoice, WsSession

# Tests of the fake provoke its refusals on purpose (see tests/violations.py).
pytestmark = pytest.mark.breaks_rules

TOKEN = "pat_test"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ASR_PATH = "/v1/audio/transcriptions"
TTS_PATH = "/v1/audio/speech"
SPEED_TOLERANCE = 0.08  # s: mp3/opus encoder padding


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
async def fake() -> AsyncIterator[FakeCoze]:
    async with FakeCoze() as server:
        yield server


@asynccontextmanager
async def cozepy_rest(fake: FakeCoze, token: str = TOKEN) -> AsyncIterator[AsyncCoze]:
    async with AsyncHTTPClient() as http:
        yield AsyncCoze(auth=AsyncTokenAuth(token), base_url=fake.base_url, http_client=http)


@asynccontextmanager
async def raw_ws(
    fake: FakeCoze, path: str, token: str | None = TOKEN, query: str = "", close_timeout: float = 10
) -> AsyncIterator[Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = fake.ws_base_url + path + query
    async with websockets.connect(url, additional_headers=headers, close_timeout=close_timeout) as ws:
        yield ws


async def send(ws: Any, event_type: str, data: dict[str, Any] | None = None) -> None:
    event: dict[str, Any] = {"event_type": event_type}
    if data is not None:
        event["data"] = data
    await ws.send(json.dumps(event))


async def receive(ws: Any) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), 10))


async def receive_until(ws: Any, event_type: str) -> list[dict[str, Any]]:
    """Events up to and including the first of ``event_type``."""
    events = [await receive(ws)]
    while events[-1]["event_type"] != event_type:
        events.append(await receive(ws))
    return events


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def audio_chunks(events: list[dict[str, Any]]) -> list[bytes]:
    """The audio of the ``speech.audio.update`` events among ``events``."""
    updates = (event for event in events if event["event_type"] == "speech.audio.update")
    return [base64.b64decode(event["data"]["delta"]) for event in updates]


def assert_downlink_contract(session: WsSession) -> None:
    """Every frame the fake sent parses with cozepy and matches the spec's field lists."""
    for event in session.downlink:
        validate_downlink(event)


def assert_uplink_contract(session: WsSession) -> None:
    """For sessions driven by cozepy: the contract accepts what cozepy itself sends."""
    for event in session.uplink:
        if "delta_bytes" not in (event.get("data") or {}):  # appends the fake recorded only by size
            validate_uplink(event)


class Collector:
    """cozepy ``on_event`` handlers that keep every parsed event and every error."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.errors: list[Any] = []
        self.failed = asyncio.Event()

    def handlers(self, *event_types: WebsocketsEventType) -> dict[WebsocketsEventType, Callable[..., Awaitable[None]]]:
        async def keep(client: Any, event: Any) -> None:
            self.events.append(event)

        async def keep_error(client: Any, error: Any) -> None:
            self.errors.append(error)
            self.failed.set()

        return {**{event_type: keep for event_type in event_types}, WebsocketsEventType.ERROR: keep_error}


def tone_seconds(pcm: bytes, sample_rate: int) -> tuple[float, float]:
    report = analyse(pcm_samples(pcm), sample_rate)
    return report.frequency, report.seconds


# ----------------------------------------------------------------------------- the contract


def test_contract_accepts_real_trace_frames() -> None:
    detail = {"logid": "20250701120000ABCDEF", "respond_at": "1751342400000"}
    validate_downlink({"id": str(uuid.uuid4()), "event_type": "speech.created", "detail": detail})
    validate_downlink(
        {
            "id": "x",
            "event_type": "conversation.audio.sentence_start",
            "data": {"text": "今天天气不错。"},
            "detail": detail,
        }
    )
    parsed = validate_downlink(
        {"id": "y", "event_type": "speech.audio.update", "data": {"delta": b64(b"\x01\x02\x03")}, "detail": detail}
    )
    assert parsed is not None and parsed.data.delta == b"\x01\x02\x03"  # type: ignore[attr-defined]
    validate_uplink({"event_type": "input_text_buffer.append", "data": {"delta": "今天天气不错"}})


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        ({"event_type": "speech.made.up"}, "unknown"),
        ({"event_type": "speech.created", "detail": None}, "detail"),
        ({"event_type": "speech.created", "id": None}, "id"),
        ({"event_type": "speech.created", "detail": {"logid": "l", "respond_at": "soon"}}, "respond_at"),
        ({"event_type": "speech.audio.update", "data": {"delta": "no*base64"}}, "base64"),
        ({"event_type": "transcriptions.message.update", "data": {}}, "content"),
        ({"event_type": "transcriptions.message.completed", "data": {"text": "x"}}, "text"),
        ({"event_type": "input_text_buffer.completed", "data": {"x": 1}}, "no data"),
        ({"event_type": "error", "data": {"code": "4000", "msg": "m"}}, "code"),
        ({"event_type": "transcriptions.updated", "data": {"input_audio": {"format": "pcm"}}}, "missing"),
        ({"event_type": "speech.updated", "data": {"output_audio": {"codec": "pcm"}}}, "missing"),
    ],
)
def test_contract_rejects_bad_downlink(event: dict[str, Any], problem: str) -> None:
    with pytest.raises(ContractError, match=problem):
        validate_downlink({"id": "a", "detail": {"logid": "l"}, **event})


def test_contract_checks_fields_cozepy_drops() -> None:
    update = {
        "event_type": "transcriptions.update",
        "data": {
            "input_audio": {"format": "pcm", "codec": "pcm", "sample_rate": 16000, "channel": 1, "bit_depth": 16},
            "asr_config": {"hot_words": ["扣子"], "enable_punc": True},
        },
    }
    assert cozepy_dropped_fields(update) == ["data.asr_config"]
    validate_uplink(update)
    update["data"]["asr_config"] = {"hotwords": ["扣子"]}  # misspelt: cozepy alone would not notice
    with pytest.raises(ContractError, match="hotwords"):
        validate_uplink(update)
    output_audio = {"codec": "pcm", "emotion_config": {"emotion": 4}}
    speech_update = {"event_type": "speech.update", "data": {"output_audio": output_audio}}
    assert cozepy_dropped_fields(speech_update) == ["data.output_audio.emotion_config"]
    with pytest.raises(ContractError, match="emotion"):
        validate_uplink(speech_update)


def test_contract_rejects_uplink_cozepy_cannot_parse() -> None:
    # cozepy's InputAudio declares all five fields without defaults: a partial one does not parse.
    with pytest.raises(ContractError, match="TranscriptionsUpdateEvent"):
        validate_uplink({"event_type": "transcriptions.update", "data": {"input_audio": {"format": "pcm"}}})
    with pytest.raises(ContractError, match="unknown to cozepy"):
        validate_uplink({"event_type": "response.create"})
    with pytest.raises(ContractError, match="top-level"):
        validate_uplink({"event_type": "input_audio_buffer.complete", "type": "x"})


# ----------------------------------------------------------------------------- REST: transcriptions


@pytest.mark.parametrize("container", ["ogg", "mp3", "m4a", "wav"])
async def test_rest_transcription_with_cozepy_describes_the_audio(fake: FakeCoze, container: str) -> None:
    audio = make_tone(container, frequency=440, seconds=2.0)
    async with cozepy_rest(fake) as coze:
        result = await coze.audio.transcriptions.create(file=(f"note.{container}", audio))
    assert result.text == "tone 440 hz 2.0 s"
    [call] = fake.calls_to("transcriptions")
    assert call.upload is not None
    assert (call.upload.field, call.upload.filename, call.upload.size) == ("file", f"note.{container}", len(audio))
    assert call.token == TOKEN and call.status == 200 and call.code == 0
    assert result.response.logid == call.logid


async def test_rest_transcription_scripted_text_and_envelope(fake: FakeCoze) -> None:
    fake.transcript = "你好 世界"
    async with httpx.AsyncClient() as http:
        response = await http.post(
            fake.base_url + ASR_PATH,
            headers=AUTH,
            files={"body": ("voice.ogg", make_tone("ogg"), "audio/ogg")},  # the doc table's field name
        )
    body = response.json()
    logid = response.headers["X-Tt-Logid"]
    assert body == {"code": 0, "msg": "", "data": {"text": "你好 世界"}, "detail": {"logid": logid}}
    assert fake.rest_calls[0].upload is not None and fake.rest_calls[0].upload.content_type == "audio/ogg"


@pytest.mark.parametrize(
    ("files", "data"),
    [
        (None, {"note": "no file at all"}),
        ({"file": ("empty.ogg", b"")}, None),
        ({"file": ("garbage.ogg", b"this is not audio" * 100)}, None),
        ({"upload": ("x.ogg", b"x")}, None),
        ([("file", ("a.ogg", b"a")), ("file", ("b.ogg", b"b"))], None),
    ],
)
async def test_rest_transcription_rejects_bad_uploads(fake: FakeCoze, files: Any, data: Any) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            fake.base_url + ASR_PATH, headers=AUTH, files=files, data=data
        )
    assert response.status_code == 200
    body = response.json()
    assert body["code"] == 4000 and body["msg"] and body["detail"]["logid"] == response.headers["X-Tt-Logid"]


async def test_rest_transcription_size_limit_and_silence_switches(fake: FakeCoze) -> None:
    fake.upload_too_large_code = 4302
    fake.silent_audio_code = 5000
    async with cozepy_rest(fake) as coze:
        with pytest.raises(CozeAPIError) as too_large:
            await coze.audio.transcriptions.create(file=("big.wav", b"\0" * (UPLOAD_LIMIT_BYTES + 1)))
        with pytest.raises(CozeAPIError) as silent:
            await coze.audio.transcriptions.create(file=("quiet.ogg", make_tone("ogg", amplitude=0.0)))
        fake.silent_audio_code = None
        quiet = await coze.audio.transcriptions.create(file=("quiet.ogg", make_tone("ogg", amplitude=0.0)))
    assert too_large.value.code == 4302 and silent.value.code == 5000
    assert quiet.text == ""


# ----------------------------------------------------------------------------- REST: speech


@pytest.mark.parametrize(
    ("response_format", "sample_rate", "content_type"),
    [
        ("mp3", 24000, "audio/mpeg"),
        ("wav", 16000, "audio/wav"),
        ("pcm", 8000, "audio/pcm"),
        ("ogg_opus", 48000, "audio/ogg"),
    ],
)
async def test_rest_speech_with_cozepy_encodes_voice_and_length(
    fake: FakeCoze, response_format: str, sample_rate: int, content_type: str
) -> None:
    voice = fake.voices[1]
    text = "Hello, 你好世界!"
    async with cozepy_rest(fake) as coze:
        result = await coze.audio.speech.create(
            input=text,
            voice_id=voice.voice_id,
            response_format=response_format,  # type: ignore[arg-type]
            sample_rate=sample_rate,
        )
    raw = result._raw_response
    assert raw.headers["content-type"] == content_type
    if response_format == "pcm":
        frequency, seconds = tone_seconds(raw.content, sample_rate)
    else:
        assert int(probe(raw.content)["sample_rate"]) == sample_rate
        samples, rate = decode(raw.content)
        report = analyse(samples, rate)
        frequency, seconds = report.frequency, report.seconds
    assert frequency == pytest.approx(voice.frequency, abs=3)
    assert seconds == pytest.approx(len(text) * fake.seconds_per_char, abs=SPEED_TOLERANCE)
    assert fake.calls_to("speech")[0].json == {
        "input": text,
        "voice_id": voice.voice_id,
        "response_format": response_format,
        "speed": 1,
        "sample_rate": sample_rate,
    }


async def test_rest_speech_speed_loudness_nulls_and_extra_fields(fake: FakeCoze) -> None:
    voice = fake.voices[0]
    body = {
        "input": "一二三四五六七八九十",
        "voice_id": voice.voice_id,
        "response_format": "pcm",
        "speed": 2,
        "loudness_rate": 100,
        "sample_rate": None,  # coze-go sends nulls for unset fields
        "emotion": "happy",
        "emotion_scale": None,
        "some_future_field": {"x": 1},
    }
    async with httpx.AsyncClient() as http:
        response = await http.post(fake.base_url + TTS_PATH, headers=AUTH, json=body)
    assert response.status_code == 200, response.text
    frequency, seconds = tone_seconds(response.content, 24000)
    assert frequency == pytest.approx(voice.frequency, abs=3)
    assert seconds == pytest.approx(10 * fake.seconds_per_char / 2, abs=0.01)
    assert analyse(pcm_samples(response.content), 24000).peak > 0.75 * 32767  # loudness_rate 100 doubles the gain


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"input": None}, 4000),
        ({"voice_id": None}, 4000),
        ({"input": ""}, 4000),
        ({"input": 42}, 4000),
        ({"voice_id": "no-such-voice"}, 4200),
        ({"input": "字" * 342}, 4000),  # 1026 UTF-8 bytes, only 342 characters
        ({"response_format": "flac"}, 4000),
        ({"sample_rate": 11025}, 4000),
        ({"speed": 2.5}, 4000),  # the first voice is a big-model voice: 0.5-2
        ({"loudness_rate": 101}, 4000),
        ({"emotion": "bored"}, 4000),
        ({"emotion_scale": 6}, 4000),
    ],
)
async def test_rest_speech_validation(fake: FakeCoze, change: dict[str, Any], code: int) -> None:
    body = {"input": "你好", "voice_id": fake.voices[0].voice_id, **change}
    async with httpx.AsyncClient() as http:
        response = await http.post(fake.base_url + TTS_PATH, headers=AUTH, json=body)
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["code"] == code


async def test_rest_speech_uncertain_codes_are_switches(fake: FakeCoze) -> None:
    fake.long_input_code, fake.unknown_voice_code = 4001, 4000
    async with cozepy_rest(fake) as coze:
        with pytest.raises(CozeAPIError) as too_long:
            await coze.audio.speech.create(input="a" * (TEXT_LIMIT_BYTES + 1), voice_id=fake.voices[0].voice_id)
        with pytest.raises(CozeAPIError) as unknown_voice:
            await coze.audio.speech.create(input="a", voice_id="nope")
        within_limit = await coze.audio.speech.create(input="a" * TEXT_LIMIT_BYTES, voice_id=fake.voices[0].voice_id)
    assert (too_long.value.code, unknown_voice.value.code) == (4001, 4000)
    assert within_limit._raw_response.headers["content-type"] == "audio/mpeg"


# ----------------------------------------------------------------------------- REST: voices


async def test_rest_voices_default_catalogue_has_every_field_cozepy_requires(fake: FakeCoze) -> None:
    async with cozepy_rest(fake) as coze:
        voices = [voice async for voice in await coze.audio.voices.list()]
    assert [voice.voice_id for voice in voices] == [voice.voice_id for voice in fake.voices]
    assert any(not voice.name.isascii() for voice in voices)
    assert fake.calls_to("voices")[0].query == {"filter_system_voice": "false", "page_num": "1", "page_size": "100"}


async def test_rest_voices_pagination_with_cozepy() -> None:
    async with FakeCoze(voices=FakeVoice.generate(250)) as fake, cozepy_rest(fake) as coze:
        voices = [voice async for voice in await coze.audio.voices.list()]
        assert len({voice.voice_id for voice in voices}) == 250
        assert [call.query["page_num"] for call in fake.calls_to("voices")] == ["1", "2", "3"]
        small_pages = await coze.audio.voices.list(page_size=7, page_num=36)
        assert [voice.name for voice in small_pages.items] == [f"voice {index}" for index in range(245, 250)]
        assert not small_pages.has_more


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("filter_system_voice=true", ["my cloned voice"]),
        ("model_type=small", ["my cloned voice"]),
        ("model_type=big&page_size=1", ["柔美女友"]),
        ("voice_state=init", []),
        ("voice_state=all&page_num=2&page_size=2", ["my cloned voice"]),
    ],
)
async def test_rest_voices_filters(fake: FakeCoze, query: str, expected: list[str]) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{fake.base_url}/v1/audio/voices?{query}", headers=AUTH)
    assert [voice["name"] for voice in response.json()["data"]["voice_list"]] == expected


@pytest.mark.parametrize(
    "query",
    ["page_size=101", "page_size=0", "page_num=0", "page_num=x", "model_type=huge", "filter_system_voice=maybe"],
)
async def test_rest_voices_rejects_bad_queries(fake: FakeCoze, query: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{fake.base_url}/v1/audio/voices?{query}", headers=AUTH)
    assert response.json()["code"] == 4000


# ----------------------------------------------------------------------------- REST: auth and faults


async def test_rest_auth_failure(fake: FakeCoze) -> None:
    async with cozepy_rest(fake, token="pat_wrong") as coze:
        with pytest.raises(CozeAPIError) as failure:
            await coze.audio.voices.list()
        fake.error_http_status[4100] = 401
        async with httpx.AsyncClient() as http:
            response = await http.get(fake.base_url + "/v1/audio/voices")  # no Authorization at all
    assert failure.value.code == 4100 and failure.value.msg == "authentication is invalid"
    assert failure.value.logid == fake.rest_calls[0].logid
    assert response.status_code == 401
    logid = response.headers["X-Tt-Logid"]
    assert response.json() == {"code": 4100, "msg": "authentication is invalid", "detail": {"logid": logid}}


@pytest.mark.parametrize("code", [4000, 4100, 4101, 4009, 4013, 4020, 5000])
async def test_fail_next_rest_business_codes(fake: FakeCoze, code: int) -> None:
    fake.fail_next("voices", code=code, times=2)
    async with cozepy_rest(fake) as coze:
        for _ in range(2):
            with pytest.raises(CozeAPIError) as failure:
                await coze.audio.voices.list()
            assert failure.value.code == code and failure.value.msg
        await coze.audio.voices.list()  # consumed: the third request succeeds
        await coze.audio.speech.create(input="a", voice_id=fake.voices[0].voice_id)  # other endpoints untouched
    assert [call.code for call in fake.rest_calls] == [code, code, 0, None]


async def test_fail_next_rest_status_and_raw_body(fake: FakeCoze) -> None:
    fake.fail_next("speech", code=4009, http_status=429)
    fake.fail_next("speech", raw_body="<html><body>502 Bad Gateway</body></html>")
    async with httpx.AsyncClient() as http:
        body = {"input": "a", "voice_id": fake.voices[0].voice_id}
        limited = await http.post(fake.base_url + TTS_PATH, headers=AUTH, json=body)
        gateway = await http.post(fake.base_url + TTS_PATH, headers=AUTH, json=body)
    assert limited.status_code == 429 and limited.json()["code"] == 4009
    assert gateway.status_code == 502 and gateway.headers["content-type"].startswith("text/html")
    assert gateway.headers["X-Tt-Logid"]
    async with cozepy_rest(fake) as coze:
        fake.fail_next("speech", raw_body="upstream error", http_status=503)
        with pytest.raises(CozeAPIError) as failure:
            await coze.audio.speech.create(input="a", voice_id=fake.voices[0].voice_id)
    assert failure.value.code == 503  # cozepy: non-JSON body -> the HTTP status as code


async def test_delay_next_rest_times_out_the_client_without_blocking_others(fake: FakeCoze) -> None:
    fake.delay_next("voices", 60)
    async with httpx.AsyncClient(headers=AUTH) as http:
        slow = asyncio.create_task(http.get(fake.base_url + "/v1/audio/voices", timeout=0.5))
        await fake.wait_for(lambda: fake.calls_to("voices"))
        fast = await http.get(fake.base_url + "/v1/audio/voices")  # served while the first is held
        assert fast.json()["code"] == 0
        with pytest.raises(httpx.ReadTimeout):
            await slow
    assert fake.calls_to("voices")[0].status is None  # still held when the fake stops


async def test_drop_next_rest_closes_without_a_response(fake: FakeCoze) -> None:
    fake.drop_next("transcriptions")
    async with cozepy_rest(fake) as coze:
        with pytest.raises(httpx.RemoteProtocolError):
            await coze.audio.transcriptions.create(file=("a.ogg", make_tone("ogg")))
        assert (await coze.audio.transcriptions.create(file=("a.ogg", make_tone("ogg")))).text == "tone 440 hz 1.0 s"
    assert [call.status for call in fake.rest_calls] == [0, 200]


def test_fault_arguments_are_checked() -> None:
    fake = FakeCoze()
    with pytest.raises(ValueError):
        fake.fail_next("speech")
    with pytest.raises(ValueError):
        fake.fail_next("speech", code=4000, raw_body="x")
    with pytest.raises(ValueError):
        fake.delay_next("speech", 1, times=0)


# ----------------------------------------------------------------------------- WS: transcriptions


def asr_client(fake: FakeCoze, collector: Collector) -> AsyncWebsocketsAudioTranscriptionsClient:
    return AsyncWebsocketsAudioTranscriptionsClient(
        base_url=fake.ws_base_url,
        requester=Requester(auth=AsyncTokenAuth(TOKEN)),
        on_event=collector.handlers(
            WebsocketsEventType.TRANSCRIPTIONS_CREATED,
            WebsocketsEventType.TRANSCRIPTIONS_UPDATED,
            WebsocketsEventType.TRANSCRIPTIONS_MESSAGE_UPDATE,
            WebsocketsEventType.INPUT_AUDIO_BUFFER_COMPLETED,
        ),
    )


async def run_cozepy_asr(fake: FakeCoze, pcm: bytes, sample_rate: int, chunk_seconds: float = 0.2) -> Collector:
    collector = Collector()
    async with asr_client(fake, collector)() as client:
        update = InputAudio(format="pcm", codec="pcm", sample_rate=sample_rate, channel=1, bit_depth=16)
        await client.transcriptions_update(TranscriptionsUpdateEvent.Data(input_audio=update))
        step = int(sample_rate * chunk_seconds) * 2
        for start in range(0, len(pcm), step):
            await client.input_audio_buffer_append(InputAudioBufferAppendEvent.Data(delta=pcm[start : start + step]))
        await client.input_audio_buffer_complete()
        await asyncio.wait_for(client.wait(), 10)
    return collector


async def test_ws_asr_with_cozepy(fake: FakeCoze) -> None:
    collector = await run_cozepy_asr(fake, tone_pcm(440, 3.0, 16000), 16000)
    contents = [event.data.content for event in collector.events if event.event_type == "transcriptions.message.update"]
    assert contents == ["tone 440 hz 1.0 s", "tone 440 hz 2.0 s", "tone 440 hz 3.0 s", "tone 440 hz 3.0 s"]
    assert collector.errors == []
    [session] = fake.ws_sessions
    assert session.downlink_types[:2] == ["transcriptions.created", "transcriptions.updated"]
    assert session.downlink_types[-3:] == [
        "input_audio_buffer.completed", "transcriptions.message.update", "transcriptions.message.completed",
    ]  # fmt: skip
    assert session.config == {"format": "pcm", "codec": "pcm", "sample_rate": 16000, "channel": 1, "bit_depth": 16}
    assert session.transcripts == ["tone 440 hz 3.0 s"] and session.audio_bytes == 3 * 16000 * 2
    assert session.headers["X-Coze-Client-User-Agent"]
    assert_downlink_contract(session)
    assert_uplink_contract(session)


async def test_ws_asr_scripted_transcript_grows_word_by_word(fake: FakeCoze) -> None:
    fake.transcript = "one two three four five six"
    fake.partial_every_seconds = 0.5
    collector = await run_cozepy_asr(fake, tone_pcm(300, 2.0, 16000), 16000, chunk_seconds=0.5)
    contents = [event.data.content for event in collector.events if event.event_type == "transcriptions.message.update"]
    assert contents == ["one", "one two", "one two three", "one two three four", "one two three four five six"]


async def test_ws_asr_frames_sent_before_created_default_wav_and_logid(fake: FakeCoze) -> None:
    wav = make_tone("wav", frequency=440, seconds=1.0, sample_rate=24000)
    async with raw_ws(fake, ASR_PATH) as ws:
        # Like cozepy: no update, no wait for created; the whole WAV (with header) in one frame.
        await send(ws, "input_audio_buffer.append", {"delta": b64(wav)})
        await send(ws, "input_audio_buffer.complete")
        events = await receive_until(ws, "transcriptions.message.completed")
        header_logid = ws.response.headers["X-Tt-Logid"]
        await send(ws, "input_audio_buffer.clear")  # still open, still processing
        assert (await receive(ws))["event_type"] == "input_audio_buffer.cleared"
    assert events[0]["event_type"] == "transcriptions.created"
    assert [event["event_type"] for event in events[-3:]] == [
        "input_audio_buffer.completed", "transcriptions.message.update", "transcriptions.message.completed",
    ]  # fmt: skip
    assert events[-2]["data"] == {"content": "tone 440 hz 1.0 s"}
    assert "data" not in events[-1]
    [session] = fake.ws_sessions
    assert {event["detail"]["logid"] for event in session.downlink} == {header_logid} == {session.logid}
    assert all(event["detail"]["respond_at"].isdigit() for event in session.downlink)
    ids = [uuid.UUID(event["id"]) for event in session.downlink]
    assert len(set(ids)) == len(ids) and all(event_id.version == 4 for event_id in ids)
    await fake.wait_for(lambda: session.ended)
    assert session.ended == "client"
    assert_downlink_contract(session)


def _interleave_stereo(left: bytes, right: bytes) -> bytes:
    return b"".join(left[index : index + 2] + right[index : index + 2] for index in range(0, len(left), 2))


def _widen_to_24_bit(pcm: bytes) -> bytes:
    return b"".join(b"\x00" + pcm[index : index + 2] for index in range(0, len(pcm), 2))


def _to_unsigned_8_bit(pcm: bytes) -> bytes:
    return bytes((pcm[index + 1] ^ 0x80) for index in range(0, len(pcm), 2))


@pytest.mark.parametrize(
    ("input_audio", "make_audio", "chunk"),
    [
        # A WAV header split over tiny appends.
        ({"format": "wav"}, lambda: make_tone("wav", 440, 1.0, 16000), 7),
        # The left channel is heard: 440 Hz, not the right one's 880 Hz.
        (
            {"format": "pcm", "sample_rate": 16000, "channel": 2},
            lambda: _interleave_stereo(tone_pcm(440, 1.0), tone_pcm(880, 1.0)),
            999,
        ),
        ({"format": "pcm", "sample_rate": 16000, "bit_depth": 24}, lambda: _widen_to_24_bit(tone_pcm(440, 1.0)), 1001),
        ({"format": "pcm", "sample_rate": 16000, "bit_depth": 8}, lambda: _to_unsigned_8_bit(tone_pcm(440, 1.0)), 333),
        ({"format": "ogg", "codec": "opus"}, lambda: make_tone("ogg", 440, 1.0), 500),
        ({"format": "pcm", "codec": "g711a"}, lambda: make_tone("alaw", 440, 1.0, 8000), 160),
        ({"format": "pcm", "codec": "g711u", "sample_rate": 8000}, lambda: make_tone("mulaw", 440, 1.0, 8000), 160),
    ],
)
async def test_ws_asr_input_formats(
    fake: FakeCoze, input_audio: dict[str, Any], make_audio: Callable[[], bytes], chunk: int
) -> None:
    audio = make_audio()
    async with raw_ws(fake, ASR_PATH) as ws:
        await send(ws, "transcriptions.update", {"input_audio": input_audio})
        for start in range(0, len(audio), chunk):
            await send(ws, "input_audio_buffer.append", {"delta": b64(audio[start : start + chunk])})
        await send(ws, "input_audio_buffer.complete")
        events = await receive_until(ws, "transcriptions.message.completed")
    assert events[-2]["data"]["content"] == "tone 440 hz 1.0 s"
    updated = events[1]["data"]["input_audio"]
    assert updated.keys() == {"format", "codec", "sample_rate", "channel", "bit_depth"}  # defaults filled
    assert {key: updated[key] for key in input_audio} == input_audio
    assert_downlink_contract(fake.ws_sessions[0])


async def test_ws_asr_ogg_opus_with_cozepy_is_heard_page_by_page(fake: FakeCoze) -> None:
    """Ogg/Opus is decoded as it arrives (partials while the pages come), padding trimmed."""
    fake.partial_every_seconds = 0.5
    note = make_tone("ogg", 440, 3.0, channels=2)
    collector = Collector()
    async with asr_client(fake, collector)() as client:
        update = InputAudio(format="ogg", codec="opus", sample_rate=48000, channel=2, bit_depth=16)
        await client.transcriptions_update(TranscriptionsUpdateEvent.Data(input_audio=update))
        for page in ogg_pages(note):
            await client.input_audio_buffer_append(InputAudioBufferAppendEvent.Data(delta=page))
        await client.input_audio_buffer_complete()
        await asyncio.wait_for(client.wait(), 10)
    contents = [event.data.content for event in collector.events if event.event_type == "transcriptions.message.update"]
    assert len(contents) >= 4 and contents[-1] == "tone 440 hz 3.0 s" and collector.errors == []
    [session] = fake.ws_sessions
    assert session.config == {"format": "ogg", "codec": "opus", "sample_rate": 48000, "channel": 2, "bit_depth": 16}
    assert session.heard_seconds == pytest.approx(3.0, abs=0.01) and fake.violations == []
    assert_downlink_contract(session)
    assert_uplink_contract(session)


def _corrupt(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]


@pytest.mark.parametrize(
    ("make_audio", "problem"),
    [
        (lambda note: b"this is not an ogg file", "no capture pattern"),
        (lambda note: _corrupt(note, len(note) // 2), "a page's checksum fails"),
        (lambda note: note[:-100], "the last page is cut off"),
        (lambda note: note + note, "a second (chained) stream"),
        (lambda note: make_tone("wav", 440, 1.0), "WAV declared as Ogg"),
    ],
)
async def test_ws_asr_refuses_malformed_ogg_with_4000(fake: FakeCoze, make_audio: Callable[[bytes], bytes],
                                                      problem: str) -> None:
    audio = make_audio(make_tone("ogg", 440, 1.0))
    async with raw_ws(fake, ASR_PATH) as ws:
        await send(ws, "transcriptions.update", {"input_audio": {"format": "ogg", "codec": "opus", "sample_rate": 48000}})
        for start in range(0, len(audio), 4000):
            await send(ws, "input_audio_buffer.append", {"delta": b64(audio[start : start + 4000])})
        await send(ws, "input_audio_buffer.complete")
        events = await receive_until(ws, "input_audio_buffer.completed")
        if not any(event["event_type"] == "error" for event in events):
            events.append(await receive(ws))  # refused at complete (cut off): the error follows
    errors = [event["data"] for event in events if event["event_type"] == "error"]
    assert errors and errors[0]["code"] == 4000, problem
    assert errors[0]["msg"].startswith("The parameter audio is invalid. It should follow the format: ogg.")
    assert fake.ws_sessions[0].transcripts == []
    assert_downlink_contract(fake.ws_sessions[0])
    assert fake.take_violations()  # deliberate: this client broke the declared format


@pytest.mark.parametrize(
    "data",
    [
        None,
        {"input_audio": {"format": "mp3"}},
        {"input_audio": {"codec": "aac"}},
        {"input_audio": {"sample_rate": 11025}},
        {"input_audio": {"channel": 3}},
        {"input_audio": {"bit_depth": 32}},
        {"input_audio": {"sample_rate": "16000"}},
        {"input_audio": {"codec": "g711a"}},  # default format wav: g711 needs pcm
        {"asr_config": {"hot_words": "扣子"}},
        {"asr_config": {"user_language": "xx"}},
        {"asr_config": {"unknown_switch": True}},
    ],
)
async def test_ws_asr_update_validation(fake: FakeCoze, data: Any) -> None:
    async with raw_ws(fake, ASR_PATH) as ws:
        await send(ws, "transcriptions.update", data)
        events = await receive_until(ws, "error")
        valid = {"input_audio": {"sample_rate": 16000}, "asr_config": {"hot_words": ["扣子"]}}
        await send(ws, "transcriptions.update", valid)
        updated = await receive(ws)
    assert events[-1]["data"]["code"] == 4000 and "origin_message" in events[-1]["detail"]
    assert updated["data"]["input_audio"] == {
        "format": "wav", "codec": "pcm", "sample_rate": 16000, "channel": 1, "bit_depth": 16,
    }  # fmt: skip
    assert fake.ws_sessions[0].asr_config == {"hot_words": ["扣子"]}


async def test_ws_asr_bad_frames_get_errors_and_the_socket_stays_open(fake: FakeCoze) -> None:
    async with raw_ws(fake, ASR_PATH) as ws:
        await receive(ws)  # created
        await send(ws, "input_audio_buffer.append", {"delta": "***not base64***"})
        await send(ws, "input_audio_buffer.append", {})
        await send(ws, "response.create")
        await ws.send("not json")
        await ws.send(b"\x00binary")
        errors = [await receive(ws) for _ in range(5)]
        await send(ws, "input_audio_buffer.clear")
        assert (await receive(ws))["event_type"] == "input_audio_buffer.cleared"
    assert [(error["event_type"], error["data"]["code"]) for error in errors] == [("error", 4000)] * 5


async def test_ws_asr_wav_declared_but_not_sent(fake: FakeCoze) -> None:
    async with raw_ws(fake, ASR_PATH) as ws:
        await send(ws, "input_audio_buffer.append", {"delta": b64(tone_pcm(440, 0.5))})  # default format is wav
        await send(ws, "input_audio_buffer.complete")
        events = await receive_until(ws, "input_audio_buffer.completed")
        late_error = await receive(ws)
    assert events[1]["event_type"] == "error" and "format: wav" in events[1]["data"]["msg"]
    assert late_error["event_type"] == "error"  # complete of a refused buffer repeats the error
    assert fake.ws_sessions[0].transcripts == []


async def test_ws_asr_clear_discards_audio_and_cycles_repeat(fake: FakeCoze) -> None:
    async with raw_ws(fake, ASR_PATH) as ws:
        await send(ws, "transcriptions.update", {"input_audio": {"format": "pcm", "sample_rate": 16000}})
        await send(ws, "input_audio_buffer.append", {"delta": b64(tone_pcm(440, 1.0))})
        await send(ws, "input_audio_buffer.clear")
        await send(ws, "input_audio_buffer.append", {"delta": b64(tone_pcm(600, 2.0))})
        await send(ws, "input_audio_buffer.complete")
        await receive_until(ws, "transcriptions.message.completed")
        await send(ws, "input_audio_buffer.append", {"delta": b64(tone_pcm(300, 1.0))})
        await send(ws, "input_audio_buffer.complete")
        await receive_until(ws, "transcriptions.message.completed")
    session = fake.ws_sessions[0]
    assert session.transcripts == ["tone 600 hz 2.0 s", "tone 300 hz 1.0 s"]
    assert "input_audio_buffer.cleared" in session.downlink_types


async def test_ws_asr_hour_long_stream_is_cheap_and_not_kept(fake: FakeCoze) -> None:
    chunk = json.dumps({"event_type": "input_audio_buffer.append", "data": {"delta": b64(tone_pcm(440, 0.2))}})
    async with raw_ws(fake, ASR_PATH) as ws:
        await send(ws, "transcriptions.update", {"input_audio": {"format": "pcm", "sample_rate": 16000}})
        reader = asyncio.create_task(receive_until(ws, "transcriptions.message.completed"))
        for _ in range(5 * 60 * 60):  # 60 minutes in 200 ms chunks
            await ws.send(chunk)
        await send(ws, "input_audio_buffer.complete")
        events = await reader
    assert events[-2]["data"]["content"] == "tone 440 hz 3600.0 s"
    session = fake.ws_sessions[0]
    assert session.audio_bytes == 3600 * 16000 * 2
    appends = [event for event in session.uplink if event["event_type"] == "input_audio_buffer.append"]
    assert sum("delta" in event["data"] for event in appends) == 3  # the rest are recorded by size only
    assert {event["data"].get("delta_bytes") for event in appends[3:]} == {6400}


async def test_ws_asr_close_after_transcription_switch(fake: FakeCoze) -> None:
    fake.close_after_transcription = True
    async with raw_ws(fake, ASR_PATH) as ws:
        await send(ws, "input_audio_buffer.complete")
        await receive_until(ws, "transcriptions.message.completed")
        with pytest.raises(websockets.ConnectionClosedOK):
            await receive(ws)
    assert ws.close_code == 1000
    assert fake.ws_sessions[0].ended == "server"


async def test_ws_unknown_downlink_event_is_ignored_by_cozepy(fake: FakeCoze) -> None:
    fake.extra_downlink_event = "session.future_feature"
    collector = await run_cozepy_asr(fake, tone_pcm(440, 1.0, 16000), 16000)
    assert fake.ws_sessions[0].downlink_types[1] == "session.future_feature"
    assert collector.errors == [] and collector.events[-1].data.content == "tone 440 hz 1.0 s"
    with pytest.raises(ContractError):
        validate_downlink(fake.ws_sessions[0].downlink[1])


# ----------------------------------------------------------------------------- WS: speech


def tts_client(fake: FakeCoze, collector: Collector) -> AsyncWebsocketsAudioSpeechClient:
    return AsyncWebsocketsAudioSpeechClient(
        base_url=fake.ws_base_url,
        requester=Requester(auth=AsyncTokenAuth(TOKEN)),
        on_event=collector.handlers(
            WebsocketsEventType.SPEECH_CREATED,
            WebsocketsEventType.SPEECH_UPDATED,
            WebsocketsEventType.INPUT_TEXT_BUFFER_COMPLETED,
            WebsocketsEventType.SPEECH_AUDIO_UPDATE,
        ),
    )


async def test_ws_tts_with_cozepy(fake: FakeCoze) -> None:
    voice = fake.voices[2]
    text = "今天天气不错。我们去公园散步吧！"
    collector = Collector()
    async with tts_client(fake, collector)() as client:
        output = OutputAudio(
            codec="pcm", pcm_config=PCMConfig(sample_rate=16000), speech_rate=-50, voice_id=voice.voice_id
        )
        await client.speech_update(SpeechUpdateEvent(data=SpeechUpdateEvent.Data(output_audio=output)))
        await client.input_text_buffer_append(InputTextBufferAppendEvent.Data(delta=text[:5]))
        await client.input_text_buffer_append(InputTextBufferAppendEvent.Data(delta=text[5:]))
        await client.input_text_buffer_complete()
        await asyncio.wait_for(client.wait(), 10)
    assert collector.errors == []
    chunks = [event.data.delta for event in collector.events if event.event_type == "speech.audio.update"]
    frequency, seconds = tone_seconds(b"".join(chunks), 16000)
    assert frequency == pytest.approx(voice.frequency, abs=3)
    assert seconds == pytest.approx(len(text) * fake.seconds_per_char / 0.5, abs=0.01)  # speech_rate -50: half speed
    assert len(set(map(len, chunks))) > 1 and any(len(chunk) % 2 for chunk in chunks)  # irregular, not frame-aligned
    [session] = fake.ws_sessions
    assert session.speech_audio() == b"".join(chunks)
    assert [event["data"]["text"] for event in session.events("conversation.audio.sentence_start")] == [
        "今天天气不错。", "我们去公园散步吧！",
    ]  # fmt: skip
    assert session.downlink_types[:4] == [
        "speech.created", "speech.updated", "input_text_buffer.completed", "conversation.audio.sentence_start",
    ]  # fmt: skip
    assert session.downlink_types[-1] == "speech.audio.completed"
    assert session.events("speech.updated")[0]["data"]["output_audio"] == {
        "codec": "pcm",
        "pcm_config": {"sample_rate": 16000},
        "speech_rate": -50,
        "loudness_rate": 0,
        "voice_id": voice.voice_id,
    }
    assert session.texts == [text]
    assert_downlink_contract(session)
    assert_uplink_contract(session)


async def test_ws_tts_defaults_cycles_and_frames(fake: FakeCoze) -> None:
    async with raw_ws(fake, TTS_PATH) as ws:
        # No update: default voice (the catalogue's first), 24 kHz pcm.
        await send(ws, "input_text_buffer.append", {"delta": "你好"})
        await send(ws, "input_text_buffer.complete")
        first = await receive_until(ws, "speech.audio.completed")
        await send(ws, "speech.update", {"output_audio": {"speech_rate": 100, "pcm_config": {"frame_size_ms": 20}}})
        await send(ws, "input_text_buffer.append", {"delta": "一二三四五六七八九十"})
        await send(ws, "input_text_buffer.complete")
        second = await receive_until(ws, "speech.audio.completed")
    assert first[0]["event_type"] == "speech.created"
    frequency, seconds = tone_seconds(b"".join(audio_chunks(first)), 24000)
    assert frequency == pytest.approx(fake.voices[0].frequency, abs=3) and seconds == pytest.approx(0.12, abs=0.01)
    sizes = [len(chunk) for chunk in audio_chunks(second)]
    assert set(sizes[:-1]) == {24000 * 20 // 1000 * 2}  # frame_size_ms honoured
    assert sum(sizes) == int(10 * fake.seconds_per_char / 2 * 24000) * 2
    assert_downlink_contract(fake.ws_sessions[0])


@pytest.mark.parametrize(
    ("codec", "input_format", "rate"), [("g711a", "alaw", 8000), ("g711u", "mulaw", 16000), ("opus", None, 48000)]
)
async def test_ws_tts_other_codecs(fake: FakeCoze, codec: str, input_format: str | None, rate: int) -> None:
    async with raw_ws(fake, TTS_PATH) as ws:
        await send(ws, "speech.update", {"output_audio": {"codec": codec, "pcm_config": {"sample_rate": rate}}})
        await send(ws, "input_text_buffer.append", {"delta": "abcdefghijklmnopqrst"})
        await send(ws, "input_text_buffer.complete")
        events = await receive_until(ws, "speech.audio.completed")
    session = fake.ws_sessions[0]
    decoder_args = ["-f", input_format, "-ar", str(rate), "-ac", "1"] if input_format else None
    samples, sample_rate = decode(session.speech_audio(), 16000, decoder_args)
    report = analyse(samples, sample_rate)
    assert report.frequency == pytest.approx(fake.voices[0].frequency, abs=3)
    assert report.seconds == pytest.approx(20 * fake.seconds_per_char, abs=SPEED_TOLERANCE)
    updated = events[1]["data"]["output_audio"]
    assert ("opus_config" in updated) == (codec == "opus") and ("pcm_config" in updated) == (codec != "opus")
    assert_downlink_contract(session)


@pytest.mark.parametrize(
    ("output_audio", "code"),
    [
        ({"voice_id": "no-such-voice"}, 4200),
        ({"codec": "mp3"}, 4000),
        ({"speech_rate": 101}, 4000),
        ({"loudness_rate": -51}, 4000),
        ({"pcm_config": {"sample_rate": 12345}}, 4000),
        ({"opus_config": {"frame_size_ms": 7}}, 4000),
        ({"emotion_config": {"emotion": "bored"}}, 4000),
        ({"speech_rate": "fast"}, 4000),
        ({"volume": 3}, 4000),
    ],
)
async def test_ws_tts_update_validation(fake: FakeCoze, output_audio: dict[str, Any], code: int) -> None:
    async with raw_ws(fake, TTS_PATH) as ws:
        await send(ws, "speech.update", {"output_audio": output_audio})
        error = (await receive_until(ws, "error"))[-1]
        await send(ws, "speech.update", {"output_audio": {"voice_id": fake.voices[1].voice_id, "speech_rate": None}})
        updated = await receive(ws)
    assert error["data"]["code"] == code
    assert updated["data"]["output_audio"]["voice_id"] == fake.voices[1].voice_id
    assert updated["data"]["output_audio"]["speech_rate"] == 0  # null keeps the current value


@pytest.mark.parametrize("error_at", ["append", "complete"])
async def test_ws_tts_text_limit_3010(fake: FakeCoze, error_at: str) -> None:
    fake.text_limit_error_at = error_at  # type: ignore[assignment]
    async with raw_ws(fake, TTS_PATH) as ws:
        await receive(ws)  # created
        await send(ws, "input_text_buffer.append", {"delta": "字" * 300})  # 900 bytes
        await send(ws, "input_text_buffer.append", {"delta": "字" * 42})  # 1026 bytes in all
        await send(ws, "input_text_buffer.complete")
        error = await receive(ws)
        # The limit counts from the last complete: exactly 1024 bytes is fine afterwards.
        await send(ws, "input_text_buffer.append", {"delta": "a" * (TEXT_LIMIT_BYTES - 3) + "字"})
        await send(ws, "input_text_buffer.complete")
        after = await receive_until(ws, "speech.audio.completed")
    assert error["event_type"] == "error" and error["data"]["code"] == 3010
    assert after[0]["event_type"] == "input_text_buffer.completed"  # nothing was synthesised for the long text
    session = fake.ws_sessions[0]
    assert session.texts == ["a" * (TEXT_LIMIT_BYTES - 3) + "字"]
    assert_downlink_contract(session)


async def test_ws_tts_close_after_speech_switch(fake: FakeCoze) -> None:
    fake.close_after_speech = True
    fake.send_sentence_start = False
    async with raw_ws(fake, TTS_PATH) as ws:
        await send(ws, "input_text_buffer.append", {"delta": "好"})
        await send(ws, "input_text_buffer.complete")
        events = await receive_until(ws, "speech.audio.completed")
        with pytest.raises(websockets.ConnectionClosedOK):
            await receive(ws)
    assert "conversation.audio.sentence_start" not in [event["event_type"] for event in events]
    assert fake.ws_sessions[0].ended == "server"


# ----------------------------------------------------------------------------- WS: auth


@pytest.mark.parametrize("path", [ASR_PATH, TTS_PATH])
async def test_ws_auth_failure_http401(fake: FakeCoze, path: str) -> None:
    with pytest.raises(websockets.InvalidStatus) as rejected:
        async with raw_ws(fake, path, token="pat_wrong"):
            pass
    response = rejected.value.response
    assert response.status_code == 401
    assert response.headers["X-Tt-Logid"] == fake.ws_sessions[0].logid
    assert json.loads(response.body)["code"] == 4100
    assert (fake.ws_sessions[0].status, fake.ws_sessions[0].ended) == (401, "rejected")


async def test_ws_auth_failure_http401_through_cozepy(fake: FakeCoze) -> None:
    client = AsyncWebsocketsAudioSpeechClient(
        base_url=fake.ws_base_url, requester=Requester(auth=AsyncTokenAuth("pat_wrong")), on_event={}
    )
    with pytest.raises(CozeAPIError) as failure:
        await client.connect()
    assert "401" in failure.value.msg and failure.value.logid == fake.ws_sessions[0].logid


@pytest.mark.parametrize("path", [ASR_PATH, TTS_PATH])
async def test_ws_auth_failure_error_event_then_dropped(fake: FakeCoze, path: str) -> None:
    fake.ws_auth_failure = "error_event"
    async with raw_ws(fake, path, token=None) as ws:
        error = await receive(ws)
        with pytest.raises(websockets.ConnectionClosedError):
            await receive(ws)
    assert error["event_type"] == "error" and error["data"] == {"code": 4100, "msg": "authentication is invalid"}
    assert ws.close_code == 1006  # no close frame
    assert fake.ws_sessions[0].ended == "dropped"
    validate_downlink(error)


@pytest.mark.parametrize("encoded", ["Bearer%20pat_test", "Bearer+pat_test"])
async def test_ws_auth_by_query_parameter(fake: FakeCoze, encoded: str) -> None:
    async with raw_ws(fake, TTS_PATH, token=None, query=f"?authorization={encoded}") as ws:
        assert (await receive(ws))["event_type"] == "speech.created"
    assert fake.ws_sessions[0].token == TOKEN


# ----------------------------------------------------------------------------- WS: faults


async def test_ws_fail_next_replaces_the_result(fake: FakeCoze) -> None:
    fake.fail_next("ws_transcriptions", code=5000)
    async with raw_ws(fake, ASR_PATH) as ws:
        await send(ws, "input_audio_buffer.append", {"delta": b64(make_tone("wav", seconds=0.5))})
        await send(ws, "input_audio_buffer.complete")
        failed = await receive_until(ws, "error")
        await send(ws, "input_audio_buffer.append", {"delta": b64(make_tone("wav", seconds=0.5))})
        await send(ws, "input_audio_buffer.complete")  # the fault fired once; this one succeeds
        succeeded = await receive_until(ws, "transcriptions.message.completed")
    assert [event["event_type"] for event in failed] == ["transcriptions.created", "error"]
    assert failed[-1]["data"] == {"code": 5000, "msg": "service internal error, please retry after"}
    assert succeeded[-2]["data"]["content"] == "tone 440 hz 0.5 s"


async def test_ws_fail_next_mid_stream_then_continue(fake: FakeCoze) -> None:
    fake.fail_next("ws_speech", code=4013, msg="model busy", after_appends=2, times=2)
    for _ in range(2):
        async with raw_ws(fake, TTS_PATH) as ws:
            for word in ("one ", "two ", "three"):
                await send(ws, "input_text_buffer.append", {"delta": word})
            await send(ws, "input_text_buffer.complete")
            events = await receive_until(ws, "speech.audio.completed")
        types = [event["event_type"] for event in events]
        assert types[:3] == ["speech.created", "error", "input_text_buffer.completed"]
        assert events[1]["data"] == {"code": 4013, "msg": "model busy"}
    assert [session.texts for session in fake.sessions_to("ws_speech")] == [["one two three"]] * 2


async def test_ws_fail_next_at_connect_then_drop_like_a_permission_error(fake: FakeCoze) -> None:
    fake.fail_next("ws_transcriptions", code=4101, after_appends=0, then_drop=True)
    async with raw_ws(fake, ASR_PATH) as ws:
        events = [await receive(ws), await receive(ws)]
        with pytest.raises(websockets.ConnectionClosedError):
            await receive(ws)
    assert [event["event_type"] for event in events] == ["transcriptions.created", "error"]
    assert events[1]["data"]["code"] == 4101 and ws.close_code == 1006


async def test_ws_fail_next_raw_body_refuses_the_handshake(fake: FakeCoze) -> None:
    fake.fail_next("ws_speech", raw_body="<html>403 Forbidden</html>", http_status=403)
    with pytest.raises(websockets.InvalidStatus) as rejected:
        async with raw_ws(fake, TTS_PATH):
            pass
    assert rejected.value.response.status_code == 403
    assert rejected.value.response.headers["X-Tt-Logid"]
    async with raw_ws(fake, TTS_PATH) as ws:  # consumed
        assert (await receive(ws))["event_type"] == "speech.created"


async def test_ws_drop_next_after_downlink_events(fake: FakeCoze) -> None:
    fake.drop_next("ws_speech", after_events=4)
    async with raw_ws(fake, TTS_PATH) as ws:
        await send(ws, "input_text_buffer.append", {"delta": "今天天气不错"})
        await send(ws, "input_text_buffer.complete")
        received = [await receive(ws) for _ in range(4)]
        with pytest.raises(websockets.ConnectionClosedError):
            await receive(ws)
    assert ws.close_code == 1006
    assert [event["event_type"] for event in received][-1] == "speech.audio.update"  # cut mid-audio
    assert fake.ws_sessions[0].ended == "dropped"


async def test_ws_drop_next_after_appends_through_cozepy(fake: FakeCoze) -> None:
    fake.drop_next("ws_transcriptions", after_appends=3)
    collector = Collector()
    async with asr_client(fake, collector)() as client:
        update = InputAudio(format="pcm", codec="pcm", sample_rate=16000, channel=1, bit_depth=16)
        await client.transcriptions_update(TranscriptionsUpdateEvent.Data(input_audio=update))
        for _ in range(5):
            await client.input_audio_buffer_append(InputAudioBufferAppendEvent.Data(delta=tone_pcm(440, 0.2)))
        await asyncio.wait_for(collector.failed.wait(), 10)
    assert isinstance(collector.errors[0], websockets.ConnectionClosedError)
    session = fake.ws_sessions[0]
    assert session.ended == "dropped" and session.uplink_types.count("input_audio_buffer.append") == 3


async def test_ws_delay_next_holds_the_result_only(fake: FakeCoze) -> None:
    fake.delay_next("ws_transcriptions", 60)
    # The held session never answers the close handshake, so do not wait long for it.
    async with raw_ws(fake, ASR_PATH, close_timeout=0.1) as slow:
        await send(slow, "input_audio_buffer.complete")
        assert (await receive(slow))["event_type"] == "transcriptions.created"
        await fake.wait_for(lambda: fake.ws_sessions[0].uplink)
        async with raw_ws(fake, ASR_PATH) as fast:  # another session is served meanwhile
            await send(fast, "input_audio_buffer.complete")
            assert (await receive_until(fast, "transcriptions.message.completed"))[-1]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(slow.recv(), 0.5)
