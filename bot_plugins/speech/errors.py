"""One error taxonomy for every speech provider and for audio handling.

Providers translate their wire codes into an :class:`ErrorKind` in one table each; everything
above them (retries, fallback, user messages) looks only at the kind and the retryable flag.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    AUTH = "auth"
    PERMISSION = "permission"
    INVALID_INPUT = "invalid_input"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    QUOTA = "quota"
    SERVER = "server"
    CONNECTIVITY = "connectivity"
    TIMEOUT = "timeout"


# Transient by nature: worth another attempt after a pause.
RETRYABLE_KINDS = frozenset({ErrorKind.RATE_LIMITED, ErrorKind.SERVER, ErrorKind.CONNECTIVITY, ErrorKind.TIMEOUT})

# Short texts for chat users, English and Chinese. Operator detail (code, logid) goes to logs.
_USER_MESSAGES: dict[ErrorKind, dict[str, str]] = {
    ErrorKind.AUTH: {
        "en": "The speech service rejected the bot's credentials. The bot owner needs to check its token.",
        "zh": "语音服务拒绝了机器人的凭证，请机器人管理员检查令牌配置。",
    },
    ErrorKind.PERMISSION: {
        "en": "The bot is not allowed to use this speech feature. The bot owner needs to check its permissions.",
        "zh": "机器人没有使用该语音功能的权限，请机器人管理员检查权限配置。",
    },
    ErrorKind.INVALID_INPUT: {
        "en": "The speech service could not process this request.",
        "zh": "语音服务无法处理这个请求。",
    },
    ErrorKind.TOO_LARGE: {
        "en": "This is too long for the speech service. Please send something shorter.",
        "zh": "内容太长，语音服务无法处理，请发送更短的内容。",
    },
    ErrorKind.RATE_LIMITED: {
        "en": "The speech service is busy right now. Please try again in a minute.",
        "zh": "语音服务当前繁忙，请稍后再试。",
    },
    ErrorKind.QUOTA: {
        "en": "The speech service quota is used up for now. Please try again later.",
        "zh": "语音服务额度已用完，请稍后再试。",
    },
    ErrorKind.SERVER: {
        "en": "The speech service had a problem. Please try again later.",
        "zh": "语音服务出现故障，请稍后再试。",
    },
    ErrorKind.CONNECTIVITY: {
        "en": "The speech service cannot be reached right now. Please try again later.",
        "zh": "暂时无法连接语音服务，请稍后再试。",
    },
    ErrorKind.TIMEOUT: {
        "en": "The speech service took too long to answer. Please try again.",
        "zh": "语音服务响应超时，请重试。",
    },
}


def pick_language(lang: str | None) -> str:
    """Map a user's language tag (``zh-hans``, ``en-US``, ``zh_CN``…) to a catalogue language."""
    return "zh" if lang and lang.lower().startswith("zh") else "en"


class SpeechError(Exception):
    """A classified failure of a speech operation.

    ``code`` and ``logid`` are the provider's own identifiers, kept for operators; ``retryable``
    defaults from the kind but a provider may override it for a specific code.
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        provider: str | None = None,
        code: int | str | None = None,
        logid: str | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.provider = provider
        self.code = code
        self.logid = logid
        self.retryable = kind in RETRYABLE_KINDS if retryable is None else retryable
        self.retry_after = retry_after

    def user_message(self, lang: str | None = "en") -> str:
        return _USER_MESSAGES[self.kind][pick_language(lang)]

    def __str__(self) -> str:
        parts = [self.message]
        if self.provider:
            parts.append(f"provider={self.provider}")
        if self.code is not None:
            parts.append(f"code={self.code}")
        if self.logid:
            parts.append(f"logid={self.logid}")
        return " ".join(parts)


class AudioProblem(StrEnum):
    EMPTY = "empty"
    UNDECODABLE = "undecodable"
    SILENT = "silent"
    TOO_LONG = "too_long"


_AUDIO_MESSAGES: dict[AudioProblem, dict[str, str]] = {
    AudioProblem.EMPTY: {
        "en": "This audio is empty.",
        "zh": "这段音频是空的。",
    },
    AudioProblem.UNDECODABLE: {
        "en": "This file could not be read as audio. Please send a voice message or a common audio file.",
        "zh": "无法将这个文件识别为音频，请发送语音消息或常见格式的音频文件。",
    },
    AudioProblem.SILENT: {
        "en": "I could not hear anything in this audio: it is silent.",
        "zh": "这段音频里没有声音，无法识别。",
    },
    AudioProblem.TOO_LONG: {
        "en": "This recording is longer than I accept.",
        "zh": "这段录音超过了允许的时长。",
    },
}


class AudioError(SpeechError):
    """Input audio that no provider should be asked to transcribe: raised before any call."""

    def __init__(self, problem: AudioProblem, detail: str) -> None:
        super().__init__(ErrorKind.INVALID_INPUT, detail, retryable=False)
        self.problem = problem

    def user_message(self, lang: str | None = "en") -> str:
        return _AUDIO_MESSAGES[self.problem][pick_language(lang)]


class ConfigError(Exception):
    """Invalid or missing configuration; the message names the variable to fix."""
