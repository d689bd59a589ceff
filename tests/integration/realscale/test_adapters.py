"""Wan / Qwen-Image adapters, the single timestep conversion, the fixed-schedule scheduler, MoE routing."""

from __future__ import annotations

import pytest
import torch

from pdmd_core.callbacks import OnIteration
from pdmd_core.flow import euler_step
from pdmd_core.protocols import Conditioning
from pdmd_core.realscale.qwen_image import QwenImageVelocity, image_shapes, pack_latents, unpack_latents
from pdmd_core.realscale.scheduler import FixedScheduleEulerScheduler
from pdmd_core.realscale.timesteps import expert_boundary_ratio, scheduler_sigmas
from pdmd_core.realscale.tiny import tiny_qwen_transformer, tiny_wan_transformer
from pdmd_core.realscale.wan import WanVelocity, ti2v_token_timesteps
from pdmd_core.sampling import uniform_timesteps


def _wan_inputs(batch=3, channels=4, frames=2):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, frames, 8, 8, generator=g)
    cond = Conditioning(torch.randn(batch, 5, 32, generator=g))
    return x, torch.tensor([0.95, 0.5, 0.1])[:batch], cond


def test_wan_adapter_hands_the_transformer_t_times_1000_per_sample():
    transformer = tiny_wan_transformer(0)
    x, t, cond = _wan_inputs()
    v = WanVelocity(transformer)(x, t, cond)
    direct = transformer(hidden_states=x, timestep=t * 1000, encoder_hidden_states=cond.embeds, return_dict=False)[0]
    assert torch.equal(v, direct)
    one = WanVelocity(transformer)(x[1:2], t[1:2], cond.index(slice(1, 2)))
    assert torch.allclose(one, v[1:2], atol=1e-6)  # per-sample times, not one time per batch


def test_wan_i2v_concatenates_the_first_frame_condition_on_channels():
    transformer = tiny_wan_transformer(0, in_channels=12)  # 4 latent + 4 mask + 4 image-latent channels
    x, t, cond = _wan_inputs()
    condition = torch.randn(3, 8, 2, 8, 8)
    cond.extras["i2v_condition"] = condition
    v = WanVelocity(transformer, mode="i2v")(x, t, cond)
    direct = transformer(hidden_states=torch.cat([x, condition], 1), timestep=t * 1000,
                         encoder_hidden_states=cond.embeds, return_dict=False)[0]
    assert v.shape == x.shape and torch.equal(v, direct)
    with pytest.raises(KeyError, match="i2v_condition"):
        WanVelocity(transformer, mode="i2v")(x, t, Conditioning(cond.embeds))


def test_wan_ti2v_pins_the_first_latent_frame_and_gives_its_tokens_timestep_zero():
    timesteps = ti2v_token_timesteps(torch.tensor([500.0, 900.0]), torch.Size([2, 4, 3, 8, 8]), (1, 2, 2))
    assert timesteps.shape == (2, 3 * 16)
    assert torch.all(timesteps[:, :16] == 0)
    assert torch.all(timesteps[0, 16:] == 500) and torch.all(timesteps[1, 16:] == 900)
    transformer = tiny_wan_transformer(0)
    x, t, cond = _wan_inputs(frames=3)
    first = torch.randn(3, 4, 1, 8, 8)
    cond.extras["first_frame_latent"] = first
    adapter = WanVelocity(transformer, mode="ti2v")
    v = adapter(x, t, cond)
    # the noisy first frame does not reach the transformer: the clean condition replaces it
    first_frame_noise = torch.cat([torch.randn(3, 4, 1, 8, 8), torch.zeros(3, 4, 2, 8, 8)], 2)
    assert torch.allclose(adapter(x + first_frame_noise, t, cond)[:, :, 1:], v[:, :, 1:])
    # its velocity is the exact one towards the known frame (see test_ti2v_pipeline.py)
    assert torch.allclose(v[:, :, :1], (x[:, :, :1] - first) / t.view(3, 1, 1, 1, 1))
    with pytest.raises(ValueError, match="Wan mode"):
        WanVelocity(transformer, mode="v2v")  # type: ignore[arg-type]


def test_qwen_packing_round_trips_and_the_adapter_matches_the_pipeline_call():
    latents = torch.randn(2, 4, 6, 8)
    tokens = pack_latents(latents)
    assert tokens.shape == (2, 12, 16) and torch.equal(unpack_latents(tokens, 6, 8), latents)
    transformer = tiny_qwen_transformer(0)
    t = torch.tensor([0.9, 0.3])
    cond = Conditioning(torch.randn(2, 5, 32), torch.ones(2, 5, dtype=torch.bool))
    v = QwenImageVelocity(transformer)(latents, t, cond)
    direct = transformer(hidden_states=tokens, timestep=t, encoder_hidden_states=cond.embeds,
                         encoder_hidden_states_mask=None, img_shapes=image_shapes(2, 6, 8), return_dict=False)[0]
    assert torch.equal(v, unpack_latents(direct, 6, 8))
    with pytest.raises(ValueError, match="even"):
        pack_latents(torch.randn(1, 4, 5, 8))


