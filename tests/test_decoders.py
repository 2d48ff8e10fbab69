"""The decoders' own rules, on audio built in Python (no ffmpeg process to make the input):
slices of about a second, exact PCM out, CPU budgets, packet-timed lengths, and how an ffmpeg
exit becomes a verdict. The decoders on real files of every container: tests/test_audio.py."""

from __future__ import annotations

import asyncio
import io
import signal
import time
import wave
from array import array
from pathlib import Path

import pytest

from voicebridge.speech.audio import AudioConverter
from voicebridge.speech.decoders import (
    FfmpegRun,
    InProcessPcm,
    child_environment,
    demuxer_for,
    packet_seconds,
)
from voicebridge.speech.errors import AudioError, AudioProblem
from voicebridge.speech.models import AudioClip
from tests.audio_tools import analyse, pcm_samples, silent_flac, tone_flac, tone_pcm, tone_wav


def decode_slices(clip: AudioClip, demuxer: str, sample_rate: int, chunk_bytes: int,
                  cpu_budget: float = 20.0) -> list[list[bytes]]:
    """Every slice :meth:`InProcessPcm.next_chunks` returns, up to the empty one that ends it."""
    decode = InProcessPcm(clip, demuxer, sample_rate, chunk_bytes, cpu_budget)
    slices = []
    try:
        while chunks := decode.next_chunks():
            slices.append(chunks)
    finally:
        decode.close()
    return slices


def stereo_wav(left: bytes, right: bytes, sample_rate: int, sample_width: int = 2) -> bytes:
    frames = array("h")
    for pair in zip(pcm_samples(left), pcm_samples(right)):
        frames.extend(pair)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(sample_width)
        wav.setframerate(sample_rate)
        wav.writeframes(frames.tobytes())
    return buffer.getvalue()


def test_a_slice_is_a_second_of_audio_in_chunks_of_the_size_asked() -> None:
    """A decode shares its worker a second of audio at a time; 16-bit mono at the same rate comes
    out exactly as it went in."""
    slices = decode_slices(AudioClip(data=tone_wav(440.0, 2.5, 16000)), "wav", 16000, chunk_bytes=6400)
    assert [[len(chunk) for chunk in chunks] for chunks in slices] == [[6400] * 5, [6400] * 5, [6400, 6400, 3200]]
    assert b"".join(b"".join(chunks) for chunks in slices) == tone_pcm(440.0, 2.5, 16000)


def test_a_clip_on_disk_decodes_like_one_in_memory(tmp_path: Path) -> None:
    (tmp_path / "note.wav").write_bytes(tone_wav(440.0, 1.5, 16000))
    slices = decode_slices(AudioClip.from_path(tmp_path / "note.wav"), "wav", 16000, chunk_bytes=3200)
    assert b"".join(b"".join(chunks) for chunks in slices) == tone_pcm(440.0, 1.5, 16000)


def test_chunks_longer_than_a_second_make_a_slice_each() -> None:
    slices = decode_slices(AudioClip(data=tone_wav(440.0, 2.5, 8000)), "wav", 8000, chunk_bytes=24000)
    assert [[len(chunk) for chunk in chunks] for chunks in slices] == [[24000], [16000]]


def test_slices_stay_whole_chunks_when_a_second_is_not_a_multiple_of_one() -> None:
    slices = decode_slices(AudioClip(data=tone_wav(440.0, 1.0, 16000)), "wav", 16000, chunk_bytes=6000)
    assert [[len(chunk) for chunk in chunks] for chunks in slices] == [[6000] * 5, [2000]]


def test_resampling_keeps_duration_and_pitch() -> None:
    slices = decode_slices(AudioClip(data=tone_wav(440.0, 2.5, 16000)), "wav", 8000, chunk_bytes=1600)
    report = analyse(pcm_samples(b"".join(b"".join(chunks) for chunks in slices)), 8000)
    assert report.seconds == 2.5
    assert report.frequency == pytest.approx(440.0, rel=0.01)


