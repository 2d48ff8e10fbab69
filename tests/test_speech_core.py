"""The speech core's small parts, as units: retry policy and retrier, provider health and the
credential alarm, metering, the plain data models, the provider helpers and the registry.

Pure and in-process (no server, no subprocess, no real pause): written for issue 17, where
mutation testing showed behaviour of these modules that only slow end-to-end tests reached, or
none did. Time is a fake clock and a recorded sleep, so no assertion depends on the machine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from voicebridge.speech import health as health_module
from voicebridge.speech import retry as retry_module
from voicebridge.speech.errors import ErrorKind, SpeechError
from voicebridge.speech.health import CredentialAlarm, ProviderHealth, transient
from voicebridge.speech.languages import AUTO
from voicebridge.speech.metering import AllowanceExceeded, AudioUsage, MeteredRequest
from voicebridge.speech.models import AudioClip, EncodedAudio, TranscriberCapabilities, Transcript
from voicebridge.speech.providers import as_dict, last_transcript
from voicebridge.speech.registry import TRANSCRIBERS, chain_languages
from voicebridge.speech.retry import LoggingObserver, Observers, Retrier, RetryPolicy

SERVER_ERROR = SpeechError(ErrorKind.SERVER, "server hiccup")
REFUSED = SpeechError(ErrorKind.INVALID_INPUT, "bad request")


# ----------------------------------------------------------------------------- retry policy


def test_backoff_doubles_per_attempt_within_twenty_percent_jitter_and_stops_at_the_cap() -> None:
    policy = RetryPolicy(attempts=10, base_delay=0.5, max_delay=3.0)
    for attempt, nominal in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (6, 3.0)):
        delays = [policy.delay(attempt, SERVER_ERROR) for _ in range(300)]
        assert all(delay is not None and 0.8 * nominal <= delay <= 1.2 * nominal for delay in delays), attempt
        spread = [delay for delay in delays if delay is not None]
        # Jitter really spreads retries (no thundering herd): both ends of ±20 % are reached.
        assert min(spread) < 0.85 * nominal and max(spread) > 1.15 * nominal


def test_the_policy_gives_up_after_its_attempts_and_on_errors_that_are_not_retryable() -> None:
    policy = RetryPolicy(attempts=3)
    assert policy.delay(2, SERVER_ERROR) is not None  # the third attempt is still allowed…
    assert policy.delay(3, SERVER_ERROR) is None  # …and is the last
    assert policy.delay(1, REFUSED) is None
    assert policy.delay(1, SpeechError(ErrorKind.SERVER, "final", retryable=False)) is None


def test_with_a_fallback_waiting_only_a_renewed_token_is_retried() -> None:
    policy = RetryPolicy(attempts=3)
    for kind in (ErrorKind.RATE_LIMITED, ErrorKind.SERVER, ErrorKind.CONNECTIVITY, ErrorKind.TIMEOUT):
        assert policy.delay(1, SpeechError(kind, "transient"), retry_transient=False) is None
        assert policy.delay(1, SpeechError(kind, "transient"), retry_transient=True) is not None
    renewed = SpeechError(ErrorKind.AUTH, "token renewed", retryable=True)
    assert policy.delay(1, renewed, retry_transient=False) is not None


def test_retry_after_is_honoured_up_to_the_policys_patience() -> None:
    policy = RetryPolicy(attempts=3, base_delay=0.5, max_delay=8.0, max_retry_after=30.0)
    assert policy.delay(1, SpeechError(ErrorKind.RATE_LIMITED, "slow down", retry_after=12.0)) == 12.0
    assert policy.delay(1, SpeechError(ErrorKind.RATE_LIMITED, "slow down", retry_after=30.0)) == 30.0
    assert policy.delay(1, SpeechError(ErrorKind.RATE_LIMITED, "come back later", retry_after=31.0)) is None
    # A pause shorter than the backoff does not shorten the backoff.
    short = policy.delay(1, SpeechError(ErrorKind.RATE_LIMITED, "soon", retry_after=0.01))
    assert short is not None and short >= 0.4


def test_the_default_policy_tries_three_times_with_half_a_second_first_and_eight_at_most() -> None:
    policy = RetryPolicy()
    assert (policy.attempts, policy.max_retry_after) == (3, 30.0)
    assert 0.4 <= (policy.delay(1, SERVER_ERROR) or 0) <= 0.6
    assert 6.4 <= (RetryPolicy(attempts=99).delay(9, SERVER_ERROR) or 0) <= 9.6


# ----------------------------------------------------------------------------- retrier and observers


class RecordingObserver:
    def __init__(self) -> None:
        self.finished: list[tuple[str, str, float, SpeechError | None]] = []
        self.retries: list[tuple[str, str, int, float, SpeechError]] = []

    def call_finished(self, provider: str, operation: str, seconds: float, error: SpeechError | None) -> None:
        self.finished.append((provider, operation, seconds, error))

    def retrying(self, provider: str, operation: str, attempt: int, delay: float, error: SpeechError) -> None:
        self.retries.append((provider, operation, attempt, delay, error))


def scripted(*outcomes: SpeechError | str) -> tuple[Callable[[], Awaitable[str]], list[int]]:
    """A call that raises or returns its outcomes in turn, and the count of calls made."""
    calls = [0]

    async def call() -> str:
        outcome = outcomes[calls[0]]
        calls[0] += 1
        if isinstance(outcome, SpeechError):
            raise outcome
        return outcome

    return call, calls


async def test_the_retrier_retries_transient_failures_and_reports_every_attempt() -> None:
    observer = RecordingObserver()
    retrier = Retrier(RetryPolicy(attempts=3, base_delay=0.0, max_delay=0.0), observer)
    call, calls = scripted(SERVER_ERROR, SERVER_ERROR, "done")
    assert await retrier.call("coze", "synthesize", call) == "done"
    assert calls == [3]
    assert [(provider, operation, error) for provider, operation, _, error in observer.finished] == [
        ("coze", "synthesize", SERVER_ERROR), ("coze", "synthesize", SERVER_ERROR), ("coze", "synthesize", None)]
    # Each attempt's own duration (instant here; the bound is only generous, never a margin).
    assert all(0.0 <= seconds < 600.0 for _, _, seconds, _ in observer.finished)
    assert [(provider, operation, attempt, error) for provider, operation, attempt, _, error in observer.retries] == [
        ("coze", "synthesize", 1, SERVER_ERROR), ("coze", "synthesize", 2, SERVER_ERROR)]


def test_next_delay_retries_transient_failures_unless_told_a_fallback_waits() -> None:
    observer = RecordingObserver()
    retrier = Retrier(RetryPolicy(attempts=3, base_delay=0.0, max_delay=0.0), observer)
    assert retrier.next_delay("coze", "transcribe", 1, 0.0, SERVER_ERROR) == 0.0
    assert retrier.next_delay("coze", "transcribe", 1, 0.0, SERVER_ERROR, retry_transient=False) is None
    assert len(observer.finished) == 2 and len(observer.retries) == 1


async def test_the_retrier_gives_up_with_the_last_error_and_without_announcing_a_retry() -> None:
    observer = RecordingObserver()
    retrier = Retrier(RetryPolicy(attempts=2, base_delay=0.0, max_delay=0.0), observer)
    last = SpeechError(ErrorKind.TIMEOUT, "second timeout")
    call, calls = scripted(SERVER_ERROR, last, "never reached")
    with pytest.raises(SpeechError) as caught:
        await retrier.call("feishu", "transcribe", call)
    assert caught.value is last and calls == [2]
    assert len(observer.retries) == 1 and len(observer.finished) == 2


async def test_the_retrier_does_not_retry_transient_failures_when_told_a_fallback_waits() -> None:
    retrier = Retrier(RetryPolicy(attempts=3, base_delay=0.0, max_delay=0.0), RecordingObserver())
    call, calls = scripted(SERVER_ERROR, "done")
    with pytest.raises(SpeechError):
        await retrier.call("coze", "synthesize", call, retry_transient=False)
    assert calls == [1]


async def test_the_retrier_pauses_for_the_delay_the_policy_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[float] = []

    async def recorded_sleep(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(retry_module.asyncio, "sleep", recorded_sleep)
    observer = RecordingObserver()
    retrier = Retrier(RetryPolicy(attempts=3, base_delay=1.0, max_delay=1.0), observer)
    call, _ = scripted(SERVER_ERROR, "done")
    await retrier.call("coze", "voices", call)
    assert pauses == [observer.retries[0][3]] and 0.8 <= pauses[0] <= 1.2


def test_a_retrier_without_arguments_uses_the_default_policy_and_logs() -> None:
    retrier = Retrier()
    assert retrier.policy == RetryPolicy() and isinstance(retrier.observer, LoggingObserver)


def test_observers_all_hear_every_report() -> None:
    first, second = RecordingObserver(), RecordingObserver()
    both = Observers(first, second)
    both.call_finished("coze", "transcribe", 1.5, None)
    both.call_finished("coze", "transcribe", 2.5, SERVER_ERROR)
    both.retrying("coze", "transcribe", 1, 0.5, SERVER_ERROR)
    for observer in (first, second):
        assert observer.finished == [("coze", "transcribe", 1.5, None), ("coze", "transcribe", 2.5, SERVER_ERROR)]
        assert observer.retries == [("coze", "transcribe", 1, 0.5, SERVER_ERROR)]


def test_the_logging_observer_logs_failed_attempts_and_retries_for_the_operator(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="voicebridge.speech.retry")
    observer = LoggingObserver()
    observer.call_finished("coze", "transcribe", 0.25, None)
    observer.call_finished("coze", "transcribe", 1.0, SERVER_ERROR)
    observer.retrying("coze", "transcribe", 1, 0.5, SERVER_ERROR)
    # The operator reads which provider, which operation, what went wrong and when it is tried again.
    assert [(record.levelno, record.getMessage()) for record in caplog.records] == [
        (logging.DEBUG, "coze transcribe succeeded in 0.25s"),
        (logging.INFO, "coze transcribe failed after 1.00s: server hiccup (server)"),
        (logging.INFO, "coze transcribe: retrying in 0.5s after attempt 1 (server)"),
    ]


# ----------------------------------------------------------------------------- provider health


class RecordedSleep:
    """Stands in for ``asyncio.sleep`` in health.py: records each pause and returns when ``gate``
    is open, so a probe's schedule is read, not waited for."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)
        await self.gate.wait()


