"""Privacy switches for the model libraries: never reach a model hub, never send telemetry."""

import os


def ensure_offline() -> None:
    """Never reach a model hub, never send telemetry (set before pyannote/huggingface are imported)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["PYANNOTE_METRICS_ENABLED"] = "0"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
