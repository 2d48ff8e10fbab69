"""Tests of the Feishu fake: lark-oapi against it end to end, then each rule and switch over httpx."""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import pytest

if TYPE_CHECKING:
    import lark_oapi as lark
    from lark_oapi.api.speech_to_text.v1 import FileRecognizeSpeechRequest, StreamRecognizeSpeechResponse

# lark-oapi takes seconds to import, and every pytest-xdist worker collects every module: only
# the few tests that drive the SDK import it, in their own bodies, and they share one worker
# (--dist loadgroup), so one process pays for the import.
USES_LARK_OAPI = pytest.mark.xdist_group("lark_oapi")

from tests.audio_tools import tone_pcm
from tests.fakes.feishu import DEFAULT_APP_ID, DEFAULT_APP_SECRET, ErrorFamily, FakeFeishu, TextMode

TOKEN_PATH = "/open-apis/auth/v3/tenant_access_token/internal"
APP_TOKEN_PATH = "/open-apis/auth/v3/app_access_token/internal"
STREAM_PATH = "/open-apis/speech_to_text/v1/speech/stream_recognize"
FILE_PATH = "/open-apis/speech_to_text/v1/speech/file_recognize"
STREAM_ID = "stream_012345678"
FILE_ID = "file_0123456789a"
CHUNK = tone_pcm(440, 0.2)  # 200 ms = 6 400 bytes; 88 whole cycles, so chunks join without a click

T = TypeVar("T")


