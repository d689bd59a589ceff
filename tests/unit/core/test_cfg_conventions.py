"""Test group 5a: the two CFG conventions differ by exactly one unit of guidance; batching is exact."""

from __future__ import annotations

import pytest
import torch

from pdmd_core.guidance import CFGForm, combine, guided_velocity, needs_uncond
from pdmd_core.models.mlp import MLPVelocity, RandomPromptSource


@pytest.mark.parametrize("w", [0.0, 1.0, 3.0, 4.5])
def test_offset_equals_standard_plus_one(w: float) -> None:
    g = torch.Generator().manual_seed(0)
    v_c, v_u = torch.randn(8, 3, 4, generator=g), torch.randn(8, 3, 4, generator=g)
    torch.testing.assert_close(combine(v_c, v_u, w, CFGForm.OFFSET), combine(v_c, v_u, w + 1, "standard"))
    # one unit of guidance is exactly the difference cond − uncond
    torch.testing.assert_close(combine(v_c, v_u, w, "offset") - combine(v_c, v_u, w, "standard"), v_c - v_u)


def test_trivial_scales_need_no_uncond_branch() -> None:
    assert not needs_uncond(1.0, "standard") and not needs_uncond(0.0, "offset")
    assert needs_uncond(1.0, "offset") and needs_uncond(0.0, "standard")
    v_c, v_u = torch.randn(4, 5), torch.randn(4, 5)
    torch.testing.assert_close(combine(v_c, v_u, 1.0, "standard"), v_c)
    torch.testing.assert_close(combine(v_c, v_u, 0.0, "offset"), v_c)


def test_rescale_restores_conditional_std() -> None:
    g = torch.Generator().manual_seed(1)
    v_c, v_u = torch.randn(6, 32, generator=g), torch.randn(6, 32, generator=g)
    full = combine(v_c, v_u, 5.0, "standard", rescale=1.0)
    torch.testing.assert_close(full.std(dim=1), v_c.std(dim=1))
    half = combine(v_c, v_u, 5.0, "standard", rescale=0.5)
    torch.testing.assert_close(half, 0.5 * full + 0.5 * combine(v_c, v_u, 5.0, "standard"))


def test_guided_velocity_batches_branches_exactly() -> None:
    torch.manual_seed(0)
    net = MLPVelocity(dim=6, hidden=32, depth=1, cond_dim=8)
    src = RandomPromptSource(5, 3, 8, torch.device("cpu"))
    cond, null = src.sample(4, torch.Generator().manual_seed(2))
    x, t = torch.randn(4, 6), torch.rand(4)
    expected = combine(net(x, t, cond), net(x, t, null), 3.0, "offset")
    torch.testing.assert_close(guided_velocity(net, x, t, cond, null, 3.0, "offset"), expected)


def test_true_cfg_rescales_every_token_to_the_conditional_norm() -> None:
    """QwenImagePipeline's true CFG on latents packed 2x2 per token: u + w (c − u), then each token (the C channels
    of a 2x2 latent block) scaled to its conditional norm. Closed form on a hand-built case, then in general."""
    v_c = torch.zeros(1, 1, 2, 4)
    v_c[0, 0, :, :2] = 1.0  # token 1: four ones, norm 2; token 2 (right block): all zeros
    v_u = torch.zeros(1, 1, 2, 4)
    v_u[0, 0, 0, 0] = 1.0  # token 1's uncond: (1, 0, 0, 0)
    out = combine(v_c, v_u, 3.0, "true_cfg", token_patch=(2, 2))
    plain = combine(v_c, v_u, 3.0, "standard")  # token 1 -> (1, 3, 3, 3), norm sqrt(28)
    torch.testing.assert_close(out[0, 0, :, :2], plain[0, 0, :, :2] * 2 / 28 ** 0.5)
    torch.testing.assert_close(out[0, 0, :, 2:], torch.zeros(2, 2))  # zero conditional norm stays zero
    g = torch.Generator().manual_seed(3)
    v_c, v_u = torch.randn(2, 4, 6, 8, generator=g), torch.randn(2, 4, 6, 8, generator=g)
    out = combine(v_c, v_u, 4.0, "true_cfg", token_patch=(2, 2))
    blocks = lambda v: v.reshape(2, 4, 3, 2, 4, 2).pow(2).sum(dim=(1, 3, 5)).sqrt()  # noqa: E731
    torch.testing.assert_close(blocks(out), blocks(v_c))
    # the direction of each token is the standard combination's
    def per_token(v: torch.Tensor) -> torch.Tensor:
        return blocks(v).repeat_interleave(2, 1).repeat_interleave(2, 2)[:, None]

    standard = combine(v_c, v_u, 4.0, "standard")
    torch.testing.assert_close(out / per_token(out), standard / per_token(standard))
    torch.testing.assert_close(combine(v_c, v_u, 1.0, "true_cfg", token_patch=(2, 2)), v_c)
    assert not needs_uncond(1.0, "true_cfg") and needs_uncond(4.0, "true_cfg")
    with pytest.raises(ValueError, match="token_patch"):
        combine(v_c, v_u, 4.0, "true_cfg", token_patch=(4, 4))
