"""Segments people can read (issue 13, part 2): pauses and length limits, speaker changes backed by the audio,
speakers numbered by first word, and subtitle cues of real corpus transcripts within every limit."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest

from tasks.assemble import build_transcript, relabel_speakers
from tasks.merge import SENTENCE_END, SegmentRules, Solo, assign_speakers, cut_segments, fragments, merge
from tasks.result import ChunkResult, Segment, Transcript, TranscriptionRun, Turn, Word
from tests.test_exports import check_cues, first_words, split_prefix

RULES = SegmentRules()


def words(spec: str, start: float = 0.0, step: float = 0.3, speaker: str | None = None) -> list[Word]:
    """Words of ``spec`` one after another (``|`` stands for a pause of 2 s)."""
    out, t = [], start
    for token in spec.split():
        if token == "|":
            t += 2.0
            continue
        out.append(Word(round(t, 3), round(t + step * 0.8, 3), f" {token}", 0.9, speaker))
        t += step
    return out


def speakers_of(segments: list[Segment]) -> list[tuple[str | None, str]]:
    return [(s.speaker, s.text) for s in segments]


# -- cutting ---------------------------------------------------------------------------------------------------
def test_segments_are_cut_at_pauses_and_start_and_end_on_their_words():
    ws = words("Yeah, | let's take notes today.", start=9.46, speaker="A")
    segments = merge([Segment(9.46, 30.0, "", None, ws)], [Turn(0, 40, "A")])
    assert [s.text for s in segments] == ["Yeah,", "let's take notes today."]
    for s in segments:
        assert (s.start, s.end) == (s.words[0].start, max(w.end for w in s.words))
        assert all(b.start - a.end <= RULES.max_gap_s for a, b in zip(s.words, s.words[1:]))


def test_long_speech_is_cut_at_sentence_ends_within_the_limit():
    sentence = "we should look at the remote control design again before the next meeting starts."
    ws = words(" ".join([sentence] * 12), speaker="A", step=0.4)  # about 67 s without a pause
    segments = cut_segments(ws, RULES)
    assert len(segments) >= 3
    assert all(s.end - s.start <= RULES.max_s for s in segments)
    assert all(s.text.endswith(SENTENCE_END) for s in segments), [s.text[-20:] for s in segments]
    assert [w for s in segments for w in s.words] == ws


def test_without_a_sentence_end_a_long_run_is_cut_at_a_phrase_end_or_the_longest_pause():
    ws = words(" ".join(["and so on"] * 40), speaker="A", step=0.5)
    # a longer pause (0.7 s, still under max_gap) before word 30
    ws[30:] = [Word(w.start + 0.6, w.end + 0.6, w.text, w.probability, w.speaker) for w in ws[30:]]
    segments = cut_segments(ws, RULES)
    assert segments[0].words[-1] is ws[29] and all(s.end - s.start <= RULES.max_s for s in segments)
    ws[20].text = " on,"
    assert cut_segments(ws, RULES)[0].words[-1] is ws[20]


def test_the_settings_reach_the_merge(tiny_settings):
    ws = words("one two three four", speaker=None, step=0.5)
    ws[2:] = [Word(w.start + 1.1, w.end + 1.1, w.text) for w in ws[2:]]  # a 1.2 s pause in the middle
    chunk = ChunkResult(0, 0.0, 5.0, [Segment(0, 5, "one two three four", None, ws)], "en", 1.0, 0.1, "cpu", "int8", 1)

    def segments(**knobs) -> list[str]:
        run = TranscriptionRun([ChunkResult.from_dict(chunk.to_dict())])
        t = build_transcript(duration=5.0, run=run, diarization=None, settings=tiny_settings.replace(**knobs),
                             source={}, timings={})
        return [s.text for s in t.segments]

    assert segments() == ["one two", "three four"]
    assert segments(segment_max_gap_s=1.5) == ["one two three four"]
    with pytest.raises(ValueError, match="SEGMENT_MAX_GAP_S"):
        tiny_settings.replace(segment_max_gap_s=40.0)


# -- speaker changes inside a sentence -------------------------------------------------------------------------
SAMPLE_WORDS = [  # faster-whisper base on the pyannote sample, 9.96–17.5 s
    Word(9.96, 10.20, " Neither"), Word(10.20, 10.42, " did"), Word(10.42, 10.64, " I."),
    Word(10.64, 10.98, " Okay."), Word(12.52, 12.62, " This"), Word(12.62, 12.84, " is"),
    Word(12.84, 13.14, " Diane"), Word(13.14, 13.38, " in"),
    Word(13.38, 13.52, " New"), Word(13.52, 13.96, " Jersey."), Word(14.38, 14.50, " And"), Word(14.50, 14.76, " I'm"),
    Word(14.76, 15.08, " Sheila"), Word(15.08, 15.50, " in"), Word(15.50, 16.02, " Texas."),
]
SAMPLE_TURNS = [Turn(9.937, 10.983, "S"), Turn(10.46, 14.746, "D"), Turn(14.307, 17.885, "S")]  # its diarization
SAMPLE_EXCLUSIVE = [Turn(9.937, 10.51, "S"), Turn(10.51, 14.678, "D"), Turn(14.678, 17.885, "S")]


def fresh(ws: list[Word]) -> list[Word]:
    return [Word(w.start, w.end, w.text) for w in ws]


def test_a_few_frames_of_overlap_do_not_split_a_sentence():
    """Word by word, "Neither did | I." and "And I'm | Sheila…" change speaker mid-sentence; the merge keeps the
    sentences whole, on the speaker the turns support."""
    plain = assign_speakers(fresh(SAMPLE_WORDS), SAMPLE_EXCLUSIVE)
    assert [" ".join(w.text.strip() for w in f) for f in fragments(plain)] == ["Neither did", "I.", "And I'm"]
    segments = merge([Segment(9.96, 16.02, "", None, fresh(SAMPLE_WORDS))], SAMPLE_EXCLUSIVE, SAMPLE_TURNS)
    assert speakers_of(segments) == [("S", "Neither did I."), ("D", "Okay."),
                                     ("D", "This is Diane in New Jersey."), ("S", "And I'm Sheila in Texas.")]
    assert not fragments([w for s in segments for w in s.words])


def test_a_short_run_stays_on_its_speaker_with_strong_evidence():
    """ "So I" lies in the first speaker's long turn, alone, for most of its time: a real change of speaker."""
    ws = words("down here. So I don't hear that in New Jersey now.", start=26.5, step=0.25)
    turns = [Turn(20.0, 27.5, "S"), Turn(27.4, 30.0, "D")]
    segments = merge([Segment(26.5, 30, "", None, ws)], turns)
    assert speakers_of(segments) == [("S", "down here. So I"), ("D", "don't hear that in New Jersey now.")]
    frs = fragments([w for s in segments for w in s.words])
    assert [" ".join(w.text.strip() for w in f) for f in frs] == ["So I"]
    cover = Solo(turns).overlap(frs[0][0].start, frs[0][-1].end, "S")
    assert cover[0] > 0.5 * (frs[0][-1].end - frs[0][0].start) and cover[1] >= RULES.fragment_turn_s


