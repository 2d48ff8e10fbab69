"""Every word in the user's language: three catalogues (English, Simplified and Traditional
Chinese), localized values in the plugin's answers, platform-correct help."""

from __future__ import annotations

import re
import string

import pytest

from voicebridge.speech.errors import AudioError, AudioProblem, ErrorKind, SpeechError, pick_language
from voicebridge.speech.retry import Retrier
from voicebridge.voice_notes import messages
from voicebridge.voice_notes.model import ChatKind, ChatRef, Person
from tests.audio_tools import make_tone
from tests.fakes.coze import DEFAULT_VOICES, FakeCoze
from tests.test_plugin import GROUP, Harness, MemoryChat, make_plugin

# One reader per catalogue, with the tags their clients really send.
READERS = {
    "en": Person("31", "Ann", "en-US"),
    "zh": Person("32", "Bai", "zh-hans"),
    "zh-hant": Person("33", "Chen", "zh-TW"),
}


def _placeholders(template: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}


@pytest.mark.parametrize("table", sorted(messages.TABLES))
def test_every_key_has_all_three_languages_with_the_same_placeholders(table: str) -> None:
    for key, entry in messages.TABLES[table].items():
        assert set(entry) == set(messages.LANGUAGES), f"{table}: {key!r} has {sorted(entry)}"
        assert all(value.strip() for value in entry.values()), f"{table}: {key!r} has an empty text"
        english = _placeholders(entry["en"])
        for language in ("zh", "zh-hant"):
            assert _placeholders(entry[language]) == english, f"{table}: {key!r} in {language} has other placeholders"


def test_traditional_texts_are_written_in_traditional_characters() -> None:
    """A character-converted copy would do at least this; wording differs too (檔案, 設定, 訊息)."""
    simplified_only = set("设语这个们关为录转识别应开删频")
    for table, entries in messages.TABLES.items():
        for key, entry in entries.items():
            found = simplified_only & set(entry["zh-hant"])
            assert not found, f"{table}: {key!r} in zh-hant has Simplified characters {sorted(found)}"
    assert messages.text("download_failed", "zh-TW") == "無法下載這個檔案，請再試一次。"


@pytest.mark.parametrize(("tag", "language"), [
    ("zh-hant", "zh-hant"), ("zh-Hant", "zh-hant"), ("zh-TW", "zh-hant"), ("zh_tw", "zh-hant"), ("zh-HK", "zh-hant"),
    ("zh-MO", "zh-hant"), ("zh-Hant-TW", "zh-hant"), ("ZH_HANT", "zh-hant"),
    ("zh", "zh"), ("zh-hans", "zh"), ("zh-CN", "zh"), ("zh_SG", "zh"), ("zh-Hans-HK", "zh"),
    ("en", "en"), ("en-US", "en"), ("ja", "en"), ("", "en"), (None, "en"), ("zhx", "en"),
])
def test_language_tags_pick_their_catalogue(tag: str | None, language: str) -> None:
    assert pick_language(tag) == language


def test_speech_errors_speak_all_three_languages() -> None:
    for kind in ErrorKind:
        texts = {SpeechError(kind, "x").user_message(tag) for tag in ("en", "zh-CN", "zh-HK")}
        assert len(texts) == 3, kind
    for problem in AudioProblem:
        texts = {AudioError(problem, "x").user_message(tag) for tag in ("en", "zh-hans", "zh-hant")}
        assert len(texts) == 3, problem


@pytest.mark.parametrize(("seconds", "round_down", "english", "traditional"), [
    (6, False, "6 seconds", "6 秒"), (59.6, True, "59 seconds", "59 秒"), (59.6, False, "1 minute", "1 分鐘"),
    (60, False, "1 minute", "1 分鐘"),
    (90, False, "1.5 minutes", "1.5 分鐘"), (119.9, True, "1.9 minutes", "1.9 分鐘"), (1800, False, "30 minutes", "30 分鐘"),
])
def test_durations_have_units_and_an_amount_used_never_rounds_up_to_the_limit(
        seconds: float, round_down: bool, english: str, traditional: str) -> None:
    assert messages.duration(seconds, "en", round_down=round_down) == english
    assert messages.duration(seconds, "zh-hant", round_down=round_down) == traditional


@pytest.mark.parametrize(("seconds", "english", "chinese"), [
    (100, "1.7 minutes", "1.7 分钟"), (1.6, "2 seconds", "2 秒"), (44.4, "44 seconds", "44 秒")])
def test_durations_round_to_the_nearest_unless_told_to_round_down(seconds: float, english: str, chinese: str) -> None:
    """What /usage and the limits show by default: the nearest tenth of a minute, or whole second."""
    assert messages.duration(seconds, "en") == english
    assert messages.duration(seconds, "zh-CN") == chinese


