"""Speech-service settings: which providers, where they live, and their credentials."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from .coze_auth import load_private_key
from .languages import AUTO, LANGUAGE_CODES, first_refusal, language_code
from .registry import TRANSCRIBERS, SYNTHESIZERS, chain_languages

T = TypeVar("T")

# Provider names accepted in VOICEBRIDGE_ASR / VOICEBRIDGE_TTS.
ASR_PROVIDERS = tuple(TRANSCRIBERS)
TTS_PROVIDERS = tuple(SYNTHESIZERS)
FEISHU_TEXT_MODES = ("auto", "cumulative", "delta")
# coze-stream input: "ogg" hands Ogg/Opus notes over as they are (PCM for everything else), "pcm"
# decodes every note to PCM, for a Coze deployment that does not take Ogg/Opus.
COZE_STREAM_INPUTS = ("ogg", "pcm")

DEFAULT_COZE_API_BASE = "https://api.coze.cn"
DEFAULT_COZE_WS_BASE = "wss://ws.coze.cn"
DEFAULT_FEISHU_BASE_URL = "https://open.feishu.cn"  # Lark international: https://open.larksuite.com


def problem(variable: str, requirement: str, value: str | None = None) -> str:
    shown = f" (got {value!r})" if value else ""
    return f"{variable} {requirement}{shown}"


def _base_url(values: Mapping[str, str], variable: str, default: str, schemes: tuple[str, ...], problems: list[str]) -> str:
    url = (values.get(variable) or default).strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        problems.append(problem(variable, f"must be a {' or '.join(schemes)} URL such as {default}", url))
    return url


def _optional(values: Mapping[str, str], variable: str) -> str | None:
    return (values.get(variable) or "").strip() or None


def number(values: Mapping[str, str], variable: str, default: T, low: float, high: float, problems: list[str]) -> float | T:
    """A number within [low, high]; ``default`` when unset; a problem naming the variable otherwise."""
    raw = (values.get(variable) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not low <= value <= high:
        problems.append(problem(variable, f"must be a number from {low:g} to {high:g}", raw))
        return default
    return value


def choice(values: Mapping[str, str], variable: str, choices: tuple[str, ...], problems: list[str]) -> str:
    """One of ``choices``; the first when unset."""
    chosen = (values.get(variable) or choices[0]).strip().lower()
    if chosen not in choices:
        problems.append(problem(variable, f"must be one of {', '.join(choices)}", chosen))
        return choices[0]
    return chosen


def _provider_chain(values: Mapping[str, str], variable: str, allowed: tuple[str, ...], problems: list[str]) -> tuple[str, ...]:
    """A comma-separated list: the first is used, the rest are fallbacks in order."""
    names = tuple(dict.fromkeys(name.strip().lower() for name in (values.get(variable) or "").split(",") if name.strip()))
    unknown = [name for name in names if name not in allowed]
    if unknown:
        problems.append(problem(variable, f"names an unknown provider {unknown[0]!r}; use one of {', '.join(allowed)}"))
    return tuple(name for name in names if name in allowed)


@dataclass(frozen=True)
class CozeJwtApp:
    """A Coze OAuth JWT service app: access tokens are minted from its private key."""

    client_id: str
    private_key: str  # PEM text with real newlines
    public_key_id: str


def _coze_jwt_app(values: Mapping[str, str], problems: list[str]) -> CozeJwtApp | None:
    client_id, key_id = _optional(values, "COZE_JWT_CLIENT_ID"), _optional(values, "COZE_JWT_PUBLIC_KEY_ID")
    inline, key_file = _optional(values, "COZE_JWT_PRIVATE_KEY"), _optional(values, "COZE_JWT_PRIVATE_KEY_FILE")
    if not (client_id or key_id or inline or key_file):
        return None
    missing = [name for name, value in (("COZE_JWT_CLIENT_ID", client_id), ("COZE_JWT_PUBLIC_KEY_ID", key_id)) if not value]
    if not (inline or key_file):
        missing.append("COZE_JWT_PRIVATE_KEY (or COZE_JWT_PRIVATE_KEY_FILE)")
    if inline and key_file:
        problems.append("COZE_JWT_PRIVATE_KEY and COZE_JWT_PRIVATE_KEY_FILE are both set; keep one")
    for name in missing:
        problems.append(f"{name} is not set; a Coze JWT app needs COZE_JWT_CLIENT_ID, COZE_JWT_PUBLIC_KEY_ID "
                        "and its private key")
    variable, pem = "COZE_JWT_PRIVATE_KEY", inline
    if key_file and not inline:
        variable = "COZE_JWT_PRIVATE_KEY_FILE"
        try:
            pem = Path(key_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            problems.append(problem(variable, f"cannot be read: {getattr(error, 'strerror', None) or error}", key_file))
            return None
    if missing or pem is None:
        return None
    try:
        load_private_key(pem)
    except ValueError as error:
        problems.append(f"{variable} is not usable: {error}")
        return None
    return CozeJwtApp(client_id or "", pem.strip().replace("\\n", "\n"), key_id or "")


def _language(values: Mapping[str, str], asr_chain: tuple[str, ...], problems: list[str]) -> str:
    """VOICEBRIDGE_LANGUAGE as a neutral code that every provider of the ASR chain honours."""
    raw = (values.get("VOICEBRIDGE_LANGUAGE") or AUTO).strip()
    language = language_code(raw)
    if language is None:
        problems.append(problem("VOICEBRIDGE_LANGUAGE", f"must be one of {', '.join(LANGUAGE_CODES)}", raw))
        return AUTO
    refusal = first_refusal(language, chain_languages(asr_chain))
    if refusal is not None:
        provider, honoured = refusal
        problems.append(f"VOICEBRIDGE_LANGUAGE={language} is not recognised by the ASR provider {provider} "
                        f"(it honours only {', '.join(honoured)}); pick a language every provider in VOICEBRIDGE_ASR "
                        "honours, or auto")
    return language


@dataclass(frozen=True)
class SpeechSettings:
    coze_api_token: str | None
    coze_api_base: str
    coze_ws_base: str
    coze_voice_id: str | None
    asr_chain: tuple[str, ...]  # first = primary, rest = fallbacks
    tts_chain: tuple[str, ...]  # empty: speech synthesis is not configured
    language: str
    feishu_app_id: str | None = None
    feishu_app_secret: str | None = None
    feishu_base_url: str = DEFAULT_FEISHU_BASE_URL
    feishu_chunk_ms: int = 200
    feishu_max_streams: int = 20
    provider_timeout: float = 60.0  # seconds a provider may stay silent before the call times out
    feishu_text_mode: str = "auto"
    coze_jwt: CozeJwtApp | None = None  # set: access tokens come from this app, not COZE_API_TOKEN
    coze_stream_input: str = "ogg"  # COZE_STREAM_INPUTS

    @property
    def has_coze_credentials(self) -> bool:
        return bool(self.coze_api_token or self.coze_jwt)

    @classmethod
    def from_values(cls, values: Mapping[str, str], problems: list[str]) -> SpeechSettings:
        static_token = _optional(values, "COZE_API_TOKEN")
        jwt_app = _coze_jwt_app(values, problems)
        if static_token and jwt_app:
            problems.append("COZE_API_TOKEN and a Coze JWT app (COZE_JWT_CLIENT_ID, …) are both set; keep one")
        has_coze = bool(static_token or jwt_app or _optional(values, "COZE_JWT_CLIENT_ID"))
        feishu_id, feishu_secret = _optional(values, "FEISHU_APP_ID"), _optional(values, "FEISHU_APP_SECRET")
        if bool(feishu_id) != bool(feishu_secret):
            missing = "FEISHU_APP_SECRET" if feishu_id else "FEISHU_APP_ID"
            problems.append(f"{missing} is not set; Feishu needs both FEISHU_APP_ID and FEISHU_APP_SECRET")
        asr_chain = _provider_chain(values, "VOICEBRIDGE_ASR", ASR_PROVIDERS, problems)
        tts_chain = _provider_chain(values, "VOICEBRIDGE_TTS", TTS_PROVIDERS, problems)
        explicit_asr = bool(values.get("VOICEBRIDGE_ASR", "").strip())
        if not explicit_asr:
            # Coze when its credentials are there, else Feishu when only Feishu credentials are.
            asr_chain = ("coze",) if has_coze else ("feishu",) if feishu_id and feishu_secret else ()
            if not asr_chain:
                problems.append("no speech recognition configured: set COZE_API_TOKEN (or a Coze JWT app: "
                                "COZE_JWT_CLIENT_ID, …), or FEISHU_APP_ID and FEISHU_APP_SECRET")
        if not values.get("VOICEBRIDGE_TTS", "").strip() and has_coze:
            tts_chain = ("coze",)
        uses_coze = any(name.startswith("coze") for name in (*asr_chain, *tts_chain))
        if uses_coze and not has_coze:
            problems.append("COZE_API_TOKEN is not set; the Coze speech providers need it (or a Coze JWT app: "
                            "COZE_JWT_CLIENT_ID, COZE_JWT_PRIVATE_KEY, COZE_JWT_PUBLIC_KEY_ID)")
        if "feishu" in asr_chain and not (feishu_id and feishu_secret):
            problems.append("FEISHU_APP_ID and FEISHU_APP_SECRET must be set to use VOICEBRIDGE_ASR=feishu")
        return cls(
            coze_api_token=static_token,
            coze_api_base=_base_url(values, "COZE_API_BASE", DEFAULT_COZE_API_BASE, ("https", "http"), problems),
            coze_ws_base=_base_url(values, "COZE_WS_BASE", DEFAULT_COZE_WS_BASE, ("wss", "ws"), problems),
            coze_voice_id=_optional(values, "COZE_VOICE_ID"),
            asr_chain=asr_chain,
            tts_chain=tts_chain,
            language=_language(values, asr_chain, problems),
            feishu_app_id=feishu_id,
            feishu_app_secret=feishu_secret,
            feishu_base_url=_base_url(values, "FEISHU_BASE_URL", DEFAULT_FEISHU_BASE_URL, ("https", "http"), problems),
            feishu_chunk_ms=int(number(values, "FEISHU_CHUNK_MS", 200, 20, 1000, problems)),
            feishu_max_streams=int(number(values, "FEISHU_MAX_STREAMS", 20, 1, 1000, problems)),
            provider_timeout=number(values, "VOICEBRIDGE_PROVIDER_TIMEOUT", 60.0, 0.1, 3600, problems),
            feishu_text_mode=choice(values, "FEISHU_TEXT_MODE", FEISHU_TEXT_MODES, problems),
            coze_jwt=jwt_app,
            coze_stream_input=choice(values, "COZE_STREAM_INPUT", COZE_STREAM_INPUTS, problems),
        )

    def secrets(self) -> list[str]:
        private_key = self.coze_jwt.private_key if self.coze_jwt else None
        return [secret for secret in (self.coze_api_token, self.feishu_app_secret, private_key) if secret]
