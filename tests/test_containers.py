"""What a file's own headers state, read from crafted bytes (no decoder, no process).

Each container is built here byte by byte from its specification, with the duration the test
wants it to state, so every reader of ``voicebridge.speech.containers`` is checked on the length
a player would show, on the files it must not trust, and on hostile truncations.
"""

from __future__ import annotations

import struct

import pytest

from voicebridge.speech.containers import HEADER_SCAN_BYTES, sniff_container, stated_seconds
from tests.audio_tools import ogg_crc, silent_flac, tone_wav

# ----------------------------------------------------------------------------- sniffing


@pytest.mark.parametrize(
    ("head", "container"),
    [(b"OggS\x00\x02", "ogg"), (b"RIFF\x00\x00\x00\x00WAVEfmt ", "wav"), (b"ID3\x04", "mp3"), (b"\xff\xfb\x90", "mp3"),
     (b"\xff\xf1\x50", "aac"), (b"\x00\x00\x00\x20ftypM4A ", "m4a"), (b"\x00\x00\x00\x1cftypisom", "mp4"),
     (b"fLaC\x00", "flac"), (b"#!AMR\n", "amr"), (b"hello", None),
     (b"\x1a\x45\xdf\xa3\x9f\x42\x82\x84webm", "webm"), (b"\x1a\x45\xdf\xa3\x9f\x42\x82\x88matroska", "mkv"),
     (b"\xff\xe2\x90", "mp3"),  # MPEG 2.5 layer III: an 11-bit sync only
     (b"\xff\xf9\x50", "aac"),  # ADTS, MPEG-2
     (b"RIFF\x00\x00\x00\x00AVI LIST", None), (b"\xff", None), (b"\xff\xd8\xff\xe0", None), (b"", None),
     (b"\x00\x00\x00\x18ftypM4B ", "mp4")],
)
def test_container_sniffing(head: bytes, container: str | None) -> None:
    assert sniff_container(head) == container


def test_webm_is_told_from_matroska_by_its_doctype_within_the_header_only() -> None:
    far = b"\x1a\x45\xdf\xa3" + bytes(60) + b"webm"  # "webm" past the EBML header: audio data, not the doctype
    assert sniff_container(far) == "mkv"


# ----------------------------------------------------------------------------- FLAC


def test_flac_states_its_total_samples_over_its_rate() -> None:
    assert stated_seconds("flac", silent_flac(2.5, 16000)) == 2.5
    assert stated_seconds("flac", silent_flac(0.5, 48000)) == 0.5


def test_flac_counts_every_sample() -> None:
    assert stated_seconds("flac", silent_flac(16001 / 16000, 16000)) == 16001 / 16000


def test_flac_cut_off_after_its_header_still_states_its_length() -> None:
    header = silent_flac(3.0, 16000)[:4 + 4 + 34]  # "fLaC", the block header, STREAMINFO
    assert stated_seconds("flac", header) == 3.0


def test_flac_stating_zero_samples_states_nothing() -> None:
    assert stated_seconds("flac", silent_flac(0.5, 16000, stated_seconds=0)) is None


def test_flac_whose_first_block_is_not_streaminfo_states_nothing() -> None:
    data = bytearray(silent_flac(0.5, 16000))
    data[4] = 0x84  # last-block flag, type 4 (a comment block)
    assert stated_seconds("flac", bytes(data)) is None
    assert stated_seconds("flac", b"OggS" + bytes(data[4:])) is None


# ----------------------------------------------------------------------------- WAV


def riff(*chunks: tuple[bytes, bytes], declared_sizes: dict[bytes, int] | None = None) -> bytes:
    body = b"WAVE"
    for chunk_id, payload in chunks:
        size = (declared_sizes or {}).get(chunk_id, len(payload))
        body += chunk_id + struct.pack("<I", size) + payload + (b"\x00" if len(payload) % 2 else b"")
    return b"RIFF" + struct.pack("<I", len(body)) + body


def fmt_chunk(tag: int = 1, channels: int = 1, rate: int = 16000, bits: int = 16) -> tuple[bytes, bytes]:
    align = channels * bits // 8
    return b"fmt ", struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)


