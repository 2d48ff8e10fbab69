"""Speech settings (voicebridge.speech.config) read from plain values: defaults, provider chains,
credentials, numbers and choices, and a problem naming the variable for every bad value.

Pure unit tests (issue 17: cheap tests for the behaviour mutation testing found unchecked).
"""

from __future__ import annotations

from pathlib import Path

from voicebridge.speech.config import SpeechSettings, choice, number, problem
from tests.fakes.coze import FakeJwtApp

TOKEN = "pat_example_token_123"
APP, PRIVATE_KEY = FakeJwtApp.generate()
JWT = {"COZE_JWT_CLIENT_ID": APP.client_id, "COZE_JWT_PUBLIC_KEY_ID": APP.public_key_id, "COZE_JWT_PRIVATE_KEY": PRIVATE_KEY}
FEISHU = {"FEISHU_APP_ID": "cli_a1", "FEISHU_APP_SECRET": "secret_1"}


def read(**values: str) -> tuple[SpeechSettings, list[str]]:
    problems: list[str] = []
    return SpeechSettings.from_values(values, problems), problems


def test_the_defaults_with_only_a_token() -> None:
    speech, problems = read(COZE_API_TOKEN=f"  {TOKEN} ")
    assert not problems
    assert speech.coze_api_token == TOKEN and speech.has_coze_credentials
    assert (speech.asr_chain, speech.tts_chain, speech.language) == (("coze",), ("coze",), "auto")
    assert (speech.coze_api_base, speech.coze_ws_base, speech.feishu_base_url) == (
        "https://api.coze.cn", "wss://ws.coze.cn", "https://open.feishu.cn")
    assert (speech.feishu_chunk_ms, speech.feishu_max_streams, speech.provider_timeout, speech.feishu_text_mode) == (
        200, 20, 60.0, "auto")
    assert (speech.feishu_app_id, speech.feishu_app_secret, speech.coze_jwt, speech.coze_voice_id) == (None, None, None, None)
    assert speech.secrets() == [TOKEN]


def test_only_feishu_credentials_mean_feishu_recognition_and_no_synthesis() -> None:
    speech, problems = read(**FEISHU)
    assert not problems and not speech.has_coze_credentials
    assert (speech.feishu_app_id, speech.feishu_app_secret) == ("cli_a1", "secret_1")
    assert (speech.asr_chain, speech.tts_chain) == (("feishu",), ())
    assert speech.secrets() == ["secret_1"]


def test_a_jwt_app_alone_is_coze_credentials() -> None:
    speech, problems = read(**JWT)
    assert not problems and speech.coze_api_token is None and speech.has_coze_credentials
    assert speech.coze_jwt is not None and speech.coze_jwt.client_id == APP.client_id
    assert speech.coze_jwt.public_key_id == APP.public_key_id
    assert (speech.asr_chain, speech.tts_chain) == (("coze",), ("coze",))
    assert speech.secrets() == [PRIVATE_KEY.strip()]


def test_a_jwt_app_missing_parts_is_named_and_still_counts_as_coze_for_the_chains() -> None:
    speech, problems = read(COZE_JWT_CLIENT_ID="1")
    assert speech.coze_jwt is None and speech.asr_chain == ("coze",)
    assert problems == [
        "COZE_JWT_PUBLIC_KEY_ID is not set; a Coze JWT app needs COZE_JWT_CLIENT_ID, COZE_JWT_PUBLIC_KEY_ID and its private key",
        "COZE_JWT_PRIVATE_KEY (or COZE_JWT_PRIVATE_KEY_FILE) is not set; a Coze JWT app needs COZE_JWT_CLIENT_ID, "
        "COZE_JWT_PUBLIC_KEY_ID and its private key",
    ]  # and not "COZE_API_TOKEN is not set": the operator meant a JWT app
    key_only, key_problems = read(COZE_JWT_PRIVATE_KEY=PRIVATE_KEY)
    assert key_only.coze_jwt is None and any("COZE_JWT_CLIENT_ID is not set" in text for text in key_problems)


