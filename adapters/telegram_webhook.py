"""Telegram webhook intake: a small HTTP server that refuses what is not Telegram's before it reads
it, and hands each update on.

python-telegram-bot's own webhook server reads a whole request body (tornado allows 100 MB)
before it checks the secret: four unauthenticated 90 MB posts cost the bot 300 MB. Here the
declared length is checked before the body is read and no body over :data:`MAX_BODY_BYTES` is
taken, declared or not; a request without the secret has its (small) body dropped as it comes,
never kept, and gets 403. Updates are a few kilobytes.

``deliver`` decides what "received" means (the runner queues the update in the application;
a scale-out ingress commits a job): Telegram gets its 200 only once ``deliver`` has returned.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import tornado.web
from tornado.httpserver import HTTPServer

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1_000_000
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
Deliver = Callable[[dict[str, Any]], Awaitable[None]]


@tornado.web.stream_request_body
class _UpdateHandler(tornado.web.RequestHandler):
    """POST of one update. With a streamed body, :meth:`prepare` runs on the headers alone."""

    def initialize(self, secret: str, deliver: Deliver) -> None:
        self.secret = secret.encode()
        self.deliver = deliver
        self.body = bytearray()
        self.refusal: int | None = None  # answered once the (discarded) body is in

    def prepare(self) -> None:
        if self.request.method != "POST":
            raise tornado.web.HTTPError(405)
        declared = self.request.headers.get("Content-Length", "0")
        if not declared.isdigit():
            raise tornado.web.HTTPError(400)
        if int(declared) > MAX_BODY_BYTES:
            raise tornado.web.HTTPError(413)
        self.request.connection.set_max_body_size(MAX_BODY_BYTES)  # type: ignore[union-attr]  # chunked bodies too
        if not hmac.compare_digest(self.request.headers.get(SECRET_HEADER, "").encode(), self.secret):
            # Refused, but a small body is let in and dropped (never kept): closing on it unread
            # would reset the connection and could lose the 403 on its way.
            self.refusal = 403

    def data_received(self, chunk: bytes) -> None:
        if self.refusal is None:
            self.body += chunk

    async def post(self) -> None:
        if self.refusal is not None:
            raise tornado.web.HTTPError(self.refusal)
        try:
            update = json.loads(self.body)
        except ValueError:
            raise tornado.web.HTTPError(400) from None
        if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
            raise tornado.web.HTTPError(400)
        await self.deliver(update)
        self.set_status(200)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.finish()  # no body: nothing to learn for a caller without the secret

    def log_exception(self, *args: Any) -> None:
        pass  # a refused request is routine; tornado would log a traceback for each


class TelegramWebhook:
    """Listens on ``listen:port`` for POSTs to ``path`` carrying ``secret``."""

    def __init__(self, listen: str, port: int, path: str, secret: str, deliver: Deliver) -> None:
        self.listen = listen
        self.port = port
        application = tornado.web.Application([(f"/{path.strip('/')}", _UpdateHandler, {"secret": secret, "deliver": deliver})])
        self.server = HTTPServer(application, max_body_size=MAX_BODY_BYTES, xheaders=True)

    def start(self) -> None:
        self.server.listen(self.port, self.listen)

    async def stop(self) -> None:
        self.server.stop()
        await self.server.close_all_connections()
