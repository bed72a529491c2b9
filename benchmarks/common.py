"""Shared helpers of the benchmark scripts: corpus discovery, machine description, parameter parsing.

The scripts run as ``.venv/bin/python benchmarks/X.py``: Python puts ``benchmarks/`` on the path, so they
import this module as ``common``; ``tasks`` comes from the editable install (``make setup``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".webm", ".mp4", ".mkv", ".aac"}
REFERENCE_SUFFIXES = (".rttm", ".stm", ".txt")
PYANNOTE_SAMPLE = "pyannote-sample"


def default_corpus() -> Path:
    """``SECURETRANSCRIBE_CORPUS`` or ``../shared/corpus`` next to the repository."""
    return Path(os.environ.get("SECURETRANSCRIBE_CORPUS", ROOT.parent / "shared" / "corpus")).resolve()


def airflow_harness() -> ModuleType:
    """``tests/airflow_harness.py`` (the real embedded Airflow; standard library only), loaded from its file.

    ``tests`` is not an installed package, so it is loaded by path rather than imported.
    """
    name = "securetranscribe_airflow_harness"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "airflow_harness.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {ROOT / 'tests' / 'airflow_harness.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def pyannote_sample() -> Path:
    """The two-speaker conversation shipped in the pyannote.audio wheel (with .rttm and .stm)."""
    spec = importlib.util.find_spec("pyannote.audio")
    if spec is None or spec.origin is None:
        raise SystemExit("pyannote.audio is not installed")
    return Path(spec.origin).parent / "sample" / "sample.wav"


@dataclass(frozen=True)
class Item:
    """One audio file and the references found next to it (same stem)."""

    audio: Path
    rttm: Path | None = None
    uem: Path | None = None
    stm: Path | None = None
    txt: Path | None = None

    @property
    def name(self) -> str:
        return self.audio.stem

    @property
    def group(self) -> str:
        return self.audio.parent.name

    @classmethod
    def at(cls, audio: Path) -> Item:
        def sibling(suffix: str) -> Path | None:
            p = audio.with_suffix(suffix)
            return p if p.is_file() else None

        return cls(audio, sibling(".rttm"), sibling(".uem"), sibling(".stm"), sibling(".txt"))

    @property
    def has_reference(self) -> bool:
        return any((self.rttm, self.stm, self.txt))


def discover(paths: list[str]) -> list[Item]:
    """Audio files with at least one reference, from folders (recursive), files or ``pyannote-sample``."""
    items: list[Item] = []
    for raw in paths:
        if raw == PYANNOTE_SAMPLE:
            items.append(Item.at(pyannote_sample()))
            continue
        path = Path(raw).expanduser().resolve()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
            items += [it for it in map(Item.at, found) if it.has_reference]
        elif path.is_file():
            items.append(Item.at(path))
        else:
            raise SystemExit(f"not found: {raw}")
    seen: set[Path] = set()
    return [it for it in items if not (it.audio in seen or seen.add(it.audio))]


def parse_params(pairs: list[str], base: Any = None) -> Any:
    """``key=value`` overrides of :class:`tasks.diarization.DiarizationParams`, typed from its defaults."""
    from tasks.diarization import DEFAULT_PARAMS

    params = base or DEFAULT_PARAMS
    changes: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in {f.name for f in dataclasses.fields(params)}:
            raise SystemExit(f"unknown diarization parameter: {key}")
        current = getattr(params, key)
        if isinstance(current, bool):
            changes[key] = value.lower() in {"1", "true", "yes", "on"}
        elif current is None:
            changes[key] = value
        else:
            changes[key] = type(current)(value)
    return dataclasses.replace(params, **changes)


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident memory of this process so far (MiB); ``children``: of the largest finished child."""
    return resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict[str, Any]:
    """What the numbers were measured on: cores, memory, load, versions, commit, date."""
    info: dict[str, Any] = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * size / 2**30, 1)
    except (ValueError, OSError):
        pass
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            info["cpu"] = line.split(":", 1)[1].strip()
            break
    try:
        import ctranslate2
        import torch

        info["torch"] = torch.__version__
        info["ctranslate2"] = ctranslate2.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        pass
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                        text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        info["commit"] = None
    return info


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


# -- built multi-speaker files (issue 13): whole utterances of different voices, one after another ----------
@dataclass(frozen=True)
class Clip:
    """One whole utterance: a speaker, its audio (file and span in seconds) and its exact transcript."""

    speaker: str
    path: str  # relative to the corpus, or "pyannote-sample"
    text: str
    start: float = 0.0
    end: float | None = None
    channel: int | None = None
    """One channel of a multi-channel file (``speech/stereo_diarization.wav``: one voice per channel)."""


