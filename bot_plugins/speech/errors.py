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

# Short texts for chat users, in English, Simplified and Traditional Chinese (see pick_language). Operator detail (code, logid) goes to logs.
_USER_MESSAGES: dict[ErrorKind, dict[str, str]] = {
    ErrorKind.AUTH: {
        "en": "The speech service rejected the bot's credentials. The bot owner needs to check its token.",
        "zh": "语音服务拒绝了机器人的凭证，请机器人所有者检查令牌。",
        "zh-hant": "語音服務拒絕了機器人的憑證，請機器人擁有者檢查權杖。",
    },
    ErrorKind.PERMISSION: {
        "en": "The bot is not allowed to use this speech feature. The bot owner needs to check its permissions.",
        "zh": "机器人没有使用该语音功能的权限，请机器人所有者检查权限配置。",
        "zh-hant": "機器人沒有使用這項語音功能的權限，請機器人擁有者檢查權限設定。",
    },
    ErrorKind.INVALID_INPUT: {
        "en": "The speech service could not process this request.",
        "zh": "语音服务无法处理这个请求。",
        "zh-hant": "語音服務無法處理這個請求。",
    },
    ErrorKind.TOO_LARGE: {
        "en": "This is too long for the speech service. Please send something shorter.",
        "zh": "内容太长，语音服务无法处理，请发送短一些的内容。",
        "zh-hant": "內容太長，語音服務無法處理，請傳送較短的內容。",
    },
    ErrorKind.RATE_LIMITED: {
        "en": "The speech service is busy right now. Please try again in a minute.",
        "zh": "语音服务当前繁忙，请过一分钟再试。",
        "zh-hant": "語音服務目前忙碌中，請過一分鐘再試。",
    },
    ErrorKind.QUOTA: {
        "en": "The speech service quota is used up for now. Please try again later.",
        "zh": "语音服务的额度暂时已用完，请稍后再试。",
        "zh-hant": "語音服務的額度暫時已用完，請稍後再試。",
    },
    ErrorKind.SERVER: {
        "en": "The speech service had a problem. Please try again later.",
        "zh": "语音服务出现故障，请稍后再试。",
        "zh-hant": "語音服務發生問題，請稍後再試。",
    },
    ErrorKind.CONNECTIVITY: {
        "en": "The speech service cannot be reached right now. Please try again later.",
        "zh": "暂时无法连接语音服务，请稍后再试。",
        "zh-hant": "暫時無法連線到語音服務，請稍後再試。",
    },
    ErrorKind.TIMEOUT: {
        "en": "The speech service took too long to answer. Please try again.",
        "zh": "语音服务响应超时，请重试。",
        "zh-hant": "語音服務回應逾時，請再試一次。",
    },
}


# Regions whose Chinese is written in Traditional characters, when a tag names no script.
_TRADITIONAL_REGIONS = frozenset({"tw", "hk", "mo"})


def pick_language(lang: str | None) -> str:
    """Map a user's language tag to a catalogue language: ``zh-hant`` (Traditional Chinese) for
    ``zh-Hant``, ``zh-TW``, ``zh-HK``, ``zh-MO`` (any case, ``-`` or ``_``; Telegram's
    ``language_code``, Discord's locale); ``zh`` (Simplified) for any other Chinese tag; else ``en``."""
    subtags = (lang or "").strip().lower().replace("_", "-").split("-")
    if subtags[0] != "zh":
        return "en"
    if "hant" in subtags or ("hans" not in subtags and not _TRADITIONAL_REGIONS.isdisjoint(subtags[1:])):
        return "zh-hant"
    return "zh"


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


class InputFormatRefused(SpeechError):
    """A provider refused the encoded form it was handed (its config or its audio), or heard
    nothing in audio our own check found sound in: the same audio is worth sending again as
    PCM at once. ``refused_config``: the provider said outright it does not take the form;
    ``empty_answer``: it only answered with no text (which PCM may confirm)."""

    def __init__(self, message: str, *, provider: str | None = None, logid: str | None = None,
                 code: int | str | None = None, refused_config: bool = False, empty_answer: bool = False) -> None:
        super().__init__(ErrorKind.INVALID_INPUT, message, provider=provider, code=code, logid=logid, retryable=False)
        self.refused_config = refused_config
        self.empty_answer = empty_answer


class AudioProblem(StrEnum):
    EMPTY = "empty"
    UNDECODABLE = "undecodable"
    SILENT = "silent"
    TOO_LONG = "too_long"


_AUDIO_MESSAGES: dict[AudioProblem, dict[str, str]] = {
    AudioProblem.EMPTY: {
        "en": "This audio is empty.",
        "zh": "这段音频是空的。",
        "zh-hant": "這段音訊是空的。",
    },
    AudioProblem.UNDECODABLE: {
        "en": "This file could not be read as audio. Please send a voice message or a common audio file.",
        "zh": "无法将这个文件识别为音频，请发送语音消息或常见格式的音频文件。",
        "zh-hant": "無法將這個檔案辨識為音訊，請傳送語音訊息或常見格式的音訊檔案。",
    },
    AudioProblem.SILENT: {
        "en": "I could not hear anything in this audio: it is silent.",
        "zh": "这段音频里没有任何声音，无法识别。",
        "zh-hant": "這段音訊裡沒有任何聲音，無法辨識。",
    },
    AudioProblem.TOO_LONG: {
        "en": "This recording is longer than I accept.",
        "zh": "这段录音超过了允许的最长时长。",
        "zh-hant": "這段錄音超過了允許的最大長度。",
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
