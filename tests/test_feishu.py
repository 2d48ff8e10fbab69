"""Feishu stream_recognize client and tenant-token manager, against the local Feishu fake."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from voicebridge.speech.audio import AudioConverter, split_at_pauses
from voicebridge.speech.errors import ErrorKind, SpeechError
from voicebridge.speech.feishu_asr import FeishuStreamSettings, FeishuStreamTranscriber, StreamText, TextMode, join_texts
from voicebridge.speech.feishu_auth import USER_AGENT, FeishuClient, environment_proxy
from voicebridge.speech.models import AudioClip
from voicebridge.speech.retry import Retrier, RetryPolicy
from voicebridge.speech.service import SpeechService
from tests.audio_tools import make_tone, mono_wav, tone_pcm
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


async def test_long_notes_run_as_parallel_segments_cut_in_pauses(fake: FakeFeishu, fast_retrier: Retrier) -> None:
    # Four sentences, each its own pitch, with pauses between: every segment is one sentence.
    pause = b"\0" * (16000 * 2)
    frequencies = [300, 400, 500, 600]
    clip = AudioClip(data=mono_wav(pause.join(tone_pcm(frequency, 8.5) for frequency in frequencies)))
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
    assert join_texts(["你好", "OK"]) == "你好OK"  # no space after CJK, even before Latin
    assert join_texts(["3.5", "kg"]) == "3.5 kg"  # a unit after a number
    assert join_texts(["OK", "好"]) == "OK好" and join_texts(["OK", "，"]) == "OK，"  # fullwidth punctuation is CJK too


@pytest.mark.parametrize("char", ["\u2e80", "\u9fff", "\uf900", "\ufaff", "\uff00", "\uffef"])
def test_the_first_and_last_characters_of_each_cjk_range_join_without_a_space(char: str) -> None:
    assert join_texts(["OK", char]) == "OK" + char


def test_auto_mode_weighs_each_answer_against_the_one_before_by_the_count_so_far() -> None:
    def read(*answers: str) -> str:
        text = StreamText(TextMode.AUTO)
        for answer in answers:
            text.partial(answer)
        return text.text

    assert read("abcd", "abxy") == "abxy"  # half the previous letters shared: a continuation
    assert read("abcde", "abxyz") == "abcde abxyz"  # less than half: a fresh start
    assert read("one two", "one two three", "one two three four", "five", "six") == "six"  # two of each: cumulative
    assert read("one two", "one two three", "five", "six") == "one two one two three five six"  # more fresh starts


# ------------------------------------------------------------------------------------ the tenant-token client on its own


class FeishuReplay:
    """Feishu's open platform answering through an httpx transport: a tenant token to each token
    request (spec §2), and the given answers, in turn, to everything else."""

    def __init__(self, *answers: httpx.Response, rejected_tokens: frozenset[str] = frozenset(), rejections_together: int = 1) -> None:
        self.answers = list(answers)
        self.rejected_tokens = rejected_tokens  # answered 99991663, "invalid access token"…
        self.rejections_together = rejections_together  # …once this many requests carry one
        self._rejections: list[httpx.Request] = []
        self._all_rejected = asyncio.Event()
        self.requests: list[httpx.Request] = []
        self.tokens_issued = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path.endswith("/tenant_access_token/internal"):
            self.tokens_issued += 1
            return httpx.Response(200, json={"code": 0, "msg": "ok", "tenant_access_token": f"t-{self.tokens_issued}",
                                             "expire": 7200})
        if request.headers.get("Authorization", "").removeprefix("Bearer ") in self.rejected_tokens:
            self._rejections.append(request)
            if len(self._rejections) >= self.rejections_together:
                self._all_rejected.set()
            async with asyncio.timeout(30):  # a deadline, not a margin
                await self._all_rejected.wait()
            return feishu_answer(99991663, 400)
        return self.answers.pop(0)

    def client(self, clock: ManualClock | None = None) -> FeishuClient:
        return FeishuClient("cli_x", "secret", "https://open.feishu.invalid/", transport=httpx.MockTransport(self),
                            clock=clock or ManualClock())


def feishu_answer(code: int, status: int = 200, **extra: object) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "msg": "ok" if code == 0 else "refused", **extra})


async def test_calls_carry_the_tenant_token_and_the_token_request_none() -> None:
    replay = FeishuReplay(feishu_answer(0, data={"recognition_text": "hi"}))
    client = replay.client()
    body = await client.post("/open-apis/x", {"a": 1})
    await client.aclose()
    token_request, call = replay.requests
    assert body["data"] == {"recognition_text": "hi"}
    assert "Authorization" not in token_request.headers
    assert json.loads(token_request.content) == {"app_id": "cli_x", "app_secret": "secret"}
    assert str(call.url) == "https://open.feishu.invalid/open-apis/x" and json.loads(call.content) == {"a": 1}
    assert call.headers["Authorization"] == "Bearer t-1" and call.headers["User-Agent"] == USER_AGENT
    assert call.headers["Content-Type"] == "application/json; charset=utf-8"


async def test_concurrent_callers_whose_token_was_rejected_share_one_new_token() -> None:
    replay = FeishuReplay(feishu_answer(0), feishu_answer(0), feishu_answer(0), rejected_tokens=frozenset({"t-1"}),
                          rejections_together=3)
    client = replay.client()
    await asyncio.gather(*(client.post("/open-apis/x", {}) for _ in range(3)))
    await client.aclose()
    assert replay.tokens_issued == 2  # the first, and one replacement for all three
    calls = [request.headers["Authorization"] for request in replay.requests if "Authorization" in request.headers]
    assert sorted(calls) == ["Bearer t-1"] * 3 + ["Bearer t-2"] * 3


async def test_other_refusals_are_raised_without_a_new_token() -> None:
    replay = FeishuReplay(feishu_answer(99991672, 400, error={"log_id": "log-body"}))
    client = replay.client()
    with pytest.raises(SpeechError) as caught:
        await client.post("/open-apis/x", {})
    await client.aclose()
    assert (caught.value.kind, caught.value.code, caught.value.logid) == (ErrorKind.PERMISSION, 99991672, "log-body")
    assert replay.tokens_issued == 1 and "Feishu error: refused" in str(caught.value)


@pytest.mark.parametrize(("answer", "kind", "code", "retry_after", "retryable"), [
    (httpx.Response(429, headers={"x-ogw-ratelimit-reset": "1.5"}, text="slow down"), ErrorKind.RATE_LIMITED, 429, 1.5, True),
    (httpx.Response(429, headers={"x-ogw-ratelimit-reset": "soon"}, text="slow down"), ErrorKind.RATE_LIMITED, 429, None, True),
    (httpx.Response(200, headers={"x-ogw-ratelimit-reset": "2"}, json={"code": 99991400, "msg": "frequency limit"}),
     ErrorKind.RATE_LIMITED, 99991400, 2.0, True),
    (httpx.Response(500, text="<html>oops</html>"), ErrorKind.SERVER, 500, None, True),
    (httpx.Response(499, text="closed"), ErrorKind.INVALID_INPUT, 499, None, False),
    (httpx.Response(401, text="who?"), ErrorKind.AUTH, 401, None, False),
    (httpx.Response(403, text="no"), ErrorKind.PERMISSION, 403, None, False),
    (httpx.Response(200, json={"code": "0"}), ErrorKind.INVALID_INPUT, 200, None, False),
    (httpx.Response(200, json={"code": 1234567, "msg": "new"}), ErrorKind.SERVER, 1234567, None, False),
])
async def test_answers_are_classified_on_the_body_code_else_the_status(answer: httpx.Response, kind: ErrorKind, code: int,
                                                                      retry_after: float | None, retryable: bool) -> None:
    answer.headers["x-tt-logid"] = "log-head"
    replay = FeishuReplay(answer)
    client = replay.client()
    with pytest.raises(SpeechError) as caught:
        await client.post("/open-apis/x", {})
    await client.aclose()
    error = caught.value
    assert (error.kind, error.code, error.retry_after, error.retryable) == (kind, code, retry_after, retryable)
    assert (error.logid, error.provider) == ("log-head", "feishu")
    if isinstance(code, int) and code > 999:  # a Feishu body code: Feishu's words are kept
        assert f"Feishu error: {answer.json()['msg']}" in str(error)
    if "json" not in answer.headers.get("content-type", "") or not isinstance(answer.json().get("code"), int):
        assert f"https://open.feishu.invalid/open-apis/x answered HTTP {code} without a Feishu JSON body" in str(error) \
            or code == 429


@pytest.mark.parametrize("answer", [{"code": 0, "msg": "ok", "expire": 7200}, {"code": 0, "tenant_access_token": "t-x"},
                                    {"code": 0, "tenant_access_token": "t-x", "expire": "7200"}])
async def test_a_token_answer_without_token_or_lifetime_is_a_server_fault(answer: dict[str, object]) -> None:
    def token_endpoint(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"x-tt-logid": "log-token"}, json=answer)

    client = FeishuClient("cli_x", "secret", "https://open.feishu.invalid", transport=httpx.MockTransport(token_endpoint))
    with pytest.raises(SpeechError) as caught:
        await client.token()
    await client.aclose()
    assert (caught.value.kind, caught.value.retryable, caught.value.logid, caught.value.provider) == (
        ErrorKind.SERVER, False, "log-token", "feishu")
    assert "lacks tenant_access_token/expire" in str(caught.value)


async def test_the_lean_client_s_failures_are_timeouts_or_connectivity(fake: FakeFeishu) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    hanging = FeishuClient("cli_x", "secret", f"http://127.0.0.1:{port}", timeout=0.2)
    async with asyncio.timeout(30):  # a deadline for a client without a timeout, not a margin
        with pytest.raises(SpeechError) as slow:
            await hanging.token()
    await hanging.aclose()
    listener.close()
    await listener.wait_closed()
    nobody = FeishuClient("cli_x", "secret", f"http://127.0.0.1:{port}")
    with pytest.raises(SpeechError) as refused:
        await nobody.token()
    await nobody.aclose()
    assert (slow.value.kind, slow.value.provider) == (ErrorKind.TIMEOUT, "feishu") and "did not answer in time" in str(slow.value)
    assert (refused.value.kind, refused.value.provider) == (ErrorKind.CONNECTIVITY, "feishu")
    assert "cannot reach Feishu: cannot connect" in str(refused.value)


async def test_the_httpx_path_s_failures_are_timeouts_or_connectivity() -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow") if "slow" in str(request.url) else httpx.ConnectError("refused")

    slow = FeishuClient("cli_x", "secret", "https://slow.invalid", transport=httpx.MockTransport(fail))
    unreachable = FeishuClient("cli_x", "secret", "https://down.invalid", transport=httpx.MockTransport(fail))
    failures = []
    for client in (slow, unreachable):
        with pytest.raises(SpeechError) as caught:
            await client.token()
        await client.aclose()
        failures.append(caught.value)
    assert [(error.kind, error.provider) for error in failures] == [(ErrorKind.TIMEOUT, "feishu"), (ErrorKind.CONNECTIVITY, "feishu")]
    assert "cannot reach Feishu: ConnectError: refused" in str(failures[1])


@pytest.mark.parametrize(("environment", "url", "proxy"), [
    ({"HTTPS_PROXY": "http://proxy:3128"}, "https://open.feishu.cn", "http://proxy:3128"),
    ({"HTTPS_PROXY": "http://proxy:3128"}, "http://open.feishu.cn", None),
    ({"ALL_PROXY": "http://all:1080"}, "https://open.feishu.cn", "http://all:1080"),
    ({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "feishu.cn"}, "https://open.feishu.cn", None),
    ({}, "https://open.feishu.cn", None),
])
def test_the_proxy_is_the_one_httpx_would_take_from_the_environment(monkeypatch: pytest.MonkeyPatch, environment: dict[str, str],
                                                                     url: str, proxy: str | None) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert environment_proxy(url) == proxy


async def test_the_token_is_renewed_exactly_ten_minutes_before_it_expires() -> None:
    clock = ManualClock()
    replay = FeishuReplay()
    client = replay.client(clock)
    start = clock.now
    assert await client.token() == "t-1"
    clock.now = start + 7200 - 600 - 0.001
    assert await client.token() == "t-1"
    clock.now = start + 7200 - 600
    assert await client.token() == "t-2"
    await client.aclose()


async def test_the_lean_client_reads_the_rate_limit_reset_and_feishu_s_words(fake: FakeFeishu) -> None:
    fake.fail_next("stream_recognize", http_status=429, code=99991400, msg="request trigger frequency limit",
                   headers={"x-ogw-ratelimit-limit": "20", "x-ogw-ratelimit-reset": "1.5"})
    fake.fail_next("stream_recognize", http_status=429, raw_body="<html>Too Many Requests</html>",
                   headers={"X-Ogw-Ratelimit-Reset": "2"})
    client = make_client(fake)
    failures = []
    for _ in range(2):
        with pytest.raises(SpeechError) as caught:
            await client.post("/open-apis/speech_to_text/v1/speech/stream_recognize", {})
        failures.append(caught.value)
    await client.aclose()
    assert [(error.kind, error.retry_after) for error in failures] == [(ErrorKind.RATE_LIMITED, 1.5), (ErrorKind.RATE_LIMITED, 2.0)]
    assert "Feishu error: request trigger frequency limit" in str(failures[0]) and "Feishu rate limit" in str(failures[1])
    assert failures[0].logid == fake.requests_to("stream_recognize")[0].log_id


async def test_the_proxy_path_has_a_read_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    for name in ("NO_PROXY", "no_proxy", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}")
    client = FeishuClient("cli_x", "secret", "http://open.feishu.invalid", timeout=0.2)
    async with asyncio.timeout(30):  # a deadline for a client without a read timeout, not a margin
        with pytest.raises(SpeechError) as caught:
            await client.token()
    await client.aclose()
    listener.close()
    await listener.wait_closed()
    assert (caught.value.kind, caught.value.provider) == (ErrorKind.TIMEOUT, "feishu")