@pytest.mark.parametrize(("seconds", "english", "traditional"), [
    (0, "0 h 1 min", "0 小時 1 分鐘"), (30, "0 h 1 min", "0 小時 1 分鐘"), (60, "0 h 1 min", "0 小時 1 分鐘"),
    (61, "0 h 2 min", "0 小時 2 分鐘"), (3600, "1 h 0 min", "1 小時 0 分鐘"), (5 * 3600 + 12 * 60 - 30, "5 h 12 min", "5 小時 12 分鐘"),
])
def test_time_until_a_reset_rounds_up_to_the_minute(seconds: float, english: str, traditional: str) -> None:
    """Never "0 min" while some time is left, never less than is left."""
    assert messages.time_left(seconds, "en") == english
    assert messages.time_left(seconds, "zh-TW") == traditional


def test_a_language_without_a_name_shows_as_its_code() -> None:
    assert messages.language_name("tlh", "zh") == "tlh"
    assert messages.language_name("yue", "zh-TW") == "粵語 (yue)"


async def _answers(plugin_env: dict[str, str], retrier: Retrier, steps: list[tuple[str, str, ChatRef]],
                   reader: Person) -> list[str]:
    async with FakeCoze() as fake:
        plugin = make_plugin(fake, retrier, **plugin_env)
        harness = Harness(fake, plugin)
        chat = MemoryChat(admins={reader.id})
        for name, args, where in steps:
            await plugin.handle_command(harness.command(name, args, chat=where, sender=reader), chat)
        await plugin.aclose()
        await plugin.service.aclose()
    return chat.texts()


PRIVATE_CHAT = ChatRef("telegram", "31", ChatKind.PRIVATE)
GROUP_CHAT = ChatRef("telegram", "-900", ChatKind.GROUP)
EXPECTED_SETTINGS = {
    "en": ["Done: I will now answer with voice messages.", "Done: recognition language is now Cantonese (yue).",
           "Done: spoken answers will use the voice Jay.",
           "Done: every voice message in this chat will now be transcribed automatically.",
           "Settings for this chat:\nReply mode: voice messages\nLanguage: Cantonese (yue)\nVoice: Jay\n"
           "Transcribe every voice message in groups: on\nHot words: none"],
    "zh": ["已设置：之后将以语音回复。", "已设置：识别语言为粤语 (yue)。", "已设置：语音回复将使用音色“Jay”。",
           "已开启：当前聊天的每条语音消息都将自动转写。",
           "当前聊天的设置：\n回复方式：语音\n识别语言：粤语 (yue)\n音色：Jay\n群组中自动转写：开启\n热词：无"],
    "zh-hant": ["已設定：之後將以語音回覆。", "已設定：辨識語言為粵語 (yue)。", "已設定：語音回覆將使用聲音「Jay」。",
                "已開啟：這個聊天室的每則語音訊息都將自動轉錄。",
                "這個聊天室的設定：\n回覆方式：語音\n辨識語言：粵語 (yue)\n聲音：Jay\n群組中自動轉錄：開啟\n熱詞：無"],
}


@pytest.mark.parametrize("language", sorted(READERS))
async def test_settings_confirmations_name_the_value_in_the_readers_language(language: str, fast_retrier: Retrier) -> None:
    steps = [("mode", "voice", GROUP_CHAT), ("language", "yue", GROUP_CHAT), ("voice", DEFAULT_VOICES[1].voice_id, GROUP_CHAT),
             ("auto", "on", GROUP_CHAT), ("settings", "", GROUP_CHAT)]
    texts = await _answers({"VOICEBRIDGE_ASR": "coze-stream"}, fast_retrier, steps, READERS[language])
    assert texts == EXPECTED_SETTINGS[language]
    assert not re.search(r"\d{19}", texts[-1])  # never a voice id


@pytest.mark.parametrize(("language", "expected"), [
    ("en", "/auto applies to groups: in a private chat every voice message is always transcribed, so nothing was changed."),
    ("zh", "/auto 只适用于群组：私聊中的每条语音消息始终都会转写，因此没有做任何更改。"),
    ("zh-hant", "/auto 只適用於群組：私人聊天中的每則語音訊息一律會轉錄，因此沒有做任何變更。"),
])
async def test_auto_in_a_private_chat_explains_and_changes_nothing(language: str, expected: str, fast_retrier: Retrier) -> None:
    async with FakeCoze() as fake:
        plugin = make_plugin(fake, fast_retrier)
        harness, chat = Harness(fake, plugin), MemoryChat()
        await plugin.handle_command(harness.command("auto", "off", chat=PRIVATE_CHAT, sender=READERS[language]), chat)
        settings = await plugin.chat_settings(PRIVATE_CHAT)
        await plugin.aclose()
        await plugin.service.aclose()
    assert chat.texts() == [expected] and settings.auto_transcribe


