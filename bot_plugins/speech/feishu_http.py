"""A lean HTTP/1.1 client for one origin: keep-alive connections carrying small JSON POSTs.

Feishu takes streaming audio as one HTTP request per 100–200 ms of audio (spec §3), so a
60-second note is 300 requests and the HTTP client is the bot's main cost for it. httpcore
spends most of that on a general-purpose pool (every idle connection checked at each request's
start and end), two socket writes per request and h11's event machinery. This client writes
each request in one piece on a connection of its own pool and reads a Content-Length or chunked
answer, nothing more: redirects, proxies, cookies, compression and HTTP/2 are not needed here
(``FeishuClient`` uses httpx when a proxy is configured).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 4 * 1024 * 1024  # a recognition answer is a few hundred bytes


class HttpFailure(Exception):
    """The exchange failed: connection refused, reset or closed early, or a malformed answer."""


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.reused = False

    def close(self) -> None:
        self.writer.close()


class OriginClient:
    """POSTs to one ``http``/``https`` origin over at most ``max_connections`` kept-alive connections."""

    def __init__(self, base_url: str, *, connect_timeout: float, timeout: float, max_connections: int) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        default_port = self.port == (443 if parts.scheme == "https" else 80)
        self.authority = self.host if default_port else f"{self.host}:{self.port}"
        self.prefix = parts.path.rstrip("/")
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        # httpx's own TLS context (its CA bundle, SSL_CERT_FILE…): both paths trust the same certificates.
        self._tls: ssl.SSLContext | None = httpx.create_ssl_context() if parts.scheme == "https" else None
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []

    async def post(self, path: str, headers: dict[str, str], body: bytes) -> HttpAnswer:
        """One POST; :class:`HttpFailure` or :class:`TimeoutError` when it did not get an answer.

        A kept-alive connection the server closed meanwhile fails before any answer arrives:
        the request is then sent once more on a new connection (the server never read it).
        """
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = (f"POST {self.prefix}{path} HTTP/1.1\r\nHost: {self.authority}\r\n{head}"
                   f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1") + body
        async with self._slots:
            while True:
                connection = self._idle.pop() if self._idle else await self._connect()
                try:
                    async with asyncio.timeout(self.timeout):
                        answer, keep_alive = await self._exchange(connection, request)
                except _ClosedBeforeAnswer:
                    connection.close()
                    if connection.reused:
                        continue  # a stale keep-alive connection: once more on a fresh one
                    raise HttpFailure("the server closed the connection without answering") from None
                except BaseException:
                    connection.close()
                    raise
                if keep_alive:
                    connection.reused = True
                    self._idle.append(connection)
                else:
                    connection.close()
                return answer

    async def _connect(self) -> _Connection:
        try:
            async with asyncio.timeout(self.connect_timeout):
                # With TLS, asyncio checks the certificate against self.host (its server_hostname default).
                reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self._tls, limit=MAX_HEADER_BYTES)
        except OSError as error:
            raise HttpFailure(f"cannot connect: {error}") from error
        return _Connection(reader, writer)

    @staticmethod
    async def _exchange(connection: _Connection, request: bytes) -> tuple[HttpAnswer, bool]:
        reader, writer = connection.reader, connection.writer
        try:
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as error:
            if not error.partial:
                raise _ClosedBeforeAnswer from None
            raise HttpFailure("the answer broke off in its headers") from None
        except (ConnectionResetError, BrokenPipeError):
            raise _ClosedBeforeAnswer from None
        except asyncio.LimitOverrunError:
            raise HttpFailure("the answer's headers are too long") from None
        except OSError as error:
            raise HttpFailure(f"connection failed: {error}") from error
        status, headers, version = _parse_head(head)
        try:
            if headers.get("transfer-encoding", "").lower() == "chunked":
                body = await _chunked_body(reader)
            elif "content-length" in headers:
                length = int(headers["content-length"])
                if not 0 <= length <= MAX_BODY_BYTES:
                    raise HttpFailure(f"an answer of {length} bytes")
                body = await reader.readexactly(length)
            else:  # delimited by the end of the connection
                body = await reader.read(MAX_BODY_BYTES + 1)
                if len(body) > MAX_BODY_BYTES:
                    raise HttpFailure("the answer is too long")
                return HttpAnswer(status, headers, body), False
        except (asyncio.IncompleteReadError, OSError, ValueError) as error:
            raise HttpFailure(f"the answer broke off: {type(error).__name__}") from None
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        return HttpAnswer(status, headers, body), keep_alive

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        for connection in idle:
            try:
                await connection.writer.wait_closed()
            except OSError:
                pass


class _ClosedBeforeAnswer(Exception):
    pass


def _parse_head(head: bytes) -> tuple[int, dict[str, str], str]:
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    try:
        status = int(rest[:3])
    except ValueError:
        raise HttpFailure(f"not an HTTP answer: {lines[0][:60]!r}") from None
    if not version.startswith("HTTP/1."):
        raise HttpFailure(f"not an HTTP/1 answer: {lines[0][:60]!r}")
    headers = {}
    for line in lines[1:]:
        name, separator, value = line.partition(":")
        if separator:
            headers[name.strip().lower()] = value.strip()
    return status, headers, version


async def _chunked_body(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers, then the blank line
                pass
            return bytes(body)
        if len(body) + size > MAX_BODY_BYTES:
            raise HttpFailure("the answer is too long")
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise ValueError("a chunk without its line end")
