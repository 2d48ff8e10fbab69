"""Operational metrics in the Prometheus text format, and the small HTTP server that serves them
with a health check (``VOICEBRIDGE_METRICS_PORT``).

:class:`Metrics` listens to both layers: the speech service (every provider call and retry) and
the voice-notes plugin (notes received, answered, failed, cache hits).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable

from .speech.errors import SpeechError

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
Labels = tuple[tuple[str, str], ...]

_DESCRIPTIONS = {
    "voicebridge_notes_received_total": ("counter", "Voice notes the plugin was given, by platform."),
    "voicebridge_notes_transcribed_total": ("counter", "Voice notes answered with a transcript, by platform and provider."),
    "voicebridge_notes_failed_total": ("counter", "Voice notes answered with an error message, by platform and reason."),
    "voicebridge_audio_seconds_total": ("counter", "Seconds of audio transcribed, by platform and provider."),
    "voicebridge_cache_hits_total": ("counter", "Voice notes answered from the transcript cache, by platform."),
    "voicebridge_provider_requests_total": ("counter", "Speech provider calls, by provider, operation and outcome."),
    "voicebridge_provider_retries_total": ("counter", "Speech provider calls retried, by provider, operation and error kind."),
    "voicebridge_provider_latency_seconds": ("histogram", "Duration of speech provider calls, by provider and operation."),
    "voicebridge_in_flight": ("gauge", "Voice notes and commands being handled right now."),
}


def _labels(**labels: str) -> Labels:
    return tuple(sorted(labels.items()))


def _render_labels(labels: Labels, extra: tuple[tuple[str, str], ...] = ()) -> str:
    pairs = [*labels, *extra]
    if not pairs:
        return ""
    escaped = (f'{name}="{value.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for name, value in pairs)
    return "{" + ",".join(escaped) + "}"


class Metrics:
    def __init__(self) -> None:
        self._counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self._histograms: dict[Labels, list[float]] = {}  # bucket counts, then sum, then count
        self._gauges: dict[str, Callable[[], float]] = {}

    def count(self, name: str, amount: float = 1.0, **labels: str) -> None:
        self._counters[name][_labels(**labels)] += amount

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        self._gauges[name] = read

    def value(self, name: str, **labels: str) -> float:
        return self._counters[name].get(_labels(**labels), 0.0)

    # ---------------------------------------------------------------- speech service observer

    def call_finished(self, provider: str, operation: str, seconds: float, error: SpeechError | None) -> None:
        outcome = "ok" if error is None else error.kind.value
        self.count("voicebridge_provider_requests_total", provider=provider, operation=operation, outcome=outcome)
        buckets = self._histograms.setdefault(_labels(provider=provider, operation=operation), [0.0] * (len(LATENCY_BUCKETS) + 2))
        for index, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                buckets[index] += 1
        buckets[-2] += seconds
        buckets[-1] += 1

    def retrying(self, provider: str, operation: str, attempt: int, delay: float, error: SpeechError) -> None:
        self.count("voicebridge_provider_retries_total", provider=provider, operation=operation, kind=error.kind.value)

    # ---------------------------------------------------------------- plugin observer

    def note_received(self, platform: str) -> None:
        self.count("voicebridge_notes_received_total", platform=platform)

    def note_transcribed(self, platform: str, provider: str, audio_seconds: float, cached: bool) -> None:
        if cached:
            self.count("voicebridge_cache_hits_total", platform=platform)
            return
        self.count("voicebridge_notes_transcribed_total", platform=platform, provider=provider)
        self.count("voicebridge_audio_seconds_total", audio_seconds, platform=platform, provider=provider)

    def note_failed(self, platform: str, reason: str) -> None:
        self.count("voicebridge_notes_failed_total", platform=platform, reason=reason)

    # ---------------------------------------------------------------- exposition

    def render(self) -> str:
        lines: list[str] = []
        for name, (kind, description) in _DESCRIPTIONS.items():
            lines += [f"# HELP {name} {description}", f"# TYPE {name} {kind}"]
            if kind == "counter":
                lines += [f"{name}{_render_labels(labels)} {value:g}" for labels, value in sorted(self._counters[name].items())]
            elif kind == "gauge" and name in self._gauges:
                lines.append(f"{name} {self._gauges[name]():g}")
            elif kind == "histogram":
                for labels, buckets in sorted(self._histograms.items()):
                    for bound, count in zip(LATENCY_BUCKETS, buckets):
                        lines.append(f"{name}_bucket{_render_labels(labels, (('le', f'{bound:g}'),))} {count:g}")
                    lines.append(f"{name}_bucket{_render_labels(labels, (('le', '+Inf'),))} {buckets[-1]:g}")
                    lines.append(f"{name}_sum{_render_labels(labels)} {buckets[-2]:g}")
                    lines.append(f"{name}_count{_render_labels(labels)} {buckets[-1]:g}")
        return "\n".join(lines) + "\n"


async def serve_status(port: int, metrics: Metrics, health: Callable[[], str | None], host: str = "0.0.0.0") -> asyncio.Server:
    """``GET /healthz`` and ``GET /metrics``, nothing else. ``health`` says what is wrong (a chat
    connection lost, credentials refused, stopping), or None: 200 "ok", else 503 with that text."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request_line = await reader.readline()
                while (await reader.readline()).strip():
                    pass  # headers: not needed
            parts = request_line.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) >= 2 else ""
            if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
                status, body, content_type = "405 Method Not Allowed", "only GET\n", "text/plain"
            elif path == "/healthz":
                problem = health()
                status, body = ("200 OK", "ok\n") if problem is None else ("503 Service Unavailable", f"{problem}\n")
                content_type = "text/plain"
            elif path == "/metrics":
                status, body, content_type = "200 OK", metrics.render(), "text/plain; version=0.0.4"
            else:
                status, body, content_type = "404 Not Found", "not found\n", "text/plain"
            payload = body.encode()
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {content_type}; charset=utf-8\r\n"
                         f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode())
            if parts and parts[0] != "HEAD":
                writer.write(payload)
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError) as error:
            log.debug("status request failed: %s", error)
        finally:
            writer.close()

    server = await asyncio.start_server(answer, host, port)
    log.info("health and metrics on port %d (/healthz, /metrics)", port)
    return server
