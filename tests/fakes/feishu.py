"""A local fake of the Feishu / Lark open platform: tenant tokens and speech_to_text v1.

Follows the checklist in ``../shared/spec/feishu.md`` §6. Points the spec marks UNCERTAIN are
switches (constructor keywords, also public attributes that a test may flip at any time), each
defaulting to the stricter reading so that a client passing here does not rely on a guess.

Usage::

    async with FakeFeishu(apps={"cli_x": "secret"}) as fake:
        ...  # point the client at fake.base_url

Endpoint keys (for ``request_counts``, ``fail_next``, ``delay_next`` and records):
``"tenant_access_token"``, ``"app_access_token"``, ``"stream_recognize"``, ``"file_recognize"``
and ``"unknown"`` (any other path or method).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from aiohttp.typedefs import Handler

from .base import FakeServer
from .recognition import PcmListener

Endpoint = Literal["tenant_access_token", "app_access_token", "stream_recognize", "file_recognize", "unknown"]
ErrorFamily = Literal["feishu", "lark"]
TextMode = Literal["cumulative", "delta"]
ReissueExpire = Literal["remaining", "full"]

PATHS: dict[str, Endpoint] = {
    "/open-apis/auth/v3/tenant_access_token/internal": "tenant_access_token",
    "/open-apis/auth/v3/app_access_token/internal": "app_access_token",
    "/open-apis/speech_to_text/v1/speech/stream_recognize": "stream_recognize",
    "/open-apis/speech_to_text/v1/speech/file_recognize": "file_recognize",
}
SPEECH_ENDPOINTS: frozenset[Endpoint] = frozenset({"stream_recognize", "file_recognize"})

DEFAULT_APP_ID = "cli_fake_feishu_app"
DEFAULT_APP_SECRET = "fake-feishu-app-secret"

SAMPLE_RATE = 16000  # engine_type "16k_auto"
FILE_MAX_BYTES = 1_920_000  # 60 s of 16 kHz s16le mono (spec §4.2)
FILE_QPS = 20  # "单租户限流：20QPS" (spec §4.1)
MAX_OPEN_STREAMS = 20  # "全局租户总限流：20 路" (spec §3.5)
TOKEN_REISSUE_SECONDS = 1800  # under 30 min left, a token call mints a new token (spec §2.1)

_ID_PATTERN = re.compile(r"[A-Za-z0-9_]{16}")
_ERROR_CODES: dict[ErrorFamily, tuple[int, int]] = {"feishu": (1040101, 1040102), "lark": (1610101, 1610102)}

# Auth and rate-limit codes and messages as listed in the spec (§2.4, §3.6).
NEED_TOKEN = 99991661
BAD_TOKEN_FORMAT = 99991671
INVALID_TOKEN = 99991663
SCOPE_MISSING = 99991672
RATE_LIMITED = 99991400
INVALID_PARAMETER = 10003
_AUTH_MESSAGES = {
    NEED_TOKEN: "Need a token",
    BAD_TOKEN_FORMAT: "Invalid token: must start with t-/u-",
    INVALID_TOKEN: "Invalid access token for authorization. Please make a request with token attached",
    SCOPE_MISSING: "Access denied. One of the following scopes is required: [speech_to_text:speech]",
}


@dataclass
class RecordedRequest:
    """One request as the fake saw it, and what it answered."""

    endpoint: Endpoint
    method: str
    path: str
    headers: dict[str, str]
    token: str | None  # the Bearer token presented, if any
    body: Any  # parsed JSON (None if not JSON), with ``speech.speech`` replaced by its decoded byte count
    audio_bytes: int | None  # decoded length of ``speech.speech``; None when absent or not base64
    log_id: str
    status: int = 0
    reply: Any = None  # JSON body sent, or the raw text of a non-JSON forced reply


@dataclass
class _Reply:
    status: int
    body: dict[str, Any] | str  # a str is sent verbatim as text/html (a gateway error page)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Fault:
    """A queued forced reply (``reply`` set) or hold-up (``delay`` set) for one endpoint."""

    times: int
    reply: _Reply | None = None
    delay: float = 0.0
    lose_answer: bool = False  # handled, then answered only once the client has given up on it


@dataclass
class _Token:
    value: str
    tenant: str
    expires_at: float
    revoked: bool = False


@dataclass
class _Stream:
    tenant: str
    next_sequence: int
    last_seen: float
    listener: PcmListener
    hypothesis: str = ""  # last partial transcript, to compute delta-mode text


@dataclass
class _Audio:
    """``speech.speech`` of a request body, decoded once for both validation and recording."""

    present: bool = False
    pcm: bytes = b""
    valid: bool = True  # false: not base64, or an odd byte count (not whole s16 samples)


class FakeFeishu(FakeServer):
    """Fake open.feishu.cn: token endpoints plus stream_recognize / file_recognize."""

    def __init__(
        self,
        *,
        apps: Mapping[str, str] | None = None,
        tenants: Mapping[str, str] | None = None,
        token_expire: int = 7200,
        reissue_expire: ReissueExpire = "remaining",
        bad_secret_code: int = 10014,
        token_error_status: int = 400,
        auth_error_status: int = 400,
        scope_granted: bool = True,
        error_family: ErrorFamily = "feishu",
        strict_sequence: bool = True,
        empty_chunks_allowed: bool = False,
        stream_idle_seconds: float = 30.0,
        max_open_streams: int = MAX_OPEN_STREAMS,
        stream_limit_status: int = 429,
        stream_limit_code: int = RATE_LIMITED,
        text_mode: TextMode = "cumulative",
        script: str | None = None,
        seconds_per_word: float = 0.5,
        file_max_bytes: int | None = FILE_MAX_BYTES,
        file_qps: int = FILE_QPS,
        latency_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        # Self-built apps: app_id -> app_secret, and app_id -> tenant (default: each app its own tenant).
        self.apps: dict[str, str] = dict(apps or {DEFAULT_APP_ID: DEFAULT_APP_SECRET})
        self.tenants: dict[str, str] = dict(tenants or {})
        self.token_expire = token_expire
        self.reissue_expire = reissue_expire
        self.bad_secret_code = bad_secret_code
        self.token_error_status = token_error_status
        self.auth_error_status = auth_error_status
        self.scope_granted = scope_granted
        self.error_family = error_family
        self.strict_sequence = strict_sequence
        self.empty_chunks_allowed = empty_chunks_allowed
        self.stream_idle_seconds = stream_idle_seconds
        self.max_open_streams = max_open_streams
        self.stream_limit_status = stream_limit_status
        self.stream_limit_code = stream_limit_code
        self.text_mode = text_mode
        self.script = script
        self.seconds_per_word = seconds_per_word
        self.file_max_bytes = file_max_bytes
        self.file_qps = file_qps
        self.latency_seconds = latency_seconds
        self.clock = clock

        self.records: list[RecordedRequest] = []
        self.request_counts: Counter[str] = Counter()
        self.token_fetches = 0  # successful replies of either token endpoint
        self.issued_tokens: list[str] = []  # distinct tokens minted, oldest first
        self.max_open_streams_observed = 0
        self._new_streams_held: asyncio.Event | None = None
        # Answer a stream's last packet (action 2) only once no other stream is open: the finals of
        # parallel segments then arrive in the reverse of the audio's order, for joining tests.
        self.finals_wait_for_other_streams = False

        self._tokens: dict[str, _Token] = {}
        self._latest_token: dict[str, _Token] = {}  # app_id -> newest token
        self._streams: dict[tuple[str, str], _Stream] = {}  # (tenant, stream_id) -> open stream
        self._file_calls: dict[str, deque[float]] = {}  # tenant -> admitted file_recognize times
        self._faults: dict[Endpoint, deque[_Fault]] = {}

        for path in PATHS:
            self.app.router.add_post(path, self._serve)
        self.app.middlewares.append(self._unknown_route_as_json)

    # ----------------------------------------------------------------- test hooks

    @property
    def param_error_code(self) -> int:
        """1040101 or 1610101, per ``error_family``."""
        return _ERROR_CODES[self.error_family][0]

    @property
    def server_error_code(self) -> int:
        """1040102 or 1610102, per ``error_family``."""
        return _ERROR_CODES[self.error_family][1]

    @property
    def open_streams(self) -> int:
        """Streams currently open over all tenants (idle ones evicted first)."""
        self._evict_idle_streams()
        return len(self._streams)

    def expire_all_tokens(self) -> None:
        """Every token issued so far stops working now; the next token call mints a new one."""
        now = self.clock()
        for token in self._tokens.values():
            token.expires_at = min(token.expires_at, now)

    def revoke(self, token: str) -> None:
        """Invalidate one token; the next token call for its app mints a new one."""
        self._tokens[token].revoked = True

    def fail_next(
        self,
        endpoint: Endpoint,
        *,
        http_status: int,
        code: int | None = None,
        msg: str = "",
        headers: Mapping[str, str] | None = None,
        times: int = 1,
        raw_body: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests to ``endpoint`` with this reply instead of handling them.

        Give ``code`` (and ``msg``) for a JSON error body, or ``raw_body`` for a non-JSON one such as
        an HTML 502 page. Forced replies leave all state (tokens, streams) untouched, so a retry of
        the same stream chunk is accepted afterwards.
        """
        if (code is None) == (raw_body is None):
            raise ValueError("give exactly one of code or raw_body")
        body: dict[str, Any] | str = raw_body if raw_body is not None else {"code": code, "msg": msg}
        self._queue_fault(endpoint, _Fault(times, reply=_Reply(http_status, body, dict(headers or {}))))

    def delay_next(self, endpoint: Endpoint, seconds: float, *, times: int = 1) -> None:
        """Hold the next ``times`` requests to ``endpoint`` for ``seconds`` before handling them.

        The request is still handled afterwards even if the client gave up (a reply lost in transit).
        """
        self._queue_fault(endpoint, _Fault(times, delay=seconds))

    def hold_new_streams(self) -> asyncio.Event:
        """Keep the answer to each stream's first packet until the returned event is set: the
        streams stay open meanwhile, so a test counts how many a client opens at once by waiting
        on :meth:`open_streams` (a condition), not on latency outlasting the client's work."""
        self._new_streams_held = asyncio.Event()
        return self._new_streams_held

    def lose_next_answer(self, endpoint: Endpoint, *, times: int = 1) -> None:
        """Handle the next ``times`` requests to ``endpoint``, then hold each answer until the
        client has given up on it (closed the connection, e.g. on its timeout): the server acted,
        the answer was lost in transit. However slow the machine, the order is always that one."""
        self._queue_fault(endpoint, _Fault(times, lose_answer=True))

    def requests_to(self, endpoint: Endpoint) -> list[RecordedRequest]:
        return [record for record in self.records if record.endpoint == endpoint]

    def _queue_fault(self, endpoint: Endpoint, fault: _Fault) -> None:
        if fault.times < 1:
            raise ValueError("times must be at least 1")
        self._faults.setdefault(endpoint, deque()).append(fault)

    def _take_fault(self, endpoint: Endpoint) -> _Fault | None:
        queue = self._faults.get(endpoint)
        if not queue:
            return None
        fault = queue[0]
        fault.times -= 1
        if fault.times == 0:
            queue.popleft()
        return fault

    # ----------------------------------------------------------------- plumbing

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        endpoint = PATHS[request.path]
        # The token request from lark-oapi has no Content-Type, so parse the bytes, not by header.
        body = _parse_json(await request.read())
        return await self._answer(request, endpoint, body, lambda audio: self._handle(endpoint, request, body, audio))

    @web.middleware
    async def _unknown_route_as_json(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            # The router's 404 / 405 would be HTML; the real gateway answers JSON.
            reply = _Reply(exc.status, {"code": exc.status, "msg": exc.reason})
            return await self._answer(request, "unknown", None, lambda audio: reply)

    async def _answer(
        self,
        request: web.Request,
        endpoint: Endpoint,
        body: Any,
        handle: Callable[[_Audio], _Reply],
    ) -> web.StreamResponse:
        self.request_counts[endpoint] += 1
        fault = self._take_fault(endpoint)  # taken on arrival, so queued faults hit requests in order
        audio = _decode_audio(body)
        record = RecordedRequest(
            endpoint=endpoint,
            method=request.method,
            path=request.path,
            headers=dict(request.headers),
            token=_bearer_token(request.headers.get("Authorization")),
            body=_without_audio_blob(body, audio),
            audio_bytes=len(audio.pcm) if audio.present and audio.valid else None,
            log_id=_new_log_id(),
        )
        if endpoint in SPEECH_ENDPOINTS and self.latency_seconds > 0:
            await asyncio.sleep(self.latency_seconds)
        if fault is not None and fault.delay > 0:
            await asyncio.sleep(fault.delay)
        reply = fault.reply if fault is not None and fault.reply is not None else handle(audio)
        if (self._new_streams_held is not None and endpoint == "stream_recognize" and reply.status == 200
                and isinstance(body, dict) and (body.get("config") or {}).get("action") == 1):
            await self.notify()  # a stream opened: wake wait_for(lambda: fake.open_streams …)
            await self._new_streams_held.wait()
        if (self.finals_wait_for_other_streams and endpoint == "stream_recognize" and reply.status == 200
                and isinstance(body, dict) and (body.get("config") or {}).get("action") == 2):
            await self.wait_for(lambda: not self._streams, timeout=60)
        if fault is not None and fault.lose_answer:
            await self._until_client_gone(request)
        record.status, record.reply = reply.status, _with_error_details(reply.body, record.log_id)
        self.records.append(record)
        await self.notify()
        return _to_response(reply.status, record.reply, reply.headers, record.log_id)

    @staticmethod
    async def _until_client_gone(request: web.Request, timeout: float = 60.0) -> None:
        async with asyncio.timeout(timeout):  # a client that never gives up fails its test here
            while request.transport is not None and not request.transport.is_closing():
                await asyncio.sleep(0.01)

    def _handle(self, endpoint: Endpoint, request: web.Request, body: Any, audio: _Audio) -> _Reply:
        if endpoint in ("tenant_access_token", "app_access_token"):
            return self._issue_token(endpoint, body)
        token_or_error = self._authenticate(request.headers.get("Authorization"))
        if isinstance(token_or_error, _Reply):
            return token_or_error
        if endpoint == "stream_recognize":
            return self._stream_recognize(token_or_error.tenant, body, audio)
        return self._file_recognize(token_or_error.tenant, body, audio)

    # ----------------------------------------------------------------- tokens

    def _issue_token(self, endpoint: Endpoint, body: Any) -> _Reply:
        app_id = body.get("app_id") if isinstance(body, dict) else None
        app_secret = body.get("app_secret") if isinstance(body, dict) else None
        if not isinstance(app_id, str) or not isinstance(app_secret, str) or app_id not in self.apps:
            return _Reply(self.token_error_status, {"code": INVALID_PARAMETER, "msg": "invalid param"})
        if not secrets.compare_digest(app_secret, self.apps[app_id]):
            return _Reply(self.token_error_status, {"code": self.bad_secret_code, "msg": "app secret invalid"})

        now = self.clock()
        token = self._latest_token.get(app_id)
        if token is None or token.revoked or token.expires_at - now < TOKEN_REISSUE_SECONDS:
            # Under 30 min left: a new token; the old one stays valid until its own expiry.
            token = _Token(
                value="t-" + secrets.token_hex(20),
                tenant=self.tenants.get(app_id, app_id),
                expires_at=now + self.token_expire,
            )
            self._tokens[token.value] = token
            self._latest_token[app_id] = token
            self.issued_tokens.append(token.value)
            expire = self.token_expire
        else:
            # Same token again. UNCERTAIN whether `expire` then counts what remains or a full term;
            # "full" does not extend the token, so a client trusting it meets 99991663 early.
            expire = int(token.expires_at - now) if self.reissue_expire == "remaining" else self.token_expire
        self.token_fetches += 1
        reply: dict[str, Any] = {"code": 0, "msg": "ok", "tenant_access_token": token.value, "expire": expire}
        if endpoint == "app_access_token":
            # For a self-built app both tokens come back; the fake uses one value for both.
            reply["app_access_token"] = token.value
        return _Reply(200, reply)

    def _authenticate(self, authorization: str | None) -> _Token | _Reply:
        token_value = _bearer_token(authorization)
        if not token_value:
            return self._auth_error(NEED_TOKEN)
        if not token_value.startswith(("t-", "u-")):
            return self._auth_error(BAD_TOKEN_FORMAT)
        token = self._tokens.get(token_value)
        if token is None or token.revoked or token.expires_at <= self.clock():
            return self._auth_error(INVALID_TOKEN)
        if not self.scope_granted:
            return self._auth_error(SCOPE_MISSING)
        return token

    def _auth_error(self, code: int) -> _Reply:
        return _Reply(self.auth_error_status, {"code": code, "msg": _AUTH_MESSAGES[code]})

    # ----------------------------------------------------------------- speech

    def _param_error(self, why: str) -> _Reply:
        # `why` is not part of the real reply; it goes to error.message to make test failures readable.
        return _Reply(400, {"code": self.param_error_code, "msg": "invalid param", "error": {"message": why}})

    def _check_common_config(self, body: Any, id_field: str) -> tuple[dict[str, Any], _Reply | None]:
        """The rules stream and file requests share: config object, id pattern, format, engine."""
        config = body.get("config") if isinstance(body, dict) else None
        if not isinstance(config, dict):
            return {}, self._param_error("config object missing")
        if not isinstance(config.get(id_field), str) or not _ID_PATTERN.fullmatch(config[id_field]):
            return config, self._param_error(f"{id_field} must be 16 of [A-Za-z0-9_]")
        if config.get("format") != "pcm":
            return config, self._param_error("format must be pcm")
        if config.get("engine_type") != "16k_auto":
            return config, self._param_error("engine_type must be 16k_auto")
        return config, None

    def _stream_recognize(self, tenant: str, body: Any, audio: _Audio) -> _Reply:
        config, error = self._check_common_config(body, "stream_id")
        if error is not None:
            return error
        action, sequence_id = config.get("action"), config.get("sequence_id")
        if not _is_int(action) or action not in (0, 1, 2, 3):
            return self._param_error("action must be 0, 1, 2 or 3")
        if not _is_int(sequence_id) or sequence_id < 0:
            return self._param_error("sequence_id must be an int >= 0")
        if not audio.valid:
            return self._param_error("speech.speech must be base64 of whole s16 samples")
        if action in (0, 1):
            # UNCERTAIN whether audio-less open/middle packets are allowed; 2 and 3 may always be empty.
            if not isinstance(body.get("speech"), dict):
                return self._param_error("speech object missing")
            if not audio.pcm and not self.empty_chunks_allowed:
                return self._param_error("empty audio chunk")

        self._evict_idle_streams()
        key = (tenant, config["stream_id"])
        stream = self._streams.get(key)
        if action == 1:
            if stream is not None:
                return self._param_error("stream already open")
            if self.strict_sequence and sequence_id != 0:
                return self._param_error("first packet must have sequence_id 0")
            if sum(1 for open_stream in self._streams.values() if open_stream.tenant == tenant) >= self.max_open_streams:
                return _rate_limited(self.stream_limit_status, self.stream_limit_code, self.max_open_streams)
            stream = _Stream(
                tenant=tenant,
                next_sequence=0,
                last_seen=self.clock(),
                listener=PcmListener(SAMPLE_RATE, self.script, self.seconds_per_word),
            )
            self._streams[key] = stream
            self.max_open_streams_observed = max(self.max_open_streams_observed, len(self._streams))
        elif stream is None:
            return self._param_error("unknown or closed stream")
        elif self.strict_sequence and sequence_id != stream.next_sequence:
            return self._param_error(f"expected sequence_id {stream.next_sequence}")
        stream.next_sequence = sequence_id + 1
        stream.last_seen = self.clock()

        if action == 3:
            del self._streams[key]
            text = ""
        else:
            stream.listener.feed(audio.pcm)
            if action == 2:
                del self._streams[key]
                text = stream.listener.transcript(final=True)
            else:
                text = self._partial_text(stream)
        data = {"stream_id": config["stream_id"], "sequence_id": sequence_id, "recognition_text": text}
        return _Reply(200, {"code": 0, "msg": "success", "data": data})

    def _partial_text(self, stream: _Stream) -> str:
        """UNCERTAIN whether partials are cumulative; "delta" gives the words this chunk added or changed."""
        hypothesis = stream.listener.transcript(final=False)
        previous, stream.hypothesis = stream.hypothesis, hypothesis
        if self.text_mode == "cumulative":
            return hypothesis
        old_words, new_words = previous.split(), hypothesis.split()
        kept = 0
        while kept < min(len(old_words), len(new_words)) and old_words[kept] == new_words[kept]:
            kept += 1
        return " ".join(new_words[kept:])

    def _evict_idle_streams(self) -> None:
        # UNCERTAIN idle timeout; evicted streams free their slot and later chunks are rejected.
        deadline = self.clock() - self.stream_idle_seconds
        for key in [key for key, stream in self._streams.items() if stream.last_seen < deadline]:
            del self._streams[key]

    def _file_recognize(self, tenant: str, body: Any, audio: _Audio) -> _Reply:
        _, error = self._check_common_config(body, "file_id")
        if error is not None:
            return error
        if not audio.present or not audio.pcm or not audio.valid:
            return self._param_error("speech.speech must be non-empty base64 of whole s16 samples")
        # UNCERTAIN whether over 60 s is rejected (docs say "suitable for"); None disables the cap.
        if self.file_max_bytes is not None and len(audio.pcm) > self.file_max_bytes:
            return self._param_error(f"audio over {self.file_max_bytes} bytes")

        now = self.clock()
        calls = self._file_calls.setdefault(tenant, deque())
        while calls and calls[0] <= now - 1.0:
            calls.popleft()
        if len(calls) >= self.file_qps:
            return _rate_limited(429, RATE_LIMITED, self.file_qps)
        calls.append(now)

        listener = PcmListener(SAMPLE_RATE, self.script, self.seconds_per_word)
        listener.feed(audio.pcm)
        return _Reply(200, {"code": 0, "msg": "success", "data": {"recognition_text": listener.transcript()}})


# --------------------------------------------------------------------- helpers


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _decode_audio(body: Any) -> _Audio:
    speech = body.get("speech") if isinstance(body, dict) else None
    blob = speech.get("speech") if isinstance(speech, dict) else None
    if blob is None:
        return _Audio()
    if not isinstance(blob, str):
        return _Audio(present=True, valid=False)
    try:
        pcm = base64.b64decode(blob, validate=True)
    except binascii.Error:
        return _Audio(present=True, valid=False)
    return _Audio(present=True, pcm=pcm, valid=len(pcm) % 2 == 0)


def _without_audio_blob(body: Any, audio: _Audio) -> Any:
    """The body to record: the (large) base64 blob replaced by its decoded byte count."""
    if not audio.present:
        return body
    summary = len(audio.pcm) if audio.valid else "<invalid audio>"
    return {**body, "speech": {**body["speech"], "speech": summary}}


def _rate_limited(status: int, code: int, limit: int) -> _Reply:
    # The gateway's rate-limit shape (spec §3.6); a slot or a QPS window frees within a second here.
    headers = {"x-ogw-ratelimit-limit": str(limit), "x-ogw-ratelimit-reset": "1"}
    return _Reply(status, {"code": code, "msg": "request trigger frequency limit"}, headers)


def _bearer_token(authorization: str | None) -> str | None:
    if authorization is None or not authorization.startswith("Bearer "):
        return None
    return authorization.removeprefix("Bearer ").strip() or None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _new_log_id() -> str:
    # Shaped like real log ids: a timestamp followed by upper-case hex.
    return time.strftime("%Y%m%d%H%M%S") + secrets.token_hex(10).upper()


def _with_error_details(body: dict[str, Any] | str, log_id: str) -> dict[str, Any] | str:
    """Error bodies carry ``error: {log_id, troubleshooter}`` like the real ones."""
    if isinstance(body, str) or body.get("code") == 0:
        return body
    troubleshooter = f"排查建议查看(Troubleshooting suggestions): https://open.feishu.cn/search?log_id={log_id}"
    return {**body, "error": {**body.get("error", {}), "log_id": log_id, "troubleshooter": troubleshooter}}


def _to_response(status: int, body: dict[str, Any] | str, headers: Mapping[str, str], log_id: str) -> web.Response:
    # Spelled exactly so: lark-oapi's sync path looks the header up case-sensitively.
    all_headers = {**headers, "X-Tt-Logid": log_id}
    if isinstance(body, str):
        return web.Response(status=status, text=body, content_type="text/html", headers=all_headers)
    text = json.dumps(body, ensure_ascii=False)
    return web.Response(status=status, text=text, content_type="application/json", headers=all_headers)
