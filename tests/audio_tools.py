"""Audio generation and analysis for tests and fakes.

Deliberately independent of ``voicebridge.speech.audio``: it calls the ffmpeg CLI directly, so a
test never checks the project's conversions with the project's own code.
"""

from __future__ import annotations

import io
import math
import shutil
import subprocess
import wave
import zlib
from array import array
from dataclasses import dataclass

FFMPEG = shutil.which("ffmpeg") or "ffmpeg"

# ffmpeg output arguments per container name used in tests.
CONTAINERS: dict[str, list[str]] = {
    "ogg": ["-c:a", "libopus", "-b:a", "32k", "-f", "ogg"],
    "mp3": ["-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3"],
    "m4a": ["-c:a", "aac", "-b:a", "64k", "-f", "ipod"],
    "wav": ["-c:a", "pcm_s16le", "-f", "wav"],
    "webm": ["-c:a", "libopus", "-b:a", "32k", "-f", "webm"],
    "flac": ["-c:a", "flac", "-f", "flac"],
    # Headerless mono streams (what the Coze TTS WebSocket sends for codec pcm / g711a / g711u).
    "s16le": ["-c:a", "pcm_s16le", "-ac", "1", "-f", "s16le"],
    "alaw": ["-c:a", "pcm_alaw", "-ac", "1", "-f", "alaw"],
    "mulaw": ["-c:a", "pcm_mulaw", "-ac", "1", "-f", "mulaw"],
}


def make_tone(
    container: str,
    frequency: float = 440.0,
    seconds: float = 1.0,
    sample_rate: int = 48000,
    channels: int = 1,
    amplitude: float = 0.5,
) -> bytes:
    """Encode a sine tone into ``container`` ("ogg", "mp3", "m4a", "wav", "webm", "flac", "mp4")."""
    tone = f"aevalsrc={amplitude}*sin(2*PI*{frequency}*t):s={sample_rate}:d={seconds}"
    if channels == 2:
        tone = (
            f"aevalsrc={amplitude}*sin(2*PI*{frequency}*t)|{amplitude}*sin(2*PI*{frequency}*t)"
            f":s={sample_rate}:d={seconds}"
        )
    if container == "mp4":
        # A Telegram-style video note: a small square video plus AAC audio, moov atom at the end.
        args = [
            "-f", "lavfi", "-i", tone,
            "-f", "lavfi", "-i", f"color=c=blue:s=64x64:r=10:d={seconds}",
            "-c:a", "aac", "-b:a", "64k", "-c:v", "mpeg4", "-shortest", "-f", "mp4",
        ]
        return _ffmpeg_to_bytes(args, seekable_output=True)
    args = ["-f", "lavfi", "-i", tone, *CONTAINERS[container]]
    return _ffmpeg_to_bytes(args, seekable_output=container in ("m4a", "mp3"))


def make_silence(container: str, seconds: float = 1.0, sample_rate: int = 48000) -> bytes:
    return make_tone(container, frequency=0.0, seconds=seconds, sample_rate=sample_rate, amplitude=0.0)


