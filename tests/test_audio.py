"""Audio conversion, checked on the audio itself: duration, sample rate, frequency."""

from __future__ import annotations

import asyncio
import io
import math
import os
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from voicebridge.speech.audio import (
    MAX_WAVEFORM_POINTS,
    AudioConverter,
    AudioInfo,
    ogg_opus_layout,
    pcm_seconds,
    peak_dbfs,
    quietest_offset,
    require_sound,
    split_at_pauses,
    wav_bytes,
)
from voicebridge.speech.containers import ogg_opus_pages
from voicebridge.speech.errors import AudioError, AudioProblem
from voicebridge.speech.models import AudioClip, AudioFormat
from tests.audio_tools import analyse, decode, make_silence, make_tone, mono_wav, ogg_crc, ogg_pages, pcm_samples, probe, silent_flac, tone_pcm, tone_wav
from tests.test_containers import ogg_file, ogg_page, opus_head, vorbis_id

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


def _edit(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + bytes([value]) + data[offset + 1:]


def test_an_ogg_opus_note_is_walked_into_page_chunks_without_decoding() -> None:
    note = make_tone("ogg", 440.0, 3.0, channels=2)
    layout = ogg_opus_pages(note, 1.0)
    assert layout is not None and layout.channels == 2
    assert layout.seconds == pytest.approx(3.0, abs=0.02)  # counted from the packets' TOC bytes
    assert layout.chunks[0][0] == 0 and layout.chunks[-1][1] == len(note)
    assert all(end == next_start for (_, end, _), (next_start, _, _) in zip(layout.chunks, layout.chunks[1:]))
    assert all(note[start:start + 4] == b"OggS" for start, _, _ in layout.chunks)  # cut at page starts
    assert [round(samples / 48000, 1) for _, _, samples in layout.chunks[:3]] == [1.0, 1.0, 1.0]


def test_anything_but_one_plain_ogg_opus_stream_is_not_walked() -> None:
    note = make_tone("ogg", 440.0, 1.0)
    head_body = 27 + note[26]  # OpusHead, the first page's one packet
    first_audio = sum(len(page) for page in ogg_pages(note)[:2])
    audio_packet = first_audio + 27 + note[first_audio + 26]
    variants = {
        "chained": note + note,
        "trailing bytes": note + b"\0",
        "leading bytes": b"\0" + note,
        "cut short": note[:-7],
        "a damaged page": _edit(note, len(note) - 5, note[-5] ^ 0x01),  # its checksum fails
        "three channels": _edit(note, head_body + 9, 3),
        "mapping family 1": _edit(note, head_body + 18, 1),
        "not OpusHead": _edit(note, head_body, ord("X")),
        "TOC with no frames": _edit(_edit(note, audio_packet, note[audio_packet] | 0x03), audio_packet + 1, 0),
        "WebM": make_tone("webm", 440.0, 1.0),
        "empty": b"",
    }
    assert {name: ogg_opus_pages(data, 1.0) for name, data in variants.items()} == dict.fromkeys(variants)


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


# ----------------------------------------------------------------------------- cheap checks on Python-built audio
# PyAV in process on WAV, FLAC and Ogg files written by the tests themselves: no ffmpeg process.


@pytest.fixture
def in_process() -> Iterator[AudioConverter]:
    converter = AudioConverter(max_processes=1, in_process=True)
    yield converter
    converter.close()


async def test_inspect_measures_wav_and_flac_by_their_packets(in_process: AudioConverter, tmp_path: Path) -> None:
    facts = await in_process.inspect(AudioClip(data=tone_wav(440.0, 2.5, 16000)), 60.0)
    assert (facts.container, facts.seconds) == ("wav", pytest.approx(2.5, abs=0.001))
    (tmp_path / "note.flac").write_bytes(silent_flac(3.0, 16000, stated_seconds=0))
    facts = await in_process.inspect(AudioClip.from_path(tmp_path / "note.flac"), 60.0)
    assert (facts.container, facts.seconds) == ("flac", pytest.approx(3.0, abs=0.001))


async def test_inspect_measures_short_notes(in_process: AudioConverter) -> None:
    facts = await in_process.inspect(AudioClip(data=tone_wav(440.0, 0.4, 16000)), 60.0)
    assert facts.seconds == pytest.approx(0.4, abs=0.001)


async def test_inspect_without_pyav_measures_by_decoding() -> None:
    converter = AudioConverter(max_processes=1, in_process=False)
    facts = await converter.inspect(AudioClip(data=tone_wav(440.0, 1.5, 16000)), 60.0)
    assert (facts.container, facts.seconds) == ("wav", pytest.approx(1.5, abs=0.001))


async def test_has_sound_analysis_and_decode_are_bounded_like_every_decode(in_process: AudioConverter) -> None:
    """Thirty seconds of silence stating no length, under a 5 s limit: refused as too long, not
    decoded to its end to answer "silent"."""
    clip = AudioClip(data=silent_flac(30.0, 16000, stated_seconds=0))
    for attempt in (in_process.has_sound(clip, 5.0), in_process.analyse(clip, 5.0), in_process.decode(clip, 8000, 5.0)):
        with pytest.raises(AudioError) as caught:
            await attempt
        assert caught.value.problem is AudioProblem.TOO_LONG


async def test_a_closed_converter_decodes_no_more() -> None:
    converter = AudioConverter(max_processes=1, in_process=True)
    converter.close()
    with pytest.raises(RuntimeError):
        await converter.decode(AudioClip(data=tone_wav(440.0, 0.5, 16000)), 16000)


@pytest.mark.parametrize("stated", [None, 0.0, 1.0])  # the truth, nothing, a lie
async def test_inspect_refuses_audio_longer_than_the_limit_whatever_it_states(in_process: AudioConverter, tmp_path: Path,
                                                                            stated: float | None) -> None:
    data = silent_flac(30.0, 16000, stated_seconds=stated)
    (tmp_path / "long.flac").write_bytes(data)
    for clip in (AudioClip(data=data), AudioClip.from_path(tmp_path / "long.flac")):
        with pytest.raises(AudioError) as caught:
            await in_process.inspect(clip, 20.0)
        assert caught.value.problem is AudioProblem.TOO_LONG


async def test_a_stated_length_over_the_limit_is_refused_before_decoding(in_process: AudioConverter, tmp_path: Path) -> None:
    """The header alone: a file cut after its FLAC header that says 30 s cannot be decoded at all,
    so only the stated length can refuse it as too long (and not as undecodable)."""
    header = silent_flac(30.0, 16000)[:42]
    (tmp_path / "header.flac").write_bytes(header)
    for clip in (AudioClip(data=header), AudioClip.from_path(tmp_path / "header.flac")):
        with pytest.raises(AudioError) as caught:
            async with in_process.pcm(clip, 16000, max_seconds=20.0):
                pytest.fail("a decode started")
        assert caught.value.problem is AudioProblem.TOO_LONG
        with pytest.raises(AudioError) as caught:
            await in_process.inspect(clip, 20.0)
        assert caught.value.problem is AudioProblem.TOO_LONG
    facts = await in_process.inspect(AudioClip(data=silent_flac(20.0, 16000)), 20.0)  # at the limit: accepted
    assert facts.seconds == pytest.approx(20.0, abs=0.001)


@pytest.mark.parametrize(("data", "problem"), [(b"", AudioProblem.EMPTY), (b"not audio at all", AudioProblem.UNDECODABLE)])
async def test_inspect_refuses_unusable_clips(in_process: AudioConverter, data: bytes, problem: AudioProblem) -> None:
    with pytest.raises(AudioError) as caught:
        await in_process.inspect(AudioClip(data=data), 60.0)
    assert caught.value.problem is problem


async def test_a_wav_without_samples_is_empty(in_process: AudioConverter) -> None:
    for attempt in (in_process.inspect(AudioClip(data=mono_wav(b"")), 60.0), in_process.analyse(AudioClip(data=mono_wav(b"")))):
        with pytest.raises(AudioError) as caught:
            await attempt
        assert caught.value.problem is AudioProblem.EMPTY


async def test_decoded_audio_may_pass_the_limit_by_the_slack_and_no_more(in_process: AudioConverter) -> None:
    """A file stating nothing is bounded on its decoded audio: the limit plus one second of codec
    padding passes whole, one sample more is refused, and what came out never exceeds it."""
    at_bound = silent_flac(6.0, 16000, stated_seconds=0)
    assert len(await in_process.decode(AudioClip(data=at_bound), 16000, max_seconds=5.0)) == 6 * 16000 * 2
    received = 0
    with pytest.raises(AudioError) as caught:
        async with in_process.pcm(AudioClip(data=silent_flac(6.0 + 1 / 16000, 16000, stated_seconds=0)), 16000,
                                  max_seconds=5.0) as chunks:
            async for chunk in chunks:
                received += len(chunk)
    assert caught.value.problem is AudioProblem.TOO_LONG
    assert received <= 6 * 16000 * 2


async def test_has_sound_hears_quiet_speech_but_not_digital_silence(in_process: AudioConverter) -> None:
    """-50 dBFS is the line: a quiet recording (-46 dBFS) has sound, near-silence (-56 dBFS) not."""
    silence = bytes(3 * 16000 * 2)
    quiet = mono_wav(silence + tone_pcm(440.0, 0.5, 16000, amplitude=0.005))
    faint = mono_wav(silence + tone_pcm(440.0, 0.5, 16000, amplitude=0.0016))
    assert await in_process.has_sound(AudioClip(data=quiet))
    assert not await in_process.has_sound(AudioClip(data=faint))
    info = await in_process.analyse(AudioClip(data=quiet))
    assert not info.silent and info.peak_dbfs == pytest.approx(-46.0, abs=0.3)
    assert (await in_process.analyse(AudioClip(data=faint))).silent


async def test_analysis_levels_are_100_ms_windows_of_the_audio(in_process: AudioConverter) -> None:
    pcm = bytes(16000) + tone_pcm(440.0, 0.5, 16000, amplitude=0.5)  # 0.5 s of silence, 0.5 s of tone
    info = await in_process.analyse(AudioClip(data=mono_wav(pcm)))
    assert info.seconds == 1.0 and info.container == "wav"
    assert len(info.levels) == 10
    assert max(info.levels[:4]) == 0  # (the resampler's filter rings a little into the fifth)
    assert all(level == pytest.approx(0.5 * 32767 / 2 ** 0.5, rel=0.03) for level in info.levels[5:])


def test_waveform_points_average_the_levels_scaled_to_the_loudest() -> None:
    def waveform(levels: tuple[int, ...]) -> bytes:
        return AudioInfo(seconds=len(levels) / 10, peak_dbfs=0.0, container="wav", levels=levels).waveform()

    assert list(waveform((0, 100, 200, 300, 400))) == [0, 64, 128, 191, 255]
    assert list(waveform(tuple([100, 300] * 128 + [300, 500] * 128))) == [128] * 128 + [255] * 128  # two levels a point
    uneven = waveform(tuple(range(300)))  # 300 levels in 256 points: every level counted, in order
    assert len(uneven) == 256 and uneven[0] == 0 and uneven[-1] == 255 and list(uneven) == sorted(uneven)
    assert list(waveform((0, 0, 0))) == [0, 0, 0]
    assert list(waveform(())) == [0]


def test_silence_is_below_minus_50_dbfs() -> None:
    assert AudioInfo(1.0, -50.5, "wav", ()).silent and not AudioInfo(1.0, -49.5, "wav", ()).silent
    assert peak_dbfs(bytes(1600)) == -math.inf
    assert peak_dbfs(tone_pcm(440.0, 0.1, 8000, amplitude=0.5)) == pytest.approx(-6.02, abs=0.05)


def test_wav_bytes_hold_the_pcm_at_its_rate() -> None:
    pcm = tone_pcm(440.0, 0.75, 24000)
    with wave.open(io.BytesIO(wav_bytes(pcm, 24000))) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 24000)
        assert wav.readframes(wav.getnframes()) == pcm
    assert pcm_seconds(len(pcm), 24000) == 0.75


