"""Provider health, kept once for every provider by the speech service.

* :class:`ProviderHealth`: a provider that timed out or failed transiently is skipped for a
  cool-down while the next one in its chain serves, and re-probed in the background (its cheap
  ``check()``) at the end of each cool-down, which doubles while the probe keeps failing. Probes
  are rare on purpose: on Coze every call may count against the plan (docs/operations.md).
* :class:`CredentialAlarm`: credentials a service refused. The operator hears it once, in words
  that say what to fix, and the health endpoint reports it until a call succeeds again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from .errors import RETRYABLE_KINDS, ErrorKind, SpeechError

log = logging.getLogger(__name__)

COOL_DOWN_SECONDS = 30.0
MAX_COOL_DOWN_SECONDS = 300.0
CREDENTIAL_KINDS = frozenset({ErrorKind.AUTH, ErrorKind.PERMISSION})


def transient(error: SpeechError) -> bool:
    """A failure of the service, not of the request or the credentials: another provider may do better."""
    return error.kind in RETRYABLE_KINDS


@dataclass
class _Sick:
    until: float
    cool_down: float
    probe: asyncio.Task[None] | None = None


class ProviderHealth:
    def __init__(self, cool_down: float = COOL_DOWN_SECONDS, max_cool_down: float = MAX_COOL_DOWN_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cool_down = cool_down
        self.max_cool_down = max_cool_down
        self.clock = clock
        self._sick: dict[str, _Sick] = {}

    def healthy(self, name: str) -> bool:
        return name not in self._sick

    def order(self, chain: Iterable[str]) -> tuple[str, ...]:
        """The providers of ``chain`` to try, in order: the healthy ones; all of them when none is
        (a note is never refused without trying)."""
        chain = tuple(chain)
        return tuple(name for name in chain if self.healthy(name)) or chain

    def failed(self, name: str, error: SpeechError, probe: Callable[[], Awaitable[None]]) -> None:
        """After ``name`` failed a call: a transient failure starts a cool-down with a probe at its end."""
        if not transient(error) or name in self._sick:
            return
        sick = self._sick[name] = _Sick(self.clock() + self.cool_down, self.cool_down)
        log.warning("speech provider %s is unhealthy (%s); skipped for %.0f s, then probed", name, error.kind, self.cool_down)
        sick.probe = asyncio.create_task(self._probe_until_healthy(name, sick, probe), name=f"voicebridge-probe-{name}")

    def succeeded(self, name: str) -> None:
        sick = self._sick.pop(name, None)
        if sick is not None:
            log.info("speech provider %s answers again", name)
            if sick.probe is not None and sick.probe is not asyncio.current_task():
                sick.probe.cancel()

    async def _probe_until_healthy(self, name: str, sick: _Sick, probe: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(max(0.0, sick.until - self.clock()))
            try:
                await probe()
            except SpeechError as error:
                sick.cool_down = min(self.max_cool_down, sick.cool_down * 2)
                sick.until = self.clock() + sick.cool_down
                log.info("speech provider %s still fails its probe (%s); next probe in %.0f s", name, error.kind, sick.cool_down)
                continue
            self.succeeded(name)
            return

    async def aclose(self) -> None:
        probes = [sick.probe for sick in self._sick.values() if sick.probe is not None]
        for task in probes:
            task.cancel()
        await asyncio.gather(*probes, return_exceptions=True)


class CredentialAlarm:
    """Providers whose credentials were refused, with the sentence that tells the operator what to do."""

    def __init__(self, variables: Mapping[str, str]) -> None:
        self.variables = dict(variables)  # provider → the configuration variables holding its credentials
        self._refused: dict[str, str] = {}

    def outcome(self, provider: str, error: SpeechError | None) -> None:
        """Record how a call ended (after its retries)."""
        if error is None:
            if self._refused.pop(provider, None) is not None:
                log.warning("speech provider %s accepts its credentials again", provider)
        elif error.kind in CREDENTIAL_KINDS and provider not in self._refused:
            self._refused[provider] = problem = self.describe(provider, error)
            log.error("%s", problem)

    def describe(self, provider: str, error: SpeechError) -> str:
        variables = self.variables.get(provider, "its credentials")
        detail = " ".join(part for part in (f"code {error.code}" if error.code is not None else "",
                                             f"logid {error.logid}" if error.logid else "") if part)
        if provider.startswith("coze"):
            reason = "expired, revoked, or for the other region (coze.cn vs coze.com)"
        else:
            reason = "wrong, or the app lacks the speech_to_text:speech scope or a paid Feishu edition"
        return f"{provider} refused the credentials ({variables}): {reason}" + (f" [{detail}]" if detail else "")

    def problem(self) -> str | None:
        """What is refused right now, or None."""
        return "; ".join(self._refused.values()) or None
