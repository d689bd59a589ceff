import numpy as np
import pytest
from eval_helpers import translating_video

from pdmd_eval.functional.motion import (
    FARNEBACK_PARAMS,
    RaftFlow,
    dynamic_degree,
    farneback_flows,
    mean_flow_magnitude,
    mean_flow_magnitude_with,
)


def test_static_video_has_zero_flow():
    frame = translating_video(0, frames=1)[0]
    assert mean_flow_magnitude(np.stack([frame] * 4)) == pytest.approx(0.0, abs=0.01)  # reads ~0.003 px


@pytest.mark.parametrize("size", [16, 64])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_translated_pattern_reads_d_pixels_per_frame(size, d):
    video = translating_video(d, frames=4, size=size)
    assert mean_flow_magnitude(video) == pytest.approx(d, rel=0.1)


def test_accepts_uint8_and_rgb_layouts_with_same_answer():
    grey = translating_video(2, frames=4)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    as_uint8 = np.round(rgb * 255).astype(np.uint8)
    ref = mean_flow_magnitude(grey)
    assert mean_flow_magnitude(rgb) == pytest.approx(ref, abs=1e-6)
    assert mean_flow_magnitude(as_uint8) == pytest.approx(ref, abs=1e-6)
    assert mean_flow_magnitude(grey[..., None]) == pytest.approx(ref, abs=1e-6)


def test_flow_direction_is_leftward_motion():
    flows = farneback_flows(translating_video(2, frames=3))
    # content moves left (crop window moves right): x-flow ≈ -2, y-flow ≈ 0 in the interior
    assert np.median(flows[..., 0]) == pytest.approx(-2.0, abs=0.2)
    assert abs(np.median(flows[..., 1])) < 0.2


def test_invalid_videos_raise_clear_errors():
    with pytest.raises(ValueError, match="at least 2"):
        mean_flow_magnitude(np.zeros((1, 8, 8)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mean_flow_magnitude(np.full((2, 8, 8), 2.0))
    with pytest.raises(ValueError, match="channels"):
        mean_flow_magnitude(np.zeros((2, 8, 8, 5)))


def test_dynamic_degree_static_versus_fast():
    assert dynamic_degree(np.stack([translating_video(0, frames=1)[0]] * 5)) == 0.0
    # threshold on 16 px frames: 6 * 16 / 256 = 0.375 px; a 2 px/frame pan is dynamic
    assert dynamic_degree(translating_video(2, frames=5)) == 1.0


def test_farneback_parameters_are_documented_values():
    assert FARNEBACK_PARAMS["winsize"] == 15 and FARNEBACK_PARAMS["levels"] == 3


def test_raft_with_random_weights_returns_flow_in_input_pixels():
    import torch

    torch.manual_seed(0)
    raft = RaftFlow(weights_path=None, iters=2)
    video = translating_video(1, frames=3, size=16)
    flows = raft(video)
    assert flows.shape == (2, 16, 16, 2)
    assert np.isfinite(flows).all()
    assert mean_flow_magnitude_with(video, raft) >= 0.0
    with pytest.raises(ValueError, match="128"):
        RaftFlow(weights_path=None, min_side=64)
