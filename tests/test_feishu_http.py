"""The lean HTTP/1.1 client of the Feishu hot path, against a raw local server whose every byte
the test chooses: answers with a length or in chunks, servers that close kept-alive
connections, answers that break off, never come, or are too large. (The Feishu protocol itself
runs through this client in tests/test_feishu.py, against the Feishu fake.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

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
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", "broke off"),
    (b"HTTP/1.1 200 OK\r\nContent-Le", "broke off in its headers"),
    (b"SMTP ready\r\n\r\n", "not an HTTP answer"),
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
