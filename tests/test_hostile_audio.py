"""Audio a hostile sender would try (issue 12): decompression bombs, playlists and concat lists
dressed as MP3s, and tokens a child process could read. Both decoders face every case: PyAV in
process (the default) and the ffmpeg CLI (the fallback)."""

from __future__ import annotations

import asyncio
import os
import resource
import stat
import time
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from voicebridge.speech.audio import DECODE_SLACK_SECONDS, AudioConverter
from voicebridge.speech.errors import AudioError, AudioProblem
from voicebridge.speech.models import AudioClip, AudioFormat
from voicebridge.voice_notes.model import ChatKind, ChatRef
from tests.audio_tools import FFMPEG, make_tone, silent_flac
from tests.fakes.coze import FakeCoze
from tests.test_plugin import Harness, MemoryChat, make_plugin

TEN_HOURS = 36_000.0
LIMIT = 1800.0  # VOICEBRIDGE_MAX_DURATION's default
# The bound: a file that decodes to hours is refused within this long, measured as CPU
# time (this process's threads and the ffmpeg children): on a quiet machine the wall time, and the
# same on a loaded one, where the wall time is that times the queue for a core.
REFUSAL_CPU_SECONDS = 30.0
# Only against a hang: a deadline on the wall clock that no load reaches.
HANG_DEADLINE_SECONDS = 600.0
BACKENDS = ["pyav", "ffmpeg-cli"]


@pytest.fixture(params=BACKENDS)
def converter(request: pytest.FixtureRequest) -> Iterator[AudioConverter]:
    converter = AudioConverter(in_process=request.param == "pyav")
    yield converter
    converter.close()


# Building the ten-hour bombs costs seconds of CPU: under pytest-xdist (scripts/test) the module's
# tests run on one worker, which builds them once (--dist loadgroup).
pytestmark = pytest.mark.xdist_group("hostile_audio")


@dataclass
class CpuUsed:
    seconds: float = 0.0


@contextmanager
def cpu_used() -> Iterator[CpuUsed]:
    """CPU seconds spent in the block by this process (every thread) and by the children it reaped."""
    def now() -> float:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + children.ru_utime + children.ru_stime

    used = CpuUsed()
    started = now()
    try:
        yield used
    finally:
        used.seconds = now() - started


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    """Ten hours of silence, a few MB each: FLAC stating its length, FLAC stating none (0 is
    allowed: "unknown"), FLAC claiming one second, and the same audio in Matroska (no duration
    stated, and a container whose packet times are not trusted: it must be decoded to measure)."""
    hidden = silent_flac(TEN_HOURS, stated_seconds=0)
    matroska = subprocess.run([FFMPEG, "-v", "error", "-f", "flac", "-i", "pipe:0", "-c", "copy", "-f", "matroska", "pipe:1"],
                              input=hidden, check=True, capture_output=True).stdout
    return {"flac stating 10 h": silent_flac(TEN_HOURS), "flac stating nothing": hidden,
            "flac claiming 1 s": silent_flac(TEN_HOURS, stated_seconds=1.0), "matroska stating nothing": matroska}


def test_the_bombs_are_small_and_really_hold_ten_hours(bombs: dict[str, bytes]) -> None:
    for data in bombs.values():
        assert len(data) < 5_000_000
    # ffprobe's own count of the hidden one's frames (4096 samples at 16 kHz each), without our code.
    packets = subprocess.run(["ffprobe", "-v", "error", "-count_packets", "-select_streams", "a:0", "-show_entries",
                              "stream=nb_read_packets", "-of", "csv=p=0", "-f", "flac", "pipe:0"],
                             input=bombs["flac stating nothing"], capture_output=True, check=True).stdout
    assert int(packets) * 4096 / 16000 == pytest.approx(TEN_HOURS, abs=1)


async def test_a_file_stating_ten_hours_is_refused_before_anything_is_decoded(converter: AudioConverter,
                                                                             bombs: dict[str, bytes]) -> None:
    clip = AudioClip(data=bombs["flac stating 10 h"])
    with pytest.raises(AudioError) as caught:
        async with converter.pcm(clip, 16000, max_seconds=LIMIT):
            pytest.fail("a decode started")
    assert caught.value.problem is AudioProblem.TOO_LONG
    with pytest.raises(AudioError) as caught:
        await converter.inspect(clip, LIMIT)
    assert caught.value.problem is AudioProblem.TOO_LONG