def test_qwen_text_mask_makes_padding_tokens_irrelevant():
    model = QwenImageVelocity(tiny_qwen_transformer(0))
    x, t = torch.randn(1, 4, 4, 4), torch.tensor([0.7])
    real = torch.randn(1, 3, 32)
    padded = torch.cat([real, torch.randn(1, 2, 32)], 1)
    mask = torch.tensor([[True, True, True, False, False]])
    short = model(x, t, Conditioning(real, torch.ones(1, 3, dtype=torch.bool)))
    assert torch.allclose(model(x, t, Conditioning(padded, mask)), short, atol=1e-5)
    assert not torch.allclose(model(x, t, Conditioning(padded, torch.ones_like(mask))), short, atol=1e-3)


def test_timestep_conversion_boundary_and_fixed_schedule_scheduler():
    schedule = uniform_timesteps(4, 5.0)
    assert schedule == pytest.approx([1.0, 0.9375, 0.8333333, 0.625, 0.0])
    assert scheduler_sigmas(schedule) == schedule[:-1]
    boundary = expert_boundary_ratio(schedule, 2)
    assert boundary == pytest.approx((0.9375 + 0.8333333) / 2)
    with pytest.raises(ValueError, match="first_low_step"):
        expert_boundary_ratio(schedule, 4)
    with pytest.raises(ValueError, match="decreasing"):
        scheduler_sigmas([1.0, 0.5, 0.7, 0.0])
    scheduler = FixedScheduleEulerScheduler.for_schedule(schedule)
    scheduler.set_timesteps(4)
    assert torch.allclose(scheduler.timesteps, torch.tensor(schedule[:-1]) * 1000)
    x, v = torch.randn(2, 3), torch.randn(2, 3)
    stepped = scheduler.step(v, scheduler.timesteps[0], x, return_dict=False)[0]
    assert torch.allclose(stepped, euler_step(x, v, schedule[0], schedule[1]))
    with pytest.raises(ValueError, match="4-step"):
        scheduler.set_timesteps(8)


def test_moe_teacher_routes_each_sample_by_t_against_the_boundary(tiny_wan22, wan_prompt_cache):
    from pdmd_core.models.registry import build_model

    bundle = build_model("wan", {"architecture": "tiny-wan2.2", "model_path": str(tiny_wan22),
                                 "prompt_cache": str(wan_prompt_cache), "resolution": [1, 16, 16]}, "cpu")
    assert bundle.moe_boundary == 0.875 and bundle.sample_shape == (4, 1, 4, 4)
    high, low = bundle.teacher_experts
    cond, null = bundle.prompt_source.sample(3, torch.Generator().manual_seed(0))
    x = torch.randn(3, *bundle.sample_shape)
    t = torch.tensor([0.95, 0.875, 0.5])
    v = bundle.teacher(x, t, cond)
    assert torch.allclose(v[:2], high(x[:2], t[:2], cond.index(slice(0, 2))), atol=1e-6)
    assert torch.allclose(v[2:], low(x[2:], t[2:], cond.index(slice(2, 3))), atol=1e-6)
    assert not torch.allclose(high(x, t, cond), low(x, t, cond))
    assert null.embeds.shape == cond.embeds.shape and not null.mask.any()


def test_resolution_mixture_draws_each_batch_shape_and_the_trainer_runs_on_it(tiny_wan22, wan_prompt_cache,
                                                                            tmp_path):
    from pdmd_core.config import config_from_dict
    from pdmd_core.models.registry import build_model
    from pdmd_core.trainer import Trainer

    params = {"architecture": "tiny-wan2.2", "model_path": str(tiny_wan22), "prompt_cache": str(wan_prompt_cache),
              "resolutions": [[1, 16, 16, 0.25], [5, 16, 32, 0.75]]}
    bundle = build_model("wan", params, "cpu")
    sampler = bundle.extras["sample_shape_sampler"]
    assert bundle.sample_shape == (4, 2, 4, 8)  # the most probable entry
    g = torch.Generator().manual_seed(0)
    draws = [sampler(g) for _ in range(2000)]
    assert set(draws) == {(4, 1, 4, 4), (4, 2, 4, 8)}
    assert abs(draws.count((4, 2, 4, 8)) / 2000 - 0.75) < 0.03
    cfg = config_from_dict({"method": "phased", "num_steps": 4, "shift": 5.0, "phases": 2, "iterations": 2,
                            "batch_size": 1, "ttur_ratio": 1, "generator": {"kind": "lora", "rank": 2},
                            "model": {"kind": "wan", **params}})
    seen = []
    Trainer(cfg, bundle, tmp_path / "run", progress=False,
            callbacks=[OnIteration(lambda step, phase, metrics: seen.append(metrics["generator_loss"]))]).fit()
    assert len(seen) == 4 and all(torch.isfinite(torch.tensor(seen)))
