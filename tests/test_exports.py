"""Every export format from real transcripts, parsed back with real parsers (srt, webvtt, pandas, pypdf/pdftotext,
python-docx, markdown-it, pyannote RTTM loader): words, speakers and times must survive."""

from __future__ import annotations

import dataclasses
import html
import json
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tasks.exports import (
    ExportError,
    ExportOptions,
    SubtitleOptions,
    Writer,
    available,
    load_speaker_names,
    write_format,
    write_formats,
)
from tasks.exports.subtitles import build_cues, layout, width
from tasks.exports.timefmt import clock, decimal_seconds, span, timestamp
from tasks.exports.writers import WRITERS
from tasks.result import Segment, Transcript, Turn, Word
from tasks.settings import ALL_FORMATS
from tests.conftest import corpus_file

# Accents, Chinese and Greek: the PDF/DOCX fonts must cover them.
AMI_NAMES = {"SPEAKER_00": "MÉO069", "SPEAKER_01": "Zoë 李雷", "SPEAKER_02": "Αλέξανδρος"}
SAMPLE_NAMES = {"SPEAKER_00": "Sheila", "SPEAKER_01": "Diane"}
LIMITS = SubtitleOptions()


# -- transcripts (real models, cached for the session) ----------------------------------------------------------
@pytest.fixture(scope="session")
def transcript_cache(tmp_path_factory, tiny_settings, pyannote_sample):
    from tasks.pipeline import transcribe_file

    folder = tmp_path_factory.mktemp("export-transcripts")
    sources = {"ami": lambda: corpus_file("ami/trñ00.flac"), "sample": lambda: pyannote_sample,
               "empty": lambda: corpus_file("speech/empty.wav")}

    def get(name: str) -> Transcript:
        cached = folder / f"{name}.json"
        if not cached.exists():
            cached.write_text(transcribe_file(sources[name](), tiny_settings).to_json(), encoding="utf-8")
        return Transcript.load(cached)

    return get


@pytest.fixture(scope="session")
def ami(transcript_cache) -> Transcript:
    t = transcript_cache("ami")
    assert len(t.speakers) >= 2 and t.segments, "the AMI excerpt should give several speakers and some words"
    return t


@pytest.fixture(scope="session")
def sample(transcript_cache) -> Transcript:
    t = transcript_cache("sample")
    assert len(t.speakers) == 2 and len(t.segments) >= 4
    return t


@pytest.fixture(scope="session")
def empty(transcript_cache) -> Transcript:
    t = transcript_cache("empty")
    assert not t.segments
    return t


@pytest.fixture(params=["ami", "sample"])
def case(request) -> tuple[Transcript, ExportOptions]:
    t = request.getfixturevalue(request.param)
    names = AMI_NAMES if request.param == "ami" else SAMPLE_NAMES
    return t, ExportOptions(speaker_names=names, date="2026-01-31 09:30")


@pytest.fixture(scope="session")
def long_transcript(ami, sample) -> Transcript:
    """A 20-minute meeting: the real transcripts repeated with offsets (no need to transcribe 20 minutes)."""
    segments: list[Segment] = []
    turns: list[Turn] = []
    offset, i = 0.0, 0
    while offset < 20 * 60:
        src = (ami, sample)[i % 2]
        for s in src.segments:
            words = [dataclasses.replace(w, start=w.start + offset, end=w.end + offset) for w in s.words]
            segments.append(dataclasses.replace(s, start=s.start + offset, end=s.end + offset, words=words))
        turns += [Turn(t.start + offset, t.end + offset, t.speaker) for t in src.turns]
        offset += src.duration
        i += 1
    speakers = sorted({s.speaker for s in segments if s.speaker})
    return dataclasses.replace(ami, duration=offset, segments=segments, turns=turns, speakers=speakers,
                               source={**ami.source, "file": "weekly meeting – 20 min.flac"})


# -- helpers ---------------------------------------------------------------------------------------------------
def norm(text: str) -> str:
    return " ".join(text.split())


def words_of(t: Transcript) -> list[str]:
    return [w.text.strip() for w in t.words if w.text.strip()]