def _read_clip(name: str) -> Clip:
    """A read utterance of ``speech/read`` (``ljspeech_…`` or ``cmuarctic_…``), or ``jfk``."""
    corpus = default_corpus()
    if name == "jfk":
        return Clip("jfk", "speech/jfk.flac", (corpus / "speech/jfk.txt").read_text(encoding="utf-8").strip())
    speaker = "lj" if name.startswith("ljspeech") else "arctic"
    return Clip(speaker, f"speech/read/{name}.wav", (corpus / f"speech/read/{name}.txt").read_text(
        encoding="utf-8").strip())


def _sample_clip(speaker: str, start: float, end: float, text: str) -> Clip:
    return Clip(speaker, PYANNOTE_SAMPLE, text, start, end)


STEREO_SPEECH_S = ((0.25, 4.7), (0.25, 2.6))
"""Where each channel of ``speech/stereo_diarization.wav`` speaks (measured: 0.1-s RMS over its noise floor)."""


def _stereo_clip(channel: int) -> Clip:
    """The voice of one channel of ``speech/stereo_diarization.wav`` (left: a noisy recording)."""
    side = ("left", "right")[channel]
    lines = (default_corpus() / "speech/stereo_diarization.txt").read_text(encoding="utf-8").splitlines()
    text = dict(line.split("\t", 1) for line in lines if "\t" in line)[side].strip()
    return Clip(side, "speech/stereo_diarization.wav", text, *STEREO_SPEECH_S[channel], channel=channel)


BUILT_LEVELS_DBFS = {"lj": -20.0, "jfk": -34.0, "sheila": -26.0, "arctic": -30.0, "diane": -23.0,
                     "left": -29.0, "right": -21.0}
"""RMS level of each voice in the built files: recording conditions and levels differ on purpose."""


def built_files() -> dict[str, tuple[list[Clip], float]]:
    """The built multi-speaker files: their utterances in order and the pause between two of them (s).

    Studio read speech (LJ Speech, CMU ARCTIC), an old broadcast (jfk) and a telephone call (the pyannote
    sample's Diane and Sheila), each at its own level, with short pauses so that faster-whisper's VAD groups
    mix voices."""
    sheila_1 = _sample_clip("sheila", 14.40, 17.80, "And I'm Sheila in Texas, originally from Chicago.")
    sheila_2 = _sample_clip("sheila", 21.90, 28.43, "Well, there isn't that much difference. At least you know, "
                            "they all call me a Yankee down here, so what can I say?")
    diane_1 = _sample_clip("diane", 12.45, 14.25, "This is Diane in New Jersey.")
    diane_2 = _sample_clip("diane", 20.12, 21.55, "I'm in New Jersey now though.")
    r = _read_clip
    return {
        "three_voices": ([r("ljspeech_LJ001-0001"), r("jfk"), sheila_1, r("ljspeech_LJ001-0003"), sheila_2,
                          r("ljspeech_LJ001-0005"), r("jfk"), r("ljspeech_LJ001-0007")], 0.6),
        "four_voices": ([r("cmuarctic_a0024"), r("ljspeech_LJ001-0009"), diane_1, sheila_1, r("ljspeech_LJ001-0010"),
                         r("cmuarctic_a0024"), diane_2, r("ljspeech_LJ001-0012"), sheila_2, r("ljspeech_LJ001-0014")],
                        0.4),
    }


def held_out_files() -> dict[str, tuple[list[Clip], float]]:
    """Built files that no setting was chosen on (``held-out``): utterances the tuning files do not use (LJ
    Speech 0002/0004/0006/0008/0011/0013, Diane's other turns, the two voices of the stereo file), other
    orders and pauses. Run after a change, they tell whether a gain on ``built`` holds on audio it was not
    chosen on."""
    diane_3 = _sample_clip("diane", 17.80, 20.10, "Oh, I'm originally from Chicago also.")
    diane_4 = _sample_clip("diane", 28.45, 29.99, "Oh, I don't hear that in New Jersey now.")
    diane_5 = _sample_clip("diane", 10.80, 12.52, "Okay, then I thought you know, I heard a beep.")
    r, left, right = _read_clip, _stereo_clip(0), _stereo_clip(1)
    return {
        "held_out_a": ([left, r("ljspeech_LJ001-0004"), diane_3, right, r("jfk"), r("ljspeech_LJ001-0006"), diane_4,
                        left, r("ljspeech_LJ001-0011"), right], 0.3),
        "held_out_b": ([r("jfk"), r("ljspeech_LJ001-0013"), diane_5, r("ljspeech_LJ001-0002"), left,
                        r("ljspeech_LJ001-0008"), diane_4, r("jfk")], 1.0),
    }


