"""Audio conversion, checked on the audio itself: duration, sample rate, frequency."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from voicebridge.speech.audio import (
    MAX_WAVEFORM_POINTS,
    AudioConverter,
    require_sound,
)
from voicebridge.speech.errors import AudioError, AudioProblem
from voicebridge.speech.models import AudioClip, AudioFormat
from tests.audio_tools import analyse, decode, make_silence, make_tone, pcm_samples, probe

CONTAINERS = ["ogg", "mp3", "m4a", "wav", "webm", "flac", "mp4"]
DURATION_TOLERANCE = 0.020  # seconds


@pytest.fixture(scope="module")
def tones() -> dict[str, bytes]:
    """A 1.5 s, 440 Hz tone in every input container (video notes are MP4 with a video track)."""
    return {container: make_tone(container, 440.0, 1.5) for container in CONTAINERS}


@pytest.fixture(params=["pyav", "ffmpeg-cli"])
def converter(request: pytest.FixtureRequest) -> AudioConverter:
    """Both decoders: PyAV in process (the default) and the ffmpeg CLI (the fallback)."""
    return AudioConverter(in_process=request.param == "pyav")


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("rate", [8000, 16000, 24000])
async def test_decoding_keeps_frequency_and_duration(converter: AudioConverter, tones: dict[str, bytes], container: str, rate: int) -> None:
    pcm = await converter.decode(AudioClip(data=tones[container]), rate)
    report = analyse(pcm_samples(pcm), rate)
    assert report.seconds == pytest.approx(1.5, abs=DURATION_TOLERANCE)
    assert report.frequency == pytest.approx(440.0, rel=0.01)


@pytest.mark.parametrize("container", CONTAINERS)
async def test_analysis_measures_true_duration_and_container(converter: AudioConverter, tones: dict[str, bytes], container: str) -> None:
    info = await converter.analyse(AudioClip(data=tones[container], mime_type="application/octet-stream"))
    assert info.seconds == pytest.approx(1.5, abs=DURATION_TOLERANCE)
    assert info.container == container
    assert not info.silent


async def test_stereo_and_high_pitch_survive_downmix(converter: AudioConverter) -> None:
    data = make_tone("wav", 1000.0, 2.0, sample_rate=44100, channels=2)
    pcm = await converter.decode(AudioClip(data=data), 16000)
    report = analyse(pcm_samples(pcm), 16000)
    assert report.seconds == pytest.approx(2.0, abs=DURATION_TOLERANCE)
    assert report.frequency == pytest.approx(1000.0, rel=0.01)


async def test_file_on_disk_decodes_like_bytes(converter: AudioConverter, tones: dict[str, bytes], tmp_path) -> None:
    path = tmp_path / "note.m4a"
    path.write_bytes(tones["m4a"])
    from_path = await converter.decode(AudioClip.from_path(path), 16000)
    from_bytes = await converter.decode(AudioClip(data=tones["m4a"]), 16000)
    assert from_path == from_bytes


@pytest.mark.parametrize("rate", [16000, 24000])
async def test_voice_note_encoding_is_48k_mono_opus_and_keeps_the_tone(converter: AudioConverter, rate: int) -> None:
    pcm = await converter.decode(AudioClip(data=make_tone("wav", 300.0, 2.5)), rate)
    ogg = await converter.encode(pcm, rate, AudioFormat.OGG_OPUS)
    assert ogg.startswith(b"OggS")
    stream = probe(ogg)
    assert (stream["codec_name"], stream["sample_rate"], stream["channels"]) == ("opus", "48000", 1)
    samples, decoded_rate = decode(ogg)
    report = analyse(samples, decoded_rate)
    assert report.seconds == pytest.approx(2.5, abs=DURATION_TOLERANCE)
    assert report.frequency == pytest.approx(300.0, rel=0.01)


async def test_wav_and_mp3_encoding_keep_the_tone(converter: AudioConverter) -> None:
    pcm = await converter.decode(AudioClip(data=make_tone("wav", 500.0, 1.0)), 24000)
    wav = await converter.encode(pcm, 24000, AudioFormat.WAV)
    samples, rate = decode(wav)
    assert rate == 24000
    assert analyse(samples, rate).frequency == pytest.approx(500.0, rel=0.01)
    mp3 = await converter.encode(pcm, 24000, AudioFormat.MP3)
    samples, rate = decode(mp3)
    assert analyse(samples, rate).frequency == pytest.approx(500.0, rel=0.01)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", AudioProblem.EMPTY),
        (b"this is not audio at all " * 40, AudioProblem.UNDECODABLE),
        (b"OggS" + b"\x00" * 500, AudioProblem.UNDECODABLE),  # the right magic, nothing behind it
    ],
)
async def test_unusable_input_raises_a_typed_error(converter: AudioConverter, data: bytes, problem: AudioProblem) -> None:
    with pytest.raises(AudioError) as caught:
        await converter.analyse(AudioClip(data=data))
    assert caught.value.problem is problem
    assert "/dev/fd" not in str(caught.value)
    assert caught.value.user_message("en") and caught.value.user_message("zh-hans") != caught.value.user_message("en")


async def test_video_without_sound_is_undecodable(converter: AudioConverter) -> None:
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".mp4") as out:
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "color=c=red:s=32x32:d=1",
                        "-c:v", "mpeg4", out.name], check=True)
        data = out.read()
    with pytest.raises(AudioError) as caught:
        await converter.analyse(AudioClip(data=data))
    assert caught.value.problem is AudioProblem.UNDECODABLE


@pytest.mark.parametrize("container", ["ogg", "mp3", "wav"])
async def test_truncated_file_still_yields_its_sound(converter: AudioConverter, container: str) -> None:
    data = make_tone(container, 440.0, 10.0)
    info = await converter.analyse(AudioClip(data=data[: len(data) // 2]))
    assert info.seconds == pytest.approx(5.0, abs=0.1)


async def test_silence_is_detected_and_the_stream_gate_refuses_it(converter: AudioConverter) -> None:
    silent = AudioClip(data=make_silence("ogg", 2.0))
    assert (await converter.analyse(silent)).silent
    async with converter.pcm(silent, 16000) as chunks:
        with pytest.raises(AudioError) as caught:
            await require_sound(chunks, 16000)
    assert caught.value.problem is AudioProblem.SILENT


async def test_stream_gate_passes_every_sample_once_sound_starts(converter: AudioConverter) -> None:
    silence = await converter.decode(AudioClip(data=make_silence("wav", 1.0)), 16000)
    tone = await converter.decode(AudioClip(data=make_tone("wav", 440.0, 1.0)), 16000)

    async def chunks():
        for start in range(0, len(silence + tone), 3200):
            yield (silence + tone)[start:start + 3200]

    passed = b"".join([chunk async for chunk in await require_sound(chunks(), 16000)])
    assert passed == silence + tone


async def test_waveform_has_ten_points_a_second_up_to_256(converter: AudioConverter) -> None:
    short = await converter.analyse(AudioClip(data=make_tone("ogg", 440.0, 5.0)))
    assert len(short.waveform()) == 50
    long = await converter.analyse(AudioClip(data=make_tone("ogg", 440.0, 40.0)))
    assert len(long.waveform()) == MAX_WAVEFORM_POINTS


async def test_waveform_follows_loudness(converter: AudioConverter) -> None:
    loud = await converter.decode(AudioClip(data=make_tone("wav", 440.0, 1.0, amplitude=0.8)), 16000)
    quiet = await converter.decode(AudioClip(data=make_tone("wav", 440.0, 1.0, amplitude=0.1)), 16000)
    wav = await converter.encode(loud + quiet, 16000, AudioFormat.WAV)
    waveform = (await converter.analyse(AudioClip(data=wav))).waveform()
    assert len(waveform) == 20
    assert min(waveform[1:9]) > 200  # the loud second
    assert max(waveform[11:19]) < 60  # the quiet second, relative to the loudest


async def test_a_long_ffmpeg_decode_holds_its_slot_until_drained() -> None:
    converter = AudioConverter(max_processes=1, in_process=False)
    long_clip = AudioClip(data=make_tone("ogg", 440.0, 90.0))  # 2.9 MB of PCM: more than the read-ahead
    async with converter.pcm(long_clip, 16000):
        second = asyncio.create_task(converter.decode(AudioClip(data=make_tone("wav", 440.0, 0.5)), 16000))
        done, _ = await asyncio.wait({second}, timeout=0.5)
        assert not done, "a second ffmpeg ran while the only slot was taken"
    assert await asyncio.wait_for(second, timeout=10)


async def test_a_short_ffmpeg_decode_frees_its_slot_before_the_consumer_reads(tones: dict[str, bytes]) -> None:
    converter = AudioConverter(max_processes=1, in_process=False)
    async with converter.pcm(AudioClip(data=tones["ogg"]), 16000) as first:
        # Nothing read yet, but the whole note is already decoded into the read-ahead buffer.
        other = await asyncio.wait_for(converter.decode(AudioClip(data=tones["wav"]), 16000), timeout=10)
        assert other
        assert len(b"".join([chunk async for chunk in first])) == 1.5 * 32000


def ffmpeg_children() -> list[int]:
    """Our ffmpeg child processes, read from /proc (Linux)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited while we looked
        name, _, rest = text.partition("(")[2].rpartition(")")
        if name == "ffmpeg" and int(rest.split()[1]) == os.getpid():
            children.append(int(stat.parent.name))
    return children


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
async def test_ffmpeg_runs_below_the_bots_priority_in_its_own_process_group() -> None:
    converter = AudioConverter(max_processes=1, in_process=False)
    long_clip = AudioClip(data=make_tone("ogg", 440.0, 90.0))  # ffmpeg stays alive, paused by the full buffer
    async with converter.pcm(long_clip, 16000):
        [pid] = ffmpeg_children()
        assert os.getpriority(os.PRIO_PROCESS, pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)
        assert os.getpgid(pid) == pid != os.getpgid(0)  # Ctrl+C in the terminal does not reach it
    assert ffmpeg_children() == []


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("rate", [8000, 16000])
async def test_both_decoders_give_the_same_audio(tones: dict[str, bytes], container: str, rate: int) -> None:
    """PyAV (its own FFmpeg build) and the ffmpeg CLI: the same number of samples, and no sample
    further apart than rounding in a different FFmpeg version's resampler (-72 dBFS)."""
    in_process, cli = AudioConverter(in_process=True), AudioConverter(in_process=False)
    for data in (tones[container], *([make_tone("wav", 440.0, 1.5, sample_rate=44100, channels=2)] if container == "wav" else [])):
        ours = pcm_samples(await in_process.decode(AudioClip(data=data), rate))
        theirs = pcm_samples(await cli.decode(AudioClip(data=data), rate))
        assert len(ours) == len(theirs)
        assert max(abs(a - b) for a, b in zip(ours, theirs)) <= 8
    in_process.close()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="per-thread priorities are Linux's")