@pytest.fixture
def recorded_sleep(monkeypatch: pytest.MonkeyPatch) -> RecordedSleep:
    sleep = RecordedSleep()
    monkeypatch.setattr(health_module, "asyncio", _AsyncioWithSleep(sleep))
    return sleep


class _AsyncioWithSleep:
    """health.py's view of asyncio: the real module, but with a recorded sleep (the test's own
    event loop keeps the real one)."""

    def __init__(self, sleep: RecordedSleep) -> None:
        self.sleep = sleep

    def __getattr__(self, name: str) -> object:
        return getattr(asyncio, name)


class ScriptedProbe:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise SpeechError(ErrorKind.TIMEOUT, "still down")


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(30):
        while not condition():
            await asyncio.sleep(0)


def test_transient_failures_are_those_of_the_service() -> None:
    assert {kind for kind in ErrorKind if transient(SpeechError(kind, "x"))} == {
        ErrorKind.RATE_LIMITED, ErrorKind.SERVER, ErrorKind.CONNECTIVITY, ErrorKind.TIMEOUT}


async def test_only_transient_failures_make_a_provider_unhealthy_and_it_is_then_skipped(recorded_sleep: RecordedSleep) -> None:
    recorded_sleep.gate.clear()  # the probe waits: this test is about the order meanwhile
    health = ProviderHealth(clock=lambda: 0.0)
    for kind in (ErrorKind.INVALID_INPUT, ErrorKind.AUTH, ErrorKind.QUOTA, ErrorKind.TOO_LARGE):
        health.failed("coze", SpeechError(kind, "the request's fault"), ScriptedProbe(0))
    assert health.healthy("coze") and health.order(["coze", "coze-stream"]) == ("coze", "coze-stream")
    health.failed("coze", SERVER_ERROR, ScriptedProbe(0))
    assert not health.healthy("coze") and health.healthy("coze-stream")
    assert health.order(["coze", "coze-stream", "feishu"]) == ("coze-stream", "feishu")
    assert health.order(["feishu", "coze"]) == ("feishu",)
    await health.aclose()


