"""Real faster-whisper models on real audio."""

import pytest

from tasks import audio, transcription
from tasks.chunking import make_plan, plan_chunks
from tasks.evaluation import normalize_text, wer
from tasks.pipeline import transcribe_file
from tests.conftest import corpus_file


@pytest.fixture(scope="module")
def jfk_reference():
    return corpus_file("speech/jfk.txt").read_text(encoding="utf-8")


@pytest.mark.parametrize("model", ["tiny.en", "base"])
def test_jfk_word_error_rate_is_low(jfk, jfk_reference, tiny_settings, model):
    settings = tiny_settings.replace(model=model, diarize=False)
    transcript = transcribe_file(jfk, settings)
    assert wer(jfk_reference, transcript.text) <= 0.10, transcript.text
    assert transcript.language == "en"
    assert transcript.model == model


def test_words_are_monotonic_inside_the_file_and_in_file_time(jfk, tiny_settings):
    transcript = transcribe_file(jfk, tiny_settings.replace(diarize=False))
    words = transcript.words
    assert len(words) >= 20
    for a, b in zip(words, words[1:]):
        assert a.start <= b.start and a.end <= b.end + 1e-6
    assert all(0.0 <= w.start <= w.end <= transcript.duration for w in words)
    assert all(0.0 <= w.probability <= 1.0 for w in words)


def test_hotwords_and_initial_prompt_are_passed_through(tiny_settings):
    path = corpus_file("speech/hotwords.mp3")
    base = tiny_settings.replace(model="base", diarize=False)
    plain = transcribe_file(path, base).text
    assert "ComfyUI" not in plain
    assert "ComfyUI" in transcribe_file(path, base.replace(hotwords="ComfyUI")).text
    assert "ComfyUI" in transcribe_file(path, base.replace(initial_prompt="ComfyUI")).text


def test_language_detection_once_per_file_or_per_chunk(tiny_settings):
    path = corpus_file("speech/multilingual.mp3")
    settings = tiny_settings.replace(model="base", diarize=False, chunk_target_s=30, chunk_min_s=10,
                                     chunk_max_s=40)
    waveform = audio.decode(path)
    plan = make_plan(waveform, settings)
    assert len(plan.spans) == 2
    once = transcription.transcribe_plan(waveform, plan, settings)
    assert {c.language for c in once.chunks} == {"en"}
    each = transcription.transcribe_plan(waveform, plan, settings.replace(multilingual=True))
    assert [c.language for c in each.chunks] == ["en", "de"]
    assert "Software" in " ".join(s.text for s in each.chunks[1].segments)


def test_silence_gives_an_empty_transcript(tiny_settings):
    transcript = transcribe_file(corpus_file("speech/empty.wav"), tiny_settings)
    assert transcript.segments == [] and transcript.text == ""
    assert transcript.duration == pytest.approx(1.0, abs=0.01)


def test_model_is_loaded_once_per_process(jfk, tiny_settings):
    transcription.load_model.cache_clear()
    transcribe_file(jfk, tiny_settings.replace(diarize=False))
    transcribe_file(jfk, tiny_settings.replace(diarize=False))
    info = transcription.load_model.cache_info()
    assert info.misses == 1 and info.hits >= 1


def test_unknown_model_name_is_a_clear_error(jfk, tiny_settings):
    from tasks.errors import ModelUnavailable

    with pytest.raises(ModelUnavailable, match="not on disk"):
        transcribe_file(jfk, tiny_settings.replace(model="large-v9", diarize=False))


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny.en", "base"])
def test_chunked_transcript_matches_one_unchunked_pass(long_meeting, tiny_settings, model):
    """10-minute file: chunked run vs one bare faster-whisper pass, WER <= 5 %, nothing doubled at seams."""
    from faster_whisper import BatchedInferencePipeline

    # the batched pass alone, on the audio as it is (no second pass, no levelling of the speech regions)
    settings = tiny_settings.replace(model=model, diarize=False, redecode_min_s=0, region_level_db=0)
    waveform = audio.decode(long_meeting)
    plan = plan_chunks(waveform, 90, 30, 120)
    assert len(plan.spans) >= 5
    run = transcription.transcribe_plan(waveform, plan, settings)

    whisper = transcription.load_model(transcription.resolve_model(model, settings.models_dir), "cpu", "int8", 0)
    bare, _ = BatchedInferencePipeline(whisper).transcribe(waveform, word_timestamps=True, vad_filter=True,
                                                          batch_size=settings.batch_size)
    bare_text = " ".join(s.text for s in bare)
    chunked_text = " ".join(s.text for s in run.segments)
    assert len(normalize_text(bare_text).split()) > 500
    assert wer(bare_text, chunked_text) <= 0.05

    for chunk in run.chunks:  # every word inside its own chunk
        for seg in chunk.segments:
            assert all(chunk.start <= w.start <= w.end <= chunk.end for w in seg.words)
    for left, right in zip(run.chunks, run.chunks[1:]):
        tail = [w for s in left.segments for w in s.words][-3:]
        head = [w for s in right.segments for w in s.words][:3]
        if tail and head:
            assert head[0].start >= tail[-1].end - 1e-6, "words overlap across a seam"
            tail_text = [normalize_text(w.text) for w in tail]
            head_text = [normalize_text(w.text) for w in head]
            assert tail_text[-2:] != head_text[:2], f"doubled words at seam {left.end}: {tail_text} | {head_text}"