def multispeaker_files() -> dict[str, tuple[list[Clip], float]]:
    """Every built file by name: the tuning ones (:func:`built_files`) and the held-out ones."""
    return {**built_files(), **held_out_files()}


def clip_audio(clip: Clip) -> Any:
    """The utterance's samples (16 kHz mono float32) at its voice's level."""
    import numpy as np

    from tasks.audio import SAMPLE_RATE, decode

    path = pyannote_sample() if clip.path == PYANNOTE_SAMPLE else default_corpus() / clip.path
    audio = decode(path) if clip.channel is None else _channel(path, clip.channel)
    end = len(audio) if clip.end is None else round(clip.end * SAMPLE_RATE)
    piece = np.asarray(audio[round(clip.start * SAMPLE_RATE):end], dtype=np.float32)
    rms = float(np.sqrt(np.mean(piece ** 2))) or 1.0
    return np.clip(piece * (10 ** (BUILT_LEVELS_DBFS[clip.speaker] / 20) / rms), -1.0, 1.0)


def _channel(path: Path, channel: int) -> Any:
    """One channel of a 16-kHz 16-bit WAV file as float32 samples."""
    import wave

    import numpy as np

    from tasks.audio import SAMPLE_RATE

    with wave.open(str(path)) as w:
        if w.getframerate() != SAMPLE_RATE or w.getsampwidth() != 2:
            raise ValueError(f"{path}: a 16-kHz 16-bit WAV file was expected")
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, w.getnchannels())
    return frames[:, channel].astype(np.float32) / 32768.0


def build_multispeaker(name: str, out_dir: Path) -> Path:
    """Write ``<name>.wav`` with its exact ``.rttm`` and ``.stm`` (one line per utterance) into ``out_dir``."""
    import wave

    import numpy as np

    from tasks.audio import SAMPLE_RATE

    clips, pause = multispeaker_files()[name]
    gap = np.zeros(round(pause * SAMPLE_RATE), dtype=np.float32)
    pieces, rttm, stm, t = [gap], [], [], pause
    for clip in clips:
        audio = clip_audio(clip)
        seconds = len(audio) / SAMPLE_RATE
        rttm.append(f"SPEAKER {name} 1 {t:.3f} {seconds:.3f} <NA> <NA> {clip.speaker} <NA> <NA>")
        stm.append(f"{name} 1 {clip.speaker} {t:.3f} {t + seconds:.3f} {clip.text}")
        pieces += [audio, gap]
        t += seconds + pause
    out_dir.mkdir(parents=True, exist_ok=True)
    wav = out_dir / f"{name}.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.concatenate(pieces) * 32767).astype("<i2").tobytes())
    wav.with_suffix(".rttm").write_text("\n".join(rttm) + "\n", encoding="utf-8")
    wav.with_suffix(".stm").write_text("\n".join(stm) + "\n", encoding="utf-8")
    return wav


def expand_built(paths: list[str], build_dir: Path | None) -> list[str]:
    """``built``, ``held-out`` and ``long-meeting`` replaced by the files built from the corpus (never committed);
    other paths as they are."""
    import tempfile

    sets = {"built": built_files, "held-out": held_out_files}
    if not ({*sets, "long-meeting"} & set(paths)):
        return paths
    where = build_dir or Path(tempfile.mkdtemp(prefix="securetranscribe-built-"))
    out: list[str] = []
    for p in paths:
        if p in sets:
            out += [str(build_multispeaker(name, where)) for name in sets[p]()]
        elif p == "long-meeting":
            if not (where / "long_meeting.wav").is_file():
                subprocess.run([sys.executable, str(default_corpus() / "make_long.py"), str(where), "--minutes", "20"],
                               check=True, capture_output=True)
            out.append(str(where / "long_meeting.wav"))
        else:
            out.append(p)
    return out


def display_name(path: Path) -> str:
    """A file's name as the benchmarks print it: relative to the corpus or the project where it can be."""
    if path.parent.name == "sample" and path.parent.parent.name == "audio":  # inside the pyannote.audio wheel
        return f"{PYANNOTE_SAMPLE}/{path.name}"
    corpus = default_corpus()
    for base in (corpus, ROOT):
        try:
            return str(path.relative_to(base))
        except ValueError:
            continue
    return str(path)
