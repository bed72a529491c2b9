"""Coverage (issue 13, part 1): speech the batched pass left without words is found, decoded again on its own,
merged in time order, checkpointed with its chunk and reported in the transcript's ``coverage``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tasks.chunking import Span
from tasks.coverage import coverage, uncovered, union
from tasks.result import ChunkResult, Segment, Word
from tasks.transcription import _better, _interleave, _loops, _without_stretched, redecode_windows, sparse_regions

ROOT = Path(__file__).resolve().parent.parent


def bench_common():
    """``benchmarks/common.py`` (it builds the multi-speaker files), loaded from its file."""
    name = "securetranscribe_bench_common"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "common.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def three_voices(tmp_path_factory, corpus) -> Path:
    """Studio read speech, jfk and a telephone call, one whole utterance after another, at different levels."""
    return bench_common().build_multispeaker("three_voices", tmp_path_factory.mktemp("built"))


def word(start: float, end: float, text: str = " w") -> Word:
    return Word(start, end, text, 0.9)


# -- measuring ------------------------------------------------------------------------------------------------
def test_union_joins_overlapping_and_touching_intervals():
    assert union([(5, 6), (0, 2), (1, 3), (3, 4)]) == [(0, 4), (5, 6)]


def test_uncovered_is_speech_of_1s_or_more_with_no_word_within_half_a_second():
    speech = [(0.0, 10.0), (12.0, 12.8)]
    words = [(1.0, 1.5), (5.0, 5.3)]
    # 0..0.5 is too short; 2.0..4.5 and 5.8..10 have no word nearby; 12..12.8 is under 1 s
    assert uncovered(speech, words) == [(2.0, 4.5), (5.8, 10.0)]
    assert uncovered(speech, words, min_s=0.5) == [(0.0, 0.5), (2.0, 4.5), (5.8, 10.0), (12.0, 12.8)]


def test_a_word_stretched_over_a_lost_turn_covers_nothing():
    """When the decoder drops a turn, the alignment stretches the next word over it (3.4 s for "the")."""
    speech = [(30.0, 45.0)]
    words = [(30.0 + 0.9 * i, 30.8 + 0.9 * i) for i in range(6)] + [(35.2, 35.99), (36.53, 39.93), (44.19, 44.57)]
    assert uncovered(speech, words) == [(36.49, 43.69)]
    assert uncovered(speech, words, max_word_s=float("inf")) == [(40.43, 43.69)]


def test_coverage_reports_speech_missing_words_and_what_was_decoded_again():
    words = [(0.2 + 0.8 * i, 1.0 + 0.8 * i) for i in range(11)]  # up to 9 s
    c = coverage([(0, 10), (5, 20)], words, [{"start": 12.0, "end": 14.5, "words": 4},
                                            {"start": 16.0, "end": 18.0, "words": 0, "sparse": True}])
    assert c["speech_s"] == 20.0
    assert c["without_words_s"] == pytest.approx(10.5)
    assert c["without_words_ratio"] == pytest.approx(0.525)
    assert c["stretches_without_words"] == [[9.5, 20.0]]
    assert (c["redecoded"], c["redecoded_s"], c["redecoded_words"], c["redecoded_sparse"]) == (2, 4.5, 4, 1)
    assert coverage([], [])["without_words_ratio"] == 0.0


# -- the second pass's clips and merge ----------------------------------------------------------------------
def test_redecode_windows_cover_each_gap_in_clips_of_at_most_30s_never_over_a_word():
    span = Span(0, 100.0, 200.0)
    sr = 16000
    regions = [{"start": 0, "end": 20 * sr}, {"start": 20 * sr, "end": 45 * sr}, {"start": 50 * sr, "end": 80 * sr}]
    segments = [Segment(100.2, 105.0, "a", None, [word(100.2, 100.6), word(104.5, 105.0)])]
    clips = redecode_windows(span, regions, segments)
    assert clips, "the speech after 105.5 s has no word"
    assert all(b - a <= 30.0 + 1e-6 for a, b in clips)
    words = [w for s in segments for w in s.words]
    assert all(b <= w.start or a >= w.end for a, b in clips for w in words)  # never over a word
    assert clips[-1][1] <= 180.5  # the speech ends at 180 s; a clip reaches at most 0.5 s past it
    covered = union(clips)
    for s, e in [(101.1, 104.0), (105.5, 145.0), (150.0, 180.0)]:  # every bit of uncovered speech is in a clip
        assert any(a <= s and e <= b for a, b in covered), (s, e, covered)
    assert redecode_windows(span, regions, segments, min_s=1000.0) == []


def test_recovered_words_go_between_the_batched_words_in_time_order():
    batched = Segment(26.19, 51.71, "x", None, [word(26.2, 26.6, " For"), word(35.2, 35.99, " process,"),
                                                word(36.53, 39.93, " the"), word(44.19, 44.57, " of")])
    recovered = Segment(36.45, 43.19, "Well, there.", None, [word(36.45, 36.8, " Well,"), word(36.9, 43.19, " there.")])
    merged = _interleave(_without_stretched([batched], [(35.99, 44.19)]), [recovered])
    texts = [w.text for s in merged for w in s.words]
    assert texts == [" For", " process,", " Well,", " there.", " of"]  # the stretched " the" is replaced
    starts = [w.start for s in merged for w in s.words]
    assert starts == sorted(starts)
    assert [s.text for s in merged] == ["For process,", "Well, there.", "of"]
    # a clip that found nothing leaves the batched words alone
    assert [w.text for s in _without_stretched([batched], []) for w in s.words] == [w.text for w in batched.words]


def test_a_sparse_region_is_one_whose_words_are_too_few_for_its_length():
    """held_out_a: Diane's 1.5-s turn (VAD region 36.05-38.06 s) held only "He", the next speaker's first word
    aligned over it; no stretch of 1 s is without a word, so only the words' density shows the loss."""
    span = Span(0, 30.0, 60.0)
    sr = 16000
    regions = [{"start": round(a * sr), "end": round(b * sr)} for a, b in
               [(0.75, 6.05), (6.05, 8.06), (8.06, 13.18), (20.0, 21.0), (21.0, 23.0)]]
    words = [word(30.75 + 0.4 * i, 31.1 + 0.4 * i) for i in range(13)]  # 13 words in 5.3 s
    words += [word(37.05, 37.69, " He"), word(37.69, 38.63, " began")]  # "began": its middle is past 38.06
    words += [word(38.7 + 0.4 * i, 39.0 + 0.4 * i) for i in range(11)]
    words += [word(51.2, 51.5), word(52.0, 52.4)]  # 2 words in 2 s: not sparse at 0.75 words/s
    segments = [Segment.of_words(words)]
    assert sparse_regions(span, regions, segments, 0.75) == [(36.05, 38.06)]
    assert sparse_regions(span, regions, segments, 0.0) == []  # off
    assert sparse_regions(span, regions, segments, 0.75, taken=[(37.0, 37.5)]) == []  # a gap's clip has it
    assert sparse_regions(span, regions, segments, 1.5) == [(36.05, 38.06), (51.0, 53.0)]
    assert sparse_regions(span, regions[3:4], [], 5.0) == []  # 1 s: too short to tell
    # when the region's new words are kept, every batched word whose middle is inside it goes
    kept = _without_stretched(segments, [], [(36.05, 38.06)])
    assert [w.text for s in kept for w in s.words].count(" He") == 0
    assert " began" in [w.text for s in kept for w in s.words]
    assert sum(len(s.words) for s in kept) == len(words) - 1


