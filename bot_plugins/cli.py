"""``voicebridge`` command line: transcribe, speak, voices, doctor, and the bot: run, ingress, worker.

Every failure ends as one readable line on stderr and a non-zero exit status; tracebacks are
logged only at DEBUG level.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from . import preflight
from .config import RunnerSettings, load_values
from .liveness import ConnectionLost
from .logs import configure_logging
from .postgres import display_url
from .speech import health
from .speech.decoders import pyav_available
from .speech.errors import AudioError, ConfigError, SpeechError
from .speech.models import AudioClip, AudioFormat, SynthesizeOptions, TranscribeOptions
from .speech.service import SpeechService
from .voice_notes.store import is_postgres_url

log = logging.getLogger("voicebridge")

SERVICES = ("run", "ingress", "worker")  # long-running commands
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
    commands.add_parser("ingress", parents=[common],
                        help="receive updates and queue them as jobs (needs a PostgreSQL VOICEBRIDGE_DB)")
    commands.add_parser("worker", parents=[common],
                        help="take queued jobs, transcribe and answer them (needs a PostgreSQL VOICEBRIDGE_DB)")

    doctor = commands.add_parser("doctor", parents=[common], help="check ffmpeg, configuration and providers")
    doctor.add_argument("--network", action="store_true", help="also check that the speech services answer")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "doctor":
            return asyncio.run(doctor(args))
        if args.command in SERVICES:
            return run(args)
        settings = RunnerSettings.load(args.config)
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


def run(args: argparse.Namespace) -> int:
    """Start the bot only when everything it needs is there (preflight.py): a bot that says it
    runs and then drops every note is worse than one that does not start."""
    # Imported here: the one-shot commands need no chat-platform frameworks.
    from voicebridge.adapters.runner import StartupError, run_bot

    values = load_values(args.config)
    database = (values.get("VOICEBRIDGE_DB") or "").strip()
    if args.command != "run" and not is_postgres_url(database):
        raise ConfigError(f"voicebridge {args.command} needs a PostgreSQL VOICEBRIDGE_DB (postgresql://user@host:5432/dbname), "
                          f"the database ingress and workers share; it is {database or 'unset'!r}. "
                          "One process with SQLite is `voicebridge run`")
    settings, problems = asyncio.run(preflight.startup_problems(values))
    if settings is None or problems:
        print(preflight.startup_report(problems), file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_level or "INFO", settings.secrets(), settings.log_format)
    try:
        if args.command == "run":
            asyncio.run(run_bot(settings))
        else:
            asyncio.run(_until_signalled(args.command, settings))
    except StartupError as error:
        raise CliError(str(error)) from error
    except ConnectionLost as error:
        raise CliError(f"stopped: {error}") from error
    return 0


async def _until_signalled(command: str, settings: RunnerSettings) -> None:
    from voicebridge.adapters.ingress import serve_ingress
    from voicebridge.adapters.worker import serve_worker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await (serve_ingress if command == "ingress" else serve_worker)(settings, stop)


async def run_command(args: argparse.Namespace, settings: RunnerSettings) -> int:
    # Provider health reports (a refused token, say) would repeat a one-shot command's own error line.
    logging.getLogger(health.__name__).setLevel(logging.CRITICAL)
    service = SpeechService.from_settings(settings.speech)
    try:
        if args.command == "transcribe":
            return await transcribe_files(service, args)
        if args.command == "speak":
            return await speak(service, args)
        return await list_voices(service)
    except SpeechError as error:
        raise CliError(describe_speech_error(service, error)) from error
    finally:
        await service.aclose()


def describe_speech_error(service: SpeechService, error: SpeechError) -> str:
    """For refused credentials, which variable to fix; otherwise the user-facing sentence plus the
    operator detail (kind, code, logid)."""
    if error.kind in health.CREDENTIAL_KINDS and error.provider:
        return service.credentials.describe(error.provider, error)
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
            print(f"voicebridge: {path}: {describe_speech_error(service, error)}", file=sys.stderr)
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


async def doctor(args: argparse.Namespace) -> int:
    """What ``run`` would need, checked the same way (preflight.py); non-zero whenever ``run``
    would refuse to start, or (``--network``) a service refuses its credentials."""
    values = load_values(args.config)
    ffmpeg = preflight.ffmpeg_status()
    if ffmpeg.path is None:
        print("ffmpeg: NOT FOUND")
    else:
        print(f"ffmpeg: {ffmpeg.path} (version {ffmpeg.version or 'unknown'})")
        print("ffmpeg libopus encoder: " + ("yes" if ffmpeg.has_opus else "MISSING — voice replies cannot be encoded"))
    print("decoding: " + ("in process (PyAV)" if pyav_available() else "ffmpeg processes (PyAV not installed: pip install av)"))
    settings, problems = await preflight.startup_problems(values)
    print("configuration: ok" if not problems else "configuration: PROBLEMS (every variable is explained in .env.example)")
    for problem in problems:
        print(f"  - {problem}")
    if settings is None:
        return EXIT_FAILURE
    for name, value in settings_summary(settings):
        print(f"  {name}: {value}")
    speech = settings.speech
    print(f"ASR providers: {' -> '.join(speech.asr_chain) or 'none'}")
    print(f"TTS providers: {' -> '.join(speech.tts_chain) or 'none (voice replies disabled)'}")
    platforms = [name for name, token in (("Telegram", settings.telegram.token), ("Discord", settings.discord.token)) if token]
    print(f"chat platforms: {', '.join(platforms) or 'none'}")
    healthy = not problems
    if args.network:
        configure_logging("CRITICAL", settings.secrets())
        for check in await preflight.network_checks(settings):
            print(f"network: {check.name}: " + (f"ok {check.detail}".rstrip() if check.problem is None else
                                                 f"FAILED — {check.problem}"))
            healthy = healthy and check.problem is None
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
        ("COZE_JWT_CLIENT_ID", speech.coze_jwt.client_id if speech.coze_jwt else "not set"),
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
        ("VOICEBRIDGE_LIVENESS_TIMEOUT", f"{settings.liveness_timeout:g}"),
    ]


if __name__ == "__main__":
    sys.exit(main())