def first_words(t: Transcript, texts: list[str]) -> list[Word]:
    """The transcript word each cue text starts with, following the cues through the words in order."""
    words = [w for w in t.words if w.text.strip()]
    out, k = [], 0
    for text in texts:
        out.append(words[k])
        left = len("".join(text.split()))
        while left > 0:
            left -= len("".join(words[k].text.split()))
            k += 1
    assert k == len(words), "the cues say every word once"
    return out


def check_timing(cues: list[tuple[float, float, list[str]]], firsts: list[Word]) -> None:
    """Each cue starts on its first word, or earlier (by at most ``min_duration``, from the previous cue's end)
    when a short cue is stretched back."""
    for i, ((start, end, _lines), word) in enumerate(zip(cues, firsts)):
        assert word.start - LIMITS.min_duration - 2e-3 <= start <= max(word.start, 0) + 2e-3, (i, start, word)
        if start < word.start - 2e-3:
            assert end - start <= LIMITS.min_duration + 2e-3, (i, start, end, "stretched back further than needed")


def check_cues(cues: list[tuple[float, float, list[str]]], duration: float, limits: SubtitleOptions = LIMITS) -> None:
    """Line, duration, order and overlap rules every subtitle file must keep; a cue is shorter than
    ``min_duration`` only where its neighbours (or the ends of the audio) leave no room."""
    for i, (start, end, lines) in enumerate(cues):
        assert start >= 0 and end > start, (i, start, end)
        assert 1 <= len(lines) <= limits.max_lines, lines
        assert all(width(line) <= limits.max_chars for line in lines), lines
        assert all(line.strip() for line in lines), lines
        assert end - start <= limits.max_duration + 1e-6, (i, start, end)
        nxt = cues[i + 1][0] if i + 1 < len(cues) else None
        if nxt is not None:
            assert start < nxt and end <= nxt + 1e-6, f"cue {i} overlaps the next: {end} > {nxt}"
        if end - start < limits.min_duration - 1e-6:
            assert (nxt is not None and abs(nxt - end) < 2e-3) or end >= duration - 1e-3, (i, start, end, nxt)
            assert abs(start - (cues[i - 1][1] if i else 0.0)) < 2e-3, (i, start, end, "room before it")


def split_prefix(line: str) -> tuple[str, str]:
    m = re.match(r"^\[([^\]]+)\] ?(.*)$", line)
    assert m, f"cue does not start with a [speaker] label: {line!r}"
    return m.group(1), m.group(2)


def pdftotext(path: Path, *args: str) -> str:
    return subprocess.run(["pdftotext", "-layout", *args, str(path), "-"], check=True, capture_output=True,
                          text=True).stdout


# -- writer table and interface --------------------------------------------------------------------------------
def test_every_format_is_registered():
    assert sorted(available()) == sorted(ALL_FORMATS)


def test_writer_table_lists_all_formats_in_order():
    assert tuple(WRITERS) == ALL_FORMATS
    assert all(cls.key == key for key, cls in WRITERS.items())


def test_write_formats_writes_every_file_atomically_0640(sample, tmp_path):
    results = write_formats(sample, tmp_path, "sample", ALL_FORMATS, ExportOptions(speaker_names=SAMPLE_NAMES))
    assert [r.format for r in results] == list(ALL_FORMATS)
    assert all(r.ok for r in results), [(r.format, r.error) for r in results]
    names = sorted(p.name for r in results for p in r.files)
    assert names == sorted([f"sample.{k}" for k in ALL_FORMATS] + ["sample.words.csv"])
    for path in tmp_path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path
        assert path.stat().st_size > 0 or path.suffix in (".srt", ".rttm"), path
    assert sorted(p.name for p in tmp_path.iterdir()) == names, "no temporary files may be left behind"