def test_stereo_is_mixed_down_to_both_channels() -> None:
    """Packed (interleaved) stereo: both channels reach the mono mix, none is read half-length."""
    left, right = tone_pcm(440.0, 1.5, 16000, amplitude=0.4), tone_pcm(880.0, 1.5, 16000, amplitude=0.0)
    slices = decode_slices(AudioClip(data=stereo_wav(left, right, 16000)), "wav", 16000, chunk_bytes=3200)
    report = analyse(pcm_samples(b"".join(b"".join(chunks) for chunks in slices)), 16000)
    assert report.seconds == 1.5
    assert report.frequency == pytest.approx(440.0, rel=0.01)
    assert 0.15 * 32767 < report.peak < 0.25 * 32767  # the left channel, mixed with a silent right one


def test_flac_decodes_to_its_samples_in_process() -> None:
    """FLAC's decoder frames are 4096 samples: the resampling batches gather them across slices."""
    slices = decode_slices(AudioClip(data=silent_flac(2.0, 16000)), "flac", 16000, chunk_bytes=3200)
    pcm = b"".join(b"".join(chunks) for chunks in slices)
    assert len(pcm) == 2.0 * 16000 * 2 and not any(pcm)


def test_a_rate_change_mid_stream_keeps_pitch_and_duration() -> None:
    """Concatenated recordings (FLAC frames or MP3s at another rate, a chained Ogg): each part is
    resampled from its own rate. (Found by mutation testing: the resampler kept converting from
    the first rate, so a second at 8 kHz came out as half a second an octave up.)"""
    # 1.25 s first: the change falls inside a resampling batch (about a second of audio).
    data = tone_flac([(16000, tone_pcm(440.0, 1.25, 16000)), (8000, tone_pcm(440.0, 1.0, 8000)),
                      (16000, tone_pcm(440.0, 0.5, 16000))])
    pcm = pcm_samples(b"".join(b"".join(chunks) for chunks in decode_slices(AudioClip(data=data), "flac", 16000, 3200)))
    assert len(pcm) == pytest.approx(2.75 * 16000, abs=64)
    for start, end in ((0, 20000), (20000, 36000), (36000, len(pcm))):
        assert analyse(pcm[start:end], 16000).frequency == pytest.approx(440.0, rel=0.02), (start, end)


def test_flac_of_a_tone_decodes_to_exactly_its_samples() -> None:
    """Frames of 1,001 samples: the decoder's buffers are padded past them, and only the samples count."""
    pcm = tone_pcm(440.0, 1.5, 16000)
    slices = decode_slices(AudioClip(data=tone_flac([(16000, pcm)], block_size=1001)), "flac", 16000, chunk_bytes=3200)
    assert b"".join(b"".join(chunks) for chunks in slices) == pcm


def test_a_file_without_samples_is_empty() -> None:
    with pytest.raises(AudioError) as caught:
        decode_slices(AudioClip(data=tone_wav(440.0, 0.0, 16000)), "wav", 16000, chunk_bytes=3200)
    assert caught.value.problem is AudioProblem.EMPTY


def test_a_file_the_pinned_demuxer_cannot_read_is_undecodable() -> None:
    with pytest.raises(AudioError) as caught:
        decode_slices(AudioClip(data=tone_wav(440.0, 1.0, 16000)), "ogg", 16000, chunk_bytes=3200)
    assert caught.value.problem is AudioProblem.UNDECODABLE


def test_a_decode_past_its_cpu_budget_stops() -> None:
    with pytest.raises(AudioError) as caught:
        decode_slices(AudioClip(data=tone_wav(440.0, 2.0, 16000)), "wav", 8000, chunk_bytes=1600, cpu_budget=0.0)
    assert caught.value.problem is AudioProblem.UNDECODABLE


