"""PDF: a jinja2 HTML template (``include/templates``) rendered by WeasyPrint.

Title, file, date, duration, language, model, speakers with talk time and share, then timestamped paragraphs,
one colour per speaker, with running header/footer and page numbers. The stylesheet is
``include/static/transcript.css``; WeasyPrint may fetch nothing else (no network, no other files).
``include/`` is the project's unless ``ExportOptions.include_dir`` names another folder.
"""

from __future__ import annotations

from pathlib import Path

from ..result import Transcript
from .base import ExportOptions, Writer
from .common import document
from .timefmt import clock, span

INCLUDE = Path(__file__).resolve().parents[2] / "include"
"""The project's ``include/``: the template and stylesheet folder unless ``ExportOptions.include_dir`` names one."""
TEMPLATE = "transcript.html.j2"
STYLESHEET = "transcript.css"


def include_dir(options: ExportOptions) -> Path:
    """The folder holding ``templates/`` and ``static/`` for this export."""
    return Path(options.include_dir or INCLUDE)


def render_html(transcript: Transcript, options: ExportOptions) -> str:
    """The transcript as HTML (the PDF's source)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(include_dir(options) / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["clock"] = clock
    env.filters["span"] = span
    return env.get_template(TEMPLATE).render(doc=document(transcript, options), lang=transcript.language or "und")


class PdfWriter(Writer):
    key = "pdf"
    description = "paginated PDF document (jinja2 + WeasyPrint)"

    def render(self, transcript: Transcript, options: ExportOptions) -> dict[str, bytes]:
        import logging

        from weasyprint import CSS, HTML, URLFetcher

        logging.getLogger("fontTools").setLevel(logging.WARNING)
        css = CSS(string=(include_dir(options) / "static" / STYLESHEET).read_text(encoding="utf-8"))
        no_network = URLFetcher(allowed_protocols=set())  # the document references nothing outside itself
        pdf = HTML(string=render_html(transcript, options), url_fetcher=no_network).write_pdf(stylesheets=[css])
        if not pdf:
            raise RuntimeError("WeasyPrint produced no PDF")
        return {".pdf": pdf}