def test_a_short_sentence_is_never_split():
    """tiny.en on AMI dev00: the turns change inside "I'm sorry." (each word alone in a long turn of its own
    speaker); the sentence goes whole to the speaker alone under most of it."""
    ws = [Word(14.63, 15.03, " I'm"), Word(15.03, 15.27, " sorry."), Word(15.51, 16.23, " He's"),
          Word(16.23, 16.41, " like"), Word(16.41, 16.55, " spoil"), Word(16.55, 17.45, " it")]
    turns = [Turn(13.362, 14.965, "A"), Turn(14.965, 17.024, "B")]
    assert [w.speaker for w in assign_speakers(fresh(ws), turns)] == ["A", "B", "B", "B", "B", "B"]
    assert speakers_of(merge([Segment(14.63, 17.45, "", None, ws)], turns)) == [
        ("A", "I'm sorry."), ("B", "He's like spoil it")]


def test_a_backchannel_in_a_short_sliver_goes_to_the_sentence_speaker():
    ws = words("I think we should yeah go with the red one.", step=0.3)
    turns = [Turn(0, 1.2, "A"), Turn(1.2, 1.5, "B"), Turn(1.5, 4.0, "A")]  # a 0.3 s sliver of B under "yeah"
    assert [w.speaker for w in assign_speakers(fresh(ws), turns)].count("B") == 1
    assert speakers_of(merge([Segment(0, 4, "", None, ws)], turns)) == [("A", "I think we should yeah go with "
                                                                             "the red one.")]


