"""Offline diarization with real pyannote models on real conversations."""

from pathlib import Path

import numpy as np
import torch

from tasks import audio
from tasks.diarization import diarize
from tasks.diarization.pipeline import DEFAULT_PARAMS
from tasks.evaluation import diarization_scores, read_rttm, read_uem
from tests.conftest import corpus_file


def test_pyannote_sample_two_speakers_without_hint(pyannote_sample, tiny_settings):
    result = diarize(audio.decode(pyannote_sample), tiny_settings)
    scores = diarization_scores(read_rttm(pyannote_sample.with_suffix(".rttm")), result.turns, collar=0.25)
    assert scores["hyp_speakers"] == 2
    assert scores["der"] <= 0.10, scores
    assert result.device == "cpu"
    assert set(result.timings) >= {"segmentation", "embeddings", "clustering"}
    # exclusive turns never overlap
    ex = sorted(result.exclusive, key=lambda t: t.start)
    assert all(a.end <= b.start + 1e-6 for a, b in zip(ex, ex[1:]))


def test_speaker_count_hints_are_honoured(pyannote_sample, tiny_settings):
    waveform = audio.decode(pyannote_sample)
    assert len(diarize(waveform, tiny_settings, num_speakers=3).speakers) == 3
    assert len(diarize(waveform, tiny_settings, max_speakers=1).speakers) == 1


def test_ami_excerpts_mean_der_is_reported(ami_files, tiny_settings, capsys):
    rows = []
    for path in ami_files:
        result = diarize(audio.decode(path), tiny_settings)
        scores = diarization_scores(read_rttm(path.with_suffix(".rttm")), result.turns,
                                    uem=read_uem(path.with_suffix(".uem")), collar=0.25)
        rows.append((path.name, scores))
        assert 0.0 <= scores["der"] <= 2.0
    mean = float(np.mean([s["der"] for _, s in rows]))
    with capsys.disabled():
        print("\nAMI diarization (collar 0.25, no hint):")
        for name, s in rows:
            print(f"  {name:12s} DER {s['der']:.3f}  speakers ref {s['ref_speakers']} hyp {s['hyp_speakers']}")
        print(f"  mean DER {mean:.3f}")
    assert mean <= 0.40  # 0.33 with the tuned defaults (docs/benchmarks.md); 0.39 before tuning


def test_silence_has_no_speakers(tiny_settings):
    result = diarize(audio.decode(corpus_file("speech/empty.wav")), tiny_settings)
    assert result.turns == [] and result.speakers == []


def test_injected_oom_falls_back_to_cpu_and_is_recorded(pyannote_sample, tiny_settings):
    result = diarize(audio.decode(pyannote_sample), tiny_settings.replace(fault_oom_diarization=True))
    outcomes = [(a.outcome, a.batch_size, a.cpu_fallback) for a in result.attempts]
    assert outcomes[-1] == ("ok", 1, True)
    assert [o for o, _, _ in outcomes[:-1]] == ["oom"] * (len(outcomes) - 1)
    assert [b for _, b, _ in outcomes[:-1]][:3] == [32, 16, 8]
    assert len(result.speakers) == 2


def test_fbank_front_end_matches_kaldi(tiny_settings):
    from torchaudio.compliance.kaldi import fbank

    from tasks.diarization.embedding import CamPlusPlusEmbedding, kaldi_fbank

    model = CamPlusPlusEmbedding()
    wave = torch.from_numpy(audio.decode(corpus_file("speech/jfk.flac"))[: 16000 * 3]).unsqueeze(0)
    ours = kaldi_fbank(wave, model.mel_banks, model.window)[0]
    ref = fbank(wave, num_mel_bins=80, dither=0.0, sample_frequency=16000)
    assert torch.allclose(ours, ref, atol=1e-3)