def test_failing_writer_is_reported_and_the_others_still_succeed(sample, tmp_path, monkeypatch):
    class Broken(Writer):
        key = "broken"

        def render(self, transcript, options):
            raise OSError("disk on fire")

    monkeypatch.setitem(WRITERS, "broken", Broken)
    results = write_formats(sample, tmp_path, "s", ["txt", "broken", "nope", "json"])
    by = {r.format: r for r in results}
    assert by["txt"].ok and by["json"].ok and (tmp_path / "s.txt").exists() and (tmp_path / "s.json").exists()
    assert not by["broken"].ok and by["broken"].error == "OSError: disk on fire"
    assert not by["nope"].ok and "unknown export format 'nope'" in by["nope"].error
    with pytest.raises(ExportError, match=r"^broken export failed: OSError: disk on fire$") as info:
        write_format(sample, tmp_path, "s", "broken")
    assert info.value.format == "broken" and isinstance(info.value.__cause__, OSError)
    with pytest.raises(ExportError, match=r"^nope export failed: ValueError: unknown export format"):
        write_format(sample, tmp_path, "s", "nope")
    assert not list(tmp_path.glob("s.broken*"))


def test_unwritable_output_names_format_and_cause(sample, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(ExportError, match=r"^pdf export failed: (FileExistsError|NotADirectoryError): "):
        write_format(sample, blocker, "s", "pdf")
    results = write_formats(sample, blocker / "sub", "s", ["txt", "csv"])
    assert all(not r.ok and "Error: " in r.error for r in results)


def test_injected_disk_full_fails_every_format_and_writes_nothing(tmp_path):
    import errno

    options = ExportOptions(fault_disk_full=True)
    with pytest.raises(ExportError, match=r"^txt export failed: OSError: .*No space left on device "
                                          r"\(SECURETRANSCRIBE_FAULT_DISK_FULL\)") as info:
        write_format(formula_transcript(), tmp_path, "t", "txt", options)
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    assert info.value.__cause__.filename == str(tmp_path / "t.txt")
    results = write_formats(formula_transcript(), tmp_path, "t", ["csv", "md", "rttm"], options)
    assert all(not r.ok and "No space left on device" in r.error for r in results)
    assert not list(tmp_path.iterdir())


def test_pdf_template_folder_comes_from_the_options(tmp_path):
    from tasks.exports.pdf_writer import TEMPLATE, render_html

    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / TEMPLATE).write_text("custom {{ doc.title }} {{ doc.duration }}", encoding="utf-8")
    t = formula_transcript()
    assert render_html(t, ExportOptions(include_dir=tmp_path, title="T")) == "custom T 00:00:05 (5.0 s)"
    assert "<html" in render_html(t, ExportOptions())  # None: the project's include/


def test_time_formats():
    assert clock(0) == "00:00:00" and clock(3725.9) == "01:02:05" and clock(-3.5) == "00:00:00"
    assert clock(100 * 3600) == "100:00:00"
    assert timestamp(3725.0625) == "01:02:05.062" and timestamp(3725.0625, ",") == "01:02:05,062"
    assert timestamp(1.0005) == "00:00:01.000" and timestamp(-2) == "00:00:00.000"
    assert timestamp(12.3456) == "00:00:12.346" and timestamp(0.9996) == "00:00:01.000"
    assert decimal_seconds(83.25) == "83.250" and decimal_seconds(-0.4) == "0.000"
    assert span(12.54) == "12.5 s" and span(187) == "3 min 07 s" and span(3723) == "1 h 02 min 03 s"


def test_speaker_names_from_mapping_file_and_conf(tmp_path):
    as_json = tmp_path / "names.json"
    as_json.write_text(json.dumps({"SPEAKER_00": "Diane", "SPEAKER_01": "  Sheila\n Smith "}), encoding="utf-8")
    as_lines = tmp_path / "names.txt"
    as_lines.write_text("# who is who\nSPEAKER_00 = Diane\nSPEAKER_01=Sheila Smith\n", encoding="utf-8")
    assert load_speaker_names(as_lines) == {"SPEAKER_00": "Diane", "SPEAKER_01": "Sheila Smith"}
    options = ExportOptions.from_conf({"speaker_names": str(as_json), "csv_bom": True, "subtitles": {"max_chars": 32}})
    assert options.speaker("SPEAKER_01") == "Sheila Smith" and options.speaker("SPEAKER_07") == "SPEAKER_07"
    assert options.speaker(None) == "Diane", "segments without a speaker count as SPEAKER_00"
    assert options.csv_bom and options.subtitles.max_chars == 32
    assert ExportOptions.from_conf({"speaker_names": {"SPEAKER_00": "Diane"}}).speaker("SPEAKER_00") == "Diane"
    bad = tmp_path / "bad.txt"
    bad.write_text("Diane\n")
    with pytest.raises(ValueError, match=r"bad\.txt:1"):
        load_speaker_names(bad)


