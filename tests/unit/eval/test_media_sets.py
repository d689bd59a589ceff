"""Media sample sets: PNG / MP4 files written one sample at a time, read lazily, and the same reader for the
older float32 array layout."""

import json

import numpy as np
import pytest
from eval_helpers import records

from pdmd_eval.media import MediaError, read_video, write_video
from pdmd_eval.reader import open_sample_set
from pdmd_eval.samples import SampleRecord, SampleSet, SampleSetError, load_sample_set, save_sample_set
from pdmd_eval.writer import SampleSetWriter


def _videos(n: int, t: int = 5, c: int = 3, h: int = 12, w: int = 18, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, t, c, h, w), dtype=np.uint8)


def test_lossless_mp4_round_trip_is_bit_exact_for_rgb_and_grey(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (7, 17, 23, 3), dtype=np.uint8)  # odd sizes too
    assert write_video(tmp_path / "rgb.mp4", rgb) == 7
    np.testing.assert_array_equal(read_video(tmp_path / "rgb.mp4"), rgb)
    grey = rgb[..., :1]
    write_video(tmp_path / "grey.mp4", grey)
    np.testing.assert_array_equal(read_video(tmp_path / "grey.mp4", channels=1), grey)


def test_writer_appends_one_by_one_and_reader_returns_uint8_in_sample_layout(tmp_path):
    vids = _videos(4)
    recs = records([0, 1], [0, 1], "phased")
    with SampleSetWriter(tmp_path / "set", "video", benchmark="wan", extras={"note": 1}, fps=16) as w:
        for rec, v in zip(recs, vids, strict=True):
            w.append(rec, v)
            assert (tmp_path / "set" / "manifest.jsonl").read_text().count("\n") == len(w)  # flushed per sample
    reader = open_sample_set(tmp_path / "set")
    assert reader.storage == "media" and reader.kind == "video" and reader.fps == 16 and len(reader) == 4
    assert reader.records == recs and reader.extras == {"note": 1} and reader.method == "phased"
    assert reader.shape(2) == (5, 3, 12, 18)
    for i, x in reader.iter_samples():
        assert x.dtype == np.uint8
        np.testing.assert_array_equal(x, vids[i])
    line = json.loads((tmp_path / "set" / "manifest.jsonl").read_text().splitlines()[0])
    assert line["file"] == "media/000000.mp4" and line["frames"] == 5 and line["channels"] == 3


def test_float_samples_and_torch_tensors_are_quantised_once(tmp_path):
    import torch

    x = np.random.default_rng(2).random((3, 1, 8, 8)).astype(np.float32)
    with SampleSetWriter(tmp_path / "img", "image") as w:
        w.append(SampleRecord("m", 0, "p", 0, 4, 4, "c"), x[0])
        w.append(SampleRecord("m", 0, "p", 1, 4, 4, "c"), torch.from_numpy(x[1]))
    reader = open_sample_set(tmp_path / "img")
    assert reader.read(0).shape == (1, 8, 8)
    np.testing.assert_array_equal(reader.read(1), np.round(x[1] * 255).astype(np.uint8))
    assert np.abs(reader.read_float(0) - x[0]).max() <= 0.5 / 255 + 1e-7


def test_one_reader_for_both_layouts(tmp_path):
    vids = _videos(4)
    s = SampleSet(vids.astype(np.float32) / 255.0, records([0, 1], [0, 1]), "video", "b", {"k": 2})
    save_sample_set(s, tmp_path / "array")
    save_sample_set(s, tmp_path / "media", storage="media")
    arr, med = open_sample_set(tmp_path / "array"), open_sample_set(tmp_path / "media")
    assert arr.storage == "array" and med.storage == "media"
    assert arr.records == med.records and arr.shape(0) == med.shape(0)
    for i in range(4):
        assert arr.read(i).dtype == np.float32
        np.testing.assert_array_equal(arr.read_uint8(i), med.read(i))
    np.testing.assert_array_equal(load_sample_set(tmp_path / "media").samples, s.samples)
    np.testing.assert_array_equal(med.samples, arr.samples)
    assert arr.fingerprint() != med.fingerprint()


def test_reader_decodes_only_the_sample_asked_for(tmp_path, monkeypatch):
    from pdmd_eval import reader as reader_module

    save_sample_set(SampleSet(_videos(6).astype(np.float32) / 255, records([0, 1, 2], [0, 1]), "video"),
                    tmp_path / "s", storage="media")
    reader = open_sample_set(tmp_path / "s")
    decoded = []
    real = reader_module.read_video
    monkeypatch.setattr(reader_module, "read_video", lambda path, *a: decoded.append(path.name) or real(path, *a))
    reader.read(4)
    assert decoded == ["000004.mp4"]


def test_resume_skips_written_samples_and_ignores_partial_files(tmp_path):
    vids = _videos(4)
    recs = records([0, 1], [0, 1])
    with SampleSetWriter(tmp_path / "s", "video") as w:
        w.append(recs[0], vids[0])
        w.append(recs[1], vids[1])
    (tmp_path / "s" / "media" / "000002.part.mp4").write_bytes(b"killed mid-write")  # what a kill leaves
    assert len(open_sample_set(tmp_path / "s")) == 2
    with pytest.raises(SampleSetError, match="resume=True"):
        SampleSetWriter(tmp_path / "s", "video")
    with SampleSetWriter(tmp_path / "s", "video", resume=True) as w:
        assert w.has(*recs[0].key) and not w.has(*recs[2].key)
        for rec, v in zip(recs, vids, strict=True):
            if not w.has(*rec.key):
                w.append(rec, v)
        with pytest.raises(SampleSetError, match="duplicate"):
            w.append(recs[0], vids[0])
    reader = open_sample_set(tmp_path / "s")
    assert reader.records == recs
    np.testing.assert_array_equal(reader.read(3), vids[3])


def test_bad_inputs_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(SampleSetError, match=r"T×C×H×W"):
        SampleSetWriter(tmp_path / "a", "video").append(records([0], [0])[0], np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(SampleSetError, match="points"):
        SampleSetWriter(tmp_path / "p", "points")
    save_sample_set(SampleSet(_videos(2).astype(np.float32) / 255, records([0], [0, 1]), "video"), tmp_path / "s",
                    storage="media")
    (tmp_path / "s" / "media" / "000001.mp4").write_bytes(b"\x00garbage")
    reader = open_sample_set(tmp_path / "s")
    with pytest.raises(MediaError, match=r"000001\.mp4 is corrupt.*re-write the sample"):
        reader.read(1)
    (tmp_path / "s" / "media" / "000001.mp4").unlink()
    with pytest.raises(SampleSetError, match=r"missing, e\.g\. \['media/000001\.mp4'\]"):
        open_sample_set(tmp_path / "s")
    write_video(tmp_path / "s" / "media" / "000001.mp4", _videos(1, t=3)[0].transpose(0, 2, 3, 1))
    with pytest.raises(MediaError, match="has 3 frames but the manifest says 5"):
        open_sample_set(tmp_path / "s").read(1)
    with pytest.raises(SampleSetError, match="missing manifest.jsonl"):
        open_sample_set(tmp_path / "nothing")
