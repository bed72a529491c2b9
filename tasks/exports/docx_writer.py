"""DOCX: the PDF's content as an editable Word document (python-docx)."""

from __future__ import annotations

import io

from ..result import Transcript
from .base import ExportOptions, Writer
from .common import Document, document
from .timefmt import clock, span

GREY = "6B7280"


def _field(paragraph, instruction: str) -> None:  # type: ignore[no-untyped-def]
    """Append a Word field (PAGE, NUMPAGES) to a paragraph."""
    from docx.oxml import OxmlElement
    from docx.oxml.ns import qn

    run = paragraph.add_run()
    for kind, text in (("begin", None), (None, instruction), ("separate", None), (None, "1"), ("end", None)):
        if kind:
            el = OxmlElement("w:fldChar")
            el.set(qn("w:fldCharType"), kind)
        elif text == instruction:
            el = OxmlElement("w:instrText")
            el.set(qn("xml:space"), "preserve")
            el.text = f" {instruction} "
        else:
            el = OxmlElement("w:t")
            el.text = text
        run._r.append(el)


def _shade(cell, colour: str) -> None:  # type: ignore[no-untyped-def]
    from docx.oxml import OxmlElement
    from docx.oxml.ns import qn

    shd = OxmlElement("w:shd")
    shd.set(qn("w:val"), "clear")
    shd.set(qn("w:color"), "auto")
    shd.set(qn("w:fill"), colour)
    cell._tc.get_or_add_tcPr().append(shd)


CORE_PROPERTY_MAX = 255  # characters, python-docx's limit for a core property


def build(doc: Document) -> bytes:
    """The document as DOCX bytes."""
    import docx
    from docx.enum.table import WD_TABLE_ALIGNMENT
    from docx.enum.text import WD_ALIGN_PARAGRAPH
    from docx.shared import Mm, Pt, RGBColor

    out = docx.Document()
    out.core_properties.title = f"{doc.title} — {doc.file}"[:CORE_PROPERTY_MAX]
    out.core_properties.author = "SecureTranscribe"
    normal = out.styles["Normal"]
    normal.font.name = "Noto Sans"
    normal.font.size = Pt(10)
    section = out.sections[0]
    section.page_height, section.page_width = Mm(297), Mm(210)
    section.left_margin = section.right_margin = Mm(18)
    section.top_margin, section.bottom_margin = Mm(24), Mm(22)

    grey = RGBColor.from_string(GREY)
    header = section.header.paragraphs[0]
    header.text = f"SecureTranscribe · {doc.file}"
    header.runs[0].font.size, header.runs[0].font.color.rgb = Pt(8), grey
    footer = section.footer.paragraphs[0]
    footer.alignment = WD_ALIGN_PARAGRAPH.RIGHT
    footer.add_run(f"{doc.date}    Page ")
    _field(footer, "PAGE")
    footer.add_run(" of ")
    _field(footer, "NUMPAGES")
    for run in footer.runs:
        run.font.size, run.font.color.rgb = Pt(8), grey

    out.add_heading(doc.title, level=0)
    subtitle = out.add_paragraph(doc.file)
    subtitle.runs[0].font.size, subtitle.runs[0].font.color.rgb = Pt(12), grey

    details = out.add_table(rows=0, cols=2)
    for label, value in doc.details:
        row = details.add_row().cells
        row[0].text, row[1].text = label, value
        row[0].paragraphs[0].runs[0].bold = True
        row[0].width, row[1].width = Mm(30), Mm(140)

    out.add_heading("Speakers", level=1)
    if doc.speakers:
        table = out.add_table(rows=1, cols=3)
        table.style = "Light List"
        table.alignment = WD_TABLE_ALIGNMENT.LEFT
        for cell, text in zip(table.rows[0].cells, ("Speaker", "Talk time", "Share")):
            cell.text = text
        for s in doc.speakers:
            cells = table.add_row().cells
            name = cells[0].paragraphs[0].add_run(s.name)
            name.bold, name.font.color.rgb = True, RGBColor.from_string(s.colour.lstrip("#").upper())
            cells[1].text, cells[2].text = span(s.seconds), f"{s.share:.0%}"
            _shade(cells[0], _tint(s.colour))
    else:
        out.add_paragraph("No speakers.").runs[0].italic = True

    out.add_heading("Transcript", level=1)
    if not doc.paragraphs:
        out.add_paragraph("No speech detected in this recording.").runs[0].italic = True
    for p in doc.paragraphs:
        para = out.add_paragraph()
        para.paragraph_format.space_after = Pt(6)
        time = para.add_run(f"[{clock(p.start)}] ")
        time.font.color.rgb, time.font.size = grey, Pt(8.5)
        name = para.add_run(f"{p.name}: ")
        name.bold, name.font.color.rgb = True, RGBColor.from_string(p.colour.lstrip("#").upper())
        para.add_run(p.text)

    buf = io.BytesIO()
    out.save(buf)
    return buf.getvalue()


def _tint(colour: str, amount: float = 0.85) -> str:
    """A pale version of ``#rrggbb`` for cell shading."""
    rgb = [int(colour.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4)]
    return "".join(f"{round(c + (255 - c) * amount):02X}" for c in rgb)


class DocxWriter(Writer):
    key = "docx"
    description = "editable Word document with the PDF's content"

    def render(self, transcript: Transcript, options: ExportOptions) -> dict[str, bytes]:
        return {".docx": build(document(transcript, options))}