@pytest.mark.parametrize(("language", "mode_usage", "mode_prompt", "languages"), [
    ("en", "Use /mode text, /mode voice or /mode both (text, voice message, or both).", "How should I answer here? Now: text",
     "automatic (auto), Chinese (Mandarin) (zh)"),
    ("zh", "请使用 /mode text（文字）、/mode voice（语音）或 /mode both（文字和语音）。", "在这里以什么方式回复？当前：文字",
     "自动识别 (auto), 普通话 (zh)"),
    ("zh-hant", "請使用 /mode text（文字）、/mode voice（語音）或 /mode both（文字和語音）。", "在這裡以什麼方式回覆？目前：文字",
     "自動辨識 (auto), 華語 (zh)"),
])
async def test_mode_and_language_without_a_value_list_names(language: str, mode_usage: str, mode_prompt: str, languages: str,
                                                             fast_retrier: Retrier) -> None:
    """Without buttons the usage lists the names; with them the prompt names the current value."""
    steps = [("mode", "", PRIVATE_CHAT), ("language", "", PRIVATE_CHAT), ("help", "", PRIVATE_CHAT)]
    texts = await _answers({"VOICEBRIDGE_ASR": "coze-stream", "VOICEBRIDGE_BUTTONS": "off"}, fast_retrier, steps,
                           READERS[language])
    assert texts[0] == mode_usage
    assert languages in texts[1] and languages in texts[2]  # /language and /help list names with the code to type
    prompts = await _answers({"VOICEBRIDGE_ASR": "coze-stream"}, fast_retrier, steps[:2], READERS[language])
    assert prompts[0] == mode_prompt
    assert prompts[1].endswith(languages.split(", ")[0])  # the current language, by name


@pytest.mark.parametrize("language", sorted(READERS))
async def test_daily_limit_refusal_states_used_limit_and_reset_consistently(language: str, fast_retrier: Retrier) -> None:
    """The old text said "…used its 0.1 minutes … (0 minutes)": a 6 s limit and nothing used."""
    async with FakeCoze() as fake:
        plugin = make_plugin(fake, fast_retrier, VOICEBRIDGE_DAILY_MINUTES="0.1")
        harness, chat = Harness(fake, plugin), MemoryChat()
        note = harness.note(make_tone("ogg", 440.0, 8.0), chat=PRIVATE_CHAT, sender=READERS[language], seconds=8)
        await plugin.handle_voice_note(note, chat)
        await plugin.aclose()
        await plugin.service.aclose()
    expected = {
        "en": r"Daily transcription limit: this chat has used 0 seconds of its 6 seconds today, and this recording does "
              r"not fit in what is left\. The limit resets at 00:00 UTC \(in \d+ h \d+ min\)\.",
        "zh": r"每日转写额度：当前聊天今天已用 0 秒（共 6 秒），剩余额度不足以转写这段录音。额度将在 UTC 00:00（\d+ 小时 \d+ 分钟后）重置。",
        "zh-hant": r"每日轉錄額度：這個聊天室今天已用 0 秒（共 6 秒），剩餘額度不足以轉錄這段錄音。額度將在 UTC 00:00（\d+ 小時 \d+ 分鐘後）重設。",
    }
    assert len(chat.texts()) == 1 and re.fullmatch(expected[language], chat.texts()[0]), chat.texts()
    assert harness.fetches == []  # refused on the declared length


async def test_help_and_transcribe_usage_are_platform_correct(fast_retrier: Retrier) -> None:
    telegram = ChatRef("telegram", "31", ChatKind.PRIVATE)
    discord = ChatRef("discord", "31", ChatKind.PRIVATE)
    for language, reader in READERS.items():
        texts = await _answers({}, fast_retrier, [("help", "", telegram), ("transcribe", "", telegram),
                                                  ("help", "", discord), ("transcribe", "", discord)], reader)
        menu = {"en": "Apps → Transcribe", "zh": "应用 → 转写", "zh-hant": "應用程式 → 轉錄"}[language]
        assert menu not in texts[0] and menu not in texts[1], language  # Telegram has no such menu
        assert "/transcribe" in texts[1]
        assert menu in texts[2] and menu in texts[3], language


async def test_traditional_chinese_readers_get_traditional_transcript_attribution_and_errors(fast_retrier: Retrier) -> None:
    async with FakeCoze() as fake:
        plugin = make_plugin(fake, fast_retrier)
        harness, chat = Harness(fake, plugin), MemoryChat()
        reader = Person("33", "Chen", "zh-hant")
        await plugin.handle_voice_note(harness.note(make_tone("ogg", 440.0, 2.0), chat=GROUP, sender=reader), chat)
        await plugin.handle_voice_note(harness.note(b"not audio at all", chat=GROUP, sender=reader, key="junk",
                                                    message_id="8"), chat)
        await plugin.aclose()
        await plugin.service.aclose()
    assert chat.texts()[0] == "🎤 Chen：tone 440 hz 2.0 s"
    assert chat.texts()[1] == AudioError(AudioProblem.UNDECODABLE, "").user_message("zh-TW")
