"""Recognition languages: one neutral code set, what each provider honours, and how configuration,
/language and /settings hold to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicebridge.config import Settings
from voicebridge.speech.errors import ConfigError, ErrorKind, SpeechError
from voicebridge.speech.languages import LANGUAGE_CODES, honoured_by_all, language_code
from voicebridge.speech.models import AudioClip, TranscribeOptions
from voicebridge.speech.registry import TRANSCRIBERS
from voicebridge.speech.retry import Retrier
from voicebridge.speech.service import SpeechService
from voicebridge.voice_notes.messages import LANGUAGE_NAMES
from voicebridge.voice_notes.store import SQLiteStore
from tests.audio_tools import make_tone
from tests.fakes.coze import DEFAULT_TOKEN, FakeCoze
from tests.test_plugin import BOB, PRIVATE, Harness, MemoryChat, make_plugin

COZE = {"COZE_API_TOKEN": DEFAULT_TOKEN}
FEISHU = {"FEISHU_APP_ID": "cli_example", "FEISHU_APP_SECRET": "secret_example"}
TONE = make_tone("ogg", 440.0, 1.0)

# What each provider really honours: Coze file ASR and Feishu take no language parameter.
HONOURED = {
    "coze": {"auto"},
    "feishu": {"auto"},
    "coze-stream": set(LANGUAGE_CODES),
}


def test_each_provider_declares_what_it_honours() -> None:
    assert {name: set(capabilities.languages) for name, capabilities in TRANSCRIBERS.items()} == HONOURED


@pytest.mark.parametrize("language", ["auto", "zh", "yue", "en", "ja"])
@pytest.mark.parametrize("chain", ["coze", "coze-stream", "feishu", "coze-stream,coze", "coze-stream,feishu"])
def test_configuration_accepts_a_language_only_if_every_provider_of_the_chain_honours_it(chain: str, language: str) -> None:
    values = {**COZE, **FEISHU, "VOICEBRIDGE_ASR": chain, "VOICEBRIDGE_LANGUAGE": language}
    refusing = [name for name in chain.split(",") if language not in HONOURED[name]]
    if not refusing:
        assert Settings.from_values(values).speech.language == language
        return
    with pytest.raises(ConfigError) as caught:
        Settings.from_values(values)
    assert f"VOICEBRIDGE_LANGUAGE={language} is not recognised by the ASR provider {refusing[0]} " \
           "(it honours only auto)" in str(caught.value)


@pytest.mark.parametrize(("old", "new"), [("common", "auto"), ("cant", "yue"), ("sc", "zh-sichuan"), ("ZH", "zh"),
                                          ("zh_sichuan", "zh-sichuan"), ("klingon", None)])
def test_values_of_older_versions_map_to_the_neutral_codes(old: str, new: str | None) -> None:
    assert language_code(old) == new
    if new is not None:
        values = {**COZE, "VOICEBRIDGE_ASR": "coze-stream", "VOICEBRIDGE_LANGUAGE": old}
        assert Settings.from_values(values).speech.language == new
        assert Settings.from_values(values).plugin.language == new


def test_every_code_has_a_name_in_english_and_both_chinese_scripts() -> None:
    assert set(LANGUAGE_NAMES) == set(LANGUAGE_CODES)
    assert all(set(names) == {"en", "zh", "zh-hant"} and all(names.values()) for names in LANGUAGE_NAMES.values())


async def test_the_neutral_code_reaches_coze_as_its_own_parameter(fast_retrier: Retrier) -> None:
    async with FakeCoze() as fake:
        settings = Settings.from_values({**COZE, "COZE_API_BASE": fake.base_url, "COZE_WS_BASE": fake.ws_base_url,
                                         "VOICEBRIDGE_ASR": "coze-stream", "VOICEBRIDGE_LANGUAGE": "cant"})
        service = SpeechService.from_settings(settings.speech, retrier=fast_retrier)
        await service.transcribe(AudioClip(data=TONE))  # the default, given in an older spelling
        await service.transcribe(AudioClip(data=TONE), TranscribeOptions(language="zh-sichuan"))
        await service.transcribe(AudioClip(data=TONE), TranscribeOptions(language="auto"))
        with pytest.raises(SpeechError) as refused:
            await service.transcribe(AudioClip(data=TONE), TranscribeOptions(language="ja"), asr="coze")
        await service.aclose()
    assert [session.asr_config["user_language"] for session in fake.sessions_to("ws_transcriptions")
            if session.asr_config] == ["cant", "sc", "common"]
    assert refused.value.kind is ErrorKind.INVALID_INPUT and "honours only auto" in str(refused.value)
    assert fake.calls_to("transcriptions") == []


async def test_language_command_refuses_what_a_provider_of_the_chain_cannot_recognise(fast_retrier: Retrier) -> None:
    async with FakeCoze() as fake:
        plugin = make_plugin(fake, fast_retrier, VOICEBRIDGE_ASR="coze-stream,coze")
        harness, chat = Harness(fake, plugin), MemoryChat()
        await plugin.handle_command(harness.command("language", "ja"), chat)
        await plugin.handle_command(harness.command("language", "ja", sender=BOB), chat)  # Bob reads Chinese
        await plugin.handle_command(harness.command("language", "auto"), chat)
        await plugin.handle_command(harness.command("language", "klingon"), chat)
        stored = await plugin.store.chat_settings(PRIVATE.platform, PRIVATE.id)
        await plugin.aclose()
        await plugin.service.aclose()
    assert chat.texts() == [
        "Japanese (ja) is not available here: the speech service Coze (扣子) recognises only automatic (auto). "
        "Choose one of: automatic (auto).",
        "这里无法使用日语 (ja)：语音服务 Coze (扣子) 只能识别自动识别 (auto)。可选：自动识别 (auto)。",
        "Done: recognition language is now automatic (auto).",
        "Use /language CODE with one of: automatic (auto).",
    ]
    assert stored == {"language": "auto"}


async def test_language_names_follow_the_reader_and_are_sent_in_the_providers_terms(fast_retrier: Retrier) -> None:
    async with FakeCoze() as fake:
        plugin = make_plugin(fake, fast_retrier, VOICEBRIDGE_ASR="coze-stream")
        harness, chat = Harness(fake, plugin), MemoryChat()
        await plugin.handle_command(harness.command("language", "yue", sender=BOB), chat)
        await plugin.handle_command(harness.command("settings", sender=BOB), chat)
        await plugin.handle_voice_note(harness.note(TONE), chat)
        await plugin.aclose()
        await plugin.service.aclose()
    assert chat.texts()[0] == "已设置：识别语言为粤语 (yue)。"
    assert "识别语言：粤语 (yue)" in chat.texts()[1].splitlines()
    (session,) = fake.sessions_to("ws_transcriptions")
    assert session.asr_config is not None and session.asr_config["user_language"] == "cant"


async def test_stored_languages_of_older_versions_and_ones_no_longer_recognised(fast_retrier: Retrier, tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    store = SQLiteStore(db)
    await store.set_chat_setting(PRIVATE.platform, PRIVATE.id, "language", "cant")  # as older versions stored it
    await store.aclose()
    async with FakeCoze() as fake:
        streaming = make_plugin(fake, fast_retrier, db, VOICEBRIDGE_ASR="coze-stream")
        assert (await streaming.chat_settings(PRIVATE)).language == "yue"
        await streaming.aclose()
        await streaming.service.aclose()

        # The operator moved to Coze file ASR, which takes no language: the chat is told, not fooled.
        files_only = make_plugin(fake, fast_retrier, db)
        harness, chat = Harness(fake, files_only), MemoryChat()
        settings = await files_only.chat_settings(PRIVATE)
        await files_only.handle_command(harness.command("settings"), chat)
        await files_only.handle_voice_note(harness.note(TONE), chat)
        await files_only.aclose()
        await files_only.service.aclose()
    assert (settings.language, settings.unavailable_language) == ("auto", "yue")
    assert ("Language: automatic (auto) (this chat chose Cantonese (yue), which the current speech service cannot "
            "recognise)") in chat.texts()[0].splitlines()
    assert chat.texts()[1] == "tone 440 hz 1.0 s"


def test_the_languages_offered_are_those_every_provider_in_the_chain_honours() -> None:
    # In display order, auto always; whatever the order of the providers.
    chain = {"first": ["zh", "ja"], "second": ["en", "ja", "zh"]}
    assert honoured_by_all(chain) == ("auto", "zh", "ja")
    assert honoured_by_all(dict(reversed(chain.items()))) == ("auto", "zh", "ja")
    assert honoured_by_all({}) == LANGUAGE_CODES