def test_a_one_line_key_with_escaped_newlines_is_the_same_key() -> None:
    one_line = PRIVATE_KEY.strip().replace("\n", "\\n")  # as a .env file holds it
    assert "\n" not in one_line
    speech, problems = read(**{**JWT, "COZE_JWT_PRIVATE_KEY": one_line})
    assert not problems and speech.coze_jwt is not None and speech.coze_jwt.private_key == PRIVATE_KEY.strip()


def test_a_key_file_is_read_and_an_unreadable_one_is_named(tmp_path: Path) -> None:
    key_file = tmp_path / "coze.pem"
    key_file.write_text(PRIVATE_KEY)
    base = {name: value for name, value in JWT.items() if name != "COZE_JWT_PRIVATE_KEY"}
    speech, problems = read(**base, COZE_JWT_PRIVATE_KEY_FILE=str(key_file))
    assert not problems and speech.coze_jwt is not None and speech.coze_jwt.private_key == PRIVATE_KEY.strip()
    key_file.write_bytes(b"\xff\xfe not utf-8")
    _, problems = read(**base, COZE_JWT_PRIVATE_KEY_FILE=str(key_file))
    assert problems and problems[0].startswith("COZE_JWT_PRIVATE_KEY_FILE cannot be read")
    _, problems = read(**base, COZE_JWT_PRIVATE_KEY_FILE=str(tmp_path / "missing.pem"))
    assert problems[0] == f"COZE_JWT_PRIVATE_KEY_FILE cannot be read: No such file or directory (got '{tmp_path / 'missing.pem'}')"
    _, problems = read(**base, COZE_JWT_PRIVATE_KEY_FILE=str(key_file.with_name("bad.pem")), COZE_JWT_PRIVATE_KEY="x")
    assert "COZE_JWT_PRIVATE_KEY and COZE_JWT_PRIVATE_KEY_FILE are both set; keep one" in problems


def test_an_unusable_private_key_is_named_by_the_variable_that_held_it(tmp_path: Path) -> None:
    base = {name: value for name, value in JWT.items() if name != "COZE_JWT_PRIVATE_KEY"}
    _, inline = read(**base, COZE_JWT_PRIVATE_KEY="-----BEGIN nonsense")
    (tmp_path / "bad.pem").write_text("-----BEGIN nonsense")
    _, from_file = read(**base, COZE_JWT_PRIVATE_KEY_FILE=str(tmp_path / "bad.pem"))
    assert inline[0].startswith("COZE_JWT_PRIVATE_KEY is not usable: ")
    assert from_file[0].startswith("COZE_JWT_PRIVATE_KEY_FILE is not usable: ")


def test_a_token_and_a_jwt_app_together_are_refused() -> None:
    _, problems = read(COZE_API_TOKEN=TOKEN, **JWT)
    assert problems == ["COZE_API_TOKEN and a Coze JWT app (COZE_JWT_CLIENT_ID, …) are both set; keep one"]


def test_half_of_the_feishu_credentials_names_the_missing_half() -> None:
    speech, problems = read(FEISHU_APP_ID="cli_a1")
    assert speech.asr_chain == ()  # not Feishu by default: half of its credentials is none
    assert problems == ["FEISHU_APP_SECRET is not set; Feishu needs both FEISHU_APP_ID and FEISHU_APP_SECRET",
                        "no speech recognition configured: set COZE_API_TOKEN (or a Coze JWT app: COZE_JWT_CLIENT_ID, …), "
                        "or FEISHU_APP_ID and FEISHU_APP_SECRET"]
    _, problems = read(FEISHU_APP_SECRET="s", COZE_API_TOKEN=TOKEN)
    assert problems == ["FEISHU_APP_ID is not set; Feishu needs both FEISHU_APP_ID and FEISHU_APP_SECRET"]


def test_no_credentials_at_all_is_one_clear_problem() -> None:
    speech, problems = read()
    assert speech.asr_chain == () and speech.tts_chain == ()
    assert problems == ["no speech recognition configured: set COZE_API_TOKEN (or a Coze JWT app: COZE_JWT_CLIENT_ID, …), "
                        "or FEISHU_APP_ID and FEISHU_APP_SECRET"]