# -- formats from real transcripts -----------------------------------------------------------------------------
def test_txt(case, tmp_path):
    t, options = case
    (path,) = write_format(t, tmp_path, "t", "txt", options)
    paragraphs = path.read_text(encoding="utf-8").strip().split("\n\n")
    names = "|".join(re.escape(options.speaker(s)) for s in t.speakers)
    for p in paragraphs:
        assert re.match(rf"^\[\d\d:\d\d:\d\d\] ({names}): \S", p), p
    assert norm(" ".join(re.sub(r"^\[[^]]+\] [^:]+: ", "", p) for p in paragraphs)) == norm(t.text)
    first = t.segments[0]
    assert paragraphs[0].startswith(f"[00:00:{int(first.start):02d}] {options.speaker(first.speaker)}:")


def test_json_round_trip(case, tmp_path):
    t, options = case
    (path,) = write_format(t, tmp_path, "t", "json", options)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data.pop("speaker_names") == {s: options.speaker(s) for s in t.speakers}
    back = Transcript.from_dict(data)
    assert back == t
    assert all(w.speaker and 0 <= w.probability <= 1 and w.end >= w.start for w in back.words)


@pytest.mark.parametrize("bom", [False, True])
def test_csv_round_trips_through_pandas(case, tmp_path, bom):
    import pandas as pd

    t, options = case
    options = dataclasses.replace(options, csv_bom=bom, csv_formula_guard=False)  # the exact text back
    paths = write_format(t, tmp_path, "t", "csv", options)
    assert [p.name for p in paths] == ["t.csv", "t.words.csv"]
    for p in paths:
        assert p.read_bytes().startswith(b"\xef\xbb\xbf") == bom
    seg = pd.read_csv(paths[0], encoding="utf-8-sig", keep_default_na=False)
    assert list(seg.columns) == ["start", "end", "speaker", "text"]
    assert len(seg) == len(t.segments)
    assert seg["text"].tolist() == [s.text.strip() for s in t.segments]
    assert seg["speaker"].tolist() == [options.speaker(s.speaker) for s in t.segments]
    assert seg["start"].tolist() == pytest.approx([s.start for s in t.segments], abs=1e-3)
    assert seg["end"].tolist() == pytest.approx([s.end for s in t.segments], abs=1e-3)
    words = pd.read_csv(paths[1], encoding="utf-8-sig", keep_default_na=False)
    assert list(words.columns) == ["start", "end", "speaker", "word", "probability"]
    assert words["word"].astype(str).tolist() == words_of(t)
    assert words["speaker"].tolist() == [options.speaker(w.speaker) for w in t.words]
    assert words["start"].tolist() == pytest.approx([w.start for w in t.words], abs=1e-3)
    assert words["probability"].tolist() == pytest.approx([w.probability for w in t.words], abs=1e-4)


FORMULAS = ['=HYPERLINK("http://evil.example","click")', "+1 555 0100", "-5 degrees today", "@SUM(A1:A9)"]


def formula_transcript() -> Transcript:
    texts = [*FORMULAS, "an ordinary sentence = fine"]
    segments = []
    for i, text in enumerate(texts):
        words = [Word(float(i) + 0.1 * k, float(i) + 0.1 * k + 0.05, f" {w}", 0.9, "SPEAKER_00")
                 for k, w in enumerate(text.split())]
        segments.append(Segment(float(i), float(i) + 0.9, f" {text}", speaker="SPEAKER_00", words=words))
    return Transcript(segments=segments, language="en", duration=float(len(texts)))


