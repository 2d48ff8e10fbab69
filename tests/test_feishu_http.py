"""The lean HTTP/1.1 client of the Feishu hot path, against a raw local server whose every byte
the test chooses: answers with a length or in chunks, servers that close kept-alive
connections, answers that break off, never come, or are too large. (The Feishu protocol itself
runs through this client in tests/test_feishu.py, against the Feishu fake.)"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from voicebridge.speech import feishu_http
from voicebridge.speech.feishu_http import MAX_HEADER_BYTES, HttpFailure, OriginClient

Handler = Callable[[bytes, int], Awaitable[bytes | None]]  # (request, its number on the connection) -> raw answer


@dataclass
class RawServer:
    """Answers each request with the bytes ``handler`` returns (None: close without answering)."""

    handler: Handler
    close_after_answer: bool = False
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                answer = await self.handler(request, number)
                number += 1
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if self.close_after_answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/base"


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Handler], Awaitable[RawServer]]]:
    servers: list[RawServer] = []

    async def start(handler: Handler, close_after_answer: bool = False) -> RawServer:
        raw = RawServer(handler, close_after_answer)
        raw.server = await asyncio.start_server(raw.serve, "127.0.0.1", 0)
        servers.append(raw)
        return raw

    yield start
    for raw in servers:
        assert raw.server is not None
        raw.server.close()
        await raw.server.wait_closed()


def json_answer(body: bytes, *extra: str) -> bytes:
    headers = "".join(f"{line}\r\n" for line in extra)
    return f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body


def client(url: str, timeout: float = 5.0) -> OriginClient:
    return OriginClient(url, connect_timeout=5.0, timeout=timeout, max_connections=2)


async def test_one_kept_alive_connection_carries_a_stream_of_requests(raw_server) -> None:
    async def answer(request: bytes, number: int) -> bytes:
        return json_answer(b'{"n": %d}' % number, "X-Tt-Logid: abc")

    server = await raw_server(answer)
    origin = client(server.url)
    answers = [await origin.post("/open-apis/x", {"Content-Type": "application/json"}, b'{"a": 1}') for _ in range(5)]
    await origin.aclose()
    assert [a.body for a in answers] == [b'{"n": %d}' % n for n in range(5)]
    assert answers[0].status == 200 and answers[0].headers["x-tt-logid"] == "abc"
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /base/open-apis/x HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"Content-Length: 8\r\n\r\n{\"a\": 1}" in first


async def test_chunked_answers_and_connection_close(raw_server) -> None:
    served = 0

    async def answer(request: bytes, number: int) -> bytes:
        nonlocal served
        served += 1
        if served == 1:
            return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\n{\"a\"\r\n3\r\n: 1\r\n1\r\n}\r\n0\r\nX-Trailer: t\r\n\r\n"
        return json_answer(b"{}", "Connection: close")

    server = await raw_server(answer)
    origin = client(server.url)
    first = await origin.post("/p", {}, b"{}")
    second = await origin.post("/p", {}, b"{}")
    third = await origin.post("/p", {}, b"{}")  # the server said close: a new connection
    await origin.aclose()
    assert (first.body, second.body, third.body) == (b'{"a": 1}', b"{}", b"{}")
    assert server.connections == 2


async def test_a_kept_alive_connection_the_server_closed_is_replaced_without_failing(raw_server) -> None:
    async def answer(request: bytes, number: int) -> bytes | None:
        return json_answer(b"{}") if number == 0 else None  # each connection answers once, then closes

    server = await raw_server(answer)
    origin = client(server.url)
    for _ in range(3):
        assert (await origin.post("/p", {}, b"{}")).status == 200
    await origin.aclose()
    assert server.connections == 3
    assert len(server.requests) == 5  # requests 2 and 3 were each refused once by a closing connection


@pytest.mark.parametrize("answer, problem", [
    (None, "closed the connection without answering"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", "broke off: IncompleteReadError"),
    (b"HTTP/1.1 200 OK\r\nContent-Le", "broke off in its headers"),
    (b"SMTP ready\r\n\r\n", "not an HTTP answer: 'SMTP ready'"),
    (b"HTTP/2.0 200 OK\r\n\r\n", "not an HTTP/1 answer: 'HTTP/2.0 200 OK'"),
    (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * MAX_HEADER_BYTES + b"\r\n\r\n", "too long"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n", "an answer of 999999999 bytes"),
])
async def test_broken_answers_fail_clearly(raw_server, answer: bytes | None, problem: str) -> None:
    async def reply(request: bytes, number: int) -> bytes | None:
        return answer

    server = await raw_server(reply, close_after_answer=True)
    origin = client(server.url)
    with pytest.raises(HttpFailure, match=problem):
        await origin.post("/p", {}, b"{}")
    await origin.aclose()


async def test_an_answer_that_never_comes_times_out(raw_server) -> None:
    async def never(request: bytes, number: int) -> bytes:
        await asyncio.sleep(3600)
        return b""

    server = await raw_server(never)
    origin = client(server.url, timeout=0.2)
    with pytest.raises(TimeoutError):
        await origin.post("/p", {}, b"{}")
    await origin.aclose()


async def test_nobody_listening_fails_to_connect() -> None:
    listener = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    origin = client(f"http://127.0.0.1:{port}")
    with pytest.raises(HttpFailure, match="cannot connect"):
        await origin.post("/p", {}, b"{}")
    await origin.aclose()


# ------------------------------------------------------------------------------------ URLs, TLS and answer framing


@pytest.mark.parametrize("url, port, authority, tls", [
    ("https://open.feishu.cn", 443, "open.feishu.cn", True),
    ("https://open.feishu.cn:8443/", 8443, "open.feishu.cn:8443", True),
    ("http://gateway.internal/feishu", 80, "gateway.internal", False),
    ("http://gateway.internal:8080", 8080, "gateway.internal:8080", False),
])
def test_the_origin_decides_port_host_header_and_tls(url: str, port: int, authority: str, tls: bool) -> None:
    origin = client(url)
    assert (origin.port, origin.authority, origin._tls is not None) == (port, authority, tls)


@pytest.mark.parametrize("url", ["ftp://open.feishu.cn", "http:///no-host", "open.feishu.cn"])
def test_urls_that_are_not_http_origins_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match=f"not an http\\(s\\) URL: {url}"):
        client(url)


async def test_a_base_path_with_a_trailing_slash_and_several_headers(raw_server) -> None:
    async def answer(request: bytes, number: int) -> bytes:
        return json_answer(b"{}", "Date: Thu, 03 Dec 2026 16:00:00 GMT")

    server = await raw_server(answer)
    origin = client(server.url + "/")
    reply = await origin.post("/open-apis/x", {"Content-Type": "application/json", "Authorization": "Bearer t"}, b"{}")
    await origin.aclose()
    request = server.requests[0]
    assert request.startswith(b"POST /base/open-apis/x HTTP/1.1\r\n")
    assert b"\r\nContent-Type: application/json\r\nAuthorization: Bearer t\r\n" in request
    assert reply.headers["date"] == "Thu, 03 Dec 2026 16:00:00 GMT"  # a value holding colons stays whole


async def test_empty_answers_and_answers_delimited_by_the_connection_closing(raw_server) -> None:
    async def answer(request: bytes, number: int) -> bytes:
        if request.startswith(b"POST /base/empty"):
            return b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
        return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"until\": \"close\"}"

    server = await raw_server(answer, close_after_answer=True)
    origin = client(server.url)
    empty = await origin.post("/empty", {}, b"{}")
    unframed = await origin.post("/p", {}, b"{}")
    again = await origin.post("/p", {}, b"{}")
    await origin.aclose()
    assert (empty.status, empty.body) == (204, b"")
    assert (unframed.status, unframed.headers["content-type"], unframed.body) == (200, "application/json", b'{"until": "close"}')
    assert again.body == unframed.body
    assert len(server.requests) == server.connections == 3  # the server closed after each answer


async def test_chunk_sizes_are_hexadecimal_and_may_carry_several_extensions(raw_server) -> None:
    text = b"x" * 26

    async def answer(request: bytes, number: int) -> bytes:
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1a;a=1;b=2\r\n" + text + b"\r\n0\r\n\r\n"

    server = await raw_server(answer)
    origin = client(server.url)
    assert (await origin.post("/p", {}, b"{}")).body == text
    await origin.aclose()


@pytest.mark.parametrize("framing", ["content-length", "chunked", "close"])
async def test_answers_up_to_the_size_limit_pass_and_larger_ones_fail(raw_server, monkeypatch: pytest.MonkeyPatch,
                                                                    framing: str) -> None:
    limit = 100
    monkeypatch.setattr(feishu_http, "MAX_BODY_BYTES", limit)

    async def answer(request: bytes, number: int) -> bytes:
        body = b"a" * (limit + 1 if request.startswith(b"POST /base/over") else limit)
        if framing == "content-length":
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        if framing == "chunked":  # the limit is on the whole body, not on one chunk
            half = len(body) // 2
            return (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n"
                    % (half, body[:half], len(body) - half, body[half:]))
        return b"HTTP/1.1 200 OK\r\n\r\n" + body

    server = await raw_server(answer, close_after_answer=True)
    origin = client(server.url)
    assert len((await origin.post("/at", {}, b"{}")).body) == limit
    with pytest.raises(HttpFailure, match=f"an answer of {limit + 1} bytes" if framing == "content-length" else "the answer is too long"):
        await origin.post("/over", {}, b"{}")
    await origin.aclose()


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A certificate for 127.0.0.2 (and its key), signed by itself: the CA bundle of the TLS test."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "voicebridge test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.2"))]), critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    directory = tmp_path_factory.mktemp("tls")
    (directory / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    return directory / "cert.pem", directory / "key.pem"


async def test_https_origins_are_spoken_to_over_verified_tls(self_signed: tuple[Path, Path],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # 127.0.0.2, not 127.0.0.1: a client that lost the host name would reach the default address instead.
    certificate, key = self_signed
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate))  # the client trusts what httpx trusts
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certificate, key)
    requests: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            requests.append(await reader.readuntil(b"\r\n\r\n") + await reader.readexactly(2))
            writer.write(json_answer(b'{"tls": true}'))
            await writer.drain()
        finally:
            writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.2", 0, ssl=tls)
    port = listener.sockets[0].getsockname()[1]
    origin = client(f"https://127.0.0.2:{port}")
    answer = await origin.post("/p", {}, b"{}")
    await origin.aclose()
    listener.close()
    await listener.wait_closed()
    assert answer.body == b'{"tls": true}'
    assert requests[0].startswith(b"POST /p HTTP/1.1\r\nHost: 127.0.0.2:%d\r\n" % port)


async def test_a_server_that_accepts_but_never_completes_the_tls_handshake_times_out_connecting() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # holds the connection open, says nothing
        writer.close()

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    origin = OriginClient(f"https://127.0.0.1:{port}", connect_timeout=0.2, timeout=3600.0, max_connections=1)
    async with asyncio.timeout(30):  # a deadline for a client without a connect timeout, not a margin
        with pytest.raises(HttpFailure, match="cannot connect"):
            await origin.post("/p", {}, b"{}")
    await origin.aclose()
    listener.close()
    await listener.wait_closed()
