import numpy as np
import pytest
import torch
from eval_helpers import tiny_dino

from pdmd_eval.backbones import build_lpips
from pdmd_eval.functional.diversity import mean_pairwise_cosine, mean_pairwise_distance, mean_pairwise_with, vendi_score


def test_cosine_statistics_closed_forms():
    assert mean_pairwise_cosine(np.ones((4, 3))) == pytest.approx(1.0)
    assert mean_pairwise_cosine(np.eye(3)) == pytest.approx(0.0)
    # pairs of (1,0),(0,1),(1,1)/√2: cosines 0, 1/√2, 1/√2 → mean √2/3
    assert mean_pairwise_cosine(np.array([[1, 0], [0, 1], [1, 1]])) == pytest.approx(np.sqrt(2) / 3)
    assert mean_pairwise_distance(np.array([[0, 0], [3, 4]])) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="at least 2"):
        mean_pairwise_cosine(np.ones((1, 3)))


def test_vendi_score_ranges_from_one_to_n():
    assert vendi_score(np.ones((5, 3))) == pytest.approx(1.0)
    assert vendi_score(np.eye(4)) == pytest.approx(4.0)


def test_lpips_of_identical_images_is_zero_and_positive_otherwise(lpips_random):
    imgs = np.random.default_rng(0).random((3, 3, 16, 16)).astype(np.float32)
    same = lpips_random(torch.from_numpy(imgs), torch.from_numpy(imgs))
    assert torch.allclose(same, torch.zeros(3), atol=1e-7)
    assert mean_pairwise_with(lpips_random, np.stack([imgs[0]] * 3)) == pytest.approx(0.0, abs=1e-7)
    assert mean_pairwise_with(lpips_random, imgs) > 0.0


def test_lpips_backbone_state_is_mapped_from_torchvision_alexnet():
    import torchvision

    alex = torchvision.models.alexnet(weights=None).state_dict()
    model = build_lpips(alex)
    own = model.net.state_dict()
    assert torch.equal(own["slice1.0.weight"], alex["features.0.weight"])
    assert torch.equal(own["slice5.10.bias"], alex["features.10.bias"])


def test_clip_identical_images_have_cosine_one(tiny_clip):
    imgs = torch.rand(2, 1, 16, 16)
    emb = tiny_clip(torch.cat([imgs[:1], imgs[:1], imgs[1:]]))
    assert emb.shape == (3, 16)
    assert mean_pairwise_cosine(emb[:2].numpy()) == pytest.approx(1.0, abs=1e-5)
    assert tiny_clip.embed_texts(["class 0", "class 1"]).shape == (2, 16)


@pytest.mark.parametrize("v3", [False, True])
def test_dino_identical_images_have_cosine_one(v3):
    dino = tiny_dino(v3)
    img = torch.rand(1, 3, 20, 20)
    emb = dino(torch.cat([img, img, torch.rand(1, 3, 20, 20)])).numpy()
    assert mean_pairwise_cosine(emb[:2]) == pytest.approx(1.0, abs=1e-5)
    assert mean_pairwise_cosine(emb) < 1.0


def test_lpips_and_raft_load_from_the_weights_folder(tmp_path, monkeypatch):
    import torchvision
    from torchvision.models.optical_flow import raft_small

    from pdmd_eval.backbones import load_lpips
    from pdmd_eval.context import _loaders

    (tmp_path / "lpips").mkdir()
    (tmp_path / "raft").mkdir()
    alex = torchvision.models.alexnet(weights=None).state_dict()
    torch.save(alex, tmp_path / "lpips" / "alexnet.pth")
    torch.save(raft_small(weights=None).state_dict(), tmp_path / "raft" / "raft_small.pth")
    monkeypatch.setenv("PDMD_WEIGHTS_DIR", str(tmp_path))
    lp = load_lpips()
    assert torch.equal(lp.model.net.state_dict()["slice2.3.weight"], alex["features.3.weight"])
    raft = _loaders()["raft"]()
    assert raft.model.training is False


@pytest.mark.slow  # ~10-20 s on 2 busy cores: Inception-v3 at 299 px on CPU
def test_inception_features_with_random_weights_feed_fd():
    from eval_helpers import records
    from torchvision.models import inception_v3

    from pdmd_eval.backbones import InceptionFeatures
    from pdmd_eval.context import EvalContext
    from pdmd_eval.metrics.fidelity import fd_teacher
    from pdmd_eval.samples import SampleSet

    torch.manual_seed(0)
    inc = InceptionFeatures(inception_v3(weights=None, aux_logits=True, init_weights=False))
    s = SampleSet(np.random.default_rng(0).random((3, 3, 8, 8)).astype(np.float32), records([0], [0, 1, 2]), "image")
    ctx = EvalContext(s, s, None, None, {"inception": inc}, "inception", progress=False)
    assert ctx.features("samples", "inception").shape == (3, 2048)
    res = fd_teacher(ctx)
    assert res.mean == pytest.approx(0.0, abs=1e-6) and res.extras["extractor"] == "inception"