def test_a_change_inside_a_sentence_moves_to_a_nearby_comma():
    ws = words("so that is what we have, and I would rather start with the buttons.", step=0.3)
    turns = [Turn(0, 2.0, "A"), Turn(2.0, 6.0, "B")]  # the turn change falls one word after the comma
    plain = [w.speaker for w in assign_speakers(fresh(ws), turns)]
    assert plain.index("B") == 7
    segments = merge([Segment(0, 6, "", None, ws)], turns)
    assert speakers_of(segments) == [("A", "so that is what we have,"), ("B", "and I would rather start with the "
                                                                              "buttons.")]


def test_speakers_are_numbered_by_their_first_word():
    turns = [Turn(0.0, 0.017, "spk_b"), Turn(0.5, 3.0, "spk_a"), Turn(3.0, 6.0, "spk_b"), Turn(7.0, 8.0, "spk_c")]
    ws = words("Hello there everybody. | Hi.", start=0.5, step=0.4)
    segments = merge([Segment(0.5, 6, "", None, ws)], turns)
    assert relabel_speakers(turns) == {"spk_b": "SPEAKER_00", "spk_a": "SPEAKER_01", "spk_c": "SPEAKER_02"}
    assert relabel_speakers(turns, segments) == {"spk_a": "SPEAKER_00", "spk_b": "SPEAKER_01", "spk_c": "SPEAKER_02"}


# -- real transcripts of the corpus ----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def corpus_runs(tmp_path_factory, tiny_settings, ami_files, pyannote_sample) -> dict[str, Path]:
    """The 8 AMI excerpts and the pyannote sample through the whole pipeline (tiny.en), SRT and VTT written;
    the run folders are kept (they hold the words and turns before the merge)."""
    from tasks.pipeline import transcribe_file

    root = tmp_path_factory.mktemp("segments")
    settings = tiny_settings.replace(formats=("json", "srt", "vtt"))
    runs = {}
    for path in [*ami_files, pyannote_sample]:
        stem = path.stem
        transcribe_file(path, settings, work_dir=root / "work" / stem, out_dir=root / "out", stem=stem)
        runs[stem] = root / "out" / stem
    return runs


def transcript_of(base: Path) -> Transcript:
    return Transcript.load(base.with_suffix(".json"))


def test_real_segments_keep_the_pause_and_length_limits(corpus_runs, tiny_settings):
    checked = 0
    for base in corpus_runs.values():
        t = transcript_of(base)
        for s in t.segments:
            assert s.words and s.start == s.words[0].start and s.end == max(w.end for w in s.words)
            assert s.end - s.start <= tiny_settings.segment_max_s
            pauses = [b.start - a.end for a, b in zip(s.words, s.words[1:])]
            assert all(p <= tiny_settings.segment_max_gap_s for p in pauses), (base.name, s.text, max(pauses))
            assert {w.speaker for w in s.words} == {s.speaker}
            checked += 1
        order = list(dict.fromkeys(s.speaker for s in t.segments))
        assert order == [f"SPEAKER_{i:02d}" for i in range(len(order))], "numbered in the order of their first word"
    assert checked >= 15


