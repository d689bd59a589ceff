"""Paper-comparable FID: our streamed FID (PNG sample sets → torch-fidelity's Inception → our Fréchet distance)
equals torch-fidelity's own ``calculate_metrics`` and torchmetrics' ``FrechetInceptionDistance`` (with
``antialias=False``, the TF-compatible resize) on the same images.

No real Inception weights exist on this machine, so one random state dict of the same architecture
(:func:`eval_helpers.random_fid_inception_weights`) is loaded by both sides. The images are shipped data:
scikit-learn's digits (0-4 against 5-9), upscaled to 32×32 RGB.

Tolerance: both sides run the same float32 network on the same uint8 pixels, but in different batch sizes
(conv kernels may sum in another order: ~1e-6 relative per feature) and with different FD formulas (theirs:
eigenvalues of Σ1Σ2 from float32-derived statistics; ours: singular values of the centred features in float64).
With 32 samples in 2048 dimensions the covariance has rank 31; the ~2000 zero eigenvalues of Σ1Σ2 come back as
round-off of order 1e-16·λmax whose square roots add at most ~1e-5 of the trace. 1e-3 relative is the bar the
issue sets and leaves a wide margin over these effects.
"""

import numpy as np
import pytest
import torch
from eval_helpers import digits_uint8, random_fid_inception_weights, records

from pdmd_eval.evaluate import evaluate
from pdmd_eval.reader import open_sample_set
from pdmd_eval.samples import SampleSet, save_sample_set
from pdmd_eval.weights import MissingWeightsError

N = 32


class _Images(torch.utils.data.Dataset):
    def __init__(self, arr: np.ndarray):
        self.arr = arr

    def __len__(self) -> int:
        return len(self.arr)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.arr[i])


@pytest.fixture(scope="module")
def fid_weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    (root / "fid").mkdir()
    random_fid_inception_weights(root / "fid" / "weights-inception-2015-12-05-6726825d.pth")
    return root


def _media_set(arr: np.ndarray, folder, method: str):  # type: ignore[no-untyped-def]
    s = SampleSet(arr.astype(np.float32) / 255.0, records(range(len(arr)), [0], method), "image", "digits")
    save_sample_set(s, folder, storage="media")
    return open_sample_set(folder)


@pytest.mark.slow  # ~40 s on 2 busy cores: 128 Inception-v3 forwards at 299 px
@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_fid_equals_torch_fidelity_on_the_same_images(tmp_path, fid_weights, monkeypatch):
    import torch_fidelity

    low, high = digits_uint8(0, 4, N), digits_uint8(5, 9, N)
    monkeypatch.setenv("PDMD_WEIGHTS_DIR", str(fid_weights))
    ours = evaluate(_media_set(low, tmp_path / "low", "a"), reference=_media_set(high, tmp_path / "high", "b"),
                    metrics=["fid_teacher"], batch_size=16, progress=False)["fid_teacher"]
    ref = torch_fidelity.calculate_metrics(
        input1=_Images(low), input2=_Images(high), fid=True, cuda=False, batch_size=8, cache=False, verbose=False,
        feature_extractor_weights_path=str(fid_weights / "fid" / "weights-inception-2015-12-05-6726825d.pth"),
    )["frechet_inception_distance"]
    assert ref > 0
    assert ours.mean == pytest.approx(ref, rel=1e-3)
    assert ours.mean == pytest.approx(_torchmetrics_fid(low, high, fid_weights), rel=1e-3)
    assert ours.extras["n_samples"] == N and ours.extras["n_reference"] == N


def _torchmetrics_fid(low: np.ndarray, high: np.ndarray, weights) -> float:  # type: ignore[no-untyped-def]
    from torchmetrics.image.fid import FrechetInceptionDistance

    fid = FrechetInceptionDistance(feature=2048, antialias=False, feature_extractor_weights_path=str(
        weights / "fid" / "weights-inception-2015-12-05-6726825d.pth"))
    for batch in np.array_split(low, 4):
        fid.update(torch.from_numpy(batch), real=False)
    for batch in np.array_split(high, 4):
        fid.update(torch.from_numpy(batch), real=True)
    return float(fid.compute())


def test_fid_of_a_set_to_itself_is_zero_and_png_round_trip_is_exact(tmp_path, fid_weights, monkeypatch):
    imgs = digits_uint8(0, 9, 6)
    reader = _media_set(imgs, tmp_path / "s", "a")
    np.testing.assert_array_equal(np.stack([reader.read(i) for i in range(len(reader))]), imgs)
    monkeypatch.setenv("PDMD_WEIGHTS_DIR", str(fid_weights))
    res = evaluate(reader, reference=reader, metrics=["fid_teacher"], progress=False)["fid_teacher"]
    assert res.mean == pytest.approx(0.0, abs=1e-6)


def test_missing_fid_and_i3d_weights_name_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("PDMD_WEIGHTS_DIR", str(tmp_path))
    imgs = SampleSet(np.zeros((2, 3, 8, 8), np.float32), records([0], [0, 1]), "image")
    with pytest.raises(MissingWeightsError, match=r"FID Inception.*fid/weights-inception-2015-12-05-6726825d\.pth"):
        evaluate(imgs, reference=imgs, metrics=["fid_teacher"], progress=False)
    vids = SampleSet(np.zeros((2, 9, 3, 8, 8), np.float32), records([0], [0, 1]), "video")
    with pytest.raises(MissingWeightsError, match=r"I3D.*i3d/i3d_pretrained_400\.pt"):
        evaluate(vids, reference=vids, metrics=["fvd_i3d_teacher"], progress=False)
    with pytest.raises(MissingWeightsError, match=r"RAFT \(large.*raft/raft_large\.pth"):
        evaluate(vids, metrics=["table2"], progress=False)