async def test_when_every_provider_is_unhealthy_all_are_tried_in_their_order(recorded_sleep: RecordedSleep) -> None:
    recorded_sleep.gate.clear()
    health = ProviderHealth(clock=lambda: 0.0)
    health.failed("coze", SERVER_ERROR, ScriptedProbe(0))
    health.failed("feishu", SERVER_ERROR, ScriptedProbe(0))
    assert health.order(["feishu", "coze"]) == ("feishu", "coze")
    await health.aclose()


async def test_the_probe_waits_a_cool_down_that_doubles_while_it_fails_up_to_the_maximum(
        recorded_sleep: RecordedSleep, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="voicebridge.speech.health")
    health = ProviderHealth(cool_down=30.0, max_cool_down=200.0, clock=lambda: 0.0)
    probe = ScriptedProbe(failures=4)
    health.failed("coze", SERVER_ERROR, probe)
    await until(lambda: health.healthy("coze"))
    assert probe.calls == 5
    assert recorded_sleep.pauses == [30.0, 60.0, 120.0, 200.0, 200.0]
    # The operator hears when a provider is set aside, each failed probe, and its return.
    assert [(record.levelname, record.getMessage()) for record in caplog.records] == [
        ("WARNING", "speech provider coze is unhealthy (server); skipped for 30 s, then probed"),
        ("INFO", "speech provider coze still fails its probe (timeout); next probe in 60 s"),
        ("INFO", "speech provider coze still fails its probe (timeout); next probe in 120 s"),
        ("INFO", "speech provider coze still fails its probe (timeout); next probe in 200 s"),
        ("INFO", "speech provider coze still fails its probe (timeout); next probe in 200 s"),
        ("INFO", "speech provider coze answers again"),
    ]


