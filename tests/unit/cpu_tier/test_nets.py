"""CPU-tier velocity nets: protocol, shapes, conditioning and the x̂_0 parameterisation."""

from __future__ import annotations

import pytest
import torch

from pdmd_core.cpu_tier.nets import VelocityMLP, VideoMixerVelocity, count_parameters
from pdmd_core.cpu_tier.prompts import TokenTableEncoder
from pdmd_core.protocols import VelocityModel


@pytest.mark.parametrize("net_cls,shape", [(VelocityMLP, (1, 8, 8)), (VelocityMLP, (2,)),
                                           (VideoMixerVelocity, (8, 1, 16, 16))])
def test_output_matches_the_sample_shape(net_cls, shape):
    enc = TokenTableEncoder()
    net = net_cls(shape, cond_dim=32, hidden=32, depth=2)
    assert isinstance(net, VelocityModel)
    x, t = torch.randn(5, *shape), torch.rand(5)
    assert net(x, t, enc.encode(["a handwritten 1"] * 5)).shape == (5, *shape)


def test_missing_conditioning_equals_the_null_prompt():
    torch.manual_seed(0)
    enc = TokenTableEncoder()
    net = VelocityMLP((2,), cond_dim=32, hidden=32, depth=2)
    x, t = torch.randn(4, 2), torch.rand(4)
    assert torch.allclose(net(x, t, None), net(x, t, enc.null(4)))
    # Blocks start as the identity (zero output layer); give them weights so the condition matters.
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)
    assert torch.allclose(net(x, t, None), net(x, t, enc.null(4)))
    assert not torch.allclose(net(x, t, enc.encode(["a point in row 1"] * 4)), net(x, t, None))


def test_x0_prediction_returns_the_matching_velocity():
    torch.manual_seed(0)
    net = VelocityMLP((3,), cond_dim=32, hidden=16, depth=1, prediction="x0", t_min=0.05)
    x, t = torch.randn(6, 3), torch.tensor([0.01, 0.05, 0.2, 0.5, 0.9, 1.0])
    x0_hat = x - net(x, t, None) * t.clamp_min(0.05)[:, None]
    net.prediction = "velocity"  # the raw head is the x̂_0 estimate
    assert torch.allclose(x0_hat, net(x, t, None), atol=1e-5)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="prediction"):
        VelocityMLP((2,), 8, prediction="eps")
    net = VelocityMLP((2,), 8, hidden=16, depth=1)
    with pytest.raises(ValueError, match=r"t must have shape \(3,\)"):
        net(torch.randn(3, 2), torch.rand(3, 1), None)


def test_digits_net_size_is_about_half_a_million():
    assert 0.4e6 < count_parameters(VelocityMLP((1, 8, 8), 32, 256, 3)) < 0.7e6