async def test_encoding_to_pcm_or_wav_needs_no_process(in_process: AudioConverter) -> None:
    pcm = tone_pcm(440.0, 0.5, 16000)
    assert await in_process.encode(pcm, 16000, AudioFormat.PCM) == pcm
    assert await in_process.encode(pcm, 16000, AudioFormat.WAV) == wav_bytes(pcm, 16000)


def test_ogg_layout_counts_chained_streams_and_the_first_ones_length() -> None:
    first = ogg_file(opus_head(pre_skip=312), [48000, 96312], serial=1)
    second = ogg_file(opus_head(pre_skip=0), [480000], serial=2)
    assert ogg_opus_layout(first) == (1, 2.0)
    assert ogg_opus_layout(first + second) == (2, 2.0)  # players show the first link's length
    assert ogg_opus_layout(ogg_file(opus_head(pre_skip=312), [100])) == (1, 0.0)
    assert ogg_opus_layout(ogg_page(1, -1, [opus_head()], first=True)) == (1, None)  # no granule: nothing stated
    assert ogg_opus_layout(first + b"garbage after the stream" + second) == (1, 2.0)
    # A page continuing a packet from the page before is no new stream; a last empty page counts.
    continued = first + ogg_page(1, 144312, [bytes(10)], sequence=5, continued=True) + ogg_page(1, 192312, [], sequence=6)
    assert ogg_opus_layout(continued) == (1, 4.0)
    assert ogg_opus_layout(first + b"OggS\x00" + bytes(10)) == (1, 2.0)  # cut inside a page header
    assert ogg_opus_layout(ogg_file(vorbis_id(48000), [96000])) == (1, 2.0)  # not Opus: no pre-skip
    # Pages of another stream interleaved with the first one's do not end its length.
    interleaved = first + ogg_page(1, 144312, [bytes(10)], sequence=5) + ogg_page(9, 9600000, [bytes(10)])
    assert ogg_opus_layout(interleaved) == (1, 3.0)


