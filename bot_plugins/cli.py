"""``voicebridge`` command line: transcribe, speak, voices, doctor.

Every failure ends as one readable line on stderr and a non-zero exit status; tracebacks are
logged only at DEBUG level.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import RunnerSettings
from .logs import configure_logging
from .postgres import display_url
from .speech.audio import find_ffmpeg
from .speech.decoders import child_environment, pyav_available
from .speech.errors import AudioError, ConfigError, SpeechError
from .speech.models import AudioClip, AudioFormat, SynthesizeOptions, TranscribeOptions
from .speech.service import SpeechService
from .voice_notes.store import is_postgres_url

log = logging.getLogger("voicebridge")

EXIT_FAILURE = 1
EXIT_CONFIG = 2
OUTPUT_FORMATS = {".ogg": AudioFormat.OGG_OPUS, ".opus": AudioFormat.OGG_OPUS, ".oga": AudioFormat.OGG_OPUS,
                  ".mp3": AudioFormat.MP3, ".wav": AudioFormat.WAV, ".pcm": AudioFormat.PCM, ".raw": AudioFormat.PCM}


class CliError(Exception):
    """A failure already phrased for the person at the terminal."""


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, metavar="FILE", help="TOML file with configuration variables")
    parser = argparse.ArgumentParser(prog="voicebridge", parents=[common],
                                     description="Voice notes for Telegram and Discord bots: Coze / Feishu speech services.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    transcribe = commands.add_parser("transcribe", parents=[common], help="print the transcript of audio files")
    transcribe.add_argument("files", nargs="+", type=Path, metavar="FILE")
    transcribe.add_argument("--asr", metavar="NAME", help="ASR provider (default: VOICEBRIDGE_ASR)")
    transcribe.add_argument("--language", metavar="L", help="recognition language (default: VOICEBRIDGE_LANGUAGE)")
    transcribe.add_argument("--hot-words", metavar="A,B", help="comma-separated words to favour")
    transcribe.add_argument("--live", action="store_true", help="print partial transcripts to stderr as they arrive")

    speak = commands.add_parser("speak", parents=[common], help="synthesize speech into an audio file")
    speak.add_argument("text")
    speak.add_argument("-o", "--output", type=Path, required=True, metavar="FILE",
                       help="output file; .ogg (voice note), .mp3, .wav or .pcm")
    speak.add_argument("--tts", metavar="NAME", help="TTS provider (default: VOICEBRIDGE_TTS)")
    speak.add_argument("--voice", metavar="ID", help="voice id (default: COZE_VOICE_ID)")
    speak.add_argument("--speed", type=float, default=1.0, help="speaking speed, 0.5 to 2 (default 1)")

    commands.add_parser("voices", parents=[common], help="list the voices available for speech synthesis")

    commands.add_parser("run", parents=[common], help="run the bot until Ctrl+C / SIGTERM")

    doctor = commands.add_parser("doctor", parents=[common], help="check ffmpeg, configuration and providers")
    doctor.add_argument("--network", action="store_true", help="also check that the speech services answer")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "doctor":
            return asyncio.run(doctor(args))
        settings = RunnerSettings.load(args.config)
        if args.command == "run":
            return run(settings)
        configure_logging(settings.log_level or "WARNING", settings.secrets(), settings.log_format)
        return asyncio.run(run_command(args, settings))
    except ConfigError as error:
        print(f"voicebridge: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except CliError as error:
        print(f"voicebridge: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


def run(settings: RunnerSettings) -> int:
    # Imported here: the one-shot commands need no chat-platform frameworks.
    from voicebridge.adapters.runner import StartupError, run_bot

    configure_logging(settings.log_level or "INFO", settings.secrets(), settings.log_format)
    try:
        asyncio.run(run_bot(settings))
    except StartupError as error:
        raise CliError(str(error)) from error
    return 0


async def run_command(args: argparse.Namespace, settings: RunnerSettings) -> int:
    service = SpeechService.from_settings(settings.speech)
    try:
        if args.command == "transcribe":
            return await transcribe_files(service, args)
        if args.command == "speak":
            return await speak(service, args)
        return await list_voices(service)
    except SpeechError as error:
        raise CliError(describe_speech_error(error)) from error
    finally:
        await service.aclose()


def describe_speech_error(error: SpeechError) -> str:
    """The user-facing sentence plus the operator detail (kind, code, logid)."""
    return f"{error.user_message('en')} [{error.kind}: {error}]"


async def transcribe_files(service: SpeechService, args: argparse.Namespace) -> int:
    options = TranscribeOptions(
        language=args.language,
        hot_words=tuple(word.strip() for word in (args.hot_words or "").split(",") if word.strip()),
    )
    status = 0
    for path in args.files:
        prefix = f"{path}: " if len(args.files) > 1 else ""
        if not path.is_file():
            print(f"voicebridge: {path}: no such file", file=sys.stderr)
            status = EXIT_FAILURE
            continue
        try:
            async for transcript in service.stream(AudioClip.from_path(path), options, asr=args.asr):
                if not transcript.final:
                    if args.live:
                        print(f"{prefix}… {transcript.text}", file=sys.stderr, flush=True)
                    continue
                print(f"{prefix}{transcript.text}", flush=True)
        except AudioError as error:
            print(f"voicebridge: {path}: {error.user_message('en')} ({error})", file=sys.stderr)
            status = EXIT_FAILURE
        except SpeechError as error:
            print(f"voicebridge: {path}: {describe_speech_error(error)}", file=sys.stderr)
            status = EXIT_FAILURE
    return status


async def speak(service: SpeechService, args: argparse.Namespace) -> int:
    target = OUTPUT_FORMATS.get(args.output.suffix.lower())
    if target is None:
        raise CliError(f"{args.output}: unknown output type; use one of {', '.join(sorted(OUTPUT_FORMATS))}")
    if not 0.5 <= args.speed <= 2.0:
        raise CliError("--speed must be between 0.5 and 2")
    audio = await service.synthesize(args.text, SynthesizeOptions(voice_id=args.voice, speed=args.speed, format=target), tts=args.tts)
    try:
        await asyncio.to_thread(args.output.write_bytes, audio.data)
    except OSError as error:
        raise CliError(f"{args.output}: cannot write: {error.strerror}") from error
    print(f"{args.output}: {audio.seconds or 0:.1f} s of {target.value}", file=sys.stderr)
    return 0


async def list_voices(service: SpeechService) -> int:
    for voice in await service.voices():
        kind = "system" if voice.is_system else "cloned"
        print(f"{voice.id}\t{voice.name}\t{voice.language_code or '-'}\t{kind}")
    return 0


# ----------------------------------------------------------------------- doctor


def ffmpeg_report() -> tuple[bool, list[str]]:
    ffmpeg = find_ffmpeg()
    if ffmpeg is None:
        return False, ["ffmpeg: NOT FOUND — install it (Debian/Ubuntu: apt-get install ffmpeg)"]
    try:
        # A child process never inherits the bot's tokens (child_environment).
        version = subprocess.run([ffmpeg, "-hide_banner", "-version"], capture_output=True, text=True, timeout=10,
                                 env=child_environment()).stdout
        encoders = subprocess.run([ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=10,
                                  env=child_environment()).stdout
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, [f"ffmpeg: {ffmpeg} does not run: {error}"]
    match = re.search(r"ffmpeg version (\S+)", version)
    lines = [f"ffmpeg: {ffmpeg} (version {match.group(1) if match else 'unknown'})"]
    has_opus = re.search(r"\blibopus\b", encoders) is not None
    lines.append("ffmpeg libopus encoder: " + ("yes" if has_opus else "MISSING — voice replies cannot be encoded"))
    lines.append("decoding: " + ("in process (PyAV)" if pyav_available() else "ffmpeg processes (PyAV not installed: pip install av)"))
    return has_opus, lines


async def doctor(args: argparse.Namespace) -> int:
    healthy, lines = ffmpeg_report()
    for line in lines:
        print(line)
    try:
        settings = RunnerSettings.load(args.config)
    except ConfigError as error:
        print("configuration: PROBLEMS")
        for problem in str(error).split("; "):
            print(f"  - {problem}")
        return EXIT_FAILURE
    print("configuration: ok")
    for name, value in settings_summary(settings):
        print(f"  {name}: {value}")
    speech = settings.speech
    print(f"ASR providers: {' -> '.join(speech.asr_chain) or 'none'}")
    print(f"TTS providers: {' -> '.join(speech.tts_chain) or 'none (voice replies disabled)'}")
    platforms = [name for name, token in (("Telegram", settings.telegram.token), ("Discord", settings.discord.token)) if token]
    print(f"chat platforms: {', '.join(platforms) or 'none (voicebridge run needs TELEGRAM_BOT_TOKEN or DISCORD_BOT_TOKEN)'}")
    if args.network:
        configure_logging("CRITICAL", settings.secrets())
        service = SpeechService.from_settings(speech)
        try:
            for probe, failure in (await service.check()).items():
                print(f"network: {probe}: " + ("ok" if failure is None else f"FAILED — {describe_speech_error(failure)}"))
                healthy = healthy and failure is None
        finally:
            await service.aclose()
    return 0 if healthy else EXIT_FAILURE


def settings_summary(settings: RunnerSettings) -> list[tuple[str, str]]:
    """What is configured, secrets shown only as set / not set."""
    speech = settings.speech

    def secret(value: str | None) -> str:
        return f"set ({len(value)} characters)" if value else "not set"

    return [
        ("TELEGRAM_BOT_TOKEN", secret(settings.telegram.token)),
        ("TELEGRAM_WEBHOOK_URL", settings.telegram.webhook_url or "not set (long polling)"),
        ("DISCORD_BOT_TOKEN", secret(settings.discord.token)),
        ("COZE_API_TOKEN", secret(speech.coze_api_token)),
        ("COZE_API_BASE", speech.coze_api_base),
        ("COZE_WS_BASE", speech.coze_ws_base),
        ("COZE_VOICE_ID", speech.coze_voice_id or "not set (the first listed voice is used)"),
        ("FEISHU_APP_ID", speech.feishu_app_id or "not set"),
        ("FEISHU_APP_SECRET", secret(speech.feishu_app_secret)),
        ("FEISHU_BASE_URL", speech.feishu_base_url),
        ("VOICEBRIDGE_LANGUAGE", speech.language),
        ("VOICEBRIDGE_LOG_LEVEL", settings.log_level or "not set (INFO for the bot, WARNING for tools)"),
        ("VOICEBRIDGE_DB", display_url(settings.plugin.database) if is_postgres_url(settings.plugin.database)
         else settings.plugin.database),
        ("VOICEBRIDGE_METRICS_PORT", str(settings.metrics_port) if settings.metrics_port else "not set"),
    ]


if __name__ == "__main__":
    sys.exit(main())