def test_a_clip_whose_words_loop_is_replaced_by_its_own_decoding():
    def seg(text: str) -> list[Segment]:
        words = [word(i, i + 0.5, " " + t) for i, t in enumerate(text.split())]
        return [Segment.of_words(words)] if words else []

    looped = seg("and so my fellow Americans The invention and so my fellow Americans")  # tiny.en, packed window
    alone = seg("And so my fellow Americans.")
    assert _loops(looped) and not _loops(alone)
    jfk = seg("ask not what your country can do for you, ask what you can do for your country.")
    assert not _loops(jfk)  # three words said twice are speech
    assert _loops(seg("I don't know what. I DON'T KNOW what"))  # case and punctuation aside
    assert not _loops(seg("one two three four one two three"))
    assert not _loops(seg("a - - - - b - - - - c"))  # punctuation marks are not words
    assert _better(alone, looped)  # fewer words that do not loop beat more that do
    assert not _better(seg(""), looped)  # never nothing over something
    assert _better(seg("a b c d e"), seg("a b c"))
    assert not _better(seg("a b c"), seg("a b c"))  # ties keep the packed words
    assert not _better(seg("w x y z w x y z q"), seg("a b"))


def test_a_chunk_keeps_what_was_decoded_again_through_its_checkpoint(tmp_path):
    from tasks.checkpoint import ChunkCheckpoint
    from tasks.oom import RunState
    from tasks.result import ChunkEvent

    chunk = ChunkResult(0, 0.0, 60.0, [Segment(1.0, 2.0, "hi", None, [word(1.0, 2.0)])], "en", 0.9, 3.0, "cpu",
                        "int8", 8, redecoded=[{"start": 30.0, "end": 35.0, "words": 7}], redecode_seconds=0.4)
    checkpoint = ChunkCheckpoint(tmp_path)
    checkpoint.record(ChunkEvent(chunk, RunState("cpu", "int8", 240.0, 8), []))
    resumed = checkpoint.resume().chunks
    assert resumed == [chunk]
    old = chunk.to_dict()
    del old["redecoded"], old["redecode_seconds"]  # a checkpoint written before the second pass
    assert ChunkResult.from_dict(old).redecoded == []