@pytest.mark.parametrize("guard", [True, False])
def test_csv_cells_never_run_as_spreadsheet_formulas(tmp_path, guard):
    import csv

    t = formula_transcript()
    options = ExportOptions(speaker_names={"SPEAKER_00": "=cmd|' /C calc'!A0"}, csv_formula_guard=guard)
    seg_path, word_path = write_format(t, tmp_path, "t", "csv", options)
    rows = list(csv.DictReader(seg_path.open(encoding="utf-8", newline="")))
    texts = [r["text"] for r in rows]
    words = [r["word"] for r in csv.DictReader(word_path.open(encoding="utf-8", newline=""))]
    speakers = {r["speaker"] for r in rows}
    if guard:
        assert texts == ["'" + f for f in FORMULAS] + ["an ordinary sentence = fine"]
        assert speakers == {"'=cmd|' /C calc'!A0"}
        cells = texts + words + list(speakers)
        assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
        assert "'=HYPERLINK(\"http://evil.example\",\"click\")" in words
    else:
        assert texts == [s.text.strip() for s in t.segments]
        assert speakers == {"=cmd|' /C calc'!A0"}
    assert ExportOptions.from_conf({"csv_formula_guard": False}).csv_formula_guard is False
    assert ExportOptions().csv_formula_guard is True


def test_srt_parses_and_keeps_words_speakers_times(case, tmp_path):
    import srt

    t, options = case
    (path,) = write_format(t, tmp_path, "t", "srt", options)
    subs = list(srt.parse(path.read_text(encoding="utf-8")))
    assert [s.index for s in subs] == list(range(1, len(subs) + 1))
    cues = [(s.start.total_seconds(), s.end.total_seconds(), s.content.split("\n")) for s in subs]
    check_cues(cues, t.duration)
    said = []
    for _start, _end, lines in cues:
        _name, first = split_prefix(lines[0])
        said.append(" ".join([first, *lines[1:]]))
    firsts = first_words(t, said)
    assert [split_prefix(c[2][0])[0] for c in cues] == [options.speaker(w.speaker) for w in firsts]
    check_timing(cues, firsts)
    assert norm(" ".join(said)).split() == words_of(t)


def test_vtt_parses_with_voice_tags(case, tmp_path):
    import webvtt

    t, options = case
    (path,) = write_format(t, tmp_path, "t", "vtt", options)
    assert path.read_text(encoding="utf-8").startswith("WEBVTT\n")
    captions = webvtt.read(str(path)).captions
    assert captions
    cues = []
    for c in captions:
        lines = [html.unescape(line) for line in c.text.split("\n")]
        cues.append((c.start_time.in_milliseconds() / 1000, c.end_time.in_milliseconds() / 1000, lines))
        assert not re.match(r"^\[[^\]]+\]", lines[0]), f"the voice tag names the speaker, the text does not: {lines}"
    check_cues(cues, t.duration)
    said = [" ".join(lines) for _s, _e, lines in cues]
    firsts = first_words(t, said)
    assert [html.unescape(c.voice) for c in captions] == [options.speaker(w.speaker) for w in firsts]
    check_timing(cues, firsts)
    assert norm(" ".join(said)).split() == words_of(t)


def test_markdown(case, tmp_path):
    from markdown_it import MarkdownIt

    t, options = case
    (path,) = write_format(t, tmp_path, "t", "md", options)
    source = path.read_text(encoding="utf-8")
    rendered = MarkdownIt("commonmark").enable("table").render(source)
    assert "<h1>Transcript</h1>" in rendered and "<table>" in rendered
    text = html.unescape(re.sub(r"<[^>]+>", " ", rendered))
    for s in t.speakers:
        assert options.speaker(s) in text
    for s in t.segments:
        assert norm(s.text) in norm(text)
    assert "trñ00.flac" in text or "sample.wav" in text
    paragraphs = re.findall(r"<p><strong>\[(\d\d:\d\d:\d\d)\] ([^<]+):</strong>", rendered)
    assert paragraphs and {html.unescape(n) for _, n in paragraphs} <= {options.speaker(s) for s in t.speakers}