def test_the_cpu_budget_counts_every_slice() -> None:
    """An hour of FLAC silence decodes in 3,600 slices: a budget of a quarter of the whole
    decode's CPU time holds for any one slice, not for their sum (a ratio, whatever the machine)."""
    clip = AudioClip(data=silent_flac(3600.0, 16000))
    started = time.thread_time()
    decode_slices(clip, "flac", 16000, chunk_bytes=32000)  # decoded in this thread: its CPU time
    whole = time.thread_time() - started
    with pytest.raises(AudioError) as caught:
        decode_slices(clip, "flac", 16000, chunk_bytes=32000, cpu_budget=whole / 4)
    assert caught.value.problem is AudioProblem.UNDECODABLE


def test_packet_timed_length_is_the_audios() -> None:
    assert packet_seconds(AudioClip(data=tone_wav(440.0, 2.5, 16000)), "wav", 60.0, 20.0) == pytest.approx(2.5, abs=0.001)
    assert packet_seconds(AudioClip(data=silent_flac(3.0, 16000)), "flac", 60.0, 20.0) == pytest.approx(3.0, abs=0.001)


def test_packet_counting_reads_with_the_pinned_demuxer_only() -> None:
    with pytest.raises(AudioError) as caught:
        packet_seconds(AudioClip(data=silent_flac(1.0, 16000)), "wav", 60.0, 20.0)
    assert caught.value.problem is AudioProblem.UNDECODABLE


def test_packet_counting_stops_just_past_the_limit() -> None:
    seconds = packet_seconds(AudioClip(data=silent_flac(600.0, 16000)), "flac", 10.0, 20.0)
    assert 10.0 < seconds <= 10.0 + 4096 / 16000  # one packet past the limit, not the whole file


def test_packet_counting_has_a_cpu_budget() -> None:
    with pytest.raises(AudioError) as caught:
        packet_seconds(AudioClip(data=silent_flac(600.0, 16000)), "flac", 1000.0, 0.0)
    assert caught.value.problem is AudioProblem.UNDECODABLE


def test_packet_counting_of_a_file_without_samples_is_zero() -> None:
    assert packet_seconds(AudioClip(data=tone_wav(440.0, 0.0, 16000)), "wav", 60.0, 20.0) == 0.0


def test_only_known_containers_have_a_demuxer() -> None:
    assert demuxer_for("webm") == demuxer_for("mkv") == "matroska"
    assert demuxer_for("m4a") == "mov"
    for unknown in (None, "hls", "concat"):
        with pytest.raises(AudioError) as caught:
            demuxer_for(unknown)
        assert caught.value.problem is AudioProblem.UNDECODABLE


def test_a_child_process_inherits_a_path_and_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/opt/ffmpeg/bin:/usr/bin")
    monkeypatch.setenv("TELEGRAM_TOKEN", "123:secret")
    assert child_environment() == {"PATH": "/opt/ffmpeg/bin:/usr/bin", "LC_ALL": "C"}
    monkeypatch.delenv("PATH")
    assert child_environment()["PATH"] == "/bin:/usr/bin"


async def test_in_process_decodes_share_the_workers_and_stop_when_left() -> None:
    """Through the converter: slices run in the shared worker; a consumer leaving half-way stops
    its decode (the worker is free for the next one at once), and the audio is exact."""
    converter = AudioConverter(max_processes=1, in_process=True)
    pcm = tone_pcm(440.0, 3.0, 16000)
    async with converter.pcm(AudioClip(data=tone_wav(440.0, 3.0, 16000)), 16000, chunk_seconds=0.5) as chunks:
        first = await anext(chunks)
    assert first == pcm[:16000]
    assert await converter.decode(AudioClip(data=tone_wav(440.0, 3.0, 16000)), 16000) == pcm
    facts = await converter.inspect(AudioClip(data=silent_flac(2.0, 16000, stated_seconds=0)), 60.0)
    assert facts.seconds == pytest.approx(2.0, abs=0.001)
    converter.close()