def test_the_quietest_moment_is_found_in_the_middle_of_a_pause() -> None:
    rate = 16000
    pcm = tone_pcm(440.0, 1.0, rate) + bytes(int(0.2 * rate) * 2) + tone_pcm(440.0, 1.0, rate)
    # The pause is 1.0-1.2 s: its first 100 ms window is the quietest, cut at its middle.
    assert quietest_offset(pcm, rate, 0, len(pcm)) == int(1.05 * rate) * 2
    steady = tone_pcm(440.0, 2.0, rate)
    assert quietest_offset(steady, rate, 0, len(steady)) == len(steady)  # no pause: cut at the end
    assert quietest_offset(pcm, rate, 3, 3) == 3  # nothing to search


def test_a_pause_over_background_noise_is_still_a_pause() -> None:
    """Real pauses are not digital silence: a stretch at 40% of the speech level is where to cut."""
    rate = 16000
    pcm = tone_pcm(440.0, 1.0, rate) + tone_pcm(440.0, 0.2, rate, amplitude=0.2) + tone_pcm(440.0, 1.0, rate)
    assert 1.0 <= quietest_offset(pcm, rate, 0, len(pcm)) / 2 / rate <= 1.2


def test_a_pause_in_the_last_100_ms_is_found() -> None:
    rate = 16000
    pcm = tone_pcm(440.0, 2.0, rate) + bytes(int(0.1 * rate) * 2)
    assert quietest_offset(pcm, rate, 0, len(pcm)) == int(2.05 * rate) * 2