def _ffmpeg_to_bytes(args: list[str], seekable_output: bool) -> bytes:
    """Run ffmpeg; MP4-family muxers need a seekable output, so those go through a temp file."""
    base = [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    if not seekable_output:
        return subprocess.run([*base, *args, "pipe:1"], check=True, capture_output=True).stdout
    import tempfile

    with tempfile.NamedTemporaryFile() as out:
        subprocess.run([*base, *args, out.name], check=True, capture_output=True)
        return out.read()


def decode(data: bytes, sample_rate: int | None = None, input_format: list[str] | None = None) -> tuple[array, int]:
    """Decode any audio to mono s16le samples; returns (samples, sample_rate)."""
    rate = sample_rate or probe_sample_rate(data, input_format)
    import tempfile

    with tempfile.NamedTemporaryFile() as src:
        src.write(data)
        src.flush()
        pcm = subprocess.run(
            [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", *(input_format or []),
             "-i", src.name, "-f", "s16le", "-ac", "1", "-ar", str(rate), "pipe:1"],
            check=True, capture_output=True,
        ).stdout
    return pcm_samples(pcm), rate


def probe_sample_rate(data: bytes, input_format: list[str] | None = None) -> int:
    return int(probe(data, input_format)["sample_rate"])


def probe(data: bytes, input_format: list[str] | None = None) -> dict[str, str]:
    """ffprobe the first audio stream: codec_name, sample_rate, channels, and the format name."""
    import json
    import tempfile

    ffprobe = shutil.which("ffprobe") or "ffprobe"
    with tempfile.NamedTemporaryFile() as src:
        src.write(data)
        src.flush()
        out = subprocess.run(
            [ffprobe, "-v", "error", *(input_format or []), "-select_streams", "a:0",
             "-show_entries", "stream=codec_name,sample_rate,channels:format=format_name",
             "-of", "json", src.name],
            check=True, capture_output=True,
        ).stdout
    info = json.loads(out)
    stream = info["streams"][0]
    return {**stream, "format_name": info["format"]["format_name"]}


def probe_duration(data: bytes) -> float:
    """The duration the container states (what players show), by ffprobe."""
    import json
    import tempfile

    ffprobe = shutil.which("ffprobe") or "ffprobe"
    with tempfile.NamedTemporaryFile() as src:
        src.write(data)
        src.flush()
        out = subprocess.run([ffprobe, "-v", "error", "-show_entries", "format=duration", "-of", "json", src.name],
                             check=True, capture_output=True).stdout
    return float(json.loads(out)["format"]["duration"])


def pcm_samples(pcm: bytes) -> array:
    samples = array("h")
    samples.frombytes(pcm[: len(pcm) - len(pcm) % 2])
    return samples


@dataclass(frozen=True)
class ToneReport:
    seconds: float
    frequency: float
    peak: int


def analyse(samples: array, sample_rate: int) -> ToneReport:
    """Duration, dominant frequency (by zero crossings of the voiced part) and peak of a pure tone."""
    return ToneReport(
        seconds=len(samples) / sample_rate,
        frequency=zero_crossing_frequency(samples, sample_rate),
        # Extremes in C rather than abs() per sample in Python: seconds of CPU over the suite.
        peak=max(max(samples, default=0), -min(samples, default=0)),
    )


def zero_crossing_frequency(samples: array, sample_rate: int) -> float:
    """Frequency of a pure tone: sign changes over the voiced span, halved."""
    threshold = 200
    # A prime stride, so the probe points cannot stay in phase with the tone.
    voiced = [i for i in range(0, len(samples), 61) if abs(samples[i]) > threshold]
    if not voiced:
        return 0.0
    start, end = voiced[0], voiced[-1]
    crossings = 0
    previous = samples[start]
    for i in range(start + 1, end):
        current = samples[i]
        if (previous < 0) != (current < 0):
            crossings += 1
        previous = current
    span = (end - start) / sample_rate
    return crossings / 2 / span if span > 0 else 0.0


def tone_pcm(frequency: float, seconds: float, sample_rate: int = 16000, amplitude: float = 0.5) -> bytes:
    """Raw mono s16le tone, computed in Python (no ffmpeg)."""
    count = int(round(seconds * sample_rate))
    scale = amplitude * 32767
    samples = array("h", (int(scale * math.sin(2 * math.pi * frequency * n / sample_rate)) for n in range(count)))
    return samples.tobytes()


def mono_wav(pcm: bytes, sample_rate: int = 16000) -> bytes:
    """16-bit mono PCM wrapped in a WAV file, built in Python."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)
    return buffer.getvalue()


def tone_wav(frequency: float, seconds: float, sample_rate: int = 16000) -> bytes:
    """A WAV file of a tone, built in Python: cheap enough to make thousands."""
    return mono_wav(tone_pcm(frequency, seconds, sample_rate), sample_rate)


def silent_flac(seconds: float, sample_rate: int = 16000, *, stated_seconds: float | None = None,
                block_size: int = 4096) -> bytes:
    """A real FLAC stream of digital silence, built in Python: each block is one constant
    subframe, so hours of audio take a few MB (a decompression bomb). STREAMINFO states
    ``stated_seconds`` (default: the truth; 0 means "unknown", as the format allows)."""
    total = int(seconds * sample_rate)
    stated = total if stated_seconds is None else int(stated_seconds * sample_rate)
    rate_codes = {8000: 0b0100, 16000: 0b0101, 22050: 0b0110, 24000: 0b0111, 32000: 0b1000, 44100: 0b1001, 48000: 0b1010}
    info = (block_size << 128 | block_size << 112  # min/max block size; frame sizes unknown (0)
            | sample_rate << 44 | 0 << 41 | 15 << 36 | stated)  # mono, 16 bits per sample
    streaminfo = info.to_bytes(18, "big") + bytes(16)  # MD5 unknown
    out = bytearray(b"fLaC" + bytes([0x80]) + len(streaminfo).to_bytes(3, "big") + streaminfo)
    frames, last = divmod(total, block_size)
    for number in range(frames + (1 if last else 0)):
        samples = block_size if number < frames else last
        header = bytearray([0xFF, 0xF8, 0b0111 << 4 | rate_codes[sample_rate], 0b0000_1000])
        header += _utf8_number(number) + (samples - 1).to_bytes(2, "big")
        header.append(_crc8(header))
        frame = header + b"\x00\x00\x00"  # CONSTANT subframe, no wasted bits, value 0
        out += frame + _crc16(frame).to_bytes(2, "big")
    return bytes(out)


def tone_flac(parts: list[tuple[int, bytes]], block_size: int = 1024) -> bytes:
    """A FLAC stream of mono s16le PCM, built in Python (verbatim subframes): each part is
    (sample rate, PCM), and each frame header carries its part's rate, so the rate may change
    mid-stream, as FLAC allows. STREAMINFO states the first rate and no length."""
    rate_codes = {8000: 0b0100, 16000: 0b0101, 22050: 0b0110, 24000: 0b0111, 32000: 0b1000, 44100: 0b1001, 48000: 0b1010}
    info = block_size << 128 | block_size << 112 | parts[0][0] << 44 | 0 << 41 | 15 << 36
    out = bytearray(b"fLaC" + bytes([0x80]) + (34).to_bytes(3, "big") + info.to_bytes(18, "big") + bytes(16))
    number = 0
    for sample_rate, pcm in parts:
        samples = pcm_samples(pcm)
        for start in range(0, len(samples), block_size):
            block = samples[start:start + block_size]
            header = bytearray([0xFF, 0xF8, 0b0111 << 4 | rate_codes[sample_rate], 0b0000_1000])
            header += _utf8_number(number) + (len(block) - 1).to_bytes(2, "big")
            header.append(_crc8(header))
            block.byteswap()  # verbatim samples are big-endian
            frame = header + b"\x02" + block.tobytes()  # VERBATIM subframe, no wasted bits
            out += frame + _crc16(frame).to_bytes(2, "big")
            number += 1
    return bytes(out)


def _utf8_number(value: int) -> bytes:
    """FLAC's frame number: UTF-8's scheme stretched to 36 bits."""
    if value < 0x80:
        return bytes([value])
    for length, limit in ((2, 1 << 11), (3, 1 << 16), (4, 1 << 21), (5, 1 << 26), (6, 1 << 31), (7, 1 << 36)):
        if value < limit:
            tail = [0x80 | (value >> 6 * index) & 0x3F for index in range(length - 1)][::-1]
            lead = (0xFF << (8 - length)) & 0xFF | value >> 6 * (length - 1)
            return bytes([lead, *tail])
    raise ValueError("frame number too large")


def _crc8(data: bytes | bytearray) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


_CRC16_TABLE = []
for _byte in range(256):
    _value = _byte << 8
    for _ in range(8):
        _value = ((_value << 1) ^ 0x8005) & 0xFFFF if _value & 0x8000 else (_value << 1) & 0xFFFF
    _CRC16_TABLE.append(_value)


def _crc16(data: bytes | bytearray) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16_TABLE[(crc >> 8) ^ byte]
    return crc


# Ogg's CRC-32 is zlib's with the bits of every byte and of the result reversed (and no initial
# or final inversion); computed that way it runs in C.
_BIT_REVERSED = bytes(int(f"{byte:08b}"[::-1], 2) for byte in range(256))


def ogg_crc(page: bytes) -> int:
    """Ogg's CRC-32 of a page whose checksum field is zeroed (polynomial 0x04C11DB7, not reflected)."""
    reflected = zlib.crc32(page.translate(_BIT_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


def ogg_pages(data: bytes) -> list[bytes]:
    """An Ogg file cut at its page boundaries."""
    pages, offset = [], 0
    while offset < len(data):
        segments = data[offset + 26]
        end = offset + 27 + segments + sum(data[offset + 27 : offset + 27 + segments])
        pages.append(data[offset:end])
        offset = end
    return pages


def with_granule(page: bytes, granule: int) -> bytes:
    """``page`` with another granule position and a checksum that holds (a lie a demuxer believes)."""
    changed = page[:6] + granule.to_bytes(8, "little", signed=True) + page[14:22] + b"\0\0\0\0" + page[26:]
    return changed[:22] + ogg_crc(changed).to_bytes(4, "little") + changed[26:]
