"""Feishu stream_recognize client and tenant-token manager, against the local Feishu fake."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import wave
from collections.abc import AsyncIterator

import pytest

from voicebridge.speech.audio import AudioConverter, split_at_pauses
from voicebridge.speech.errors import ErrorKind, SpeechError
from voicebridge.speech.feishu_asr import FeishuStreamSettings, FeishuStreamTranscriber, StreamText, TextMode, join_texts
from voicebridge.speech.feishu_auth import USER_AGENT, FeishuClient
from voicebridge.speech.models import AudioClip
from voicebridge.speech.retry import Retrier, RetryPolicy
from voicebridge.speech.service import SpeechService
from tests.audio_tools import make_tone, tone_pcm
from tests.fakes.feishu import DEFAULT_APP_ID, DEFAULT_APP_SECRET, FakeFeishu


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def fake() -> AsyncIterator[FakeFeishu]:
    async with FakeFeishu() as server:
        yield server


def make_client(fake: FakeFeishu, **kwargs: object) -> FeishuClient:
    return FeishuClient(DEFAULT_APP_ID, DEFAULT_APP_SECRET, fake.base_url, **kwargs)  # type: ignore[arg-type]


def make_service(fake: FakeFeishu, retrier: Retrier, settings: FeishuStreamSettings = FeishuStreamSettings(),
                 **client_kwargs: object) -> SpeechService:
    provider = FeishuStreamTranscriber(make_client(fake, **client_kwargs), settings, retrier)
    return SpeechService(transcribers=[provider], asr_chain=["feishu"], retrier=retrier)


def stream_requests(fake: FakeFeishu) -> list[dict]:
    return [record.body for record in fake.requests_to("stream_recognize") if record.status == 200]


async def test_a_note_is_streamed_in_200ms_chunks_and_the_final_text_comes_back(fake: FakeFeishu, fast_retrier: Retrier) -> None:
    service = make_service(fake, fast_retrier)
    results = [transcript async for transcript in service.stream(AudioClip(data=make_tone("ogg", 440.0, 2.0)))]
    await service.aclose()

    assert results[-1].final and results[-1].text == "tone 440 hz 2.0 s"
    partials = [result.text for result in results[:-1]]
    assert partials and all(not result.final for result in results[:-1])
    assert partials[-1].startswith("tone 440 hz")

    bodies = stream_requests(fake)
    configs = [body["config"] for body in bodies]
    assert [config["sequence_id"] for config in configs] == list(range(len(configs)))
    assert [config["action"] for config in configs] == [1] + [0] * (len(configs) - 2) + [2]
    assert len({config["stream_id"] for config in configs}) == 1
    assert re.fullmatch(r"[A-Za-z0-9_]{16}", configs[0]["stream_id"])
    assert {(config["format"], config["engine_type"]) for config in configs} == {("pcm", "16k_auto")}
    sizes = [record.audio_bytes for record in fake.requests_to("stream_recognize")]
    assert set(sizes[:-1]) == {6400}  # 200 ms of 16 kHz s16 mono
    assert sum(sizes) == 2.0 * 32000
    assert {record.headers["User-Agent"] for record in fake.requests_to("stream_recognize")} == {USER_AGENT}


async def test_chunk_duration_is_configurable(fake: FakeFeishu, fast_retrier: Retrier) -> None:
    service = make_service(fake, fast_retrier, FeishuStreamSettings(chunk_ms=100))
    assert (await service.transcribe(AudioClip(data=make_tone("wav", 440.0, 1.0)))).text == "tone 440 hz 1.0 s"
    await service.aclose()
    assert {record.audio_bytes for record in fake.requests_to("stream_recognize")[:-1]} == {3200}


@pytest.mark.xdist_group("lark_oapi")  # with the other lark-oapi tests: one worker imports it
async def test_requests_match_the_lark_oapi_model(fake: FakeFeishu, fast_retrier: Retrier) -> None:
    import lark_oapi as lark  # slow to import: only here (see tests/test_fake_feishu.py)
    from lark_oapi.api.speech_to_text.v1 import StreamRecognizeSpeechRequestBody

    service = make_service(fake, fast_retrier)
    await service.transcribe(AudioClip(data=make_tone("wav", 440.0, 0.5)))
    await service.aclose()
    for record in fake.requests_to("stream_recognize"):
        body = dict(record.body)
        body["speech"] = {"speech": base64.b64encode(b"\0" * record.audio_bytes).decode()}
        modelled = json.loads(lark.JSON.marshal(StreamRecognizeSpeechRequestBody(body)))
        assert modelled == body  # every field known to the SDK, with the SDK's types


async def test_the_token_is_fetched_once_and_shared_without_stampede(fake: FakeFeishu, fast_retrier: Retrier) -> None:
    service = make_service(fake, fast_retrier)
    clip = AudioClip(data=make_tone("wav", 440.0, 0.6))
    await asyncio.gather(*(service.transcribe(clip) for _ in range(8)))
    await service.transcribe(clip)
    await service.aclose()
    assert fake.token_fetches == 1
    tokens = {record.token for record in fake.requests_to("stream_recognize")}
    assert tokens == {fake.issued_tokens[0]}


async def test_requests_go_through_the_proxy_set_in_the_environment(fake: FakeFeishu, fast_retrier: Retrier,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", fake.base_url)  # the fake answers proxied (absolute-form) requests too
    client = FeishuClient(DEFAULT_APP_ID, DEFAULT_APP_SECRET, "http://open.feishu.invalid")
    service = SpeechService(transcribers=[FeishuStreamTranscriber(client, retrier=fast_retrier)], asr_chain=["feishu"],
                            retrier=fast_retrier)
    transcript = await service.transcribe(AudioClip(data=make_tone("wav", 440.0, 0.6)))
    await service.aclose()
    assert transcript.text and fake.token_fetches == 1
    assert {record.headers["Host"] for record in fake.requests_to("stream_recognize")} == {"open.feishu.invalid"}


async def test_the_token_is_refreshed_ten_minutes_before_expiry() -> None:
    clock = ManualClock()
    async with FakeFeishu(clock=clock) as fake:
        client = make_client(fake, clock=clock)
        first = await client.token()
        clock.now += 7200 - 601
        assert await client.token() == first
        clock.now += 2  # now less than ten minutes remain
        second = await client.token()
        await client.aclose()
    assert second != first and fake.token_fetches == 2


async def test_a_rejected_token_is_replaced_once_and_the_request_repeated(fake: FakeFeishu, fast_retrier: Retrier) -> None:
    service = make_service(fake, fast_retrier)
    clip = AudioClip(data=make_tone("wav", 440.0, 0.6))
    await service.transcribe(clip)
    fake.expire_all_tokens()
    assert (await service.transcribe(clip)).text == "tone 440 hz 0.6 s"
    await service.aclose()
    assert fake.token_fetches == 2
    rejected = [record for record in fake.requests_to("stream_recognize") if record.reply.get("code") == 99991663]
    assert len(rejected) == 1


async def test_a_token_that_stays_rejected_fails_as_auth_without_looping(fake: FakeFeishu, fast_retrier: Retrier) -> None:
    fake.fail_next("stream_recognize", http_status=400, code=99991663, msg="Invalid access token", times=5)
    service = make_service(fake, fast_retrier)
    with pytest.raises(SpeechError) as caught:
        await service.transcribe(AudioClip(data=make_tone("wav", 440.0, 0.4)))
    await service.aclose()
    assert caught.value.kind is ErrorKind.AUTH and not caught.value.retryable
    assert len(fake.requests_to("stream_recognize")) == 2  # the original and the one retry


async def test_wrong_app_secret_is_an_auth_error(fast_retrier: Retrier) -> None:
    async with FakeFeishu(apps={DEFAULT_APP_ID: "another secret"}) as fake:
        service = make_service(fake, fast_retrier)
        with pytest.raises(SpeechError) as caught:
            await service.transcribe(AudioClip(data=make_tone("wav", 440.0, 0.4)))
        await service.aclose()
    assert (caught.value.kind, caught.value.code) == (ErrorKind.AUTH, 10014)
    assert "中" not in caught.value.user_message("en") and caught.value.user_message("zh")


@pytest.mark.parametrize("family", ["feishu", "lark"])
async def test_transient_server_errors_of_both_families_are_retried_on_the_same_chunk(family: str, fast_retrier: Retrier) -> None:
    async with FakeFeishu(error_family=family) as fake:  # type: ignore[arg-type]
        fake.fail_next("stream_recognize", http_status=500, code=fake.server_error_code, msg="network anomaly", times=2)
        service = make_service(fake, fast_retrier)
        assert (await service.transcribe(AudioClip(data=make_tone("wav", 440.0, 1.0)))).text == "tone 440 hz 1.0 s"
        await service.aclose()
        sequence_ids = [record.body["config"]["sequence_id"] for record in fake.requests_to("stream_recognize")]
    assert sequence_ids[:3] == [0, 0, 0]  # the first chunk, retried twice


@pytest.mark.parametrize("code", [1040101, 1610101])
async def test_parameter_errors_of_both_families_are_not_retried(code: int, fast_retrier: Retrier, fake: FakeFeishu) -> None:
    fake.fail_next("stream_recognize", http_status=400, code=code, msg="invalid param")
    service = make_service(fake, fast_retrier)
    with pytest.raises(SpeechError) as caught:
        await service.transcribe(AudioClip(data=make_tone("wav", 440.0, 1.0)))
    await service.aclose()
    assert (caught.value.kind, caught.value.code, caught.value.retryable) == (ErrorKind.INVALID_INPUT, code, False)
    assert len(fake.requests_to("stream_recognize")) == 1


@pytest.mark.parametrize("http_status", [429, 400])
async def test_rate_limits_wait_for_the_reset_and_retry(http_status: int, fake: FakeFeishu, fast_retrier: Retrier) -> None:
    fake.fail_next("stream_recognize", http_status=http_status, code=99991400, msg="request trigger frequency limit",
                   headers={"x-ogw-ratelimit-limit": "20", "x-ogw-ratelimit-reset": "0.2"})
    service = make_service(fake, fast_retrier)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await service.transcribe(AudioClip(data=make_tone("wav", 440.0, 0.4)))).text == "tone 440 hz 0.4 s"
    await service.aclose()
    assert loop.time() - started >= 0.2  # the reset header was honoured, not just the tiny backoff


async def test_html_gateway_errors_and_timeouts_are_transient(fast_retrier: Retrier) -> None:
    async with FakeFeishu() as fake:
        fake.fail_next("stream_recognize", http_status=502, raw_body="<html>Bad Gateway</html>")
        service = make_service(fake, fast_retrier)
        assert (await service.transcribe(AudioClip(data=make_tone("wav", 440.0, 0.4)))).text == "tone 440 hz 0.4 s"
        await service.aclose()


async def test_a_lost_answer_restarts_the_segment_as_a_new_stream(fake: FakeFeishu) -> None:
    # The server handles the chunk, but its answer never reaches the client, which gives up
    # waiting; the retried sequence_id is then a duplicate, which the server refuses: the client
    # starts the segment over.
    fake.lose_next_answer("stream_recognize")
    service = make_service(fake, Retrier(RetryPolicy(base_delay=0.01, max_delay=0.01)), timeout=0.3)
    assert (await service.transcribe(AudioClip(data=make_tone("wav", 440.0, 1.0)))).text == "tone 440 hz 1.0 s"
    await service.aclose()
    assert len({record.body["config"]["stream_id"] for record in fake.requests_to("stream_recognize")}) == 2


async def open_at_most(fake: FakeFeishu, service: SpeechService, notes: int, limit: int) -> None:
    """Transcribe ``notes`` notes at once while the fake keeps every new stream open until
    ``limit`` are open together (a client that opened fewer never gets there: the test times
    out); then all go on. More than ``limit`` would be refused by the fake (``max_open_streams``)."""
    released = fake.hold_new_streams()
    clip = AudioClip(data=make_tone("wav", 440.0, 1.0))
    transcribing = asyncio.gather(*(service.transcribe(clip) for _ in range(notes)))
    try:
        await fake.wait_for(lambda: fake.open_streams >= limit, timeout=60)
    finally:
        released.set()
    results = await transcribing
    await service.aclose()
    assert [result.text for result in results] == ["tone 440 hz 1.0 s"] * notes
    assert fake.max_open_streams_observed == limit
    assert all(record.status == 200 for record in fake.requests_to("stream_recognize"))  # no 429 was needed


async def test_never_more_streams_than_configured_and_the_rest_queue(fast_retrier: Retrier) -> None:
    async with FakeFeishu(max_open_streams=3) as fake:
        await open_at_most(fake, make_service(fake, fast_retrier, FeishuStreamSettings(max_streams=3), timeout=120), 7, 3)


async def test_default_limit_is_the_tenant_limit_of_20(fast_retrier: Retrier) -> None:
    # A stream decodes while it sends, and the converter keeps 8 decoders open per core: on this
    # machine's cores that could be fewer than 20, so the converter here has 4 workers' worth.
    converter = AudioConverter(max_processes=4)
    try:
        async with FakeFeishu(max_open_streams=20) as fake:
            provider = FeishuStreamTranscriber(make_client(fake, timeout=120), FeishuStreamSettings(), fast_retrier)
            service = SpeechService(transcribers=[provider], asr_chain=["feishu"], retrier=fast_retrier, converter=converter)
            await open_at_most(fake, service, 26, 20)
    finally:
        converter.close()


async def test_cancelling_aborts_the_stream_with_action_3(fake: FakeFeishu, fast_retrier: Retrier) -> None:
    fake.latency_seconds = 0.01
    service = make_service(fake, fast_retrier)
    stream = service.stream(AudioClip(data=make_tone("wav", 440.0, 5.0)))
    async for transcript in stream:
        if not transcript.final:
            break
    await stream.aclose()
    await fake.wait_for(lambda: any(record.body["config"]["action"] == 3 for record in fake.requests_to("stream_recognize")))
    await service.aclose()
    assert fake.open_streams == 0


@pytest.mark.parametrize("client_mode", ["auto", "as the server"])
@pytest.mark.parametrize("server_mode", ["cumulative", "delta"])
async def test_scripted_chinese_text_from_a_cumulative_and_a_delta_server(server_mode: str, client_mode: str,
                                                                         fast_retrier: Retrier) -> None:
    script = "今天 天气 不错 我们 去 公园"
    text_mode = TextMode.AUTO if client_mode == "auto" else TextMode(server_mode)
    async with FakeFeishu(script=script, seconds_per_word=0.3, text_mode=server_mode) as fake:  # type: ignore[arg-type]
        service = make_service(fake, fast_retrier, FeishuStreamSettings(text_mode=text_mode))
        results = [transcript async for transcript in service.stream(AudioClip(data=make_tone("wav", 440.0, 2.0)))]
        await service.aclose()
    answers = [record.reply["data"]["recognition_text"] for record in fake.requests_to("stream_recognize")]
    changes = [answer for previous, answer in zip(["", *answers], answers) if answer and answer != previous]
    assert changes[:3] == (["今天", "今天 天气", "今天 天气 不错"] if server_mode == "cumulative" else ["今天", "天气", "不错"])
    assert results[-1].text == script
    partials = [result.text.replace(" ", "") for result in results[:-1]]  # joined deltas have no spaces in CJK
    # Partials grow word by word, each the text so far, never a fragment or a repetition.
    assert partials == ["".join(script.split()[:count]) for count in range(1, len(partials) + 1)]
    assert len(partials) >= 5


def wav(pcm: bytes, sample_rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(sample_rate)
        file.writeframes(pcm)
    return buffer.getvalue()


async def test_long_notes_run_as_parallel_segments_cut_in_pauses(fake: FakeFeishu, fast_retrier: Retrier) -> None:
    # Four sentences, each its own pitch, with pauses between: every segment is one sentence.
    pause = b"\0" * (16000 * 2)
    frequencies = [300, 400, 500, 600]
    clip = AudioClip(data=wav(pause.join(tone_pcm(frequency, 8.5) for frequency in frequencies)))
    service = make_service(fake, fast_retrier, FeishuStreamSettings(segment_seconds=10.0, parallel_segments=3), timeout=120)
    # The first three segments are held open together; then each final answer waits until no
    # other stream is open, so the finals arrive out of the audio's order: the text must not.
    fake.finals_wait_for_other_streams = True
    released = fake.hold_new_streams()
    transcribing = asyncio.ensure_future(service.transcribe(clip))
    try:
        await fake.wait_for(lambda: fake.open_streams >= 3, timeout=60)
    finally:
        released.set()
    result = await transcribing
    await service.aclose()
    heard = [(int(frequency), float(seconds)) for frequency, seconds in re.findall(r"tone (\d+) hz ([\d.]+) s", result.text)]
    assert [frequency for frequency, _ in heard] == frequencies, result.text  # in the audio's order
    assert all(8.5 <= seconds <= 10.0 for _, seconds in heard), result.text  # one sentence (and pause) each
    assert len({record.body["config"]["stream_id"] for record in fake.requests_to("stream_recognize")}) == 4
    assert fake.max_open_streams_observed == 3
    assert result.seconds == pytest.approx(37.0, abs=0.05)


async def test_segments_are_cut_inside_pauses() -> None:
    # 1.2 s of tone then 0.4 s of silence, repeated: every cut must land in a silence.
    burst = tone_pcm(440.0, 1.2) + b"\0" * int(0.4 * 32000)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield burst

    offsets = []
    position = 0
    async for segment in split_at_pauses(chunks(), 16000, segment_seconds=5.0, search_seconds=2.0):
        position += len(segment)
        offsets.append(position)
    assert sum(1 for _ in offsets) >= 6
    for offset in offsets[:-1]:
        into_burst = (offset / 32000) % 1.6
        assert into_burst >= 1.2, f"cut at {offset / 32000:.2f}s is inside a tone"


def test_cumulative_answers_that_revise_earlier_words_replace_the_text() -> None:
    # A recogniser revising its first word must not leave the old guess glued in front.
    text = StreamText(TextMode.CUMULATIVE)
    assert [text.partial(answer) for answer in ("是", "时间", "", "时间不错")] == ["是", "时间", "时间", "时间不错"]
    assert text.final("时间不错。") == "时间不错。"
    assert StreamText(TextMode.CUMULATIVE).final("") == ""


def test_delta_answers_accumulate_and_the_final_answer_may_be_whole_or_a_delta() -> None:
    whole, last_words = StreamText(TextMode.DELTA), StreamText(TextMode.DELTA)
    for text in (whole, last_words):
        assert [text.partial(answer) for answer in ("今天", "天气", "不错")] == ["今天", "今天天气", "今天天气不错"]
    assert whole.final("今天 天气 不错 我们") == "今天 天气 不错 我们"
    assert last_words.final("我们") == "今天天气不错我们"


def test_auto_mode_reads_the_answers_of_either_kind_of_server() -> None:
    cumulative, delta = StreamText(TextMode.AUTO), StreamText(TextMode.AUTO)
    assert [cumulative.partial(answer) for answer in ("今天", "今天天气", "今天，天气不错")] == ["今天", "今天天气", "今天，天气不错"]
    assert cumulative.final("今天，天气不错。") == "今天，天气不错。"
    assert [delta.partial(answer) for answer in ("今天", "天气", "", "不错")] == ["今天", "今天天气", "今天天气", "今天天气不错"]
    assert delta.final("我们") == "今天天气不错我们"


def test_auto_mode_takes_a_revised_first_guess_for_what_it_is() -> None:
    # A cumulative server revising its first word looks like a delta once; the next answer,
    # extending the revision, settles it, and the old guess is not glued in front.
    text = StreamText(TextMode.AUTO)
    assert [text.partial(answer) for answer in ("是", "时间", "", "时间不错")] == ["是", "是时间", "是时间", "时间不错"]
    assert text.final("时间不错。") == "时间不错。"
    assert StreamText(TextMode.AUTO).final("") == ""


def test_joining_segment_texts() -> None:
    assert join_texts(["hello world.", "next part", "", "你好", "世界"]) == "hello world. next part你好世界"