def test_rttm_loads_with_pyannote(case, tmp_path):
    from pyannote.database.util import load_rttm

    t, options = case
    (path,) = write_format(t, tmp_path, "t", "rttm", options)
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split(" ")
        assert len(fields) == 10 and fields[0] == "SPEAKER" and fields[2] == "1" and fields[5] == "<NA>"
    uri = Path(t.source["file"]).stem
    (annotation,) = load_rttm(path).values()
    assert annotation.uri == uri
    expected = {options.speaker(s).replace(" ", "_") for s in {turn.speaker for turn in t.turns}}
    assert set(annotation.labels()) == expected
    assert len(list(annotation.itertracks())) == sum(1 for turn in t.turns if turn.end > turn.start)
    for label in t.speakers:
        talk = sum(turn.end - turn.start for turn in t.turns if turn.speaker == label)
        assert annotation.label_duration(options.speaker(label).replace(" ", "_")) == pytest.approx(talk, abs=0.01)
    if uri == "trñ00":  # the corpus reference uses the same format and loads with the same parser
        (reference,) = load_rttm(corpus_file("ami/trñ00.rttm")).values()
        assert "MÉO069" in reference.labels()


def test_pdf_text_fonts_and_first_page(case, tmp_path, artifacts):
    from pypdf import PdfReader

    t, options = case
    (path,) = write_format(t, tmp_path, "t", "pdf", options)
    reader = PdfReader(path)
    assert len(reader.pages) == 1
    assert reader.metadata.title.startswith("Transcript")
    text = pdftotext(path)
    flat = norm(text)
    for needle in ("Transcript", t.source["file"], "2026-01-31 09:30", "00:00:30", "tiny.en", "English (en)",
                   "Page 1 of 1", "Talk time", "Share"):
        assert needle in flat, needle
    durations = t.speaker_durations()
    total = sum(durations.values())
    for label, seconds in durations.items():
        assert options.speaker(label) in flat
        assert f"{seconds:.1f} s" in flat and f"{100 * seconds / total:.0f} %" in flat
    words = norm(pdftotext(path, "-nopgbrk").replace("\n", " "))
    for s in t.segments:
        assert norm(s.text) in words
    fonts = {str(f.get_object()["/BaseFont"]) for page in reader.pages for f in page["/Resources"]["/Font"].values()}
    if options.speaker_names is AMI_NAMES:
        assert any("CJK" in f for f in fonts), fonts  # 李雷 is drawn with a CJK font, not as missing glyphs
    stem = "pdf-" + ("ami" if "trñ" in t.source["file"] else "sample")
    png = render_page(path, artifacts / stem, 1)
    assert png.stat().st_size > 10_000


def render_page(pdf: Path, prefix: Path, page: int) -> Path:
    if shutil.which("pdftoppm") is None:
        pytest.fail("pdftoppm is needed (Debian package poppler-utils)", pytrace=False)
    subprocess.run(["pdftoppm", "-png", "-r", "90", "-singlefile", "-f", str(page), "-l", str(page), str(pdf),
                    f"{prefix}-p{page}"], check=True)
    return Path(f"{prefix}-p{page}.png")


def test_docx(case, tmp_path):
    import docx

    t, options = case
    (path,) = write_format(t, tmp_path, "t", "docx", options)
    d = docx.Document(str(path))
    body = [p.text for p in d.paragraphs]
    assert body[0] == "Transcript" and t.source["file"] in body[1]
    assert "No speech detected in this recording." not in body
    transcript = [p for p in body if re.match(r"^\[\d\d:\d\d:\d\d\] ", p)]
    assert norm(" ".join(re.sub(r"^\[[^]]+\] [^:]+: ", "", p) for p in transcript)) == norm(t.text)
    names = {re.match(r"^\[[^]]+\] ([^:]+):", p).group(1) for p in transcript}
    assert names == {options.speaker(s.speaker) for s in t.segments}
    details, speakers = d.tables
    assert {row.cells[0].text: row.cells[1].text for row in details.rows}["File"] == t.source["file"]
    assert [row.cells[0].text for row in speakers.rows[1:]] == [options.speaker(s) for s in t.speakers]
    assert "SecureTranscribe" in d.sections[0].header.paragraphs[0].text
    footer_xml = d.sections[0].footer.paragraphs[0]._p.xml
    assert "PAGE" in footer_xml and "NUMPAGES" in footer_xml


