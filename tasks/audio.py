"""Probe and decode any common audio or video container to 16 kHz mono float32 (PyAV, no ffmpeg binary).

Bad input raises :class:`~tasks.errors.InvalidAudio` / :class:`~tasks.errors.EmptyAudio` with a message
a person can act on, never a bare decoder traceback.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np

from .errors import AudioTooLong, EmptyAudio, InvalidAudio

SAMPLE_RATE = 16000
# A stream that decodes to less than this share of the duration its header declares is truncated.
_TRUNCATION_TOLERANCE = 0.97


@dataclass(frozen=True)
class AudioInfo:
    """What a probe learns about an input file without decoding it."""

    path: str
    size_bytes: int
    container: str
    codec: str
    channels: int
    sample_rate: int
    duration: float | None
    has_video: bool

    def to_dict(self) -> dict:
        return asdict(self)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InvalidAudio(f"no such file: {path}")
    if not path.is_file():
        raise InvalidAudio(f"not a regular file: {path}")
    if path.stat().st_size == 0:
        raise EmptyAudio(f"file is empty (0 bytes): {path.name}")


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidAudio(f"not an audio file: {path.name} ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(":")[-1].strip() or type(exc).__name__


def probe(path: str | Path) -> AudioInfo:
    """Container, codec, channels, sample rate and duration of the first audio stream."""
    path = Path(path)
    _check_file(path)
    with _open(path) as container:
        streams = container.streams.audio
        if not streams:
            kind = "video file without an audio track" if container.streams.video else "no audio stream"
            raise InvalidAudio(f"no audio track in {path.name} ({kind})")
        stream = streams[0]
        ctx = stream.codec_context
        return AudioInfo(
            path=str(path),
            size_bytes=path.stat().st_size,
            container=container.format.name,
            codec=ctx.name,
            channels=ctx.channels or 0,
            sample_rate=ctx.sample_rate or 0,
            duration=_declared_duration(container, stream),
            has_video=bool(container.streams.video),
        )


def _declared_duration(container: av.container.InputContainer, stream: av.audio.AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def decode(path: str | Path, *, max_duration_s: float | None = None) -> np.ndarray:
    """Decode the first audio stream to a 16 kHz mono float32 array (multi-channel is downmixed).

    Raises InvalidAudio for undecodable or truncated data, EmptyAudio when no sample comes out,
    AudioTooLong when the declared or decoded duration exceeds ``max_duration_s``.
    """
    info = probe(path)
    path = Path(path)
    if max_duration_s and info.duration and info.duration > max_duration_s:
        raise AudioTooLong(
            f"{path.name} lasts {info.duration:.0f} s, over the limit of {max_duration_s:.0f} s "
            "(SECURETRANSCRIBE_MAX_DURATION_S)"
        )
    pieces: list[np.ndarray] = []
    decoded = 0
    limit = int(max_duration_s * SAMPLE_RATE) if max_duration_s else None
    with _open(path) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        try:
            for frame in container.decode(stream):
                frame.pts = None  # let the resampler count samples itself
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray().reshape(-1))
                    decoded += out.samples
                if limit is not None and decoded > limit:
                    raise AudioTooLong(
                        f"{path.name} is over the limit of {max_duration_s:.0f} s "
                        "(SECURETRANSCRIBE_MAX_DURATION_S)"
                    )
            for out in resampler.resample(None):
                pieces.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as exc:
            at = decoded / SAMPLE_RATE
            raise InvalidAudio(f"corrupt audio in {path.name} at {at:.1f} s ({_reason(exc)})") from None
    audio = np.concatenate(pieces).astype(np.float32, copy=False) if pieces else np.zeros(0, np.float32)
    if audio.size == 0:
        raise EmptyAudio(f"no audio samples in {path.name}")
    got = audio.size / SAMPLE_RATE
    if info.duration and info.duration > 1.0 and got < info.duration * _TRUNCATION_TOLERANCE - 0.25:
        raise InvalidAudio(
            f"truncated audio: {path.name} decodes to {got:.1f} s of the {info.duration:.1f} s its header declares"
        )
    np.clip(audio, -1.0, 1.0, out=audio)
    return audio


def save_waveform(audio: np.ndarray, path: Path) -> None:
    """Store decoded audio for later stages (memory-mappable .npy)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, audio.astype(np.float32, copy=False))
    tmp.replace(path)


def load_waveform(path: Path) -> np.ndarray:
    """Load a waveform written by :func:`save_waveform`, memory-mapped (no copy)."""
    return np.load(path, mmap_mode="r")