async def test_decoding_threads_run_below_the_bots_priority() -> None:
    import threading

    converter = AudioConverter(in_process=True)
    await converter.decode(AudioClip(data=make_tone("ogg", 440.0, 1.0)), 16000)
    workers = [thread for thread in threading.enumerate() if thread.name.startswith("voicebridge-decode")]
    assert workers
    for worker in workers:
        assert os.getpriority(os.PRIO_PROCESS, worker.native_id) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)
    converter.close()


async def test_in_process_decodes_open_at_once_are_capped() -> None:
    """Eight per worker: a hundred notes in flight must not each hold a decoder's native memory."""
    from contextlib import AsyncExitStack

    converter = AudioConverter(max_processes=1, in_process=True)
    clip = AudioClip(data=make_tone("ogg", 440.0, 1.0))
    async with AsyncExitStack() as open_decodes:
        for _ in range(8):
            await open_decodes.enter_async_context(converter.pcm(clip, 16000))
        ninth = asyncio.create_task(converter.decode(clip, 16000))
        done, _ = await asyncio.wait({ninth}, timeout=0.5)
        assert not done, "a ninth decode opened while eight were open"
    assert len(await asyncio.wait_for(ninth, timeout=10)) == pytest.approx(32000, abs=400)
    converter.close()
