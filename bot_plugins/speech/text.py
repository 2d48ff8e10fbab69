"""Splitting text into pieces a provider accepts, at the most natural boundary available."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

# After western terminators only when whitespace follows ("3.14" stays whole); CJK terminators
# and line breaks end a sentence wherever they are.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?…])(?=\s)|(?<=[。！？；;\n])")
# ASCII commas and colons only before whitespace, so "http://…" and "3,000" stay whole.
_CLAUSE_BREAK = re.compile(r"(?<=[,:])(?=\s)|(?<=[，、：])")
_WORD_BREAK = re.compile(r"(?<=\s)(?=\S)")
_JOINERS = {"\u200d", "\ufe0e", "\ufe0f"}  # zero-width joiner, variation selectors


def utf8_length(text: str) -> int:
    return len(text.encode("utf-8"))


def characters(text: str) -> list[str]:
    """User-perceived characters, approximately: combining marks, joiners and variation
    selectors stay with their base, a ZWJ emoji sequence stays whole, flags stay paired."""
    clusters: list[str] = []
    for char in text:
        previous = clusters[-1] if clusters else ""
        joins_previous = bool(previous) and (
            unicodedata.combining(char)
            or char in _JOINERS
            or previous.endswith("\u200d")
            or (_is_regional_indicator(char) and len(previous) == 1 and _is_regional_indicator(previous))
        )
        if joins_previous:
            clusters[-1] += char
        else:
            clusters.append(char)
    return clusters


def _is_regional_indicator(char: str) -> bool:
    return "\U0001f1e6" <= char <= "\U0001f1ff"


_SPLITTERS: list[Callable[[str], list[str]]] = [
    lambda text: _SENTENCE_BREAK.split(text),
    lambda text: _CLAUSE_BREAK.split(text),
    lambda text: _WORD_BREAK.split(text),
    characters,
]


def sentences_end(text: str) -> int:
    """Where the last complete sentence of ``text`` ends (0: none yet): what follows it may still
    grow, as in an answer that is being streamed."""
    end = 0
    for match in _SENTENCE_BREAK.finditer(text):
        end = match.end()
    return end


def split_text(text: str, max_bytes: int, length: Callable[[str], int] = utf8_length) -> list[str]:
    """Pieces of at most ``max_bytes`` (as measured by ``length``): whole sentences where they
    fit, else clauses, else words, else characters — never part of a character."""
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    pieces = [piece.strip() for piece in _pack(text, max_bytes, 0, length)]
    return [piece for piece in pieces if piece]


def _pack(text: str, limit: int, level: int, length: Callable[[str], int]) -> list[str]:
    if length(text) <= limit:
        return [text]
    if level == len(_SPLITTERS):
        return [text]  # a single character longer than the limit: nothing smaller exists
    pieces: list[str] = []
    current = ""
    for unit in _SPLITTERS[level](text):
        if length(current + unit) <= limit:
            current += unit
            continue
        if current:
            pieces.append(current)
        if length(unit) <= limit:
            current = unit
        else:
            *whole, current = _pack(unit, limit, level + 1, length)
            pieces.extend(whole)
    if current:
        pieces.append(current)
    return pieces
