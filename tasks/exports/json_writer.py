"""JSON: the full canonical transcript (segments, words with times/probabilities/speakers, metadata)."""

from __future__ import annotations

import json

from ..result import Transcript
from .base import ExportOptions, Writer


class JsonWriter(Writer):
    key = "json"
    description = "full transcript with words, speakers and metadata"

    def render(self, transcript: Transcript, options: ExportOptions) -> dict[str, bytes]:
        data = transcript.to_dict()
        if options.speaker_names:
            data["speaker_names"] = {s: options.speaker(s) for s in transcript.speakers}
        return {".json": json.dumps(data, ensure_ascii=False, indent=2).encode("utf-8")}
