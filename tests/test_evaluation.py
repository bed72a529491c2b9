"""Scoring helpers: Whisper-style normalisation, WER, speaker-attributed WER, DER/JER, reference readers."""

from pathlib import Path

import pytest

from tasks.evaluation import (
    cp_wer,
    diarization_scores,
    normalize_text,
    read_rttm,
    read_stm,
    read_text_reference,
    speaker_texts,
    wer,
    word_errors,
)
from tasks.result import Turn


@pytest.mark.parametrize(("text", "expected"), [
    ("Hello, World!", "hello world"),
    ("I didn't know; Mr. Smith's been there (laughs) um, 3,000 times!", "i did not know mister smith has been "
     "there 3000 times"),
    ("One hundred and five people, on the twenty-first of May.", "105 people on the 21st of may"),
    ("It is fifty percent.", "it is 50%"),
    ("Café déjà vu — it's 9.5 or $4.", "cafe deja vu it is 9.5 or $4"),
    ("[noise] <unk> We're gonna win", "we are going to win"),
    ("one two three", "1 2 3"),
])
def test_whisper_style_normalisation(text, expected):
    assert normalize_text(text) == expected


def test_wer_ignores_case_punctuation_and_number_spelling():
    assert wer("We have twenty-five apples.", "we have 25 apples") == 0.0
    assert wer("a b c d", "a x c") == pytest.approx(0.5)
    assert wer("", "") == 0.0 and wer("", "extra") == 1.0 and wer("a b", "") == 1.0
    errors = word_errors("a b c d", "a x c d e")
    assert (errors.substitutions, errors.deletions, errors.insertions, errors.reference_words) == (1, 0, 1, 4)


def test_cp_wer_finds_the_best_speaker_mapping():
    ref = {"Diane": "hello there how are you", "Sheila": "fine thanks"}
    assert cp_wer(ref, {"SPEAKER_01": "hello there how are you", "SPEAKER_00": "fine thanks"})["cpwer"] == 0.0
    one_speaker = cp_wer(ref, {"SPEAKER_00": "hello there how are you fine thanks"})
    assert one_speaker["errors"] == 4  # 2 insertions on the matched speaker, 2 deletions for the other
    assert one_speaker["mapping"] == {"Diane": "SPEAKER_00"}
    extra = cp_wer({"A": "a b"}, {"X": "a b", "Y": "c"})
    assert extra["errors"] == 1 and extra["cpwer"] == 0.5


def test_reference_readers(pyannote_sample, tmp_path):
    utterances = read_stm(pyannote_sample.with_suffix(".stm"))
    texts = speaker_texts(utterances)
    assert set(texts) == {"Diane", "Sheila"}
    assert texts["Diane"].startswith("Hello? Oh, hello.")
    assert all(a.start <= b.start for a, b in zip(utterances, utterances[1:]))

    stm = tmp_path / "x.stm"
    stm.write_text(";; comment\nx 1 A 0.0 1.0 <o,f0,male> hi there\nx 1 inter_segment_gap 1.0 2.0\n"
                   "x 1 B 2.0 3.0 ignore_time_segment_in_scoring\n", encoding="utf-8")
    assert read_stm(stm) == [type(utterances[0])("A", 0.0, 1.0, "hi there")]

    plain = tmp_path / "plain.txt"
    plain.write_text("Hello there.\nGeneral Kenobi.\n", encoding="utf-8")
    assert read_text_reference(plain) == ("Hello there. General Kenobi.", None)
    channels = tmp_path / "channels.txt"
    channels.write_text("left\tHe began.\nright\tThe horizon.\n", encoding="utf-8")
    assert read_text_reference(channels) == ("He began. The horizon.", {"left": "He began.", "right": "The horizon."})


def test_diarization_scores_on_the_sample_reference(pyannote_sample):
    ref = read_rttm(pyannote_sample.with_suffix(".rttm"))
    perfect = diarization_scores(ref, [Turn(t.start, t.end, "X" + t.speaker) for t in ref], collar=0.0)
    assert perfect["der"] == pytest.approx(0.0, abs=1e-9) and perfect["jer"] == pytest.approx(0.0, abs=1e-9)
    assert perfect["speaker_count_error"] == 0

    merged = diarization_scores(ref, [Turn(t.start, t.end, "one") for t in ref], uem=[(0.0, 30.0)], collar=0.0)
    assert merged["hyp_speakers"] == 1 and merged["speaker_count_error"] == -1
    assert 0.0 < merged["confusion"] == pytest.approx(merged["der"]) and merged["jer"] > merged["der"]

    nothing = diarization_scores(ref, [], collar=0.25)
    assert nothing["der"] == pytest.approx(1.0) and nothing["missed"] == pytest.approx(1.0)
    assert nothing["jer"] == 1.0  # every reference speaker missed


def test_rttm_reader_keeps_non_ascii_labels(tmp_path):
    rttm = Path(tmp_path) / "trñ.rttm"
    rttm.write_text("SPEAKER trñ 1 1.5 2.0 <NA> <NA> MÉO069 <NA> <NA>\n", encoding="utf-8")
    assert read_rttm(rttm) == [Turn(1.5, 3.5, "MÉO069")]