def test_campplus_separates_speakers(pyannote_sample, tiny_settings):
    """Same-speaker embeddings are closer than cross-speaker ones on the real sample."""
    from tasks.diarization.embedding import CamPlusPlusEmbedding

    ckpt = Path(tiny_settings.models_dir) / "campplus" / "campplus_cn_en_common.pt"
    model = CamPlusPlusEmbedding(str(ckpt))
    waveform = torch.from_numpy(audio.decode(pyannote_sample))
    turns = [t for t in read_rttm(pyannote_sample.with_suffix(".rttm")) if t.end - t.start > 2.0]
    speakers = sorted({t.speaker for t in turns})
    assert len(speakers) == 2
    clips = {s: [t for t in turns if t.speaker == s][:2] for s in speakers}
    emb = {}
    with torch.inference_mode():
        for s, ts in clips.items():
            emb[s] = [torch.nn.functional.normalize(model(waveform[int(t.start * 16000): int(t.end * 16000)]
                                                          .reshape(1, 1, -1)), dim=-1)[0] for t in ts]
    a, b = speakers
    same = float(emb[a][0] @ emb[a][1])
    cross = float(emb[a][0] @ emb[b][0])
    assert same > cross + 0.2, (same, cross)


def _campplus(settings):
    from tasks.diarization.embedding import CamPlusPlusEmbedding

    return CamPlusPlusEmbedding(str(Path(settings.models_dir) / "campplus" / "campplus_cn_en_common.pt"))


def test_batchnorm_folding_keeps_the_network_output(tiny_settings):
    """The speed-up folds BatchNorms into convolutions: embeddings must not change."""
    from tasks.diarization.campplus import CAMPPlus

    ckpt = Path(tiny_settings.models_dir) / "campplus" / "campplus_cn_en_common.pt"
    plain = CAMPPlus().load_checkpoint(str(ckpt)).eval()
    fused = CAMPPlus().load_checkpoint(str(ckpt)).fuse_for_inference()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    feats = torch.randn(2, 300, 80)
    weights = (torch.rand(2, 150) > 0.3).float()
    with torch.inference_mode():
        a, b = plain(feats, weights), fused(feats, weights)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)


