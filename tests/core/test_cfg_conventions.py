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