def test_real_speaker_fragments_are_fewer_and_each_has_strong_evidence(corpus_runs):
    before = after = 0
    for stem, base in corpus_runs.items():
        work = next((base.parent.parent / "work" / stem).rglob("transcription.json")).parent  # <work_dir>/<run id>
        chunks = json.loads((work / "transcription.json").read_text())["chunks"]
        exclusive = [Turn(**t) for t in json.loads((work / "diarization.json").read_text())["exclusive"]]
        plain = [Word(**w) for c in chunks for s in c["segments"] for w in s["words"]]
        before += len(fragments(assign_speakers(plain, exclusive) if exclusive else plain))
        t = transcript_of(base)
        solo = Solo(t.turns)
        for f in fragments(t.words):
            after += 1
            covered = [solo.overlap(w.start, w.end, w.speaker) for w in f]
            assert sum(c for c, _ in covered) > RULES.fragment_cover * sum(w.end - w.start for w in f), (stem, f)
            assert max(lng for _, lng in covered) >= RULES.fragment_turn_s, (stem, f)
    assert after < before, (before, after)


def test_every_real_subtitle_cue_keeps_the_limits(corpus_runs):
    import srt
    import webvtt

    cues_seen = 0
    for base in corpus_runs.values():
        t = transcript_of(base)
        subs = list(srt.parse(base.with_suffix(".srt").read_text(encoding="utf-8")))
        cues = [(s.start.total_seconds(), s.end.total_seconds(), s.content.split("\n")) for s in subs]
        check_cues(cues, t.duration)
        texts = [" ".join([split_prefix(c[2][0])[1], *c[2][1:]]) for c in cues]
        firsts = first_words(t, texts)
        assert [split_prefix(c[2][0])[0] for c in cues] == [w.speaker for w in firsts], "one speaker per cue"

        captions = webvtt.read(str(base.with_suffix(".vtt"))).captions
        vtt = [(c.start_time.in_milliseconds() / 1000, c.end_time.in_milliseconds() / 1000,
                [html.unescape(line) for line in c.text.split("\n")]) for c in captions]
        check_cues(vtt, t.duration)
        assert not any(re.match(r"^\[SPEAKER_\d+\]", c[2][0]) for c in vtt), "the voice tag alone names the speaker"
        assert [html.unescape(c.voice) for c in captions] == [w.speaker for w in first_words(t, [" ".join(c[2])
                                                                                                 for c in vtt])]
        cues_seen += len(cues)
    assert cues_seen >= 30


def test_a_short_cue_joins_its_neighbour_or_starts_earlier():
    from tasks.exports import ExportOptions
    from tasks.exports.subtitles import build_cues

    said = words("they all call me a Yankee down here. So I", start=24.0, step=0.35, speaker="S")
    reply = words("don't hear that in New Jersey now.", start=said[-1].end, step=0.3, speaker="D")
    t = Transcript("en", 40.0, [Segment(said[0].start, said[-1].end, "", "S", said),
                                Segment(reply[0].start, reply[-1].end, "", "D", reply)])
    cues = build_cues(t, ExportOptions())
    assert [" ".join(c.lines) for c in cues] == ["[S] they all call me a Yankee down here. So I",
                                                 "[D] don't hear that in New Jersey now."]

    squeezed = [Segment(8.0, 9.6, "", "B", words("Well, hello.", start=8.4, speaker="B")),
                Segment(10.0, 10.3, "", "A", [Word(10.0, 10.3, " Hi.", 0.9, "A")]),
                Segment(10.3, 12.0, "", "B", words("How are you?", start=10.3, speaker="B"))]
    cues = build_cues(Transcript("en", 20.0, squeezed), ExportOptions())
    b_end = cues[0].end_ms
    assert (cues[1].start_ms, cues[1].end_ms) == (b_end, 10300) and b_end < 10000, "started earlier, up to B's end"
