"""The error taxonomy: Coze codes map to kinds, kinds decide retries, users get both languages."""

from __future__ import annotations

import logging

import pytest

from voicebridge.logs import SecretRedactor
from voicebridge.speech.coze_common import error_from_code, error_from_status
from voicebridge.speech.errors import AudioError, AudioProblem, ErrorKind, SpeechError


@pytest.mark.parametrize(
    ("code", "kind", "retryable"),
    [
        (5000, ErrorKind.SERVER, True),
        (4009, ErrorKind.RATE_LIMITED, True),
        (4013, ErrorKind.SERVER, True),
        (4020, ErrorKind.RATE_LIMITED, True),
        (4100, ErrorKind.AUTH, False),
        (4101, ErrorKind.PERMISSION, False),
        (4000, ErrorKind.INVALID_INPUT, False),
        (3010, ErrorKind.TOO_LARGE, False),
        (4008, ErrorKind.QUOTA, False),
        (4011, ErrorKind.QUOTA, False),
        (123456, ErrorKind.SERVER, False),  # unknown codes are not retried blindly
    ],
)
def test_coze_codes(code: int, kind: ErrorKind, retryable: bool) -> None:
    error = error_from_code("coze", code, "msg", "logid-1")
    assert (error.kind, error.retryable, error.code, error.logid) == (kind, retryable, code, "logid-1")


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [(401, ErrorKind.AUTH, False), (403, ErrorKind.PERMISSION, False), (429, ErrorKind.RATE_LIMITED, True),
     (502, ErrorKind.SERVER, True), (503, ErrorKind.SERVER, True), (413, ErrorKind.TOO_LARGE, False)],
)
def test_http_statuses(status: int, kind: ErrorKind, retryable: bool) -> None:
    error = error_from_status("coze", status, "<html>", None)
    assert (error.kind, error.retryable) == (kind, retryable)


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_every_kind_has_english_and_chinese_messages(kind: ErrorKind) -> None:
    error = SpeechError(kind, "detail that users never see", code=4100, logid="x")
    english, chinese = error.user_message("en"), error.user_message("zh-CN")
    assert english and chinese and english != chinese
    assert "detail" not in english and "4100" not in english
    assert any("\u4e00" <= char <= "\u9fff" for char in chinese)


@pytest.mark.parametrize("problem", list(AudioProblem))
def test_audio_problems_have_their_own_messages(problem: AudioProblem) -> None:
    error = AudioError(problem, "ffmpeg said something")
    assert not error.retryable and error.kind is ErrorKind.INVALID_INPUT
    assert error.user_message("en") != SpeechError(ErrorKind.INVALID_INPUT, "").user_message("en")
    assert error.user_message("zh") != error.user_message("en")


def test_secret_redaction_covers_messages_arguments_and_tracebacks() -> None:
    secret = "pat_super_secret_value"
    redactor = SecretRedactor([secret])
    try:
        raise RuntimeError(f"GET https://api.example/file/bot{secret}/voice.oga failed")
    except RuntimeError:
        import sys

        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "token %s in %s", (secret, "args"), sys.exc_info())
    redactor.filter(record)
    rendered = logging.Formatter().format(record)
    assert secret not in rendered
    assert "[REDACTED]" in rendered


def test_a_speech_error_keeps_the_operators_details_and_states_them_in_one_line() -> None:
    error = SpeechError(ErrorKind.RATE_LIMITED, "busy", provider="coze", code=4020, logid="abc", retry_after=1.5)
    assert (error.provider, error.code, error.logid, error.retry_after, error.retryable) == ("coze", 4020, "abc", 1.5, True)
    assert str(error) == "busy provider=coze code=4020 logid=abc" and error.args == ("busy",)
    assert str(SpeechError(ErrorKind.SERVER, "plain")) == "plain"
    assert str(SpeechError(ErrorKind.SERVER, "zero", code=0)) == "zero code=0"  # 0 is a code too
    audio = AudioError(AudioProblem.SILENT, "no sound above the threshold")
    assert (audio.kind, audio.retryable, str(audio)) == (ErrorKind.INVALID_INPUT, False, "no sound above the threshold")
    assert audio.user_message() == "I could not hear anything in this audio: it is silent."