async def test_segments_are_cut_at_pauses_and_lose_nothing() -> None:
    rate = 16000
    word = tone_pcm(440.0, 0.9, rate)
    pause = bytes(int(0.3 * rate) * 2)
    pcm = (word + pause) * 8  # a pause every 1.2 s

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(pcm), 3200):
            yield pcm[start:start + 3200]

    segments = [segment async for segment in split_at_pauses(chunks(), rate, segment_seconds=2.0, search_seconds=1.0)]
    assert b"".join(segments) == pcm
    for segment in segments[:-1]:
        assert 1.0 <= len(segment) / 2 / rate <= 2.0
        assert max(abs(sample) for sample in pcm_samples(segment[-640:])) == 0  # it ends inside a pause


async def test_pauses_are_looked_for_in_the_last_3_seconds_of_a_segment_by_default() -> None:
    """A pause earlier than that would make segments much shorter than asked: the cut falls at
    the segment's length instead."""
    rate = 8000
    pcm = tone_pcm(440.0, 6.0, rate) + bytes(int(0.3 * rate) * 2) + tone_pcm(440.0, 5.0, rate)  # pause at 6.0-6.3 s

    async def chunks() -> AsyncIterator[bytes]:
        yield pcm

    segments = [segment async for segment in split_at_pauses(chunks(), rate, segment_seconds=10.0)]
    assert [len(segment) for segment in segments] == [10 * rate * 2, len(pcm) - 10 * rate * 2]