# ----------------------------------------------------------------------------- the ffmpeg CLI


async def test_ffmpeg_decodes_from_memory_and_from_a_file_exactly(tmp_path: Path) -> None:
    converter = AudioConverter(max_processes=1, in_process=False)
    pcm = tone_pcm(440.0, 1.5, 16000)
    (tmp_path / "note.wav").write_bytes(tone_wav(440.0, 1.5, 16000))
    assert await converter.decode(AudioClip(data=tone_wav(440.0, 1.5, 16000)), 16000) == pcm
    assert await converter.decode(AudioClip.from_path(tmp_path / "note.wav"), 16000) == pcm
    halved = pcm_samples(await converter.decode(AudioClip(data=tone_wav(440.0, 1.5, 16000)), 8000))
    assert analyse(halved, 8000).seconds == 1.5 and analyse(halved, 8000).frequency == pytest.approx(440.0, rel=0.01)


async def test_ffmpeg_refusing_a_file_is_undecodable() -> None:
    converter = AudioConverter(max_processes=1, in_process=False)
    with pytest.raises(AudioError) as caught:
        await converter.decode(AudioClip(data=b"OggS" + bytes(500)), 16000)
    assert caught.value.problem is AudioProblem.UNDECODABLE


async def test_ffmpeg_reads_from_a_pipe_where_there_is_no_memfd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not Linux (no memfd): the clip is streamed through ffmpeg's stdin, and decodes the same."""
    monkeypatch.delattr("os.memfd_create")
    converter = AudioConverter(max_processes=1, in_process=False)
    pcm = tone_pcm(440.0, 1.5, 16000)
    assert await converter.decode(AudioClip(data=tone_wav(440.0, 1.5, 16000)), 16000) == pcm


# ----------------------------------------------------------------------------- ffmpeg's exit


def finished_run(stderr: bytes = b"") -> FfmpegRun:
    run = FfmpegRun("ffmpeg", AudioClip(data=b"x"), "ogg", [], asyncio.Semaphore(1), 3200, 20.0)
    run.source = "file:/dev/fd/7"
    run._stderr_tail = stderr
    return run


@pytest.mark.parametrize("returncode", [-signal.SIGXCPU, -signal.SIGKILL])
def test_ffmpeg_killed_by_its_cpu_limit_is_a_file_too_slow_to_decode(returncode: int) -> None:
    outcome = finished_run()._outcome(returncode, produced=True)
    assert isinstance(outcome, AudioError) and outcome.problem is AudioProblem.UNDECODABLE


def test_ffmpeg_crashing_is_not_blamed_on_the_file() -> None:
    outcome = finished_run()._outcome(-signal.SIGSEGV, produced=False)
    assert isinstance(outcome, RuntimeError) and not isinstance(outcome, AudioError)
    assert str(signal.SIGSEGV.value) in str(outcome)


def test_ffmpeg_failing_before_any_audio_is_undecodable_and_names_no_path() -> None:
    run = finished_run(b"[ogg @ 0x1] some warning\nfile:/dev/fd/7: Invalid data found when processing input\n")
    outcome = run._outcome(1, produced=False)
    assert isinstance(outcome, AudioError) and outcome.problem is AudioProblem.UNDECODABLE
    assert str(outcome).endswith("input: Invalid data found when processing input")
    silent_failure = finished_run()._outcome(183, produced=False)
    assert isinstance(silent_failure, AudioError) and "183" in str(silent_failure)


def test_ffmpeg_failing_after_some_audio_keeps_that_audio() -> None:
    assert finished_run(b"error while decoding\n")._outcome(1, produced=True) is None


def test_ffmpeg_succeeding_without_audio_is_empty_and_with_audio_is_fine() -> None:
    outcome = finished_run()._outcome(0, produced=False)
    assert isinstance(outcome, AudioError) and outcome.problem is AudioProblem.EMPTY
    assert finished_run()._outcome(0, produced=True) is None