async def test_the_default_cool_down_is_thirty_seconds_doubling_to_five_minutes(recorded_sleep: RecordedSleep) -> None:
    health = ProviderHealth(clock=lambda: 0.0)
    health.failed("coze", SERVER_ERROR, ScriptedProbe(failures=5))
    await until(lambda: health.healthy("coze"))
    assert recorded_sleep.pauses == [30.0, 60.0, 120.0, 240.0, 300.0, 300.0]


async def test_a_probe_due_in_the_past_runs_at_once(recorded_sleep: RecordedSleep) -> None:
    now = [0.0]
    health = ProviderHealth(cool_down=30.0, clock=lambda: now[0])
    recorded_sleep.gate.clear()
    health.failed("coze", SERVER_ERROR, ScriptedProbe(failures=1))
    await until(lambda: len(recorded_sleep.pauses) == 1)
    now[0] = 100.0  # the loop was busy: the cool-down is long over when the probe looks
    recorded_sleep.gate.set()
    await until(lambda: health.healthy("coze"))
    # The failed probe set the next one 30 × 2 s after its own time (100 s): 60 s from then.
    assert recorded_sleep.pauses == [30.0, 60.0]
    health_late = ProviderHealth(cool_down=30.0, clock=lambda: now[0])
    recorded_sleep.pauses.clear()
    health_late.failed("feishu", SERVER_ERROR, ScriptedProbe(failures=0))
    now[0] = 500.0
    await until(lambda: health_late.healthy("feishu"))
    assert recorded_sleep.pauses == [0.0]


async def test_a_second_failure_during_the_cool_down_starts_no_second_probe(recorded_sleep: RecordedSleep) -> None:
    recorded_sleep.gate.clear()
    health = ProviderHealth(clock=lambda: 0.0)
    first, second = ScriptedProbe(0), ScriptedProbe(0)
    health.failed("coze", SERVER_ERROR, first)
    health.failed("coze", SERVER_ERROR, second)
    await until(lambda: len(recorded_sleep.pauses) >= 1)
    recorded_sleep.gate.set()
    await until(lambda: health.healthy("coze"))
    assert (first.calls, second.calls, recorded_sleep.pauses) == (1, 0, [30.0])


async def test_a_success_ends_the_cool_down_and_cancels_the_pending_probe(recorded_sleep: RecordedSleep,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="voicebridge.speech.health")
    recorded_sleep.gate.clear()
    health = ProviderHealth(clock=lambda: 0.0)
    probe = ScriptedProbe(0)
    health.failed("coze", SERVER_ERROR, probe)
    await until(lambda: len(recorded_sleep.pauses) == 1)
    probes = [task for task in asyncio.all_tasks() if task.get_name() == "voicebridge-probe-coze"]
    assert len(probes) == 1  # named, so a task dump shows what it is
    health.succeeded("coze")
    assert health.healthy("coze")
    recorded_sleep.gate.set()
    await until(lambda: all(task.done() for task in probes))
    assert probe.calls == 0 and all(task.cancelled() for task in probes)  # a probe costs a call on Coze's plan
    assert any("answers again" in record.getMessage() for record in caplog.records)
    caplog.clear()
    health.succeeded("feishu")  # never sick: nothing to say
    assert not caplog.records