def test_crop_batcher_gives_each_crop_its_own_embedding(pyannote_sample, tiny_settings):
    """Crops batched by length: exact (quantum 0) or trimmed at both ends to a multiple of the quantum."""
    from tasks.diarization.embedding import CropBatcher, kaldi_fbank

    model = _campplus(tiny_settings)
    wave = torch.from_numpy(audio.decode(pyannote_sample)[: 16000 * 12]).reshape(1, -1)
    feats = kaldi_fbank(wave, model.mel_banks, model.window)[0]
    lengths = [300, 300, 300, 300, 310, 347, 349, 120, 9 + 1]
    crops = [feats[i * 40: i * 40 + n] for i, n in enumerate(lengths)]

    def alone(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model.net((x - x.mean(dim=0)).unsqueeze(0))[0]

    exact = CropBatcher(model, quantum_frames=0, batch=4)
    for i, x in enumerate(crops):
        exact.add(i, x)
    got = exact.flush()
    assert exact.passes == 1 + 5  # the four 300-frame crops in one pass, the other lengths alone
    for i, x in enumerate(crops):
        assert torch.allclose(got[i], alone(x), atol=1e-4)

    trimmed = CropBatcher(model, quantum_frames=50, batch=4)
    for i, x in enumerate(crops):
        trimmed.add(i, x)
    got = trimmed.flush()
    assert trimmed.passes == 1 + 1 + 1 + 1  # 300 ×4 | 310, 347, 349 → 300 | 120 → 100 | 10 (shorter than 50)
    middle = crops[5][23: 23 + 300]  # 347 frames: 47 cut, 23 at the start and 24 at the end
    assert torch.allclose(got[5], alone(middle), atol=1e-4)
    assert torch.allclose(got[8], alone(crops[8]), atol=1e-4)

    bounded = CropBatcher(model, quantum_frames=0, batch=4, max_pending=3)
    for i, x in enumerate(crops[4:]):
        bounded.add(i, x)
        assert bounded.waiting < 3
    assert len(bounded.flush()) == 5


def test_cropped_embedding_is_the_embedding_of_the_cropped_speech(pyannote_sample, tiny_settings):
    """embed_cropped == the network on the speaker's active frames only; inactive speakers are NaN."""
    from tasks.diarization.embedding import kaldi_fbank

    model = _campplus(tiny_settings)
    wave = torch.from_numpy(audio.decode(pyannote_sample)[16000 * 5: 16000 * 15]).reshape(1, 1, -1)
    masks = torch.zeros(1, 3, 589)
    masks[0, 0, 50:250] = 1  # speaker 0: about 3.4 s at the segmentation frame rate
    masks[0, 1, 300:589] = 1
    emb = model.embed_cropped(wave, masks)
    assert emb.shape == (1, 3, 192) and torch.isnan(emb[0, 2]).all()
    feats = kaldi_fbank(wave[:, 0], model.mel_banks, model.window)[0]
    active = torch.nn.functional.interpolate(masks[:, :1], size=feats.shape[0], mode="nearest")[0, 0] > 0
    crop = feats[active] - feats[active].mean(dim=0)
    with torch.inference_mode():
        direct = model.net(crop.unsqueeze(0))[0]
    assert torch.allclose(emb[0, 0], direct, atol=1e-4)
    cos = torch.nn.functional.cosine_similarity(emb[0, 0], emb[0, 1], dim=0)
    assert cos < 0.99  # two different stretches of speech, two different vectors


def test_mask_pooling_is_still_available(pyannote_sample, tiny_settings):
    from tasks.diarization import DiarizationParams

    result = diarize(audio.decode(pyannote_sample), tiny_settings,
                     params=DiarizationParams(embedding_pooling="mask", clustering_method="centroid",
                                              clustering_threshold=0.6))  # the defaults before tuning
    assert len(result.speakers) == 2


def test_phantom_speakers_are_dropped_and_labels_stay_contiguous():
    from tasks.diarization.pipeline import _without_phantoms
    from tasks.result import Turn

    turns = [Turn(0.0, 5.0, "SPEAKER_00"), Turn(5.0, 5.02, "SPEAKER_01"), Turn(5.0, 9.0, "SPEAKER_02")]
    kept, exclusive = _without_phantoms(turns, turns[:2], 0.1, 0)
    assert [(t.start, t.speaker) for t in kept] == [(0.0, "SPEAKER_00"), (5.0, "SPEAKER_01")]
    assert [(t.start, t.speaker) for t in exclusive] == [(0.0, "SPEAKER_00")]
    # a speaker count asked for is never undercut: the quietest speaker stays when 3 are required
    assert len({t.speaker for t in _without_phantoms(turns, turns, 0.1, 3)[0]}) == 3


def test_no_speaker_with_only_milliseconds_of_speech(tiny_settings):
    """trn03: one dominant voice; pyannote's reconstruction also leaves a label with a few ms of turns."""
    result = diarize(audio.decode(corpus_file("ami/trn03.flac")), tiny_settings)
    talk = {s: sum(t.end - t.start for t in result.turns if t.speaker == s) for s in result.speakers}
    assert talk and min(talk.values()) >= DEFAULT_PARAMS.min_speaker_s, talk
    assert result.speakers == [f"SPEAKER_{i:02d}" for i in range(len(result.speakers))]


def test_campplus_built_on_meta_is_the_checkpoint_network(tiny_settings):
    """The model is built on the meta device and takes the checkpoint's tensors: same outputs as before."""
    from tasks.diarization.campplus import CAMPPlus

    ckpt = Path(tiny_settings.models_dir) / "campplus" / "campplus_cn_en_common.pt"
    model = _campplus(tiny_settings)
    assert not any(p.is_meta for p in model.parameters()) and not any(b.is_meta for b in model.buffers())
    reference = CAMPPlus().load_checkpoint(str(ckpt)).eval()  # random init, then copied weights, BatchNorms
    feats = torch.randn(2, 300, 80)
    with torch.inference_mode():
        assert torch.allclose(model.net(feats), reference(feats), rtol=1e-4, atol=1e-4)


def test_block_pooling_is_close_to_the_cropped_embeddings(pyannote_sample, tiny_settings):
    """``block`` pooling (the trunk once over the file) gives embeddings close to the per-speaker crops."""
    from tasks.diarization.embedding import _HOP, BlockFrames, embed_from_frames

    model = _campplus(tiny_settings)
    wave = torch.from_numpy(audio.decode(pyannote_sample))
    rows = []
    for block_s in (60.0, 7.0):  # one pass over the file, or several blocks with their margins
        trunk = BlockFrames(model, wave.unsqueeze(0), block_s)
        for start_s in (2, 10, 18):
            masks = torch.zeros(3, 589)
            masks[0, 50:250] = 1
            masks[1, 300:589] = 1
            frames = trunk.frames(start_s * 16000 // _HOP, 10 * 16000 // _HOP)
            assert frames.shape == (512, 500)
            block = embed_from_frames(model, frames, masks)
            assert torch.isnan(block[2]).all()
            crop = model.embed_cropped(wave[start_s * 16000: (start_s + 10) * 16000].reshape(1, 1, -1),
                                       masks.unsqueeze(0))[0]
            rows.append(torch.nn.functional.cosine_similarity(block[:2], crop[:2], dim=-1))
        assert trunk.passes == (1 if block_s == 60.0 else 4)  # frames up to 28 s: 4 blocks of 7 s
    cos = torch.cat(rows)
    # measured: mean 0.905, 11 of 12 above 0.84; one at 0.47 (speaker 0 of the window at 2 s, one 60 s block:
    # these masks are arbitrary stretches, not one voice each, so the shared context moves it most)
    assert cos.mean() > 0.85 and (cos > 0.8).float().mean() >= 0.9, cos


def test_long_files_embed_fewer_windows_and_keep_the_speakers(pyannote_sample, tiny_settings):
    """The long-file economies (a 2-s segmentation step, every third window embedded, neighbours' embeddings
    reused where the activities agree), applied here to the 30-s sample by lowering ``long_file_s``."""
    import dataclasses

    waveform = audio.decode(pyannote_sample)
    reference = read_rttm(pyannote_sample.with_suffix(".rttm"))
    full = diarize(waveform, tiny_settings)
    assert full.params["segmentation_step"] == 0.1 and full.params["embedding_stride"] == 1  # 30 s: not long
    assert full.embeddings["reused"] == 0
    long = diarize(waveform, tiny_settings, params=dataclasses.replace(DEFAULT_PARAMS, long_file_s=10.0))
    assert long.params["segmentation_step"] == DEFAULT_PARAMS.long_segmentation_step
    assert long.params["embedding_stride"] == DEFAULT_PARAMS.long_embedding_stride > 1
    assert long.embeddings["reused"] > 0
    assert long.embeddings["embedded"] < full.embeddings["embedded"] / 2
    scores = diarization_scores(reference, long.turns, collar=0.25)
    assert scores["hyp_speakers"] == 2 and scores["der"] <= 0.05, scores  # 0.013 with every window, 0.023 here


def test_params_switch_to_the_long_file_values_at_long_file_s():
    short, long = DEFAULT_PARAMS.for_duration(DEFAULT_PARAMS.long_file_s - 1), \
        DEFAULT_PARAMS.for_duration(DEFAULT_PARAMS.long_file_s)
    assert short == DEFAULT_PARAMS
    assert (long.segmentation_step, long.embedding_stride, long.split_distance, long.regroup_min_turns) == (
        DEFAULT_PARAMS.long_segmentation_step, DEFAULT_PARAMS.long_embedding_stride, DEFAULT_PARAMS.long_split_distance,
        DEFAULT_PARAMS.long_regroup_min_turns)


def test_split_long_turns_cuts_two_voice_turns_of_long_files(tmp_path, corpus, tiny_settings):
    """Files of 2 minutes or more skip the cut of turns that hold two voices, unless ``split_long_turns``:
    a 2-min meeting of two AMI excerpts whose turns hold two people (dev01, trñ00), end to end twice."""
    import subprocess
    import sys

    src = tmp_path / "src"
    src.mkdir()
    for name in ("dev01", "trñ00"):
        for ext in ("flac", "rttm"):
            (src / f"{name}.{ext}").symlink_to(corpus / "ami" / f"{name}.{ext}")
    subprocess.run([sys.executable, str(corpus / "make_long.py"), str(tmp_path), "--minutes", "2", "--source",
                    str(src)], check=True, capture_output=True)
    waveform = audio.decode(tmp_path / "long_meeting.wav")
    reference = read_rttm(tmp_path / "long_meeting.rttm")
    assert len(waveform) / 16000 >= DEFAULT_PARAMS.long_file_s
    off = diarize(waveform, tiny_settings)
    on = diarize(waveform, tiny_settings.replace(split_long_turns=True))
    assert off.params["split_distance"] > 1.0 and off.split_turns == 0
    assert on.params["split_distance"] == DEFAULT_PARAMS.split_distance and on.split_turns >= 1
    der_off, der_on = (diarization_scores(reference, r.turns, collar=0.25)["der"] for r in (off, on))
    print(f"2-min dev01+trñ00: DER off {der_off:.3f}, on {der_on:.3f} ({on.split_turns} cut)")
    assert der_on < der_off, (der_off, der_on)