def test_chains_are_read_in_order_lowercased_without_repeats_or_blanks() -> None:
    speech, problems = read(COZE_API_TOKEN=TOKEN, **FEISHU, VOICEBRIDGE_ASR=" Feishu ,coze-stream,, FEISHU,coze",
                            VOICEBRIDGE_TTS="coze-stream , coze")
    assert not problems
    assert speech.asr_chain == ("feishu", "coze-stream", "coze") and speech.tts_chain == ("coze-stream", "coze")


def test_an_unknown_provider_is_named_and_the_known_ones_kept() -> None:
    speech, problems = read(COZE_API_TOKEN=TOKEN, VOICEBRIDGE_ASR="whisper,coze,deepgram")
    assert speech.asr_chain == ("coze",)
    assert problems == ["VOICEBRIDGE_ASR names an unknown provider 'whisper'; use one of coze, coze-stream, feishu"]
    _, problems = read(COZE_API_TOKEN=TOKEN, VOICEBRIDGE_TTS="coze,elevenlabs")
    assert problems == ["VOICEBRIDGE_TTS names an unknown provider 'elevenlabs'; use one of coze, coze-stream"]


def test_providers_named_without_their_credentials_are_problems() -> None:
    _, problems = read(**FEISHU, VOICEBRIDGE_TTS="coze")
    assert problems == ["COZE_API_TOKEN is not set; the Coze speech providers need it (or a Coze JWT app: "
                        "COZE_JWT_CLIENT_ID, COZE_JWT_PRIVATE_KEY, COZE_JWT_PUBLIC_KEY_ID)"]
    _, problems = read(COZE_API_TOKEN=TOKEN, VOICEBRIDGE_ASR="feishu")
    assert problems == ["FEISHU_APP_ID and FEISHU_APP_SECRET must be set to use VOICEBRIDGE_ASR=feishu"]
    _, problems = read(COZE_API_TOKEN=TOKEN, VOICEBRIDGE_ASR="feishu", FEISHU_APP_ID="cli_a1")
    assert problems == ["FEISHU_APP_SECRET is not set; Feishu needs both FEISHU_APP_ID and FEISHU_APP_SECRET",
                        "FEISHU_APP_ID and FEISHU_APP_SECRET must be set to use VOICEBRIDGE_ASR=feishu"]
    speech, problems = read(**FEISHU, VOICEBRIDGE_ASR="feishu")
    assert not problems and speech.tts_chain == ()


def test_an_explicit_chain_is_kept_even_with_both_credentials() -> None:
    speech, problems = read(COZE_API_TOKEN=TOKEN, **FEISHU, VOICEBRIDGE_ASR="feishu")
    assert not problems and speech.asr_chain == ("feishu",) and speech.tts_chain == ("coze",)
    assert read(COZE_API_TOKEN=TOKEN, **FEISHU)[0].asr_chain == ("coze",)  # Coze first when both are there


def test_the_language_must_be_known_and_honoured_by_every_recognition_provider() -> None:
    speech, problems = read(COZE_API_TOKEN=TOKEN, VOICEBRIDGE_ASR="coze-stream", VOICEBRIDGE_LANGUAGE=" ZH ")
    assert not problems and speech.language == "zh"
    speech, problems = read(COZE_API_TOKEN=TOKEN, VOICEBRIDGE_LANGUAGE="klingon")
    assert speech.language == "auto" and len(problems) == 1
    assert problems[0].startswith("VOICEBRIDGE_LANGUAGE must be one of auto, ") and problems[0].endswith("(got 'klingon')")
    speech, problems = read(COZE_API_TOKEN=TOKEN, VOICEBRIDGE_ASR="coze-stream,coze", VOICEBRIDGE_LANGUAGE="en")
    assert speech.language == "en"
    assert problems == ["VOICEBRIDGE_LANGUAGE=en is not recognised by the ASR provider coze (it honours only auto); pick a "
                        "language every provider in VOICEBRIDGE_ASR honours, or auto"]


