"""PDF: a jinja2 HTML template (``include/templates``) rendered by WeasyPrint.

Title, file, date, duration, language, model, speakers with talk time and share, then timestamped paragraphs,
one colour per speaker, with running header/footer and page numbers. The stylesheet is
``include/static/transcript.css``; WeasyPrint may fetch nothing else (no network, no other files).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..result import Transcript
from .base import ExportOptions, Writer, register
from .common import clock, document, span

INCLUDE = Path(os.environ.get("SECURETRANSCRIBE_INCLUDE_DIR", Path(__file__).resolve().parents[2] / "include"))
TEMPLATE = "transcript.html.j2"
STYLESHEET = "transcript.css"


def render_html(transcript: Transcript, options: ExportOptions) -> str:
    """The transcript as HTML (the PDF's source)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(INCLUDE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["clock"] = clock
    env.filters["span"] = span
    return env.get_template(TEMPLATE).render(doc=document(transcript, options), lang=transcript.language or "und")


@register
class PdfWriter(Writer):
    key = "pdf"
    description = "paginated PDF document (jinja2 + WeasyPrint)"

    def render(self, transcript: Transcript, options: ExportOptions) -> dict[str, bytes]:
        import logging

        from weasyprint import CSS, HTML, URLFetcher

        logging.getLogger("fontTools").setLevel(logging.WARNING)
        css = CSS(string=(INCLUDE / "static" / STYLESHEET).read_text(encoding="utf-8"))
        no_network = URLFetcher(allowed_protocols=set())  # the document references nothing outside itself
        pdf = HTML(string=render_html(transcript, options), url_fetcher=no_network).write_pdf(stylesheets=[css])
        if not pdf:
            raise RuntimeError("WeasyPrint produced no PDF")
        return {".pdf": pdf}
