"""Decoding real corpus audio in every common container, and typed errors for bad input."""

from pathlib import Path

import numpy as np
import pytest

from tasks import audio
from tasks.errors import AudioTooLong, EmptyAudio, InputError, InvalidAudio
from tests.conftest import corpus_file, ffmpeg

FORMATS = {
    "wav": ["-c:a", "pcm_s16le"],
    "flac": ["-c:a", "flac"],
    "mp3": ["-c:a", "libmp3lame"],
    "m4a": ["-c:a", "aac"],
    "ogg": ["-c:a", "libvorbis"],
    "opus": ["-c:a", "libopus"],
    "webm": ["-c:a", "libopus"],
}


@pytest.fixture(scope="module")
def media(tmp_path_factory, jfk) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("media")
    files = {}
    for ext, codec in FORMATS.items():
        files[ext] = out / f"jfk.{ext}"
        ffmpeg("-i", str(jfk), *codec, str(files[ext]))
    files["mp4"] = out / "jfk_video.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=duration=11:size=64x64:rate=5", "-i", str(jfk),
           "-shortest", "-c:v", "libx264", "-c:a", "aac", str(files["mp4"]))
    files["mkv"] = out / "jfk_video.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc=duration=11:size=64x64:rate=5", "-i", str(jfk),
           "-shortest", "-c:v", "libx264", "-c:a", "libopus", str(files["mkv"]))
    return files


@pytest.mark.parametrize("ext", [*FORMATS, "mp4", "mkv"])
def test_every_container_decodes_to_16k_mono_float32(media, ext, jfk):
    reference = audio.decode(jfk)
    decoded = audio.decode(media[ext])
    assert decoded.dtype == np.float32 and decoded.ndim == 1
    assert abs(len(decoded) - len(reference)) / 16000 < 0.2  # codec padding only
    n = min(len(decoded), len(reference))
    # same speech: the envelopes correlate even through lossy codecs and their delays
    env = [np.convolve(np.abs(x[:n]), np.ones(1600) / 1600, mode="same")[::160] for x in (reference, decoded)]
    assert np.corrcoef(*env)[0, 1] > 0.9


def test_probe_reports_stream_facts(jfk):
    info = audio.probe(jfk)
    assert (info.codec, info.channels, info.sample_rate) == ("flac", 2, 44100)
    assert info.duration == pytest.approx(11.0, abs=0.05)
    assert not info.has_video


def test_multichannel_high_rate_input_is_downmixed(tmp_path, jfk):
    eight = tmp_path / "eight.wav"
    ffmpeg("-i", str(jfk), "-ac", "8", "-ar", "96000", str(eight))
    info = audio.probe(eight)
    assert (info.channels, info.sample_rate) == (8, 96000)
    decoded = audio.decode(eight)
    assert len(decoded) == pytest.approx(11.0 * 16000, abs=400)
    assert np.abs(decoded).max() > 0.05


def test_stereo_channels_are_mixed_not_dropped(tmp_path):
    # one speaker per channel: the mono mix must carry both
    path = corpus_file("speech/stereo_diarization.wav")
    mono = audio.decode(path)
    for channel in (0, 1):
        single = tmp_path / f"c{channel}.wav"
        ffmpeg("-i", str(path), "-af", f"pan=mono|c0=c{channel}", str(single))
        alone = audio.decode(single)
        n = min(len(alone), len(mono))
        assert np.abs(alone).max() > 0.01
        assert np.corrcoef(alone[:n], mono[:n])[0, 1] > 0.3


def test_zero_byte_file_is_empty_audio(tmp_path):
    path = tmp_path / "zero.wav"
    path.write_bytes(b"")
    with pytest.raises(EmptyAudio, match="0 bytes"):
        audio.decode(path)


def test_text_named_wav_is_not_audio(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is a text file, not audio\n" * 20)
    with pytest.raises(InvalidAudio, match="not an audio file"):
        audio.decode(path)


def test_pdf_renamed_wav_is_not_audio(tmp_path):
    path = tmp_path / "report.wav"
    path.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n" * 50)
    with pytest.raises(InvalidAudio):
        audio.probe(path)


def test_truncated_flac_is_invalid(tmp_path, ami_files):
    data = ami_files[0].read_bytes()
    path = tmp_path / "cut.flac"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(InvalidAudio, match=r"corrupt|truncated"):
        audio.decode(path)


def test_video_without_audio_track_is_invalid(tmp_path):
    path = tmp_path / "silent_film.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=duration=2:size=64x64:rate=5", "-c:v", "libx264", str(path))
    with pytest.raises(InvalidAudio, match="no audio track"):
        audio.probe(path)


def test_missing_file_and_directory_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        audio.decode(tmp_path / "nope.wav")
    with pytest.raises(InputError, match="not a regular file"):
        audio.decode(tmp_path)


def test_over_limit_duration_is_refused(jfk):
    with pytest.raises(AudioTooLong, match="limit of 5 s"):
        audio.decode(jfk, max_duration_s=5)


def test_waveform_store_round_trip(tmp_path, jfk):
    decoded = audio.decode(jfk)
    audio.save_waveform(decoded, tmp_path / "a.npy")
    loaded = audio.load_waveform(tmp_path / "a.npy")
    assert np.array_equal(loaded, decoded)
