"""Markdown: the document (details, speakers, timestamped paragraphs) as plain Markdown."""

from __future__ import annotations

import re

from ..result import Transcript
from .base import ExportOptions, Writer
from .common import document
from .timefmt import clock, span

_SPECIAL = re.compile(r"([\\`*_\[\]<>|~]|^[#+-]|^\d+(?=\.))", re.MULTILINE)


def escape(text: str) -> str:
    """Backslash-escape what Markdown would read as markup."""
    return _SPECIAL.sub(lambda m: "\\" + m.group(0) if not m.group(0)[0].isdigit() else m.group(0) + "\\", text)


class MarkdownWriter(Writer):
    key = "md"
    description = "Markdown document with speakers and timestamped paragraphs"

    def render(self, transcript: Transcript, options: ExportOptions) -> dict[str, bytes]:
        doc = document(transcript, options)
        out = [f"# {escape(doc.title)}", ""]
        out += [f"- **{k}:** {escape(v)}" for k, v in doc.details]
        out += ["", "## Speakers", ""]
        if doc.speakers:
            out += ["| Speaker | Talk time | Share |", "|---|---:|---:|"]
            out += [f"| {escape(s.name)} | {span(s.seconds)} | {s.share:.0%} |" for s in doc.speakers]
        else:
            out.append("No speakers.")
        out += ["", "## Transcript", ""]
        if not doc.paragraphs:
            out += ["*No speech detected.*", ""]
        for p in doc.paragraphs:
            out += [f"**\\[{clock(p.start)}\\] {escape(p.name)}:** {escape(p.text)}", ""]
        return {".md": "\n".join(out).encode("utf-8")}
