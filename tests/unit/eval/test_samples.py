import json

import numpy as np
import pytest
from eval_helpers import records

from pdmd_eval.samples import (
    SampleSet,
    SampleSetError,
    group_by_prompt,
    load_sample_set,
    pair_indices,
    save_sample_set,
)


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(0).random((n, 1, 8, 8)).astype(np.float32)


def test_round_trip_keeps_samples_manifest_and_meta(tmp_path):
    s = SampleSet(_images(6), records([0, 1], [0, 1, 2]), "image", "digits", {"note": 1})
    save_sample_set(s, tmp_path / "set", previews=True)
    back = load_sample_set(tmp_path / "set")
    np.testing.assert_array_equal(back.samples, s.samples)
    assert back.records == s.records and back.kind == "image" and back.benchmark == "digits"
    assert back.extras == {"note": 1}
    assert len(list((tmp_path / "set" / "previews").glob("*.png"))) == 6


def test_video_previews_are_gifs(tmp_path):
    vids = np.random.default_rng(0).random((2, 4, 3, 8, 8)).astype(np.float32)
    save_sample_set(SampleSet(vids, records([0], [0, 1]), "video"), tmp_path / "v", previews=True)
    from PIL import Image

    gifs = sorted((tmp_path / "v" / "previews").glob("*.gif"))
    assert len(gifs) == 2 and Image.open(gifs[0]).n_frames == 4


def test_validation_errors_name_the_problem():
    with pytest.raises(SampleSetError, match="kind"):
        SampleSet(_images(2), records([0], [0, 1]), "audio")
    with pytest.raises(SampleSetError, match="4-D"):
        SampleSet(_images(2)[:, 0], records([0], [0, 1]), "image")
    with pytest.raises(SampleSetError, match=r"\[0, 1\]"):
        SampleSet(_images(2) + 1.5, records([0], [0, 1]), "image")
    with pytest.raises(SampleSetError, match="manifest records"):
        SampleSet(_images(3), records([0], [0, 1]), "image")
    with pytest.raises(SampleSetError, match="duplicate"):
        SampleSet(_images(2), records([0], [0, 0]), "image")
    with pytest.raises(SampleSetError, match="float32"):
        SampleSet(_images(2).astype(np.float64), records([0], [0, 1]), "image")


def test_records_coerce_numpy_integers_and_reject_bad_types():
    from pdmd_eval.samples import SampleRecord

    rec = SampleRecord("m", np.int64(3), "three", np.int32(7), 4, 4, "c")
    assert type(rec.prompt_id) is int and type(rec.seed) is int and rec.key == (3, 7)
    with pytest.raises(SampleSetError, match="seed"):
        SampleRecord("m", 0, "p", 1.5, 4, 4, "c")  # type: ignore[arg-type]
    with pytest.raises(SampleSetError, match="prompt_id"):
        SampleRecord("m", 1.0, "p", 0, 4, 4, "c")  # type: ignore[arg-type]


def test_load_reports_missing_files_and_bad_manifest(tmp_path):
    with pytest.raises(SampleSetError, match="missing samples.safetensors"):
        load_sample_set(tmp_path)
    save_sample_set(SampleSet(_images(2), records([0], [0, 1]), "image"), tmp_path / "s")
    lines = (tmp_path / "s" / "manifest.jsonl").read_text().splitlines()
    bad = json.loads(lines[1])
    del bad["seed"]
    wrong = dict(json.loads(lines[0]), seed="zero")
    (tmp_path / "s" / "manifest.jsonl").write_text(lines[0] + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(SampleSetError, match=r"line 2: missing keys \['seed'\]"):
        load_sample_set(tmp_path / "s")
    (tmp_path / "s" / "manifest.jsonl").write_text(json.dumps(wrong) + "\n" + lines[1] + "\n")
    with pytest.raises(SampleSetError, match=r"line 1: seed='zero' must be an int"):
        load_sample_set(tmp_path / "s")


def test_group_by_prompt_and_pairing_on_prompt_and_seed():
    a = SampleSet(_images(6), records(["cat", "dog"], [2, 0, 1]), "image")
    groups = group_by_prompt(a)
    assert list(groups) == ["cat", "dog"]
    assert [a.records[i].seed for i in groups["cat"]] == [0, 1, 2]
    b = SampleSet(_images(4), records(["dog", "cat"], [1, 0]), "image")
    ia, ib = pair_indices(a, b)
    assert len(ia) == 4
    for i, j in zip(ia, ib, strict=True):
        assert a.records[i].key == b.records[j].key
    with pytest.raises(SampleSetError, match="no reference partner"):
        pair_indices(a, b, require_all=True)