class ManualClock:
    """Stands in for time.monotonic so expiry, idle and QPS rules are tested without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def b64(pcm: bytes) -> str:
    return base64.b64encode(pcm).decode()


def stream_body(sequence_id: Any = 0, action: Any = 1, pcm: bytes = CHUNK, **config: Any) -> dict[str, Any]:
    return {
        "speech": {"speech": b64(pcm)},
        "config": {"stream_id": STREAM_ID, "sequence_id": sequence_id, "action": action,
                   "format": "pcm", "engine_type": "16k_auto", **config},
    }


def file_body(pcm: bytes = CHUNK, **config: Any) -> dict[str, Any]:
    return {"speech": {"speech": b64(pcm)}, "config": {"file_id": FILE_ID, "format": "pcm", "engine_type": "16k_auto", **config}}


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def fetch_token(http: httpx.AsyncClient, fake: FakeFeishu,
                      app_id: str = DEFAULT_APP_ID, secret: str = DEFAULT_APP_SECRET) -> dict[str, Any]:
    response = await http.post(fake.base_url + TOKEN_PATH, json={"app_id": app_id, "app_secret": secret})
    return response.json()


async def authed(http: httpx.AsyncClient, fake: FakeFeishu, app_id: str = DEFAULT_APP_ID) -> httpx.AsyncClient:
    """A client that carries a fresh tenant token for ``app_id`` (secret = DEFAULT_APP_SECRET)."""
    token = (await fetch_token(http, fake, app_id))["tenant_access_token"]
    http.headers["Authorization"] = f"Bearer {token}"
    return http


# ------------------------------------------------------------------------------ lark-oapi


@pytest.fixture
def app_id() -> str:
    # lark-oapi caches tokens process-wide by app_id (spec §5.3.6): a fresh id per test isolates them.
    return f"cli_{secrets.token_hex(8)}"


def lark_client(fake: FakeFeishu, app_id: str, secret: str = DEFAULT_APP_SECRET) -> lark.Client:
    import lark_oapi as lark

    return lark.Client.builder().app_id(app_id).app_secret(secret).domain(fake.base_url).log_level(lark.LogLevel.ERROR).build()


async def on_sdk_loop(call: Coroutine[Any, Any, T]) -> T:
    """Run a lark-oapi coroutine on its own loop in a worker thread.

    lark-oapi's async calls fetch the token with blocking ``requests`` inside the coroutine; on
    this loop that would block the fake that has to answer it.
    """
    return await asyncio.to_thread(asyncio.run, call)


async def sdk_stream(client: lark.Client, chunks: list[bytes]) -> list[StreamRecognizeSpeechResponse]:
    """Send ``chunks`` as one stream: action 1, then 0 …, then 2 on the last one."""
    from lark_oapi.api.speech_to_text.v1 import Speech, StreamConfig, StreamRecognizeSpeechRequest, StreamRecognizeSpeechRequestBody

    responses = []
    for sequence_id, chunk in enumerate(chunks):
        action = 1 if sequence_id == 0 else 2 if sequence_id == len(chunks) - 1 else 0
        config = (StreamConfig.builder().stream_id(STREAM_ID).sequence_id(sequence_id).action(action)
                  .format("pcm").engine_type("16k_auto").build())
        body = StreamRecognizeSpeechRequestBody.builder().speech(Speech.builder().speech(b64(chunk)).build()).config(config).build()
        request = StreamRecognizeSpeechRequest.builder().request_body(body).build()
        responses.append(await client.speech_to_text.v1.speech.astream_recognize(request))
    return responses


def sdk_file_request(pcm: bytes) -> FileRecognizeSpeechRequest:
    from lark_oapi.api.speech_to_text.v1 import FileConfig, FileRecognizeSpeechRequest, FileRecognizeSpeechRequestBody, Speech

    config = FileConfig.builder().file_id(FILE_ID).format("pcm").engine_type("16k_auto").build()
    body = FileRecognizeSpeechRequestBody.builder().speech(Speech.builder().speech(b64(pcm)).build()).config(config).build()
    return FileRecognizeSpeechRequest.builder().request_body(body).build()


@USES_LARK_OAPI
async def test_lark_stream_recognize_hears_the_tone(app_id: str) -> None:
    async with FakeFeishu(apps={app_id: DEFAULT_APP_SECRET}) as fake:
        responses = await on_sdk_loop(sdk_stream(lark_client(fake, app_id), [CHUNK] * 10))

        assert [r.code for r in responses] == [0] * 10
        assert [r.data.sequence_id for r in responses] == list(range(10))
        assert {r.data.stream_id for r in responses} == {STREAM_ID}
        assert responses[4].data.recognition_text == "tone 440 hz 1.0 s"
        assert responses[-1].data.recognition_text == "tone 440 hz 2.0 s"
        # The SDK fetched one token, without a Content-Type, and used it for every chunk.
        (token_request,) = fake.requests_to("tenant_access_token")
        assert "Content-Type" not in token_request.headers
        assert token_request.headers["User-Agent"].startswith("oapi-sdk-python/")
        assert fake.token_fetches == 1
        chunks = fake.requests_to("stream_recognize")
        assert {r.token for r in chunks} == {fake.issued_tokens[0]}
        assert [r.audio_bytes for r in chunks] == [6400] * 10
        assert fake.open_streams == 0


@USES_LARK_OAPI
async def test_lark_file_recognize_async_and_sync(app_id: str) -> None:
    async with FakeFeishu(apps={app_id: DEFAULT_APP_SECRET}) as fake:
        client = lark_client(fake, app_id)
        response = await on_sdk_loop(client.speech_to_text.v1.speech.afile_recognize(sdk_file_request(tone_pcm(300, 3.0))))
        assert response.success(), response.msg
        assert response.data.recognition_text == "tone 300 hz 3.0 s"
        assert response.raw.headers["x-tt-logid"] == fake.records[-1].log_id  # httpx lowercases keys

        # The sync path finds the log id only because the header is spelled exactly "X-Tt-Logid".
        response = await asyncio.to_thread(client.speech_to_text.v1.speech.file_recognize, sdk_file_request(CHUNK))
        assert response.data.recognition_text == "tone 440 hz 0.2 s"
        assert response.get_log_id() == fake.records[-1].log_id
        assert fake.token_fetches == 1


@USES_LARK_OAPI
async def test_lark_token_failure_surfaces_the_code(app_id: str) -> None:
    from lark_oapi.core.exception import ObtainAccessTokenException

    async with FakeFeishu(apps={app_id: "the-right-secret"}) as fake:
        client = lark_client(fake, app_id, secret="a-wrong-secret")
        with pytest.raises(ObtainAccessTokenException) as raised:
            await on_sdk_loop(client.speech_to_text.v1.speech.afile_recognize(sdk_file_request(CHUNK)))
        assert raised.value.code == 10014
        assert fake.request_counts["file_recognize"] == 0


@USES_LARK_OAPI
async def test_lark_reports_expired_token_without_retrying(app_id: str) -> None:
    async with FakeFeishu(apps={app_id: DEFAULT_APP_SECRET}) as fake:
        client = lark_client(fake, app_id)
        await on_sdk_loop(client.speech_to_text.v1.speech.afile_recognize(sdk_file_request(CHUNK)))
        fake.expire_all_tokens()
        response = await on_sdk_loop(client.speech_to_text.v1.speech.afile_recognize(sdk_file_request(CHUNK)))
        assert response.code == 99991663
        assert response.raw.status_code == 400
        assert fake.token_fetches == 1  # lark-oapi keeps its cached token (spec §5.3.5)


# ------------------------------------------------------------------------------ tokens


async def test_token_endpoint_parses_json_without_content_type(http: httpx.AsyncClient) -> None:
    async with FakeFeishu() as fake:
        raw = b'{"app_id": "%s", "app_secret": "%s"}' % (DEFAULT_APP_ID.encode(), DEFAULT_APP_SECRET.encode())
        response = await http.post(fake.base_url + TOKEN_PATH, content=raw)
        assert "content-type" not in response.request.headers
        body = response.json()
        assert body["code"] == 0 and body["msg"] == "ok" and body["expire"] == 7200
        assert body["tenant_access_token"].startswith("t-")
        assert "data" not in body


async def test_token_is_reissued_only_under_30_minutes_and_old_one_stays_valid(http: httpx.AsyncClient) -> None:
    clock = ManualClock()
    async with FakeFeishu(clock=clock) as fake:
        first = await fetch_token(http, fake)
        clock.advance(7200 - 1800)
        again = await fetch_token(http, fake)
        assert again["tenant_access_token"] == first["tenant_access_token"]
        assert again["expire"] == 1800  # default: the remaining time

        clock.advance(1)
        second = await fetch_token(http, fake)
        assert second["tenant_access_token"] != first["tenant_access_token"]
        assert second["expire"] == 7200

        async def file_code(token: str) -> int:
            response = await http.post(fake.base_url + FILE_PATH, json=file_body(), headers={"Authorization": f"Bearer {token}"})
            return response.json()["code"]

        assert await file_code(first["tenant_access_token"]) == 0
        clock.advance(1800)
        assert await file_code(first["tenant_access_token"]) == 99991663
        assert await file_code(second["tenant_access_token"]) == 0
        assert fake.issued_tokens == [first["tenant_access_token"], second["tenant_access_token"]]
        assert fake.token_fetches == 3


async def test_reissued_same_token_can_report_a_full_term(http: httpx.AsyncClient) -> None:
    clock = ManualClock()
    async with FakeFeishu(clock=clock, reissue_expire="full") as fake:
        first = await fetch_token(http, fake)
        clock.advance(3600)
        again = await fetch_token(http, fake)
        assert again == {**first, "expire": 7200}
        clock.advance(3600)  # the token still dies at its original deadline
        http.headers["Authorization"] = f"Bearer {first['tenant_access_token']}"
        assert (await http.post(fake.base_url + FILE_PATH, json=file_body())).json()["code"] == 99991663


async def test_short_token_expire_mints_a_token_per_call(http: httpx.AsyncClient) -> None:
    async with FakeFeishu(token_expire=600) as fake:
        tokens = {(await fetch_token(http, fake))["tenant_access_token"] for _ in range(3)}
        assert len(tokens) == 3


@pytest.mark.parametrize(
    ("body", "fake_args", "status", "code"),
    [
        ({"app_id": DEFAULT_APP_ID}, {}, 400, 10003),
        ({"app_id": "cli_unknown", "app_secret": DEFAULT_APP_SECRET}, {}, 400, 10003),
        ({"app_id": DEFAULT_APP_ID, "app_secret": "wrong"}, {}, 400, 10014),
        ({"app_id": DEFAULT_APP_ID, "app_secret": "wrong"}, {"bad_secret_code": 10015, "token_error_status": 200}, 200, 10015),
    ],
    ids=["missing secret", "unknown app", "wrong secret", "wrong secret, configured"],
)
async def test_token_errors(http: httpx.AsyncClient, body: dict[str, str], fake_args: dict[str, Any], status: int, code: int) -> None:
    async with FakeFeishu(**fake_args) as fake:
        response = await http.post(fake.base_url + TOKEN_PATH, json=body)
        assert (response.status_code, response.json()["code"]) == (status, code)
        assert "tenant_access_token" not in response.json()
        assert fake.token_fetches == 0


async def test_app_access_token_endpoint(http: httpx.AsyncClient) -> None:
    async with FakeFeishu() as fake:
        response = await http.post(fake.base_url + APP_TOKEN_PATH, json={"app_id": DEFAULT_APP_ID, "app_secret": DEFAULT_APP_SECRET})
        body = response.json()
        assert body["code"] == 0 and body["expire"] == 7200
        assert body["app_access_token"] == body["tenant_access_token"] == (await fetch_token(http, fake))["tenant_access_token"]


# ------------------------------------------------------------------------------ auth


@pytest.mark.parametrize(
    ("authorization", "code"),
    [(None, 99991661), ("t-abc", 99991661), ("Bearer", 99991661), ("Bearer a-123", 99991671), ("Bearer t-unknown", 99991663)],
)
async def test_auth_errors(http: httpx.AsyncClient, authorization: str | None, code: int) -> None:
    async with FakeFeishu() as fake:
        headers = {"Authorization": authorization} if authorization else {}
        response = await http.post(fake.base_url + STREAM_PATH, json=stream_body(), headers=headers)
        assert (response.status_code, response.json()["code"]) == (400, code)
        assert response.json()["error"]["log_id"] == response.headers["X-Tt-Logid"]
        assert fake.open_streams == 0


async def test_auth_error_status_and_scope_switches(http: httpx.AsyncClient) -> None:
    async with FakeFeishu(auth_error_status=200, scope_granted=False) as fake:
        await authed(http, fake)
        response = await http.post(fake.base_url + FILE_PATH, json=file_body())
        assert (response.status_code, response.json()["code"]) == (200, 99991672)
        fake.scope_granted = True
        assert (await http.post(fake.base_url + FILE_PATH, json=file_body())).json()["code"] == 0


async def test_expire_all_tokens_then_refresh(http: httpx.AsyncClient) -> None:
    async with FakeFeishu() as fake:
        await authed(http, fake)
        old = http.headers["Authorization"]
        fake.expire_all_tokens()
        assert (await http.post(fake.base_url + FILE_PATH, json=file_body())).json()["code"] == 99991663
        await authed(http, fake)
        assert http.headers["Authorization"] != old
        assert (await http.post(fake.base_url + FILE_PATH, json=file_body())).json()["code"] == 0


async def test_revoke_then_refresh(http: httpx.AsyncClient) -> None:
    async with FakeFeishu() as fake:
        await authed(http, fake)
        fake.revoke(fake.issued_tokens[0])
        assert (await http.post(fake.base_url + FILE_PATH, json=file_body())).json()["code"] == 99991663
        await authed(http, fake)
        assert (await http.post(fake.base_url + FILE_PATH, json=file_body())).json()["code"] == 0
        assert len(fake.issued_tokens) == 2


# ------------------------------------------------------------------------------ stream_recognize


def not_base64() -> dict[str, Any]:
    body = stream_body()
    body["speech"]["speech"] = "***not base64***"
    return body


OPENED = [stream_body()]
INVALID_STREAM_REQUESTS: dict[str, tuple[list[dict[str, Any]], dict[str, Any] | bytes]] = {
    "body not JSON": ([], b"<xml/>"),
    "config missing": ([], {"speech": {"speech": b64(CHUNK)}}),
    "stream_id too short": ([], stream_body(stream_id="short")),
    "stream_id bad character": ([], stream_body(stream_id="abcdefgh-1234567")),
    "format wav": ([], stream_body(format="wav")),
    "engine_type 8k": ([], stream_body(engine_type="8k_auto")),
    "action 4": ([], stream_body(action=4)),
    "action true": ([], stream_body(action=True)),
    "sequence_id string": ([], stream_body(sequence_id="0")),
    "first sequence_id 1": ([], stream_body(sequence_id=1)),
    "sequence gap": (OPENED, stream_body(sequence_id=2, action=0)),
    "sequence repeated": (OPENED, stream_body(sequence_id=0, action=0)),
    "open twice": (OPENED, stream_body(sequence_id=1, action=1)),
    "not base64": ([], not_base64()),
    "odd byte count": ([], stream_body(pcm=b"\x00\x01\x02")),
    "empty middle chunk": (OPENED, stream_body(sequence_id=1, action=0, pcm=b"")),
    "chunk to unknown stream": ([], stream_body(action=0)),
    "chunk to closed stream": ([*OPENED, stream_body(sequence_id=1, action=2)], stream_body(sequence_id=2, action=0)),
}


@pytest.mark.parametrize(("family", "expected_code"), [("feishu", 1040101), ("lark", 1610101)])
@pytest.mark.parametrize("case", INVALID_STREAM_REQUESTS)
async def test_stream_validation(http: httpx.AsyncClient, case: str, family: ErrorFamily, expected_code: int) -> None:
    before, bad = INVALID_STREAM_REQUESTS[case]
    async with FakeFeishu(error_family=family) as fake:
        await authed(http, fake)
        for body in before:
            assert (await http.post(fake.base_url + STREAM_PATH, json=body)).json()["code"] == 0
        sent = {"content": bad} if isinstance(bad, bytes) else {"json": bad}
        response = await http.post(fake.base_url + STREAM_PATH, **sent)
        assert response.status_code == 400
        assert response.json()["code"] == expected_code == fake.param_error_code
        assert response.json()["msg"] == "invalid param"


async def test_relaxed_sequence_and_empty_chunks(http: httpx.AsyncClient) -> None:
    async with FakeFeishu(strict_sequence=False, empty_chunks_allowed=True) as fake:
        await authed(http, fake)
        for body in (stream_body(sequence_id=1), stream_body(sequence_id=5, action=0, pcm=b""), stream_body(sequence_id=5, action=0)):
            response = await http.post(fake.base_url + STREAM_PATH, json=body)
            assert response.json()["code"] == 0, response.json()
        assert response.json()["data"]["sequence_id"] == 5


async def test_end_and_abort_may_carry_no_audio(http: httpx.AsyncClient) -> None:
    async with FakeFeishu() as fake:
        await authed(http, fake)
        await http.post(fake.base_url + STREAM_PATH, json=stream_body())
        end = await http.post(fake.base_url + STREAM_PATH, json=stream_body(sequence_id=1, action=2, pcm=b""))
        assert end.json()["data"]["recognition_text"] == "tone 440 hz 0.2 s"

        await http.post(fake.base_url + STREAM_PATH, json=stream_body())
        abort = stream_body(sequence_id=1, action=3)
        del abort["speech"]
        assert (await http.post(fake.base_url + STREAM_PATH, json=abort)).json()["code"] == 0


async def test_abort_returns_empty_text_and_drops_the_stream(http: httpx.AsyncClient) -> None:
    async with FakeFeishu() as fake:
        await authed(http, fake)
        await http.post(fake.base_url + STREAM_PATH, json=stream_body())
        response = await http.post(fake.base_url + STREAM_PATH, json=stream_body(sequence_id=1, action=3))
        assert response.json() == {"code": 0, "msg": "success",
                                   "data": {"stream_id": STREAM_ID, "sequence_id": 1, "recognition_text": ""}}
        assert fake.open_streams == 0
        assert (await http.post(fake.base_url + STREAM_PATH, json=stream_body(sequence_id=2, action=0))).status_code == 400


SCRIPT = "alpha beta gamma delta epsilon"


@pytest.mark.parametrize(
    ("mode", "partials"),
    [
        ("cumulative", ["alpha", "alpha beta", "alpha beta gamma", "alpha beta gamma delta"]),
        ("delta", ["alpha", "beta", "gamma", "delta"]),
    ],
)
async def test_partial_text_modes(http: httpx.AsyncClient, mode: TextMode, partials: list[str]) -> None:
    half_second = tone_pcm(440, 0.5)
    async with FakeFeishu(text_mode=mode, script=SCRIPT, seconds_per_word=0.5) as fake:
        await authed(http, fake)
        texts = []
        for sequence_id, action in enumerate([1, 0, 0, 0, 2]):
            response = await http.post(fake.base_url + STREAM_PATH, json=stream_body(sequence_id, action, half_second))
            texts.append(response.json()["data"]["recognition_text"])
        assert texts == [*partials, SCRIPT]  # the action-2 reply is always the full text


async def test_idle_streams_are_evicted(http: httpx.AsyncClient) -> None:
    clock = ManualClock()
    async with FakeFeishu(clock=clock, stream_idle_seconds=5, max_open_streams=1) as fake:
        await authed(http, fake)
        await http.post(fake.base_url + STREAM_PATH, json=stream_body())
        clock.advance(4.9)
        assert (await http.post(fake.base_url + STREAM_PATH, json=stream_body(1, 0))).json()["code"] == 0
        clock.advance(4.9)  # each chunk restarts the idle timer
        assert fake.open_streams == 1
        clock.advance(0.2)
        assert fake.open_streams == 0
        response = await http.post(fake.base_url + STREAM_PATH, json=stream_body(2, 0))
        assert response.json()["code"] == 1040101
        # The evicted stream no longer holds the tenant's only slot.
        assert (await http.post(fake.base_url + STREAM_PATH, json=stream_body(stream_id="another_stream_1"))).json()["code"] == 0


async def test_open_streams_are_capped_per_tenant(http: httpx.AsyncClient) -> None:
    apps = {"cli_app_one": DEFAULT_APP_SECRET, "cli_app_two": DEFAULT_APP_SECRET, "cli_elsewhere": DEFAULT_APP_SECRET}
    tenants = {"cli_app_one": "tenant_a", "cli_app_two": "tenant_a"}
    async with FakeFeishu(apps=apps, tenants=tenants) as fake:
        async def open_stream(app_id: str, index: int) -> httpx.Response:
            token = (await fetch_token(http, fake, app_id))["tenant_access_token"]
            return await http.post(fake.base_url + STREAM_PATH, json=stream_body(stream_id=f"stream_{index:09d}"),
                                   headers={"Authorization": f"Bearer {token}"})

        for index in range(20):
            assert (await open_stream("cli_app_one", index)).json()["code"] == 0
        refused = await open_stream("cli_app_two", 20)  # another app of the same tenant shares the 20
        assert refused.status_code == 429
        assert refused.json()["code"] == 99991400
        assert refused.headers["x-ogw-ratelimit-limit"] == "20"
        assert int(refused.headers["x-ogw-ratelimit-reset"]) >= 1
        assert (await open_stream("cli_elsewhere", 20)).json()["code"] == 0  # a different tenant is not affected

        token = fake.requests_to("stream_recognize")[0].token
        close = stream_body(sequence_id=1, action=3, stream_id="stream_000000000")
        await http.post(fake.base_url + STREAM_PATH, json=close, headers={"Authorization": f"Bearer {token}"})
        assert (await open_stream("cli_app_two", 20)).json()["code"] == 0
        assert fake.max_open_streams_observed == 21


async def test_stream_cap_reply_is_configurable(http: httpx.AsyncClient) -> None:
    async with FakeFeishu(max_open_streams=1, stream_limit_status=400, stream_limit_code=1040101) as fake:
        await authed(http, fake)
        await http.post(fake.base_url + STREAM_PATH, json=stream_body())
        response = await http.post(fake.base_url + STREAM_PATH, json=stream_body(stream_id="another_stream_1"))
        assert (response.status_code, response.json()["code"]) == (400, 1040101)


async def test_hour_long_stream_costs_no_more_per_chunk_at_the_end(http: httpx.AsyncClient) -> None:
    """150 chunks of 200 ms, 59 one-minute chunks, 150 chunks of 200 ms: 60 minutes in one stream.

    A fake that kept or re-read the audio would answer the late small chunks far slower than the
    early ones; ``PcmListener`` keeps nothing, so they cost the same (the early ones even measure
    frequency).
    """
    small, minute = b64(CHUNK), b64(CHUNK * 300)
    async with FakeFeishu() as fake:
        await authed(http, fake)
        sequence_ids = iter(range(10_000))

        async def send(speech: str, count: int, last_action: int = 0) -> tuple[float, dict[str, Any]]:
            started = time.process_time()  # CPU, not wall: other processes' load does not count
            for index in range(count):
                sequence_id = next(sequence_ids)
                action = 1 if sequence_id == 0 else last_action if index == count - 1 else 0
                response = await http.post(fake.base_url + STREAM_PATH, json={"speech": {"speech": speech}, "config": {
                    "stream_id": STREAM_ID, "sequence_id": sequence_id, "action": action, "format": "pcm", "engine_type": "16k_auto"}})
            return time.process_time() - started, response.json()

        early_seconds, _ = await send(small, 150)
        await send(minute, 59)
        late_seconds, final = await send(small, 150, last_action=2)
        assert final["data"]["recognition_text"] == "tone 440 hz 3600.0 s"
        assert late_seconds < 2 * early_seconds + 0.5, (early_seconds, late_seconds)


# ------------------------------------------------------------------------------ file_recognize


INVALID_FILE_REQUESTS: dict[str, dict[str, Any]] = {
    "file_id too long": file_body(file_id="file_0123456789abc"),
    "file_id bad character": file_body(file_id="file-0123456789a"),
    "format opus": file_body(format="opus"),
    "engine_type null": file_body(engine_type=None),
    "speech missing": {"config": file_body()["config"]},
    "speech empty": file_body(pcm=b""),
    "over 60 s": file_body(pcm=bytes(1_920_002)),
}


@pytest.mark.parametrize(("family", "expected_code"), [("feishu", 1040101), ("lark", 1610101)])
@pytest.mark.parametrize("case", INVALID_FILE_REQUESTS)
async def test_file_validation(http: httpx.AsyncClient, case: str, family: ErrorFamily, expected_code: int) -> None:
    async with FakeFeishu(error_family=family) as fake:
        await authed(http, fake)
        response = await http.post(fake.base_url + FILE_PATH, json=INVALID_FILE_REQUESTS[case])
        assert (response.status_code, response.json()["code"]) == (400, expected_code)


async def test_file_size_cap_can_be_lifted(http: httpx.AsyncClient) -> None:
    async with FakeFeishu(file_max_bytes=None) as fake:
        await authed(http, fake)
        response = await http.post(fake.base_url + FILE_PATH, json=file_body(tone_pcm(440, 61)))
        assert response.json()["data"]["recognition_text"] == "tone 440 hz 61.0 s"
        assert fake.records[-1].audio_bytes == 61 * 32000


async def test_file_recognize_is_limited_to_20_qps_per_tenant(http: httpx.AsyncClient) -> None:
    clock = ManualClock()
    async with FakeFeishu(clock=clock) as fake:
        await authed(http, fake)
        for _ in range(20):
            assert (await http.post(fake.base_url + FILE_PATH, json=file_body())).json()["code"] == 0
        refused = await http.post(fake.base_url + FILE_PATH, json=file_body())
        assert (refused.status_code, refused.json()["code"]) == (429, 99991400)
        assert refused.headers["x-ogw-ratelimit-limit"] == "20"
        assert "x-ogw-ratelimit-reset" in refused.headers
        clock.advance(1.0)
        assert (await http.post(fake.base_url + FILE_PATH, json=file_body())).json()["code"] == 0


# ------------------------------------------------------------------------------ latency, faults, recording


async def test_latency_is_added_without_serialising_requests(http: httpx.AsyncClient) -> None:
    async with FakeFeishu(latency_seconds=0.2) as fake:
        await authed(http, fake)
        started = time.monotonic()
        responses = await asyncio.gather(*(http.post(fake.base_url + FILE_PATH, json=file_body()) for _ in range(10)))
        elapsed = time.monotonic() - started
        assert [r.json()["code"] for r in responses] == [0] * 10
        assert 0.2 <= elapsed < 2.0, elapsed  # one after another would take at least 2 s, however fast the machine


async def test_forced_server_error_leaves_the_stream_ready_for_a_retry(http: httpx.AsyncClient) -> None:
    async with FakeFeishu() as fake:
        await authed(http, fake)
        await http.post(fake.base_url + STREAM_PATH, json=stream_body())
        fake.fail_next("stream_recognize", http_status=500, code=fake.server_error_code, msg="network anomaly", times=2)
        for _ in range(2):
            failed = await http.post(fake.base_url + STREAM_PATH, json=stream_body(1, 0))
            assert (failed.status_code, failed.json()["code"]) == (500, 1040102)
            assert failed.json()["error"]["log_id"] == failed.headers["X-Tt-Logid"]
        retried = await http.post(fake.base_url + STREAM_PATH, json=stream_body(1, 2))
        assert retried.json()["data"]["recognition_text"] == "tone 440 hz 0.4 s"


async def test_forced_rate_limit_and_auth_replies(http: httpx.AsyncClient) -> None:
    async with FakeFeishu() as fake:
        await authed(http, fake)
        fake.fail_next("file_recognize", http_status=429, code=99991400, msg="request trigger frequency limit",
                       headers={"x-ogw-ratelimit-reset": "3"})
        fake.fail_next("file_recognize", http_status=400, code=99991663, msg="Invalid access token for authorization")
        limited = await http.post(fake.base_url + FILE_PATH, json=file_body())
        assert (limited.status_code, limited.json()["code"], limited.headers["x-ogw-ratelimit-reset"]) == (429, 99991400, "3")
        assert (await http.post(fake.base_url + FILE_PATH, json=file_body())).json()["code"] == 99991663
        assert (await http.post(fake.base_url + FILE_PATH, json=file_body())).json()["code"] == 0


async def test_forced_non_json_reply(http: httpx.AsyncClient) -> None:
    async with FakeFeishu() as fake:
        fake.fail_next("tenant_access_token", http_status=502, raw_body="<html>502 Bad Gateway</html>")
        response = await http.post(fake.base_url + TOKEN_PATH, json={"app_id": DEFAULT_APP_ID, "app_secret": DEFAULT_APP_SECRET})
        assert response.status_code == 502
        assert response.headers["content-type"].startswith("text/html")
        assert response.text == fake.records[-1].reply == "<html>502 Bad Gateway</html>"
        assert "X-Tt-Logid" in {name.decode() for name, _ in response.headers.raw}
        assert fake.token_fetches == 0
        assert (await fetch_token(http, fake))["code"] == 0


async def test_fail_next_needs_exactly_one_body() -> None:
    fake = FakeFeishu()
    with pytest.raises(ValueError):
        fake.fail_next("file_recognize", http_status=500)
    with pytest.raises(ValueError):
        fake.fail_next("file_recognize", http_status=500, code=1, raw_body="x")


async def test_delay_next_makes_the_client_time_out_then_is_handled(http: httpx.AsyncClient) -> None:
    async with FakeFeishu() as fake:
        await authed(http, fake)
        fake.delay_next("file_recognize", 0.5)
        with pytest.raises(httpx.ReadTimeout):
            await http.post(fake.base_url + FILE_PATH, json=file_body(), timeout=0.05)
        fast = await http.post(fake.base_url + FILE_PATH, json=file_body(), timeout=0.4)
        assert fast.json()["code"] == 0
        # The held request is still handled once its delay is over (a reply lost in transit).
        late = await fake.wait_for(lambda: len(fake.requests_to("file_recognize")) == 2 and fake.records[-1])
        assert late.status == 200


async def test_recording(http: httpx.AsyncClient) -> None:
    async with FakeFeishu() as fake:
        await authed(http, fake)
        response = await http.post(fake.base_url + STREAM_PATH, json=stream_body())
        record = fake.records[-1]
        assert record.endpoint == "stream_recognize" and record.method == "POST" and record.path == STREAM_PATH
        assert record.token == fake.issued_tokens[0]
        assert record.headers["Authorization"] == f"Bearer {fake.issued_tokens[0]}"
        assert record.body == {**stream_body(), "speech": {"speech": 6400}}
        assert record.audio_bytes == 6400
        assert record.reply == response.json()
        assert record.log_id == response.headers["X-Tt-Logid"]
        assert "X-Tt-Logid" in {name.decode() for name, _ in response.headers.raw}
        assert fake.request_counts == {"tenant_access_token": 1, "stream_recognize": 1}
        assert fake.max_open_streams_observed == 1


@pytest.mark.parametrize(("method", "path", "status"), [("POST", "/open-apis/nowhere", 404), ("GET", STREAM_PATH, 405)])
async def test_unknown_routes_answer_json(http: httpx.AsyncClient, method: str, path: str, status: int) -> None:
    async with FakeFeishu() as fake:
        response = await http.request(method, fake.base_url + path)
        assert response.status_code == status
        assert response.json()["code"] == status
        assert response.headers["X-Tt-Logid"] == fake.records[-1].log_id
        assert fake.request_counts["unknown"] == 1