@pytest.mark.parametrize("bomb", ["flac stating nothing", "flac claiming 1 s", "matroska stating nothing"])
async def test_a_bomb_hiding_its_length_is_refused_after_the_limit(converter: AudioConverter, bombs: dict[str, bytes],
                                                                  bomb: str) -> None:
    clip = AudioClip(data=bombs[bomb])
    with cpu_used() as cpu:
        async with asyncio.timeout(HANG_DEADLINE_SECONDS):
            with pytest.raises(AudioError) as caught:
                await converter.inspect(clip, LIMIT)
            assert caught.value.problem is AudioProblem.TOO_LONG
            received = 0
            with pytest.raises(AudioError) as caught:
                async with converter.pcm(clip, 16000, chunk_seconds=1.0, max_seconds=LIMIT) as chunks:
                    async for chunk in chunks:
                        received += len(chunk)
    assert caught.value.problem is AudioProblem.TOO_LONG
    assert cpu.seconds < REFUSAL_CPU_SECONDS
    assert received <= (LIMIT + DECODE_SLACK_SECONDS) * 16000 * 2  # never more than the limit came out


async def test_bombs_cannot_hold_the_decoder_while_a_short_note_waits(bombs: dict[str, bytes]) -> None:
    """One decoding worker, two bombs being measured (each needs ~1800 slices of work), then a
    one-second note: it is decoded in a few slices, long before either bomb is refused."""
    converter = AudioConverter(max_processes=1, in_process=True)
    bomb_tasks = [asyncio.create_task(converter.inspect(AudioClip(data=bombs["matroska stating nothing"]), LIMIT))
                  for _ in range(2)]
    note = AudioClip(data=make_tone("ogg", 440.0, 1.0))
    await asyncio.sleep(0)  # the bombs hold the queue first
    facts = await converter.inspect(note, LIMIT)
    pcm = await converter.decode(note, 16000, max_seconds=LIMIT)
    assert facts.seconds == pytest.approx(1.0, abs=0.05) and len(pcm) == pytest.approx(32000, abs=400)
    assert not any(task.done() for task in bomb_tasks), "a bomb finished before the short note: it held the decoder"
    for outcome in await asyncio.gather(*bomb_tasks, return_exceptions=True):
        assert isinstance(outcome, AudioError) and outcome.problem is AudioProblem.TOO_LONG
    converter.close()


@pytest.mark.parametrize("asr", ["coze", "coze-stream"])
async def test_two_bombs_are_refused_while_a_note_from_another_chat_is_answered(fast_retrier, bombs: dict[str, bytes],
                                                                               asr: str) -> None:
    async with FakeCoze() as fake:
        plugin = make_plugin(fake, fast_retrier, VOICEBRIDGE_ASR=asr)
        harness = Harness(fake, plugin)
        chats = {name: MemoryChat() for name in ("bomb 1", "bomb 2", "note")}
        answered: list[str] = []

        async def send(name: str, data: bytes) -> None:
            chat_ref = ChatRef("telegram", name, ChatKind.PRIVATE)
            await plugin.handle_voice_note(harness.note(data, chat=chat_ref, key=name), chats[name])
            answered.append(name)

        bomb = bombs["matroska stating nothing"]
        with cpu_used() as cpu:
            async with asyncio.timeout(HANG_DEADLINE_SECONDS):
                await asyncio.gather(send("bomb 1", bomb), send("bomb 2", bomb), send("note", make_tone("ogg", 440.0, 1.0)))
        await plugin.aclose()
        await plugin.service.aclose()
    assert answered[0] == "note"
    assert chats["note"].visible_texts() == ["tone 440 hz 1.0 s"]
    for name in ("bomb 1", "bomb 2"):
        assert chats[name].visible_texts() == ["This recording is longer than I accept."]
    assert len(fake.rest_calls) + len(fake.ws_sessions) == 1  # the note only
    assert cpu.seconds < 2 * REFUSAL_CPU_SECONDS  # each bomb within the bound (they decode side by side)


# ----------------------------------------------------------------------------- files naming other files


