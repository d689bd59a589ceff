import numpy as np
import pytest

from pdmd_eval.functional.adherence import class_labels, classifier_hits, clip_scores
from pdmd_eval.functional.modes import (
    mixture_from_extras,
    mode_adherence,
    mode_balance,
    modes_covered,
    near_mode,
)

EXTRAS = {
    "mode_centers": [[0, 0], [10, 0], [0, 10], [10, 10]],
    "mode_prompt": [0, 0, 1, 1],
    "mode_std": 0.5,
}


def test_mode_statistics_on_hand_placed_points():
    mix = mixture_from_extras(EXTRAS)
    # prompt 0: two samples at mode 0, one at mode 1 -> both modes covered; balance H(2/3,1/3)/log 2
    p0 = np.array([[0.1, 0.0], [0.0, -0.2], [10.0, 0.3]])
    assert modes_covered(p0, 0, mix) == 1.0
    h = -(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3)) / np.log(2)
    assert mode_balance(p0, 0, mix) == pytest.approx(h)
    # a collapsed prompt covers half its modes and has zero balance
    assert modes_covered(p0[:2], 0, mix) == 0.5
    assert mode_balance(p0[:2], 0, mix) == 0.0
    # near: within 3σ = 1.5 of a centre
    pts = np.array([[1.4, 0.0], [5.0, 5.0], [0.0, 11.0]])
    np.testing.assert_array_equal(near_mode(pts, mix), [1.0, 0.0, 1.0])
    # adherence: nearest mode belongs to own prompt
    np.testing.assert_array_equal(mode_adherence(pts, [0, 0, 0], mix), [1.0, 1.0, 0.0])


def test_unconditional_mixture_and_single_mode_prompts():
    mix = mixture_from_extras({"mode_centers": [[0, 0], [4, 0]], "mode_std": [0.1, 0.1]})
    assert mode_adherence(np.array([[4.0, 0.0]]), ["any"], mix)[0] == 1.0
    single = mixture_from_extras({"mode_centers": [[0, 0], [4, 0]], "mode_std": 0.1, "mode_prompt": [0, 1]})
    assert mode_balance(np.array([[0.0, 0.0]]), 0, single) == 1.0


def test_mixture_meta_errors():
    with pytest.raises(KeyError, match="mode_centers"):
        mixture_from_extras({"mode_std": 1.0})
    with pytest.raises(KeyError, match="mode_std"):
        mixture_from_extras({"mode_centers": [[0, 0]]})
    with pytest.raises(ValueError, match="mode_prompt has 1"):
        mixture_from_extras({"mode_centers": [[0, 0], [1, 1]], "mode_std": 1.0, "mode_prompt": [0]})
    with pytest.raises(ValueError, match="owns no mode"):
        modes_covered(np.zeros((1, 2)), 7, mixture_from_extras(EXTRAS))


def test_classifier_hits_and_labels():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    np.testing.assert_array_equal(classifier_hits(logits, class_labels([0, 1, 1])), [1.0, 1.0, 0.0])
    assert class_labels(["3"]).tolist() == [3]
    with pytest.raises(ValueError, match="not a class index"):
        class_labels(["cat"])
    with pytest.raises(ValueError, match="2 classes"):
        classifier_hits(logits, np.array([0, 1, 2]))


def test_clip_scores_closed_form():
    img = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    txt = np.array([[2.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    np.testing.assert_allclose(clip_scores(img, txt), [100.0, 100.0 / np.sqrt(2), 0.0])
