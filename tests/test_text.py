"""Text splitting for provider limits: natural boundaries, never inside a character."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicebridge.speech.text import characters, sentences_end, split_text, utf8_length


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_short_text_is_one_piece() -> None:
    assert split_text("  Hello there.  ", 1024) == ["Hello there."]


def test_splits_between_sentences_first() -> None:
    text = "First sentence here. Second one follows! Third? 第四句。第五句！"
    pieces = split_text(text, 45)
    assert pieces == ["First sentence here. Second one follows!", "Third? 第四句。第五句！"]


def test_decimal_points_do_not_end_sentences() -> None:
    assert split_text("Pi is 3.14159 roughly. " * 2, 30) == ["Pi is 3.14159 roughly.", "Pi is 3.14159 roughly."]


def test_long_sentence_splits_at_words_then_characters() -> None:
    pieces = split_text("alpha beta gamma delta epsilon", 12)
    assert pieces == ["alpha beta", "gamma delta", "epsilon"]
    assert split_text("abcdefghij", 4) == ["abcd", "efgh", "ij"]


def test_chinese_without_spaces_splits_at_clauses_then_characters() -> None:
    text = "今天天气很好，我们去公园散步，然后一起吃晚饭" * 3
    pieces = split_text(text, 30)
    assert all(utf8_length(piece) <= 30 for piece in pieces)
    assert "".join(pieces) == text
    # Two clauses (21 + 24 bytes) would exceed 30, so each clause is its own piece.
    assert pieces[:2] == ["今天天气很好，", "我们去公园散步，"]


def test_urls_and_numbers_are_not_clause_boundaries() -> None:
    text = "see https://example.org/a/b and 3,000,000 items, then stop"
    assert split_text(text, 45) == ["see https://example.org/a/b and 3,000,000", "items, then stop"]


def test_emoji_sequences_and_combining_marks_stay_whole() -> None:
    family = "👨\u200d👩\u200d👧\u200d👦"
    flag = "🇨🇳"
    accented = "e\u0301"
    assert characters(family + flag + accented) == [family, flag, accented]
    pieces = split_text((family + flag + accented) * 4, 30)
    for piece in pieces:
        assert utf8_length(piece) <= 30
        assert not piece.startswith("\u200d") and not piece.startswith("\u0301")
        assert not piece.endswith("\u200d")


def test_real_limit_example_1024_bytes() -> None:
    sentence = "这是一个用于测试语音合成长度限制的句子。"  # 57 bytes
    pieces = split_text(sentence * 60, 1024)
    assert len(pieces) == 4
    assert all(utf8_length(piece) <= 1024 and piece.endswith("。") for piece in pieces)


@settings(max_examples=300, deadline=None)
@given(text=st.text(min_size=0, max_size=600), limit=st.integers(min_value=8, max_value=200))
def test_pieces_fit_and_lose_nothing_but_whitespace(text: str, limit: int) -> None:
    pieces = split_text(text, limit)
    for piece in pieces:
        assert piece and piece == piece.strip()
        # Only a single over-long character cluster may exceed the limit.
        assert utf8_length(piece) <= limit or len(characters(piece)) == 1
    assert squash("".join(pieces)) == squash(text)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=400), limit=st.integers(min_value=4, max_value=64))
def test_every_piece_is_valid_utf8_without_split_code_points(text: str, limit: int) -> None:
    for piece in split_text(text, limit):
        assert piece.encode("utf-8").decode("utf-8") == piece


def test_a_limit_must_be_positive_and_one_byte_is_a_limit() -> None:
    for limit in (0, -1):
        with pytest.raises(ValueError, match="max_bytes must be positive"):
            split_text("x", limit)
    assert split_text("ab c", 1) == ["a", "b", "c"]


def test_flags_pair_their_regional_indicators_at_both_ends_of_the_alphabet() -> None:
    # 🇦🇺 and 🇿🇦: the first and last regional indicator letters; a third lone letter stays alone.
    assert characters("🇦🇺🇿🇦🇿") == ["🇦🇺", "🇿🇦", "🇿"]
    assert characters("a🇦") == ["a", "🇦"]  # a letter before an indicator is no flag


def test_a_leading_combining_mark_stands_alone() -> None:
    assert characters("\u0301a\u0301") == ["\u0301", "a\u0301"]


def test_sentences_end_after_the_last_complete_sentence() -> None:
    assert sentences_end("no end yet") == 0
    assert sentences_end("Pi is 3.14 and") == 0  # a decimal point ends nothing
    assert sentences_end("One. Two! Thr") == len("One. Two!")
    assert sentences_end("你好。世界") == len("你好。")
