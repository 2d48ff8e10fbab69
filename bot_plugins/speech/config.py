"""Speech-service settings: which providers, where they live, and their credentials."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

# Provider names accepted in VOICEBRIDGE_ASR / VOICEBRIDGE_TTS.
ASR_PROVIDERS = ("coze", "coze-stream")
TTS_PROVIDERS = ("coze", "coze-stream")

# Coze `user_language` values (big model `common`, small models the rest).
COZE_LANGUAGES = ("common", "zh", "cant", "sc", "en", "ja", "ko", "fr", "id", "es", "pt", "ms", "ru")

DEFAULT_COZE_API_BASE = "https://api.coze.cn"
DEFAULT_COZE_WS_BASE = "wss://ws.coze.cn"


def problem(variable: str, requirement: str, value: str | None = None) -> str:
    shown = f" (got {value!r})" if value else ""
    return f"{variable} {requirement}{shown}"


def _base_url(values: Mapping[str, str], variable: str, default: str, schemes: tuple[str, ...], problems: list[str]) -> str:
    url = (values.get(variable) or default).strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        problems.append(problem(variable, f"must be a {' or '.join(schemes)} URL such as {default}", url))
    return url


def _provider_chain(values: Mapping[str, str], variable: str, allowed: tuple[str, ...], problems: list[str]) -> tuple[str, ...]:
    """A comma-separated list: the first is used, the rest are fallbacks in order."""
    names = tuple(dict.fromkeys(name.strip().lower() for name in (values.get(variable) or "").split(",") if name.strip()))
    unknown = [name for name in names if name not in allowed]
    if unknown:
        problems.append(problem(variable, f"names an unknown provider {unknown[0]!r}; use one of {', '.join(allowed)}"))
    return tuple(name for name in names if name in allowed)


@dataclass(frozen=True)
class SpeechSettings:
    coze_api_token: str | None
    coze_api_base: str
    coze_ws_base: str
    coze_voice_id: str | None
    asr_chain: tuple[str, ...]  # first = primary, rest = fallbacks
    tts_chain: tuple[str, ...]  # empty: speech synthesis is not configured
    language: str

    @classmethod
    def from_values(cls, values: Mapping[str, str], problems: list[str]) -> SpeechSettings:
        token = (values.get("COZE_API_TOKEN") or "").strip() or None
        asr_chain = _provider_chain(values, "VOICEBRIDGE_ASR", ASR_PROVIDERS, problems)
        tts_chain = _provider_chain(values, "VOICEBRIDGE_TTS", TTS_PROVIDERS, problems)
        explicit_asr = bool(values.get("VOICEBRIDGE_ASR", "").strip())
        if not explicit_asr and token:
            asr_chain = ("coze",)
        if not values.get("VOICEBRIDGE_TTS", "").strip() and token:
            tts_chain = ("coze",)
        if not asr_chain and not explicit_asr:
            problems.append("no speech recognition configured: set COZE_API_TOKEN")
        uses_coze = any(name.startswith("coze") for name in (*asr_chain, *tts_chain))
        if uses_coze and not token:
            problems.append("COZE_API_TOKEN is not set; it is required by the Coze speech providers")
        language = (values.get("VOICEBRIDGE_LANGUAGE") or "common").strip()
        if language not in COZE_LANGUAGES:
            problems.append(problem("VOICEBRIDGE_LANGUAGE", f"must be one of {', '.join(COZE_LANGUAGES)}", language))
        return cls(
            coze_api_token=token,
            coze_api_base=_base_url(values, "COZE_API_BASE", DEFAULT_COZE_API_BASE, ("https", "http"), problems),
            coze_ws_base=_base_url(values, "COZE_WS_BASE", DEFAULT_COZE_WS_BASE, ("wss", "ws"), problems),
            coze_voice_id=(values.get("COZE_VOICE_ID") or "").strip() or None,
            asr_chain=asr_chain,
            tts_chain=tts_chain,
            language=language,
        )

    def secrets(self) -> list[str]:
        return [secret for secret in (self.coze_api_token,) if secret]