class OpenWatch:
    """A FIFO where the secret would be: anything opening it to read blocks until a writer comes,
    so a poller that finds a reader waiting has caught the decoder reading a file it was never
    given (and lets it go on, so the decode does not hang)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)
        self.opened = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            try:
                descriptor = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: nobody has it open for reading
                continue
            self.opened = True
            os.write(descriptor, make_tone("mp3", 700.0, 1.0))
            os.close(descriptor)

    def __enter__(self) -> OpenWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def hostile_lists(target: Path) -> dict[str, bytes]:
    playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{target}\n#EXT-X-ENDLIST\n".encode()
    return {
        "hls playlist": playlist,
        # An ID3 tag in front makes it sniff as MP3: the MP3 demuxer still opens nothing else.
        "hls playlist behind an id3 tag": b"ID3\x04\x00\x00\x00\x00\x00\x00" + playlist,
        "concat list": f"ffconcat version 1.0\nfile '{target}'\n".encode(),
        "concat list behind an id3 tag": b"ID3\x04\x00\x00\x00\x00\x00\x00" + f"ffconcat version 1.0\nfile '{target}'\n".encode(),
    }


@pytest.mark.parametrize("case", list(hostile_lists(Path("/x"))))
async def test_playlists_and_concat_lists_are_refused_without_reading_what_they_name(converter: AudioConverter, tmp_path: Path,
                                                                                     case: str) -> None:
    secret = tmp_path / "secret.mp3"
    with OpenWatch(secret) as watch:
        data = hostile_lists(secret)[case]
        for clip in (AudioClip(data=data, filename="song.mp3", mime_type="audio/mpeg"),
                     AudioClip.from_path(_write(tmp_path / "song.mp3", data))):
            with pytest.raises(AudioError) as caught:
                async with asyncio.timeout(HANG_DEADLINE_SECONDS):
                    await converter.decode(clip, 16000, max_seconds=LIMIT)
            assert caught.value.problem in (AudioProblem.UNDECODABLE, AudioProblem.EMPTY)
    assert stat.S_ISFIFO(secret.stat().st_mode)
    assert not watch.opened, "the decoder opened the file the list named"


@pytest.mark.parametrize("asr", ["coze", "coze-stream"])
async def test_a_playlist_naming_a_secret_audio_file_is_not_transcribed(fast_retrier, tmp_path: Path, asr: str) -> None:
    secret = _write(tmp_path / "secret.mp3", make_tone("mp3", 700.0, 2.0))
    async with FakeCoze() as fake:
        plugin = make_plugin(fake, fast_retrier, VOICEBRIDGE_ASR=asr)
        chat = MemoryChat()
        for index, data in enumerate(hostile_lists(secret).values()):
            await plugin.handle_voice_note(Harness(fake, plugin).note(data, key=f"list {index}", message_id=str(index)), chat)
        await plugin.aclose()
        await plugin.service.aclose()
    assert chat.visible_texts() == ["This file could not be read as audio. Please send a voice message or a common audio file."] * 4
    assert fake.rest_calls == [] and fake.ws_sessions == []


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ----------------------------------------------------------------------------- what children inherit


@pytest.fixture
def recording_ffmpeg(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An ffmpeg that first writes its environment to a file, then is the real ffmpeg."""
    dump = tmp_path / "environments"
    wrapper = tmp_path / "ffmpeg"
    wrapper.write_text(f"#!/bin/sh\nenv >> {dump}\necho ---- >> {dump}\nexec {FFMPEG} \"$@\"\n")
    wrapper.chmod(0o755)
    yield str(wrapper), dump


async def test_ffmpeg_gets_a_minimal_environment_without_tokens(recording_ffmpeg: tuple[str, Path],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    wrapper, dump = recording_ffmpeg
    secrets = {"COZE_API_TOKEN": "pat_secret_coze", "FEISHU_APP_SECRET": "feishu-secret", "TELEGRAM_BOT_TOKEN": "1:tg-secret",
               "HTTPS_PROXY": "http://user:pass@proxy:3128"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    converter = AudioConverter(ffmpeg=wrapper, in_process=False)
    pcm = await converter.decode(AudioClip(data=make_tone("ogg", 440.0, 1.0)), 16000, max_seconds=LIMIT)
    await converter.encode(pcm, 16000, AudioFormat.OGG_OPUS)
    environments = [block.strip() for block in dump.read_text().split("----") if block.strip()]
    assert len(environments) == 2  # one decode, one encode
    for environment in environments:
        names = {line.split("=", 1)[0] for line in environment.splitlines()}
        assert names <= {"PATH", "LC_ALL", "PWD", "SHLVL", "_"}  # the last three: what sh adds itself
        for value in secrets.values():
            assert value not in environment


async def test_in_process_decoding_starts_no_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asyncio, "create_subprocess_exec", _refuse_spawn)
    converter = AudioConverter(in_process=True)
    clip = AudioClip(data=make_tone("ogg", 440.0, 1.0))
    assert (await converter.inspect(clip, LIMIT)).seconds == pytest.approx(1.0, abs=0.05)
    assert await converter.has_sound(clip, LIMIT)
    assert len(await converter.decode(clip, 16000, max_seconds=LIMIT)) == pytest.approx(32000, abs=400)
    converter.close()


async def _refuse_spawn(*args: object, **kwargs: object) -> None:
    raise AssertionError(f"a process was started: {args[:1]}")
