"""Logging: one line per event (text or JSON), a request id per voice note, secrets redacted.

The request id lives in a context variable: set once where a note or command is taken in, it
follows every log line that work produces, across awaits and tasks started from there.
"""

from __future__ import annotations

import json
import logging
import secrets
from contextvars import ContextVar
from datetime import UTC, datetime
from urllib.parse import quote

_request_id: ContextVar[str] = ContextVar("voicebridge_request_id", default="-")
# Secrets made while running (access tokens minted from a JWT app), redacted like configured ones.
_runtime_secrets: set[str] = set()


def new_request_id() -> str:
    """Start a request: later log lines in this context carry the returned id."""
    request_id = secrets.token_hex(4)
    _request_id.set(request_id)
    return request_id


def current_request_id() -> str:
    return _request_id.get()


def redact_also(secret: str) -> None:
    """Keep ``secret`` out of every log line from now on (configured secrets are known at start)."""
    if len(secret) >= 6:
        _runtime_secrets.add(secret)


class SecretRedactor(logging.Filter):
    """Replaces secret values in every log record with a placeholder, and tags the record with
    the current request id."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        # URL-quoted forms too: a Telegram file URL carries the token with ":" as "%3A".
        forms = {form for secret in secrets if len(secret) >= 6 for form in (secret, quote(secret, safe=""))}
        # Longest first, so a secret containing another is replaced whole.
        self.secrets = sorted(forms, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[REDACTED]")
        for secret in _runtime_secrets:
            text = text.replace(secret, "[REDACTED]")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = getattr(record, "request_id", None) or current_request_id()
        record.msg = self.redact(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class OneLineFormatter(logging.Formatter):
    """``time level logger [request] message``; a traceback is folded onto the same line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        event = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_text:
            event["exception"] = record.exc_text
        return json.dumps(event, ensure_ascii=False)


def configure_logging(level: str, secrets: list[str], log_format: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(SecretRedactor(secrets))
    handler.setFormatter(JsonFormatter() if log_format == "json" else OneLineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request URL at INFO (for Telegram, with the token in it): keep it quieter.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(level)))