async def test_leading_silence_held_for_a_stream_is_bounded() -> None:
    rate = 8000
    second = bytes(rate * 2)
    tone = tone_pcm(440.0, 1.0, rate)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield second
        yield tone

    passed = b"".join([chunk async for chunk in await require_sound(chunks(), rate)])
    assert passed == second * 30 + tone  # the last 30 s of silence, then the sound

    async def nothing() -> AsyncIterator[bytes]:
        return
        yield b""

    with pytest.raises(AudioError) as caught:
        await require_sound(nothing(), rate)
    assert caught.value.problem is AudioProblem.EMPTY


async def test_a_chained_voice_note_is_re_encoded_as_one_stream_stating_its_length(in_process: AudioConverter,
                                                                                  tones: dict[str, bytes]) -> None:
    """Players show a chained Ogg's first link only: multi-segment speech is re-encoded as one
    stream whose header states its real length; a single-stream note is sent as it is."""
    same, seconds = await in_process.single_stream_voice_note(tones["ogg"])
    assert same == tones["ogg"] and seconds == pytest.approx(1.5, abs=DURATION_TOLERANCE)
    # One stream whose last page claims 3 s (a provider's wrong granule): re-encoded too.
    last = tones["ogg"].rindex(b"OggS")
    page = bytearray(tones["ogg"][last:])
    page[6:14] = (3 * 48000 + 312).to_bytes(8, "little")
    page[22:26] = bytes(4)
    page[22:26] = ogg_crc(bytes(page)).to_bytes(4, "little")
    lying = tones["ogg"][:last] + bytes(page)
    assert ogg_opus_layout(lying) == (1, 3.0)
    fixed, seconds = await in_process.single_stream_voice_note(lying)
    assert ogg_opus_layout(fixed)[1] == pytest.approx(seconds, abs=0.05) and seconds == pytest.approx(1.5, abs=DURATION_TOLERANCE)
    data, seconds = await in_process.single_stream_voice_note(tones["ogg"] + tones["ogg"])
    assert seconds == pytest.approx(3.0, abs=DURATION_TOLERANCE)
    streams, stated = ogg_opus_layout(data)
    assert streams == 1 and stated == pytest.approx(seconds, abs=0.05)
    report = analyse(pcm_samples(await in_process.decode(AudioClip(data=data), 16000)), 16000)
    assert report.seconds == pytest.approx(3.0, abs=DURATION_TOLERANCE) and report.frequency == pytest.approx(440.0, rel=0.02)
