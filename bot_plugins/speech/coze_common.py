"""What every Coze client shares: authentication, the error-code table, REST and WebSocket plumbing.

Wire facts (envelopes, codes, logid placement) follow ../shared/spec/coze.md.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection, connect

from .coze_auth import CozeCredentials, tls_context
from .errors import ErrorKind, SpeechError
from .models import Voice
from .providers import as_dict

log = logging.getLogger(__name__)

# Coze business codes → error kind (spec §6.2). 4013 ("model error, retry later") is transient;
# 4102 (risk control) asks for a later retry, it is no permission problem (spec §10.1).
COZE_CODE_KINDS: dict[int, ErrorKind] = {
    3010: ErrorKind.TOO_LARGE,
    4000: ErrorKind.INVALID_INPUT,
    4008: ErrorKind.QUOTA,
    4009: ErrorKind.RATE_LIMITED,
    4011: ErrorKind.QUOTA,
    4013: ErrorKind.SERVER,
    4019: ErrorKind.QUOTA,
    4020: ErrorKind.RATE_LIMITED,
    4027: ErrorKind.QUOTA,
    4028: ErrorKind.QUOTA,
    4100: ErrorKind.AUTH,
    4101: ErrorKind.PERMISSION,
    4102: ErrorKind.RATE_LIMITED,
    4200: ErrorKind.INVALID_INPUT,
    4300: ErrorKind.INVALID_INPUT,
    4301: ErrorKind.INVALID_INPUT,
    4302: ErrorKind.TOO_LARGE,
    4303: ErrorKind.INVALID_INPUT,
    4304: ErrorKind.INVALID_INPUT,
    5000: ErrorKind.SERVER,
    700012006: ErrorKind.AUTH,
}

# HTTP statuses seen without a Coze JSON body (gateway errors, handshake rejections).
HTTP_STATUS_KINDS: dict[int, ErrorKind] = {
    400: ErrorKind.INVALID_INPUT,
    401: ErrorKind.AUTH,
    403: ErrorKind.PERMISSION,
    404: ErrorKind.INVALID_INPUT,
    408: ErrorKind.TIMEOUT,
    413: ErrorKind.TOO_LARGE,
    429: ErrorKind.RATE_LIMITED,
}

# Answers meaning "this token is no good" (expired, revoked, other region): a renewable
# credential gets one fresh token and one more try.
REFUSED_TOKEN_CODES = frozenset({4100, 700012006})
LOGID_HEADER = "x-tt-logid"
MAX_VOICE_PAGES = 50  # 5000 voices; a guard against a server that never stops saying has_more
# After the socket dropped under a send, how long to wait for the server's last words.
DROP_GRACE_SECONDS = 1.0


def error_from_code(provider: str, code: int, msg: str, logid: str | None) -> SpeechError:
    kind = COZE_CODE_KINDS.get(code)
    if kind is None:
        # Unknown code: treat as a server-side failure, but do not hammer it with retries. The log
        # id lets Coze's support find the call.
        log.warning("Coze answered an unknown error code %s (%s), logid %s", code, msg[:200], logid)
        return SpeechError(ErrorKind.SERVER, f"Coze error: {msg}", provider=provider, code=code, logid=logid, retryable=False)
    return SpeechError(kind, f"Coze error: {msg}", provider=provider, code=code, logid=logid)


def error_from_status(provider: str, status: int, detail: str, logid: str | None) -> SpeechError:
    kind = ErrorKind.SERVER if status >= 500 else HTTP_STATUS_KINDS.get(status, ErrorKind.INVALID_INPUT)
    return SpeechError(kind, f"HTTP {status}: {detail[:200]}", provider=provider, code=status, logid=logid)


def error_from_transport(provider: str, error: Exception) -> SpeechError:
    """httpx / websockets / socket failures → timeout or connectivity (both retryable)."""
    if isinstance(error, (httpx.TimeoutException, TimeoutError)):
        return SpeechError(ErrorKind.TIMEOUT, f"no answer in time ({type(error).__name__})", provider=provider)
    return SpeechError(ErrorKind.CONNECTIVITY, f"connection failed: {type(error).__name__}: {error}", provider=provider)


def token_refused(error: SpeechError) -> bool:
    return error.code in REFUSED_TOKEN_CODES or (error.kind is ErrorKind.AUTH and error.code == 401)


@dataclass(frozen=True)
class CozeEndpoint:
    """Where and how to reach Coze; switching to coze.com means changing the two base URLs
    (and using a token of that region)."""

    credentials: CozeCredentials
    api_base: str = "https://api.coze.cn"
    ws_base: str = "wss://ws.coze.cn"
    connect_timeout: float = 10.0
    read_timeout: float = 60.0  # per request; audio uploads get more, scaled by duration

    def refused(self, token: str, error: SpeechError) -> SpeechError:
        """``error`` for a call made with ``token``; when Coze refused the token itself and the
        credentials can renew it, the error is worth exactly one more try."""
        if token_refused(error):
            error.retryable = self.credentials.rejected(token)
        return error


class CozeRest:
    """A small REST client over httpx that turns every failure into a :class:`SpeechError`."""

    def __init__(self, endpoint: CozeEndpoint, provider: str, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.endpoint = endpoint
        self.provider = provider
        self._client = httpx.AsyncClient(
            base_url=endpoint.api_base,
            timeout=httpx.Timeout(endpoint.read_timeout, connect=endpoint.connect_timeout),
            transport=transport,
            verify=tls_context(),
        )

    async def request(self, method: str, path: str, *, read_timeout: float | None = None, **kwargs: Any) -> httpx.Response:
        """Send a request; raise for Coze error envelopes and HTTP errors; return the response."""
        token = await self.endpoint.credentials.token()
        try:
            return await self._send(method, path, token, read_timeout, **kwargs)
        except SpeechError as error:
            self.endpoint.refused(token, error)
            raise

    async def _send(self, method: str, path: str, token: str, read_timeout: float | None, **kwargs: Any) -> httpx.Response:
        timeout = httpx.Timeout(read_timeout or self.endpoint.read_timeout, connect=self.endpoint.connect_timeout)
        try:
            response = await self._client.request(method, path, timeout=timeout, headers={"Authorization": f"Bearer {token}"},
                                                  **kwargs)
        except httpx.HTTPError as error:
            raise error_from_transport(self.provider, error) from error
        logid = response.headers.get(LOGID_HEADER)
        if "json" in response.headers.get("content-type", ""):
            body = _json_or_none(response.content)
            if isinstance(body, dict) and isinstance(body.get("code"), int) and body["code"] != 0:
                logid = logid or (body.get("detail") or {}).get("logid")
                raise error_from_code(self.provider, body["code"], str(body.get("msg") or ""), logid)
        if response.status_code >= 400:
            raise error_from_status(self.provider, response.status_code, f"{response.request.url}: {response.text}", logid)
        self.endpoint.credentials.accepted(token)
        return response

    async def json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self.request(method, path, **kwargs)
        body = _json_or_none(response.content)
        if not isinstance(body, dict):
            raise SpeechError(ErrorKind.SERVER, "Coze answered with something that is not JSON", provider=self.provider,
                              logid=response.headers.get(LOGID_HEADER))
        return body

    async def probe(self, method: str, path: str, **kwargs: Any) -> None:
        """Send a deliberately incomplete request: Coze's own "invalid parameter" answer proves
        that the base URL is the Coze API and that it took the token. Anything else is raised,
        including a 404 or an HTML page, which mean COZE_API_BASE points elsewhere."""
        try:
            await self.request(method, path, **kwargs)
        except SpeechError as error:
            if error.kind is not ErrorKind.INVALID_INPUT or error.code not in COZE_CODE_KINDS:
                raise
            return
        raise SpeechError(ErrorKind.INVALID_INPUT, f"{self.endpoint.api_base}{path} accepted an empty request: "
                                                   "is COZE_API_BASE the Coze API?", provider=self.provider, retryable=False)

    async def aclose(self) -> None:
        await self._client.aclose()


def _json_or_none(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return None


@dataclass(frozen=True)
class CozeEvent:
    type: str
    data: dict[str, Any]
    logid: str | None


def parse_event(raw: str | bytes) -> CozeEvent | None:
    """One downlink frame as an event; None for a frame that is not one (clients ignore those)."""
    event = as_dict(_json_or_none(raw.encode() if isinstance(raw, str) else raw))
    event_type, logid = event.get("event_type"), as_dict(event.get("detail")).get("logid")
    if not isinstance(event_type, str):
        return None
    return CozeEvent(event_type, as_dict(event.get("data")), logid if isinstance(logid, str) else None)


class CozeVoiceCatalogue:
    """GET /v1/audio/voices, all pages; also picks a default voice when none is configured."""

    def __init__(self, rest: CozeRest, default_voice_id: str | None) -> None:
        self.rest = rest
        self.default_voice_id = default_voice_id
        self._lock = asyncio.Lock()

    async def voices(self) -> list[Voice]:
        voices: list[Voice] = []
        for page in range(1, MAX_VOICE_PAGES + 1):
            body = await self.rest.json("GET", "/v1/audio/voices", params={"page_num": page, "page_size": 100})
            data = as_dict(body.get("data"))
            voices.extend(
                Voice(
                    id=str(item["voice_id"]),
                    name=str(item.get("name") or item["voice_id"]),
                    language_code=str(item.get("language_code") or ""),
                    language_name=str(item.get("language_name") or ""),
                    is_system=bool(item.get("is_system_voice", True)),
                    model_type=str(item.get("model_type") or ""),
                )
                for item in data.get("voice_list") or []
                if isinstance(item, dict) and item.get("voice_id")
            )
            if not data.get("has_more"):
                break
        return voices

    async def resolve(self, voice_id: str | None) -> str:
        """The requested voice, else COZE_VOICE_ID, else the first voice the account lists."""
        if voice_id:
            return voice_id
        async with self._lock:
            if self.default_voice_id is None:
                voices = await self.voices()
                if not voices:
                    raise SpeechError(ErrorKind.INVALID_INPUT, "no Coze voice available; set COZE_VOICE_ID",
                                      provider=self.rest.provider, retryable=False)
                self.default_voice_id = voices[0].id
                log.info("COZE_VOICE_ID not set; using voice %s (%s)", voices[0].id, voices[0].name)
            return self.default_voice_id


class CozeSocket:
    """One Coze WebSocket session: JSON events out, parsed events in, errors classified."""

    def __init__(self, connection: ClientConnection, provider: str, logid: str | None,
                 endpoint: CozeEndpoint, token: str) -> None:
        self.connection = connection
        self.provider = provider
        self.logid = logid
        self.endpoint = endpoint
        self.token = token  # the one the session was opened with

    async def send(self, event_type: str, data: Mapping[str, Any] | None = None) -> None:
        # No client id: the server does not need one (spec §3), cozepy and recorded sessions
        # send none. No per-send timeout either: a peer that stops reading is caught by the
        # connection's keepalive pings, which close it.
        event: dict[str, Any] = {"event_type": event_type}
        if data is not None:
            event["data"] = data
        await self._send_text(json.dumps(event, ensure_ascii=False))

    async def send_audio(self, event_type: str, audio: bytes) -> None:
        """``{"event_type": …, "data": {"delta": <base64>}}``, built without a JSON encoder:
        the hot path of a long upload, and base64 needs no escaping."""
        delta = base64.b64encode(audio).decode("ascii")
        await self._send_text(f'{{"event_type":"{event_type}","data":{{"delta":"{delta}"}}}}')

    async def _send_text(self, frame: str) -> None:
        try:
            await self.connection.send(frame)
        except (websockets.ConnectionClosed, OSError) as error:
            raise self._dropped(error) from error

    async def receive(self, timeout: float | None) -> CozeEvent:
        """The next event (frames that are not events are skipped); ``error`` events are raised
        as :class:`SpeechError`."""
        try:
            async with asyncio.timeout(timeout):
                while (event := parse_event(await self.connection.recv())) is None:
                    log.warning("ignoring a Coze frame that is not an event")
        except TimeoutError as error:
            raise SpeechError(ErrorKind.TIMEOUT, "Coze stopped sending events", provider=self.provider,
                              logid=self.logid) from error
        except (websockets.ConnectionClosed, OSError) as error:
            raise self._dropped(error) from error
        self.logid = event.logid or self.logid
        if event.type == "error":
            code = event.data.get("code")
            error = error_from_code(self.provider, code if isinstance(code, int) else 5000, str(event.data.get("msg") or ""),
                                    self.logid)
            raise self.endpoint.refused(self.token, error)
        self.endpoint.credentials.accepted(self.token)
        return event

    async def reason_for_drop(self, dropped: SpeechError) -> SpeechError:
        """After the socket dropped under a send: the server's own error event, when it sent one
        just before hanging up (as it does for a refused token), else ``dropped``."""
        try:
            async with asyncio.timeout(DROP_GRACE_SECONDS):
                while True:
                    await self.receive(timeout=None)
        except SpeechError as error:
            return error if error.code is not None else dropped  # error events carry a code
        except TimeoutError:
            return dropped

    def _dropped(self, error: Exception) -> SpeechError:
        return SpeechError(ErrorKind.CONNECTIVITY, f"Coze connection dropped: {error}", provider=self.provider, logid=self.logid)


async def probe_coze_socket(endpoint: CozeEndpoint, path: str, provider: str, timeout: float = 5.0) -> None:
    """Open a session and wait for its ``*.created`` event; a refused token raises."""
    async with open_coze_socket(endpoint, path, provider) as socket:
        try:
            async with asyncio.timeout(timeout):
                while not (await socket.receive(timeout=None)).type.endswith(".created"):
                    pass
        except TimeoutError:
            raise SpeechError(ErrorKind.TIMEOUT, "no session-created event", provider=provider, logid=socket.logid) from None


@asynccontextmanager
async def open_coze_socket(endpoint: CozeEndpoint, path: str, provider: str) -> AsyncIterator[CozeSocket]:
    """Connect with the bearer header; handshake rejections become auth/permission errors."""
    url = f"{endpoint.ws_base}{path}"
    token = await endpoint.credentials.token()
    try:
        connection = await connect(
            url,
            additional_headers={"Authorization": f"Bearer {token}"},
            open_timeout=endpoint.connect_timeout,
            close_timeout=2,
            ping_interval=20,  # keepalive: a dead or stalled peer closes the connection within ~40 s
            ping_timeout=20,
            max_size=8 * 1024 * 1024,
            # No permessage-deflate: it was ~80% of the streaming client's CPU (base64 PCM
            # compresses poorly) to save a quarter to a half of a ~340 kbit/s upload.
            compression=None,
        )
    except websockets.InvalidStatus as error:
        response = error.response
        logid = response.headers.get(LOGID_HEADER)
        detail = response.body.decode(errors="replace") if response.body else response.reason_phrase
        refusal = error_from_status(provider, response.status_code, f"{url}: {detail}", logid)
        raise endpoint.refused(token, refusal) from error
    except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as error:
        raise error_from_transport(provider, error) from error
    handshake_logid = connection.response.headers.get(LOGID_HEADER) if connection.response else None
    try:
        yield CozeSocket(connection, provider, handshake_logid, endpoint, token)
    finally:
        await connection.close()