def test_quiet_regions_are_raised_to_the_median_speech_level_and_nothing_else_changes():
    import numpy as np

    from tasks.transcription import span_audio

    sr = 16000
    t = np.arange(sr) / sr
    tone = np.sin(2 * np.pi * 220 * t).astype(np.float32)
    # three seconds of a voice at about -20 dBFS (most of the speech: the median), a pause, one second each
    # at -24 (within 6 dB), -40 and -70
    audio = np.concatenate([0.14 * tone, 0.14 * tone, 0.14 * tone, np.zeros(sr, np.float32), 0.09 * tone,
                            0.014 * tone, 4.4e-4 * tone]).astype(np.float32)
    span = Span(0, 0.0, 7.0)
    regions = [{"start": 0, "end": 3 * sr}, {"start": 4 * sr, "end": 5 * sr}, {"start": 5 * sr, "end": 6 * sr},
               {"start": 6 * sr, "end": 7 * sr}]

    def dbfs(x):
        return 20 * np.log10(np.sqrt(np.mean(np.square(x))))

    levelled = span_audio(audio, span, regions, 6.0)
    median = dbfs(audio[:3 * sr])
    assert np.array_equal(levelled[:5 * sr], audio[:5 * sr])  # the loud voice and the one within 6 dB: as is
    assert dbfs(levelled[5 * sr:6 * sr]) == pytest.approx(median, abs=0.1)  # the quiet voice raised
    assert dbfs(levelled[6 * sr:]) == pytest.approx(dbfs(audio[6 * sr:]) + 24.0, abs=0.1)  # at most +24 dB
    assert not levelled[3 * sr:4 * sr].any()  # silence between regions stays silence
    assert np.array_equal(span_audio(audio, span, regions, 0.0), audio)  # 0: off
    one_level = np.concatenate([0.3 * tone, 0.2 * tone]).astype(np.float32)  # a file at one level: untouched
    assert np.array_equal(span_audio(one_level, Span(0, 0.0, 2.0), [{"start": 0, "end": sr},
                                                                    {"start": sr, "end": 2 * sr}], 6.0), one_level)
    clicked = audio.copy()
    clicked[5 * sr + 100] = 0.5  # a click in the quiet region: raised only as far as its peak allows
    assert np.abs(span_audio(clicked, span, regions, 6.0)).max() <= 0.99
    assert dbfs(audio[5 * sr:6 * sr]) < -35  # the input is not changed


# -- on real speech -------------------------------------------------------------------------------------------
def test_second_pass_gives_words_to_turns_the_batched_pass_dropped(three_voices, tiny_settings):
    """Reference speech (the built file's exact RTTM) without words: the batched pass alone vs with the second
    pass, same model, same plan; the recovered words make the text closer to the reference."""
    from tasks.audio import decode
    from tasks.chunking import make_plan
    from tasks.evaluation import read_rttm, read_stm, word_errors
    from tasks.transcription import transcribe_plan

    audio = decode(three_voices)
    plan = make_plan(audio, tiny_settings)
    speech = [(t.start, t.end) for t in read_rttm(three_voices.with_suffix(".rttm"))]
    reference = " ".join(u.text for u in read_stm(three_voices.with_suffix(".stm")))
    results = {}
    for name, min_s, context in (("batched", 0.0, 30.0), ("second pass", 1.0, tiny_settings.redecode_context_s),
                                 ("second pass, 30-s windows", 1.0, 30.0)):
        run = transcribe_plan(audio, plan, tiny_settings.replace(redecode_min_s=min_s, redecode_context_s=context,
                                                                 diarize=False))
        words = [w for s in run.segments for w in s.words]
        assert [w.start for w in words] == sorted(w.start for w in words)
        redecoded = [r for c in run.chunks for r in c.redecoded]
        results[name] = (coverage(speech, [(w.start, w.end) for w in words], redecoded),
                         word_errors(reference, " ".join(s.text for s in run.segments)).rate)
    (before, wer_before), (after, wer_after) = results["batched"], results["second pass"]
    assert before["redecoded"] == 0
    assert after["without_words_ratio"] <= 0.03, after
    assert after["without_words_s"] <= before["without_words_s"]
    assert before["without_words_ratio"] > 0.1, before  # tiny.en alone drops whole turns here (35 %, 24 s)
    assert after["redecoded"] >= 1 and after["redecoded_words"] > 0
    assert wer_after < wer_before
    # the encoder given only the re-decoded audio's own seconds (default) finds what the full window finds
    full, wer_full = results["second pass, 30-s windows"]
    assert tiny_settings.redecode_context_s < 30
    assert after["without_words_s"] <= full["without_words_s"] + 0.5, (after, full)
    assert wer_after <= wer_full + 0.02, (wer_after, wer_full)