def test_wav_states_its_samples_over_its_rate() -> None:
    assert stated_seconds("wav", tone_wav(440.0, 1.25, 16000)) == 1.25


@pytest.mark.parametrize("tag", [1, 3, 6, 7, 0xFFFE])  # PCM, float, A-law, mu-law, extensible
def test_wav_of_sized_frames_states_its_length(tag: int) -> None:
    bits = 8 if tag in (6, 7) else 16
    data = riff(fmt_chunk(tag, channels=2, rate=8000, bits=bits), (b"data", bytes(8000 * 2 * bits // 8 * 3)))
    assert stated_seconds("wav", data) == 3.0


@pytest.mark.parametrize("tag", [2, 0x11, 0x55])  # MS ADPCM, IMA ADPCM, MP3: frames of varying sizes
def test_wav_of_compressed_audio_states_nothing(tag: int) -> None:
    assert stated_seconds("wav", riff(fmt_chunk(tag), (b"data", bytes(32000)))) is None


def test_wav_chunks_before_the_audio_are_skipped_with_their_padding() -> None:
    data = riff((b"LIST", b"INFOISFT\x03\x00\x00\x00ab\x00"), fmt_chunk(rate=8000), (b"junk", b"x" * 7),
                (b"data", bytes(8000 * 2 * 2)))
    assert stated_seconds("wav", data) == 2.0


def test_wav_counts_only_whole_frames() -> None:
    data = riff(fmt_chunk(channels=2, rate=1000), (b"data", bytes(4 * 1000 + 3)))  # 3 bytes of a 4-byte frame
    assert stated_seconds("wav", data) == 1.0


def test_wav_whose_data_size_runs_past_the_file_counts_what_is_there() -> None:
    # Streaming writers leave 0xFFFFFFFF (or the size they meant to write) in the data chunk.
    data = riff(fmt_chunk(rate=8000), (b"data", bytes(8000 * 2)), declared_sizes={b"data": 0xFFFFFFFF})
    assert stated_seconds("wav", data) == 1.0


def test_wav_with_a_header_and_no_samples_states_zero() -> None:
    assert stated_seconds("wav", riff(fmt_chunk(), (b"data", b""))) == 0.0


@pytest.mark.parametrize("data", [
    riff((b"data", bytes(3200)), fmt_chunk()),  # audio before its format: the frame size is unknown
    riff(fmt_chunk(rate=0), (b"data", bytes(3200))),
    riff(fmt_chunk(channels=0), (b"data", bytes(3200))),
    riff(fmt_chunk()),  # no data chunk
])
def test_wav_without_a_usable_format_states_nothing(data: bytes) -> None:
    assert stated_seconds("wav", data) is None


# ----------------------------------------------------------------------------- Ogg


def test_the_tests_ogg_crc_is_the_standard_one() -> None:
    assert ogg_crc(b"123456789") == 0x89A1897F  # CRC-32/CKSUM's check value, without its final xor


def ogg_page(serial: int, granule: int, packets: list[bytes], *, sequence: int = 0, first: bool = False,
             continued: bool = False, valid: bool = True) -> bytes:
    lacing = b"".join(bytes([255] * (len(packet) // 255) + [len(packet) % 255]) for packet in packets)
    header_type = (0x02 if first else 0) | (0x01 if continued else 0)
    header = struct.pack("<4sBBqIII", b"OggS", 0, header_type, granule, serial, sequence, 0)
    page = bytearray(header + bytes([len(lacing)]) + lacing + b"".join(packets))
    page[22:26] = struct.pack("<I", ogg_crc(bytes(page)) ^ (0 if valid else 1))
    return bytes(page)


def opus_head(pre_skip: int = 312, input_rate: int = 16000) -> bytes:
    return b"OpusHead" + struct.pack("<BBHIhB", 1, 1, pre_skip, input_rate, 0, 0)


def vorbis_id(rate: int) -> bytes:
    return b"\x01vorbis" + struct.pack("<IBIiiiBB", 0, 1, rate, 0, 64000, 0, 0xB8, 1)


def ogg_flac_head(rate: int) -> bytes:
    streaminfo = (4096 << 128 | 4096 << 112 | rate << 44 | 15 << 36 | 0).to_bytes(18, "big") + bytes(16)
    return b"\x7fFLAC\x01\x00\x00\x01fLaC" + bytes([0x80, 0, 0, 34]) + streaminfo


def ogg_file(head: bytes, granules: list[int], serial: int = 7) -> bytes:
    pages = [ogg_page(serial, 0, [head], first=True)]
    pages += [ogg_page(serial, granule, [bytes(200 + index)], sequence=index + 1)
              for index, granule in enumerate(granules)]
    return b"".join(pages)


def test_ogg_opus_states_its_last_granule_less_the_pre_skip_at_48_khz() -> None:
    assert stated_seconds("ogg", ogg_file(opus_head(pre_skip=312), [48000, 96312])) == 2.0


def test_ogg_vorbis_and_flac_state_their_granule_at_their_own_rate() -> None:
    assert stated_seconds("ogg", ogg_file(vorbis_id(22050), [22050, 55125])) == 2.5
    assert stated_seconds("ogg", ogg_file(ogg_flac_head(44100), [44100, 66150])) == 1.5


def test_ogg_opus_pre_skip_is_unsigned() -> None:
    assert stated_seconds("ogg", ogg_file(opus_head(pre_skip=40000), [136000])) == 2.0


def test_ogg_granule_below_the_pre_skip_states_zero() -> None:
    assert stated_seconds("ogg", ogg_file(opus_head(pre_skip=312), [100])) == 0.0


def test_ogg_of_an_unknown_codec_or_no_valid_first_page_states_nothing() -> None:
    assert stated_seconds("ogg", ogg_file(b"\x80theora" + bytes(40), [48000])) is None
    assert stated_seconds("ogg", ogg_file(vorbis_id(0), [48000])) is None
    broken_first = bytearray(ogg_file(opus_head(), [48000]))
    broken_first[30] ^= 0xFF  # a byte of the OpusHead: the first page's checksum fails
    assert stated_seconds("ogg", bytes(broken_first)) is None


def test_ogg_pages_that_do_not_check_out_are_not_pages() -> None:
    """Page-like bytes after the last real page (inside audio data, or a damaged page), a page
    of another logical stream, and a page where no packet ends (granule -1) are all passed over."""
    real = ogg_file(opus_head(pre_skip=0), [48000, 72000])
    fakes = [ogg_page(7, 480000, [bytes(50)], sequence=9, valid=False),
             ogg_page(8, 960000, [bytes(50)], sequence=1),
             ogg_page(7, -1, [bytes(300)], sequence=3),
             b"OggS\x00" + bytes(40),
             b"OggS\x00" + bytes(10)]  # a download cut inside a page header
    for fake in fakes:
        assert stated_seconds("ogg", real + fake) == 1.5, fake[:32]


def test_ogg_page_damaged_anywhere_does_not_count() -> None:
    last = ogg_page(7, 480000, [bytes(range(100))], sequence=3)
    real = ogg_file(opus_head(pre_skip=0), [48000])
    for position in (0, 4, 6, 14, 18, 22, 26, 27, len(last) - 1):
        damaged = bytearray(last)
        damaged[position] ^= 0x01
        assert stated_seconds("ogg", real + bytes(damaged)) == 1.0, position
    assert stated_seconds("ogg", real + last[:-1]) == 1.0  # cut short: its body is incomplete


def test_ogg_empty_last_page_ending_the_file_counts() -> None:
    """A last page with no segments (some muxers end a stream with one) is 27 bytes."""
    data = ogg_file(opus_head(pre_skip=0), [48000]) + ogg_page(7, 96000, [], sequence=2)
    assert stated_seconds("ogg", data) == 2.0


def test_ogg_last_page_is_looked_for_in_the_last_70_kb_only() -> None:
    head = ogg_file(opus_head(pre_skip=0), [48000])
    big_pages = b"".join(ogg_page(7, -1, [bytes(60000)], sequence=2 + index) for index in range(2))
    # The last complete page 120 KB before the end: out of reach, so the file states nothing.
    assert stated_seconds("ogg", head + ogg_page(7, 96000, [bytes(10)], sequence=9) + big_pages) is None
    assert stated_seconds("ogg", head + big_pages + ogg_page(7, 96000, [bytes(10)], sequence=9)) == 2.0


def test_ogg_packet_spanning_laces_is_one_page() -> None:
    data = ogg_file(opus_head(pre_skip=0), [48000]) + ogg_page(7, 144000, [bytes(600), bytes(255)], sequence=2)
    assert stated_seconds("ogg", data) == 3.0


# ----------------------------------------------------------------------------- MP4 / M4A


def box(kind: bytes, body: bytes = b"", *, size: int | None = None) -> bytes:
    return struct.pack(">I4s", len(body) + 8 if size is None else size, kind) + body


def mvhd(timescale: int, duration: int, version: int = 0) -> bytes:
    if version == 1:
        return box(b"mvhd", struct.pack(">B3xQQIQ", 1, 0, 0, timescale, duration) + bytes(80))
    return box(b"mvhd", struct.pack(">B3xIIII", 0, 0, 0, timescale, duration) + bytes(80))


FTYP = box(b"ftyp", b"M4A \x00\x00\x02\x00isomM4A ")


def test_mp4_states_its_movie_duration_over_its_timescale() -> None:
    data = FTYP + box(b"moov", mvhd(1000, 2500)) + box(b"mdat", bytes(100))
    assert stated_seconds("m4a", data) == 2.5
    assert stated_seconds("mp4", data) == 2.5


def test_mp4_version_1_header_holds_64_bit_fields() -> None:
    data = FTYP + box(b"moov", mvhd(48000, 3 * 48000 + (1 << 33), version=1))
    assert stated_seconds("m4a", data) == 3.0 + (1 << 33) / 48000


def test_mp4_index_at_the_end_after_the_media_is_found() -> None:
    """Telegram video notes and most phone recordings: the moov box follows mdat, whose size may
    need 64 bits (size field 1), and small boxes (an 8-byte free) come between."""
    large_mdat = struct.pack(">I4sQ", 1, b"mdat", 16 + 500) + bytes(500)
    data = FTYP + box(b"free") + large_mdat + box(b"moov", box(b"udta", bytes(20)) + mvhd(600, 900))
    assert stated_seconds("mp4", data) == 1.5


def test_mp4_durations_of_minutes_at_a_sample_rate_timescale() -> None:
    """Phones often count the movie in audio samples: ten minutes at 48 kHz need all 32 bits."""
    assert stated_seconds("m4a", FTYP + box(b"moov", mvhd(48000, 600 * 48000))) == 600.0
    assert stated_seconds("m4a", FTYP + box(b"moov", mvhd(48000, 0xFFFF_FFFF))) == 0xFFFF_FFFF / 48000


def test_mp4_index_in_a_box_of_64_bit_size() -> None:
    body = mvhd(1000, 7000)
    assert stated_seconds("mp4", FTYP + struct.pack(">I4sQ", 1, b"moov", 16 + len(body)) + body) == 7.0


def test_mp4_last_box_sized_to_the_end_of_the_file() -> None:
    assert stated_seconds("mp4", FTYP + box(b"moov", mvhd(1000, 4000), size=0)) == 4.0


@pytest.mark.parametrize("data", [
    FTYP + box(b"mdat", bytes(64)),  # no index at all
    FTYP + box(b"moov", box(b"trak", bytes(30))),  # no movie header
    FTYP + box(b"moov", mvhd(1000, 0)),  # fragmented: the length is in the fragments
    FTYP + box(b"moov", mvhd(0, 5000)),
    FTYP + box(b"junk", size=4) + box(b"moov", mvhd(1000, 4000)),  # a box smaller than its header
])
def test_mp4_without_a_usable_movie_header_states_nothing(data: bytes) -> None:
    assert stated_seconds("mp4", data) is None


def test_mp4_box_inside_another_is_not_read_as_a_top_level_one() -> None:
    nested = FTYP + box(b"meta", box(b"moov", mvhd(1000, 4000)))
    assert stated_seconds("mp4", nested) is None
    sibling = FTYP + box(b"moov", box(b"trak", mvhd(1000, 9000))) + mvhd(1000, 9000)
    assert stated_seconds("mp4", sibling) is None


# ----------------------------------------------------------------------------- Matroska / WebM


def ebml_size(size: int) -> bytes:
    return bytes([0x80 | size]) if size < 0x7F else (0x0100_0000_0000_0000 | size).to_bytes(8, "big")


def element(element_id: int, body: bytes, *, unknown_size: bool = False) -> bytes:
    size = b"\x01\xff\xff\xff\xff\xff\xff\xff" if unknown_size else ebml_size(len(body))
    return element_id.to_bytes((element_id.bit_length() + 7) // 8, "big") + size + body


EBML_HEADER = element(0x1A45DFA3, element(0x4282, b"webm"))
SEGMENT, INFO, SCALE, DURATION, CLUSTER, VOID = 0x18538067, 0x1549A966, 0x2AD7B1, 0x4489, 0x1F43B675, 0xEC


def matroska(*segment_children: bytes, unknown_size: bool = True) -> bytes:
    return EBML_HEADER + element(SEGMENT, b"".join(segment_children), unknown_size=unknown_size)


def test_webm_states_its_duration_in_milliseconds_by_default() -> None:
    # What browsers' MediaRecorder and ffmpeg write: a segment of unknown size, a 4- or 8-byte float.
    data = matroska(element(INFO, element(DURATION, struct.pack(">d", 2500.0))), element(CLUSTER, bytes(40)))
    assert stated_seconds("webm", data) == 2.5
    data = matroska(element(INFO, element(DURATION, struct.pack(">f", 1500.0))), unknown_size=False)
    assert stated_seconds("mkv", data) == 1.5


def test_matroska_info_elements_of_a_floats_size_are_not_read_as_the_duration() -> None:
    date_utc = element(0x4461, (725_000_000_000_000_000).to_bytes(8, "big"))  # 8 bytes, as ffmpeg writes it
    info = element(INFO, element(DURATION, struct.pack(">d", 2500.0)) + date_utc + element(0x7BA9, b"talk"))
    assert stated_seconds("webm", matroska(info)) == 2.5


def test_matroska_duration_counts_in_its_timestamp_scale() -> None:
    info = element(INFO, element(SCALE, (10_000_000).to_bytes(3, "big")) + element(DURATION, struct.pack(">d", 300.0)))
    assert stated_seconds("mkv", matroska(element(VOID, bytes(100)), info)) == 3.0


@pytest.mark.parametrize("data", [
    matroska(element(CLUSTER, bytes(40)), element(INFO, element(DURATION, struct.pack(">d", 2500.0)))),
    matroska(element(INFO, element(SCALE, b"\x0f\x42\x40"))),  # no duration
    matroska(element(INFO, element(DURATION, b"\x00\x10")), element(CLUSTER, bytes(4))),  # not a float
    matroska(element(INFO, element(DURATION, struct.pack(">d", -2500.0)))),
    matroska(element(INFO, element(DURATION, struct.pack(">d", 0.0)))),
    EBML_HEADER + element(INFO, element(DURATION, struct.pack(">d", 2500.0))),  # no segment
    b"\x1a\x45\xdf\xa3\x00" + bytes(40),  # not an EBML number
])
def test_matroska_without_a_usable_duration_states_nothing(data: bytes) -> None:
    assert stated_seconds("webm", data) is None


def test_matroska_elements_are_skipped_by_their_size_and_an_unknown_size_runs_to_the_end() -> None:
    duration = element(DURATION, struct.pack(">d", 2500.0))
    # 126 bytes: one short of the one-byte "unknown size" (127).
    assert stated_seconds("webm", matroska(element(VOID, bytes(126)), element(INFO, duration))) == 2.5
    # An Info of unknown size (one-byte form): its children are read past 127 bytes.
    unknown_info = (0x1549A966).to_bytes(4, "big") + b"\xff" + element(VOID, bytes(200)) + duration
    assert stated_seconds("webm", matroska(unknown_info)) == 2.5


def test_matroska_length_without_a_marker_bit_ends_the_scan() -> None:
    """A length whose first byte is 0 is not an EBML number: nothing after it is read as elements."""
    info = element(INFO, element(DURATION, struct.pack(">d", 2500.0)))
    garbage = (0x1A45DFA3).to_bytes(4, "big") + b"\x00" + (5).to_bytes(7, "big") + bytes(5)
    assert stated_seconds("webm", garbage + element(SEGMENT, info)) is None


def test_matroska_header_is_looked_for_in_the_first_256_kb_only() -> None:
    info = element(INFO, element(DURATION, struct.pack(">d", 2500.0)))
    assert stated_seconds("webm", matroska(element(VOID, bytes(HEADER_SCAN_BYTES - 200)), info)) == 2.5
    assert stated_seconds("webm", matroska(element(VOID, bytes(HEADER_SCAN_BYTES + 1000)), info)) is None


def test_matroska_info_children_after_the_scan_limit_are_not_read() -> None:
    info = element(INFO, element(VOID, bytes(HEADER_SCAN_BYTES)) + element(DURATION, struct.pack(">d", 2500.0)))
    assert stated_seconds("webm", matroska(info)) is None


# ----------------------------------------------------------------------------- MP3

MPEG1, MPEG2, MPEG25 = 3, 2, 0


def mp3_frame_header(version: int = MPEG1, layer: int = 1, rate_index: int = 0, mono: bool = True) -> bytes:
    """Sync, version, layer (1 = III), no CRC, bitrate index 9, rate index, channel mode."""
    header = 0x7FF << 21 | version << 19 | layer << 17 | 1 << 16 | 9 << 12 | rate_index << 10 | (3 if mono else 0) << 6
    return struct.pack(">I", header)


def mp3_with_tag(tag: bytes, frames: int, version: int = MPEG1, mono: bool = True, rate_index: int = 0,
                 flags: int = 0x0F, side_info: int | None = None) -> bytes:
    if side_info is None:
        side_info = (17 if mono else 32) if version == MPEG1 else (9 if mono else 17)
    header = mp3_frame_header(version, rate_index=rate_index, mono=mono)
    if tag == b"VBRI":
        body = bytes(32) + b"VBRI" + struct.pack(">HHHII", 1, 0x0F, 75, 40000, frames) + bytes(20)
    else:
        body = bytes(side_info) + tag + struct.pack(">II", flags, frames) + bytes(120)
    return header + body + bytes(300)


@pytest.mark.parametrize(("version", "mono", "rate_index", "seconds_per_frame"), [
    (MPEG1, True, 0, 1152 / 44100), (MPEG1, False, 1, 1152 / 48000), (MPEG1, True, 2, 1152 / 32000),
    (MPEG2, True, 0, 576 / 22050), (MPEG2, False, 1, 576 / 24000), (MPEG2, True, 2, 576 / 16000),
    (MPEG25, True, 0, 576 / 11025), (MPEG25, False, 1, 576 / 12000), (MPEG25, False, 2, 576 / 8000),
])
def test_mp3_xing_header_states_its_frame_count(version: int, mono: bool, rate_index: int,
                                                seconds_per_frame: float) -> None:
    data = mp3_with_tag(b"Xing", 1000, version, mono, rate_index)
    assert stated_seconds("mp3", data) == pytest.approx(1000 * seconds_per_frame)
    assert stated_seconds("mp3", mp3_with_tag(b"Info", 1000, version, mono, rate_index)) == pytest.approx(1000 * seconds_per_frame)


def test_mp3_stating_billions_of_frames_states_hours() -> None:
    """Refused before decoding as far too long, not read as a negative (hence unstated) count."""
    assert stated_seconds("mp3", mp3_with_tag(b"Xing", 0xFFFF_FFF0)) == pytest.approx(0xFFFF_FFF0 * 1152 / 44100)
    assert stated_seconds("mp3", mp3_with_tag(b"VBRI", 0xFFFF_FFF0)) == pytest.approx(0xFFFF_FFF0 * 1152 / 44100)


def test_mp3_vbri_header_states_its_frame_count() -> None:
    assert stated_seconds("mp3", mp3_with_tag(b"VBRI", 500, MPEG2, mono=False)) == pytest.approx(500 * 576 / 22050)
    assert stated_seconds("mp3", mp3_with_tag(b"VBRI", 500, MPEG1, mono=True)) == pytest.approx(500 * 1152 / 44100)


def id3_tag(body_size: int) -> bytes:
    """An ID3v2.4 tag of ``body_size`` bytes: its size is "syncsafe", 7 bits in each of 4 bytes."""
    size = bytes((body_size >> shift) & 0x7F for shift in (21, 14, 7, 0))
    return b"ID3\x04\x00\x00" + size + bytes(body_size)


@pytest.mark.parametrize("body_size", [0, 129, (1 << 14) + 3, (1 << 21) + 5])
def test_mp3_after_an_id3_tag_is_read_past_it(body_size: int) -> None:
    data = id3_tag(body_size) + mp3_with_tag(b"Xing", 100)
    assert stated_seconds("mp3", data) == pytest.approx(100 * 1152 / 44100)


@pytest.mark.parametrize("data", [
    mp3_with_tag(b"Xing", 1000, flags=0x0E),  # no frame count in the header
    mp3_with_tag(b"LAME", 1000),  # plain CBR: nothing stated
    mp3_with_tag(b"Xing", 1000, side_info=32),  # a tag where a stereo frame has it, in a mono frame
    mp3_frame_header(layer=2) + bytes(17) + b"Xing" + struct.pack(">II", 1, 1000) + bytes(200),  # layer II
    mp3_frame_header(version=1) + bytes(17) + b"Xing" + struct.pack(">II", 1, 1000) + bytes(200),  # reserved version
    mp3_with_tag(b"Xing", 1000, rate_index=3),  # reserved rate
    b"\xff\x00" + bytes(300),  # no frame sync
    id3_tag(16)[:-2] + mp3_with_tag(b"Xing", 100),  # the tag is shorter than its size says
])
def test_mp3_without_a_usable_vbr_header_states_nothing(data: bytes) -> None:
    assert stated_seconds("mp3", data) is None


# ----------------------------------------------------------------------------- hostile bytes


def test_containers_without_a_reader_state_nothing() -> None:
    assert stated_seconds("aac", b"\xff\xf1" + bytes(100)) is None
    assert stated_seconds(None, silent_flac(0.5, 16000)) is None


def every_sample_file() -> dict[str, bytes]:
    return {
        "flac": silent_flac(0.2, 16000),
        "wav": riff(fmt_chunk(), (b"data", bytes(400))),
        "ogg": ogg_file(opus_head(), [48000, 96000]),
        "m4a": FTYP + box(b"moov", mvhd(1000, 4000, version=1)),
        "webm": matroska(element(INFO, element(SCALE, b"\x0f\x42\x40") + element(DURATION, struct.pack(">d", 2.0)))),
        "mp3": id3_tag(2) + mp3_with_tag(b"Xing", 10),
    }


@pytest.mark.parametrize("container", ["flac", "wav", "ogg", "m4a", "webm", "mp3"])
def test_every_truncation_and_bit_flip_ends_in_a_duration_or_nothing(container: str) -> None:
    """A reader never raises, never states a negative length, on any prefix of a file or any
    single damaged byte of its headers."""
    data = every_sample_file()[container]
    variants = [data[:end] for end in range(len(data))]
    for position in range(min(len(data), 160)):
        flipped = bytearray(data)
        flipped[position] ^= 0xFF
        variants.append(bytes(flipped))
    for variant in variants:
        seconds = stated_seconds(container, variant)
        assert seconds is None or seconds >= 0
    assert stated_seconds(container, memoryview(data)) == stated_seconds(container, data) is not None
