"""Feishu / Lark open platform: tenant_access_token management, error codes, and the REST call
every Feishu client makes (spec: ../shared/spec/feishu.md §2, §3.6, §3.7, §5.4)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import httpx

from .errors import ErrorKind, SpeechError
from .feishu_http import HttpFailure, OriginClient

log = logging.getLogger(__name__)

TOKEN_PATH = "/open-apis/auth/v3/tenant_access_token/internal"
LOGID_HEADER = "x-tt-logid"
USER_AGENT = f"voicebridge python-httpx/{httpx.__version__}"  # the transport adds none; gateways may want one
# Refresh this long before expiry, as lark-oapi does; re-asking with < 30 min left yields a new token.
REFRESH_MARGIN_SECONDS = 600.0

# Body codes → error kind. Both documented code families (Feishu 104010x, Lark 161010x) are here.
FEISHU_CODE_KINDS: dict[int, ErrorKind] = {
    1040101: ErrorKind.INVALID_INPUT,
    1610101: ErrorKind.INVALID_INPUT,
    1040102: ErrorKind.SERVER,
    1610102: ErrorKind.SERVER,
    99991400: ErrorKind.RATE_LIMITED,
    99991403: ErrorKind.QUOTA,
    99991661: ErrorKind.AUTH,
    99991663: ErrorKind.AUTH,
    99991664: ErrorKind.AUTH,
    99991665: ErrorKind.AUTH,
    99991671: ErrorKind.AUTH,
    99991672: ErrorKind.PERMISSION,
    10003: ErrorKind.AUTH,  # token request with a bad app_id: a credentials problem
    10014: ErrorKind.AUTH,
    10015: ErrorKind.AUTH,
}
# Answers meaning "this token is no good": drop it, fetch a fresh one, retry once.
TOKEN_REJECTED_CODES = frozenset({99991661, 99991663, 99991665, 99991671})


def feishu_error(provider: str, code: int, msg: str, logid: str | None, retry_after: float | None = None) -> SpeechError:
    kind = FEISHU_CODE_KINDS.get(code)
    if kind is None:
        return SpeechError(ErrorKind.SERVER, f"Feishu error: {msg}", provider=provider, code=code, logid=logid, retryable=False)
    return SpeechError(kind, f"Feishu error: {msg}", provider=provider, code=code, logid=logid, retry_after=retry_after)


def _status_error(provider: str, url: httpx.URL, status: int, logid: str | None, retry_after: float | None) -> SpeechError:
    if status == 429:
        return SpeechError(ErrorKind.RATE_LIMITED, "Feishu rate limit", provider=provider, code=status, logid=logid,
                           retry_after=retry_after)
    kind = ErrorKind.SERVER if status >= 500 else {401: ErrorKind.AUTH, 403: ErrorKind.PERMISSION}.get(status, ErrorKind.INVALID_INPUT)
    return SpeechError(kind, f"{url} answered HTTP {status} without a Feishu JSON body", provider=provider, code=status,
                       logid=logid)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    try:
        return float(headers["x-ogw-ratelimit-reset"])
    except (KeyError, ValueError):
        return None


class FeishuClient:
    """Authenticated JSON calls to one Feishu/Lark host, with a shared tenant token.

    The token is cached until ten minutes before it expires; only one refresh runs at a time,
    and concurrent callers wait for it instead of stampeding the token endpoint.
    """

    def __init__(
        self,
        app_id: str,
        app_secret: str,
        base_url: str,
        *,
        provider: str = "feishu",
        timeout: float = 30.0,
        max_connections: int = 32,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app_id = app_id
        self.app_secret = app_secret
        self.provider = provider
        self.clock = clock
        # A Feishu stream is one POST per 200 ms of audio: without a proxy they go through the
        # lean keep-alive client of feishu_http (a fifth of httpx's CPU per request); through a
        # proxy (from the environment, as httpx.AsyncClient would take it) or a given transport,
        # straight to an httpx transport, skipping httpx.AsyncClient's layers (URL merging,
        # cookies, auth and redirect hooks: a third of each call's CPU).
        self._base_url = base_url.rstrip("/")
        self._urls: dict[str, httpx.URL] = {}
        self._timeouts = httpx.Timeout(timeout, connect=min(10.0, timeout)).as_dict()
        proxy = environment_proxy(base_url)
        self._origin: OriginClient | None = None
        self._transport: httpx.AsyncBaseTransport | None = transport
        if transport is None and proxy is None:
            self._origin = OriginClient(base_url, connect_timeout=min(10.0, timeout), timeout=timeout,
                                        max_connections=max_connections)
        elif transport is None:
            limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
            self._transport = httpx.AsyncHTTPTransport(limits=limits, proxy=proxy)
        self._token: str | None = None
        self._deadline = 0.0
        self._refresh_lock = asyncio.Lock()

    async def token(self) -> str:
        if self._fresh():
            return self._token  # type: ignore[return-value]
        async with self._refresh_lock:
            if not self._fresh():  # another caller may have refreshed while this one waited
                await self._fetch_token()
            return self._token  # type: ignore[return-value]

    def _fresh(self) -> bool:
        return self._token is not None and self.clock() < self._deadline - REFRESH_MARGIN_SECONDS

    async def _replace_rejected(self, rejected: str) -> str:
        async with self._refresh_lock:
            if self._token == rejected:  # the first of several rejected callers refreshes
                await self._fetch_token()
            return self._token  # type: ignore[return-value]

    async def _fetch_token(self) -> None:
        body, logid = await self._exchange(TOKEN_PATH, {"app_id": self.app_id, "app_secret": self.app_secret}, token=None)
        token, expire = body.get("tenant_access_token"), body.get("expire")
        if not isinstance(token, str) or not isinstance(expire, int | float):
            raise SpeechError(ErrorKind.SERVER, "Feishu token answer lacks tenant_access_token/expire",
                              provider=self.provider, logid=logid, retryable=False)
        self._token, self._deadline = token, self.clock() + float(expire)
        log.debug("Feishu tenant token refreshed; valid for %ss", expire)

    async def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST with the tenant token; a rejected token is replaced once and the call repeated."""
        token = await self.token()
        try:
            body, _ = await self._exchange(path, payload, token)
        except SpeechError as error:
            if error.code not in TOKEN_REJECTED_CODES:
                raise
            log.info("Feishu rejected the tenant token (%s); refreshing it once", error.code)
            body, _ = await self._exchange(path, payload, await self._replace_rejected(token))
        return body

    async def _exchange(self, path: str, payload: dict[str, Any], token: str | None) -> tuple[dict[str, Any], str | None]:
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        status, response_headers, content = await self._post(path, headers, json.dumps(payload).encode())
        logid = response_headers.get(LOGID_HEADER)
        try:
            body = json.loads(content)
        except ValueError:
            body = None
        retry_after = _retry_after(response_headers)
        if not isinstance(body, dict) or not isinstance(body.get("code"), int):
            # Key on the body code, never on the status alone (spec §2.4); no body: use the status.
            raise _status_error(self.provider, self._url(path), status, logid, retry_after)
        if body["code"] != 0:
            logid = logid or (body.get("error") or {}).get("log_id")
            raise feishu_error(self.provider, body["code"], str(body.get("msg") or ""), logid, retry_after)
        return body, logid

    async def _post(self, path: str, headers: dict[str, str], content: bytes) -> tuple[int, Mapping[str, str], bytes]:
        """(status, headers with lower-case names, body) of one POST, through whichever client is in use."""
        if self._origin is not None:
            try:
                answer = await self._origin.post(path, headers, content)
            except TimeoutError as error:
                raise SpeechError(ErrorKind.TIMEOUT, "Feishu did not answer in time", provider=self.provider) from error
            except HttpFailure as error:
                raise SpeechError(ErrorKind.CONNECTIVITY, f"cannot reach Feishu: {error}", provider=self.provider) from error
            return answer.status, answer.headers, answer.body
        assert self._transport is not None
        request = httpx.Request("POST", self._url(path), headers=headers, content=content, extensions={"timeout": self._timeouts})
        try:
            response = await self._transport.handle_async_request(request)
            try:
                await response.aread()
            finally:
                await response.aclose()
        except httpx.TimeoutException as error:
            raise SpeechError(ErrorKind.TIMEOUT, "Feishu did not answer in time", provider=self.provider) from error
        except httpx.HTTPError as error:
            raise SpeechError(ErrorKind.CONNECTIVITY, f"cannot reach Feishu: {type(error).__name__}: {error}",
                              provider=self.provider) from error
        return response.status_code, response.headers, response.content

    def _url(self, path: str) -> httpx.URL:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(self._base_url + path)
        return url

    async def aclose(self) -> None:
        if self._origin is not None:
            await self._origin.aclose()
        if self._transport is not None:
            await self._transport.aclose()


def environment_proxy(url: str) -> str | None:
    """The proxy httpx.AsyncClient would use for ``url``: HTTPS_PROXY / HTTP_PROXY / ALL_PROXY
    (either case), unless NO_PROXY exempts the host."""
    parts = urlsplit(url)
    if proxy_bypass(parts.hostname or ""):
        return None
    proxies = getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")