# -- edge cases ------------------------------------------------------------------------------------------------
def test_empty_transcript_gives_valid_files_in_every_format(empty, tmp_path, artifacts):
    import docx
    import pandas as pd
    import srt
    import webvtt
    from pyannote.database.util import load_rttm
    from pypdf import PdfReader

    results = write_formats(empty, tmp_path, "empty", ALL_FORMATS, ExportOptions(speaker_names={"SPEAKER_00": "X"}))
    assert all(r.ok for r in results), [(r.format, r.error) for r in results]
    f = {p.name: p for r in results for p in r.files}
    assert "no speech detected" in f["empty.txt"].read_text().lower()
    assert Transcript.load(f["empty.json"]) == empty
    for name in ("empty.csv", "empty.words.csv"):
        table = pd.read_csv(f[name])
        assert len(table) == 0 and "speaker" in table.columns
    assert list(srt.parse(f["empty.srt"].read_text())) == []
    assert webvtt.read(str(f["empty.vtt"])).captions == []
    assert "No speech detected" in f["empty.md"].read_text()
    assert load_rttm(f["empty.rttm"]) == {}
    assert len(PdfReader(f["empty.pdf"]).pages) == 1
    assert "No speech detected in this recording." in pdftotext(f["empty.pdf"])
    render_page(f["empty.pdf"], artifacts / "pdf-empty", 1)
    assert "No speech detected in this recording." in [p.text for p in docx.Document(str(f["empty.docx"])).paragraphs]


def test_twenty_minute_transcript_paginates_cleanly(long_transcript, tmp_path, artifacts):
    from pypdf import PdfReader

    t = long_transcript
    assert t.duration >= 1200
    names = {"SPEAKER_00": "MÉO069", "SPEAKER_01": "Diane", "SPEAKER_02": "Sheila"}
    options = ExportOptions(speaker_names=names)
    results = write_formats(t, tmp_path, "long", ["pdf", "docx", "srt", "vtt", "md"], options)
    assert all(r.ok for r in results), [(r.format, r.error) for r in results]
    pdf = tmp_path / "long.pdf"
    pages = len(PdfReader(pdf).pages)
    assert pages >= 4
    for n in range(1, pages + 1):
        text = pdftotext(pdf, "-f", str(n), "-l", str(n))
        assert f"Page {n} of {pages}" in text
        assert "SecureTranscribe · weekly meeting – 20 min.flac" in text, "running header on every page"
        body = [line for line in text.splitlines() if line.strip()]
        if n < pages:
            assert len(body) > 30, f"page {n} is nearly empty: bad page break"
    last = pdftotext(pdf, "-f", str(pages), "-l", str(pages))
    assert re.search(r"00:(19|2\d):\d\d", last), "the transcript runs to the end of the meeting"
    flat = norm(pdftotext(pdf, "-nopgbrk"))
    assert flat.count("Page ") == pages
    for n in (1, 2, pages):
        render_page(pdf, artifacts / "pdf-20min", n)
    import docx
    import srt

    from tasks.exports.common import paragraphs

    body = [p.text for p in docx.Document(str(tmp_path / "long.docx")).paragraphs]
    assert len([p for p in body if re.match(r"^\[\d\d:\d\d:\d\d\] ", p)]) == len(paragraphs(t, options)) > 100
    subs = list(srt.parse((tmp_path / "long.srt").read_text(encoding="utf-8")))
    check_cues([(s.start.total_seconds(), s.end.total_seconds(), s.content.split("\n")) for s in subs], t.duration)
    assert subs[-1].end.total_seconds() > 1150