async def test_closing_cancels_every_pending_probe(recorded_sleep: RecordedSleep) -> None:
    recorded_sleep.gate.clear()
    health = ProviderHealth(clock=lambda: 0.0)
    probes = ScriptedProbe(0), ScriptedProbe(0)
    health.failed("coze", SERVER_ERROR, probes[0])
    health.failed("feishu", SERVER_ERROR, probes[1])
    await until(lambda: len(recorded_sleep.pauses) == 2)
    tasks = [task for task in asyncio.all_tasks() if task.get_name().startswith("voicebridge-probe-")]
    assert len(tasks) == 2
    async with asyncio.timeout(30):
        await health.aclose()
    assert all(task.cancelled() for task in tasks) and [probe.calls for probe in probes] == [0, 0]


# ----------------------------------------------------------------------------- credential alarm


def auth_error(kind: ErrorKind = ErrorKind.AUTH, code: int | str | None = 4100, logid: str | None = "log-1") -> SpeechError:
    return SpeechError(kind, "refused", code=code, logid=logid)


def test_refused_credentials_are_reported_once_with_the_variables_to_fix(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="voicebridge.speech.health")
    alarm = CredentialAlarm({"coze": "COZE_API_TOKEN", "feishu": "FEISHU_APP_ID / FEISHU_APP_SECRET"})
    assert alarm.problem() is None
    alarm.outcome("coze", auth_error())
    alarm.outcome("coze", auth_error())
    problem = alarm.problem()
    assert problem == ("coze refused the credentials (COZE_API_TOKEN): expired, revoked, or for the other region "
                       "(coze.cn vs coze.com) [code 4100 logid log-1]")
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert [record.getMessage() for record in errors] == [problem]
    alarm.outcome("feishu", auth_error(ErrorKind.PERMISSION, code=99991672, logid=None))
    assert alarm.problem() == (problem + "; feishu refused the credentials (FEISHU_APP_ID / FEISHU_APP_SECRET): wrong, "
                               "or the app lacks the speech_to_text:speech scope or a paid Feishu edition [code 99991672]")


def test_other_failures_raise_no_alarm_and_a_success_clears_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="voicebridge.speech.health")
    alarm = CredentialAlarm({})
    for kind in ErrorKind:
        if kind not in (ErrorKind.AUTH, ErrorKind.PERMISSION):
            alarm.outcome("coze", SpeechError(kind, "not the credentials"))
    assert alarm.problem() is None
    alarm.outcome("coze", None)
    assert not caplog.records  # nothing was refused: nothing to announce
    alarm.outcome("coze-stream", auth_error(code=None, logid=None))
    assert alarm.problem() == ("coze-stream refused the credentials (its credentials): expired, revoked, or for the "
                               "other region (coze.cn vs coze.com)")
    alarm.outcome("coze-stream", None)
    assert alarm.problem() is None
    assert [record.levelno for record in caplog.records] == [logging.ERROR, logging.WARNING]
    assert caplog.records[-1].getMessage() == "speech provider coze-stream accepts its credentials again"


def test_a_code_of_zero_and_a_logid_alone_are_still_shown() -> None:
    alarm = CredentialAlarm({})
    assert alarm.describe("feishu", auth_error(code=0, logid=None)).endswith("[code 0]")
    assert alarm.describe("feishu", auth_error(code=None, logid="abc")).endswith("[logid abc]")


# ----------------------------------------------------------------------------- metering


def test_usage_adds_up_per_provider_and_in_total() -> None:
    usage = AudioUsage()
    assert usage.seconds == 0.0
    usage.handed("coze", 1.5)
    usage.handed("feishu", 0.25)
    usage.handed("coze", 2.0)
    assert dict(usage.by_provider) == {"coze": 3.5, "feishu": 0.25} and usage.seconds == 3.75


def test_a_request_without_allowance_never_refuses() -> None:
    usage = AudioUsage()
    request = MeteredRequest(usage, None)
    request.hand("coze", 10_000.0)
    request.require(10_000.0)
    assert request.remaining() is None and request.handed_seconds == 10_000.0 and usage.by_provider == {"coze": 10_000.0}