def test_the_encoder_context_pads_to_whole_seconds_and_is_restored():
    import faster_whisper.transcribe as fw
    import numpy as np

    from tasks.transcription import _encoder_context

    features = np.ones((80, 731), dtype=np.float32)  # 7.31 s of features
    original = fw.pad_or_trim
    with _encoder_context(8.2):
        assert fw.pad_or_trim(features).shape == (80, 900)
    assert fw.pad_or_trim is original and fw.pad_or_trim(features).shape == (80, 3000)
    with _encoder_context(45.0):  # never more than Whisper's window
        assert fw.pad_or_trim is original


def test_transcript_records_its_coverage_against_the_diarization(three_voices, tiny_settings):
    from tasks.pipeline import transcribe_file

    transcript = transcribe_file(three_voices, tiny_settings)
    c = transcript.coverage
    assert c["speech_source"] == "diarization"
    assert 55.0 < c["speech_s"] < 75.0  # 67.8 s of reference speech
    assert c["without_words_ratio"] <= 0.03, c
    assert {"redecoded", "redecoded_s", "redecoded_words", "stretches_without_words"} <= set(c)
    assert sum(e - s for s, e in c["stretches_without_words"]) == pytest.approx(c["without_words_s"], abs=0.02)
    from tasks.result import Transcript

    assert Transcript.from_json(transcript.to_json()).coverage == c


def test_a_turn_hidden_under_a_neighbours_word_is_decoded_again(tmp_path_factory, corpus, tiny_settings):
    """held_out_a (a built file no setting was chosen on), Whisper base: the batched pass drops Diane's 1.5-s
    second turn between two other voices and the alignment puts the next speaker's "He" over it, so no second
    of it is without a word; the sparse-region rule decodes the region again and its words go in."""
    from tasks.audio import decode
    from tasks.chunking import make_plan
    from tasks.evaluation import normalize_text, read_stm, word_errors
    from tasks.transcription import transcribe_plan

    wav = bench_common().build_multispeaker("held_out_a", tmp_path_factory.mktemp("held_out"))
    audio = decode(wav)
    utterances = read_stm(wav.with_suffix(".stm"))
    turn = [u for u in utterances if u.speaker == "diane"][-1]
    said = set(normalize_text(turn.text).split())
    settings = tiny_settings.replace(model="base", diarize=False)
    plan = make_plan(audio, settings)
    found = {}
    for rate in (0.0, settings.redecode_sparse_words_per_s):
        run = transcribe_plan(audio, plan, settings.replace(redecode_sparse_words_per_s=rate))
        words = [w for s in run.segments for w in s.words]
        assert [w.start for w in words] == sorted(w.start for w in words)
        inside = normalize_text(" ".join(w.text for w in words if turn.start - 0.2 <= (w.start + w.end) / 2
                                         <= turn.end + 0.2)).split()
        sparse = [r for c in run.chunks for r in c.redecoded if r.get("sparse")]
        wer = word_errors(" ".join(u.text for u in utterances), " ".join(s.text for s in run.segments)).rate
        found[rate] = (inside, sparse, wer)
    (before, none, wer_before), (after, sparse, wer_after) = found[0.0], found[settings.redecode_sparse_words_per_s]
    assert not none and len([w for w in before if w in said]) <= 1, before  # base drops the turn here
    assert sparse and sparse[0]["words"] >= 4 and turn.start - 0.5 < sparse[0]["start"] < turn.end, sparse
    assert len([w for w in after if w in said]) >= 4, after
    assert wer_after < wer_before