# -- subtitle rules on hostile input ---------------------------------------------------------------------------
def test_layout_breaks_at_word_boundaries():
    tokens = ["[Diane] ", "Well,", " there", " isn't", " that", " much", " difference", " at", " least", " you",
              " know", " they", " all"]
    lines = layout(tokens, 42, 2)
    assert lines and len(lines) == 2 and all(len(line) <= 42 for line in lines)
    assert " ".join(lines) == "".join(tokens).strip()
    assert layout(tokens + [" call", " me", " a", " Yankee", " down", " here"], 42, 2) is None
    assert layout(["短"] * 21, 42, 1) == ["短" * 21] and layout(["短"] * 22, 42, 1) is None


def test_subtitles_keep_limits_on_hostile_timings():
    def words(start: float, texts: list[str], step: float, speaker: str) -> list[Word]:
        return [Word(start + i * step, start + i * step + (0 if i % 3 == 0 else step * 0.8), f" {w}", 0.9, speaker)
                for i, w in enumerate(texts)]

    long = words(-0.4, ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
                        "incididunt ut labore et dolore magna aliqua " * 3).split(), 0.25, "A")
    segments = [
        Segment(long[0].start, long[-1].end, "".join(w.text for w in long), "A", long),
        # overlaps the end of A, starts at the same time as one of A's words, has a 60-character word
        Segment(5.0, 6.0, "Yes", "B", [Word(5.0, 5.0, " Yes", 0.9, "B"),
                                        Word(5.0, 5.9, " " + "x" * 60, 0.5, "B")]),
        Segment(30.0, 31.0, "no word timings here but quite a lot of text in this one segment", "C", []),
        Segment(40.0, 40.05, "Hi.", "B", [Word(40.0, 40.05, " Hi.", 0.9, "B")]),
        Segment(40.3, 52.0, "Okay", "A", [Word(40.3, 52.0, " Okay", 0.9, "A")]),  # one 11.7-second word
    ]
    t = Transcript("en", 52.0, segments, ["A", "B", "C"])
    options = ExportOptions(speaker_names={"A": "A very long speaker name indeed, too long", "B": "Bo"})
    cues = build_cues(t, options)
    check_cues([(c.start_ms / 1000, c.end_ms / 1000, c.lines) for c in cues], t.duration)
    said = "".join(re.sub(r"^\[[^]]+\] ", "", "".join(c.lines)) for c in sorted(cues, key=lambda c: c.start_ms))
    expected = [w.text for s in segments for w in s.words] + segments[2].text.split()
    assert sorted("".join(said.split())) == sorted("".join("".join(expected).split())), "no character lost"
    assert cues[0].start_ms == 0, "negative times are clamped to 0"
    assert any(c.lines[0].startswith("[A very long speak…]") for c in cues)


def test_long_monologue_paragraphs_break_across_pages(long_transcript, tmp_path, artifacts):
    """One speaker for 20 minutes: paragraphs (cut about every minute) flow over page breaks with running headers."""
    from pypdf import PdfReader

    segments = [dataclasses.replace(s, speaker="SPEAKER_00") for s in long_transcript.segments]
    t = dataclasses.replace(long_transcript, segments=segments, speakers=["SPEAKER_00"])
    (pdf,) = write_format(t, tmp_path, "mono", "pdf", ExportOptions(speaker_names={"SPEAKER_00": "Diane"}))
    pages = len(PdfReader(pdf).pages)
    assert pages >= 3
    stamps = re.findall(r"(\d\d:\d\d:\d\d) +Diane", pdftotext(pdf))
    assert len(stamps) >= 20 and stamps == sorted(stamps), "a timestamped paragraph about every minute, in order"
    continued = 0
    for n in range(2, pages + 1):
        lines = [line.strip() for line in pdftotext(pdf, "-f", str(n), "-l", str(n)).splitlines() if line.strip()]
        assert lines[0].startswith("SecureTranscribe") and lines[-1].endswith(f"Page {n} of {pages}")
        continued += not re.match(r"\d\d:\d\d:\d\d", lines[1])
    assert continued, "some paragraph should continue on the next page"
    render_page(pdf, artifacts / "pdf-monologue", 2)