def test_the_allowance_is_spent_by_what_was_handed_and_refused_beyond_it() -> None:
    request = MeteredRequest(None, 10.0)
    assert request.remaining() == 10.0
    request.require(10.0)  # exactly the allowance is allowed
    request.hand("coze", 4.0)  # no meter: counted all the same
    assert request.remaining() == 6.0 and request.handed_seconds == 4.0
    request.require(6.0)
    with pytest.raises(AllowanceExceeded) as caught:
        request.require(6.5)
    refusal = caught.value
    assert (refusal.allowance_seconds, refusal.needed_seconds) == (10.0, 10.5)
    assert refusal.kind is ErrorKind.QUOTA and not refusal.retryable
    assert str(refusal) == "10.5 s of audio would pass the allowance of 10.0 s"
    request.hand("coze", 7.0)  # codec padding may pass it: nothing left, never less than nothing
    assert request.remaining() == 0.0


def test_an_allowance_of_zero_refuses_any_audio() -> None:
    request = MeteredRequest(AudioUsage(), 0.0)
    request.require(0.0)
    with pytest.raises(AllowanceExceeded) as caught:
        request.require(0.1)
    assert caught.value.allowance_seconds == 0.0 and caught.value.needed_seconds == pytest.approx(0.1)


# ----------------------------------------------------------------------------- models


def test_a_clip_holds_exactly_one_of_bytes_or_a_file() -> None:
    with pytest.raises(ValueError, match="^an AudioClip needs exactly one of data or path$"):
        AudioClip()
    with pytest.raises(ValueError, match="^an AudioClip needs exactly one of data or path$"):
        AudioClip(data=b"x", path=Path("/tmp/x.ogg"))
    assert AudioClip(data=b"").size == 0  # empty bytes are still bytes: refused later, as empty audio


async def test_a_clip_reads_the_same_from_memory_and_from_disk(tmp_path: Path) -> None:
    content = bytes(range(256)) * 4
    (tmp_path / "note.ogg").write_bytes(content)
    on_disk = AudioClip.from_path(str(tmp_path / "note.ogg"), mime_type="audio/ogg", declared_seconds=2.0)
    in_memory = AudioClip(data=content)
    assert (on_disk.path, on_disk.filename, on_disk.mime_type, on_disk.declared_seconds) == (
        tmp_path / "note.ogg", "note.ogg", "audio/ogg", 2.0)
    for clip in (on_disk, in_memory):
        assert clip.size == 1024
        assert await clip.read() == content
        assert await clip.head() == content[:64]
        assert await clip.head(10) == content[:10]


def test_encoded_audio_is_uploaded_under_a_name_with_its_container() -> None:
    assert EncodedAudio(b"RIFF", "wav", 1.0).filename == "audio.wav"


def test_a_transcriber_takes_pcm_exactly_when_it_names_a_rate() -> None:
    assert TranscriberCapabilities(pcm_sample_rate=16000).takes_pcm
    assert not TranscriberCapabilities(containers=frozenset({"ogg"})).takes_pcm
    assert TranscriberCapabilities().languages == frozenset({AUTO})  # unless told, only auto is honoured


# ----------------------------------------------------------------------------- provider helpers and registry


async def transcripts(*texts: str) -> AsyncIterator[Transcript]:
    for index, text in enumerate(texts):
        yield Transcript(text, final=index == len(texts) - 1)


async def test_the_last_transcript_of_a_stream_is_its_result() -> None:
    final = await last_transcript(transcripts("he", "hello", "hello world"))
    assert (final.text, final.final) == ("hello world", True)
    with pytest.raises(RuntimeError, match="^transcript stream ended without a result$"):  # says what went wrong
        await last_transcript(transcripts())


def test_a_malformed_field_reads_as_an_empty_object() -> None:
    assert as_dict({"a": 1}) == {"a": 1}
    for value in (None, [], "x", 3):
        assert as_dict(value) == {}


def test_chain_languages_names_each_known_transcribers_languages() -> None:
    assert set(TRANSCRIBERS) == {"coze", "coze-stream", "feishu"}
    languages = chain_languages(["feishu", "whisper", "coze"])
    assert list(languages) == ["feishu", "coze"]
    assert languages["feishu"] == TRANSCRIBERS["feishu"].languages and AUTO in languages["coze"]