def test_base_urls_lose_trailing_slashes_and_must_have_the_right_scheme_and_a_host() -> None:
    speech, problems = read(COZE_API_TOKEN=TOKEN, COZE_API_BASE=" http://localhost:8080/PREFIX/ ",
                            COZE_WS_BASE="ws://localhost:8081/", FEISHU_BASE_URL="https://open.larksuite.com/")
    assert not problems
    assert (speech.coze_api_base, speech.coze_ws_base, speech.feishu_base_url) == (
        "http://localhost:8080/PREFIX", "ws://localhost:8081", "https://open.larksuite.com")
    _, problems = read(COZE_API_TOKEN=TOKEN, COZE_API_BASE="https://", COZE_WS_BASE="https://ws.coze.cn",
                       FEISHU_BASE_URL="open.feishu.cn")
    assert problems == [
        "COZE_API_BASE must be a https or http URL such as https://api.coze.cn (got 'https:')",
        "COZE_WS_BASE must be a wss or ws URL such as wss://ws.coze.cn (got 'https://ws.coze.cn')",
        "FEISHU_BASE_URL must be a https or http URL such as https://open.feishu.cn (got 'open.feishu.cn')",
    ]


def test_numbers_are_checked_against_their_bounds() -> None:
    speech, problems = read(COZE_API_TOKEN=TOKEN, FEISHU_CHUNK_MS="20", FEISHU_MAX_STREAMS="1000",
                            VOICEBRIDGE_PROVIDER_TIMEOUT="0.1", COZE_VOICE_ID=" 742 ")
    assert not problems
    assert (speech.feishu_chunk_ms, speech.feishu_max_streams, speech.provider_timeout, speech.coze_voice_id) == (
        20, 1000, 0.1, "742")
    speech, problems = read(COZE_API_TOKEN=TOKEN, FEISHU_CHUNK_MS="19", FEISHU_MAX_STREAMS="0",
                            VOICEBRIDGE_PROVIDER_TIMEOUT="3601")
    assert (speech.feishu_chunk_ms, speech.feishu_max_streams, speech.provider_timeout) == (200, 20, 60.0)
    assert problems == ["FEISHU_CHUNK_MS must be a number from 20 to 1000 (got '19')",
                        "FEISHU_MAX_STREAMS must be a number from 1 to 1000 (got '0')",
                        "VOICEBRIDGE_PROVIDER_TIMEOUT must be a number from 0.1 to 3600 (got '3601')"]


def test_number_and_choice_helpers() -> None:
    problems: list[str] = []
    assert number({"N": " 7.5 "}, "N", 1.0, 0, 10, problems) == 7.5
    assert number({"N": "  "}, "N", None, 0, 10, problems) is None
    assert number({}, "N", 3, 0, 10, problems) == 3
    assert not problems
    for bad in ("nan", "ten", "inf", "-0.5", "10.5"):
        assert number({"N": bad}, "N", 3, 0, 10, problems) == 3
    assert problems == [f"N must be a number from 0 to 10 (got {bad!r})" for bad in ("nan", "ten", "inf", "-0.5", "10.5")]
    problems.clear()
    assert choice({}, "MODE", ("auto", "delta"), problems) == "auto"
    assert choice({"MODE": " Delta "}, "MODE", ("auto", "delta"), problems) == "delta"
    assert not problems
    assert choice({"MODE": "Loud"}, "MODE", ("auto", "delta"), problems) == "auto"
    assert problems == ["MODE must be one of auto, delta (got 'loud')"]
    assert read(COZE_API_TOKEN=TOKEN, FEISHU_TEXT_MODE="cumulative")[0].feishu_text_mode == "cumulative"
    speech, problems = read(COZE_API_TOKEN=TOKEN, FEISHU_TEXT_MODE="words")
    assert speech.feishu_text_mode == "auto"
    assert problems == ["FEISHU_TEXT_MODE must be one of auto, cumulative, delta (got 'words')"]


def test_a_problem_shows_the_value_only_when_there_is_one() -> None:
    assert problem("X", "must be set") == "X must be set"
    assert problem("X", "must be set", "") == "X must be set"
    assert problem("X", "must be a number", "abc") == "X must be a number (got 'abc')"
