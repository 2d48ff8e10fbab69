"""One neutral set of recognition-language codes for configuration, chat commands and providers.

Each provider declares the codes it really honours (``TranscriberCapabilities.languages``) and maps
them to its own parameter; ``auto`` (the provider detects the language) is honoured by all.
Display names live in the plugin's message catalogue, so every chat language can have its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

AUTO = "auto"
# Every code any provider can honour, in the order they are listed to users.
LANGUAGE_CODES = ("auto", "zh", "yue", "zh-sichuan", "en", "ja", "ko", "fr", "es", "pt", "ru", "id", "ms")
# Values older versions stored in .env files and chat settings (Coze's own user_language names).
LEGACY_CODES: Mapping[str, str] = {"common": AUTO, "cant": "yue", "sc": "zh-sichuan"}


def language_code(value: str) -> str | None:
    """The neutral code for ``value`` (a code in any case, ``_`` for ``-``, or a legacy value);
    None when it names no known language."""
    code = value.strip().lower().replace("_", "-")
    code = LEGACY_CODES.get(code, code)
    return code if code in LANGUAGE_CODES else None


def honoured_by_all(languages_by_provider: Mapping[str, Iterable[str]]) -> tuple[str, ...]:
    """The codes every provider honours, in display order (``auto`` at least)."""
    common = set(LANGUAGE_CODES)
    for languages in languages_by_provider.values():
        common &= set(languages)
    return tuple(code for code in LANGUAGE_CODES if code in common or code == AUTO)


def first_refusal(language: str, languages_by_provider: Mapping[str, Iterable[str]]) -> tuple[str, tuple[str, ...]] | None:
    """``(provider, the codes it honours)`` for the first provider that does not honour
    ``language``; None when all of them do."""
    for provider, languages in languages_by_provider.items():
        honoured = tuple(code for code in LANGUAGE_CODES if code in set(languages))
        if language != AUTO and language not in honoured:
            return provider, honoured
    return None
