"""The GPU out-of-memory shrink path, run for real through fault injection, and checkpoint resume."""

import pytest

from tasks import audio, transcription
from tasks.checkpoint import ChunkCheckpoint
from tasks.chunking import plan_chunks
from tasks.errors import GpuOutOfMemory, ShrinkExhausted, as_gpu_oom, is_cuda_oom
from tasks.oom import RunState, ShrinkPolicy


def test_policy_halves_batch_then_chunk_then_falls_back_to_cpu():
    policy = ShrinkPolicy(min_chunk_s=15, min_batch_size=1)
    state = RunState(device="cuda", compute_type="float16", chunk_s=60, batch_size=8)
    seen = [state]
    while (state := policy.next(state)) is not None:
        seen.append(state)
    assert [(s.batch_size, s.chunk_s, s.device) for s in seen] == [
        (8, 60, "cuda"), (4, 60, "cuda"), (2, 60, "cuda"), (1, 60, "cuda"),
        (1, 30, "cuda"), (1, 15, "cuda"), (1, 15, "cpu"),
    ]
    assert seen[-1].cpu_fallback and seen[-1].compute_type == "int8"
    assert len(seen) < 20  # terminates: never an infinite loop


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (RuntimeError("CUDA failed with error out of memory"), True),
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (type("OutOfMemoryError", (RuntimeError,), {})("boom"), True),
        (RuntimeError("cuBLAS failed with status CUBLAS_STATUS_ALLOC_FAILED"), True),
        (RuntimeError("cuDNN failed with status CUDNN_STATUS_ALLOC_FAILED"), True),
        (RuntimeError("cuDNN failed with status CUDNN_STATUS_BAD_PARAM"), False),
        (RuntimeError("some other failure"), False),
        (MemoryError("host out of memory"), False),
    ],
)
def test_cuda_oom_is_recognised(exc, expected):
    assert is_cuda_oom(exc) is expected
    assert (as_gpu_oom(exc) is not None) is expected
    if expected:
        assert isinstance(as_gpu_oom(exc), GpuOutOfMemory)


@pytest.fixture(scope="module")
def meeting(ami_files):
    """All eight AMI excerpts end to end (4 minutes) so the plan has several chunks."""
    import numpy as np

    return np.concatenate([audio.decode(p) for p in ami_files])


def test_injected_oom_shrinks_and_still_completes(meeting, tiny_settings, tmp_path):
    settings = tiny_settings.replace(diarize=False, chunk_target_s=60, chunk_min_s=20, chunk_max_s=80,
                                     oom_min_chunk_s=15, fault_oom_above_s=25)
    plan = plan_chunks(meeting, 60, 20, 80)
    clean = transcription.transcribe_plan(meeting, plan, tiny_settings.replace(diarize=False))
    checkpoint = ChunkCheckpoint(tmp_path / "ck")
    run = transcription.transcribe_plan(meeting, plan, settings, resume=checkpoint.resume(),
                                        on_event=checkpoint.record)

    ooms = [a for a in run.attempts if a.outcome == "oom"]
    oks = [a for a in run.attempts if a.outcome == "ok"]
    assert ooms and all(a.chunk_s > 25 for a in ooms)
    assert all(a.chunk_s <= 25 or a.cpu_fallback for a in oks)
    assert run.state.chunk_s < 60
    # complete: covers the whole file, contiguous
    assert run.chunks[0].start == 0 and run.chunks[-1].end == pytest.approx(len(meeting) / 16000, abs=1e-3)
    for a, b in zip(run.chunks, run.chunks[1:]):
        assert a.end == b.start
    assert len(run.segments) >= 0.7 * len(clean.segments)
    # the state and every attempt are durable for the next process
    saved = ChunkCheckpoint(tmp_path / "ck")
    assert saved.load_state() == run.state
    assert len(saved.load_attempts()) == len(run.attempts)


def test_oom_below_the_floor_falls_back_to_cpu(meeting, tiny_settings):
    settings = tiny_settings.replace(diarize=False, chunk_target_s=60, chunk_min_s=20, chunk_max_s=80,
                                     oom_min_chunk_s=30, fault_oom_above_s=5)
    run = transcription.transcribe_plan(meeting, plan_chunks(meeting, 60, 20, 80), settings)
    assert run.state.cpu_fallback and run.state.device == "cpu"
    assert any(a.outcome == "oom" for a in run.attempts)
    assert all(a.cpu_fallback for a in run.attempts if a.outcome == "ok")
    assert run.chunks[-1].end == pytest.approx(len(meeting) / 16000, abs=1e-3)


def test_oom_after_cpu_fallback_is_exhausted_not_a_loop():
    policy = ShrinkPolicy()
    state = RunState("cpu", "int8", 15, 1, cpu_fallback=True)
    assert policy.next(state) is None
    assert issubclass(ShrinkExhausted, Exception)


class Crash(Exception):
    pass


def test_resume_from_checkpoint_after_a_crash(meeting, tiny_settings, tmp_path):
    settings = tiny_settings.replace(diarize=False)
    plan = plan_chunks(meeting, 60, 30, 80)
    assert len(plan.spans) >= 3
    checkpoint = ChunkCheckpoint(tmp_path / "ck")

    def crash_after_two(done_s, total_s, index):
        if index == 1:
            raise Crash("worker killed")

    with pytest.raises(Crash):
        transcription.transcribe_plan(meeting, plan, settings, resume=checkpoint.resume(), on_event=checkpoint.record,
                                      progress=crash_after_two)
    assert len(checkpoint.load_chunks()) == 2

    again = ChunkCheckpoint(tmp_path / "ck")
    resumed = transcription.transcribe_plan(meeting, plan, settings, resume=again.resume(), on_event=again.record)
    assert resumed.resumed_chunks == 2
    fresh = transcription.transcribe_plan(meeting, plan, settings)
    assert [c.index for c in resumed.chunks] == list(range(len(plan.spans)))
    assert [s.text for s in resumed.segments] == [s.text for s in fresh.segments]
    # no chunk transcribed twice: two attempts before the crash, the rest after
    assert len([a for a in resumed.attempts if a.outcome == "ok"]) == len(plan.spans)


def test_cuda_oom_wrapped_by_pyannote_inference_is_recognised():
    """pyannote's segmentation re-raises a CUDA OOM as ``MemoryError("batch_size (32) is probably too large")``."""
    import torch
    from pyannote.audio.core.inference import Inference

    class OomModel:
        def __call__(self, chunks):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.53 GiB")

    fake = type("Fake", (), {"model": OomModel(), "device": torch.device("cpu"), "batch_size": 32})()
    with pytest.raises(MemoryError) as caught:
        Inference.infer(fake, torch.zeros(2, 1, 160000))
    assert "out of memory" not in str(caught.value)  # the message alone does not say so
    assert is_cuda_oom(caught.value)
    assert isinstance(as_gpu_oom(caught.value), GpuOutOfMemory)
    assert not is_cuda_oom(MemoryError("batch_size ( 32) is probably too large"))  # no CUDA OOM behind it
