"""Where pretrained weights come from: one place, no downloads, no silent fallbacks.

Set ``PDMD_WEIGHTS_DIR`` (default ``~/.cache/pdmd/weights``). Expected layout::

    $PDMD_WEIGHTS_DIR/
      lpips/alexnet.pth               torchvision AlexNet ImageNet state dict (LPIPS backbone; the LPIPS
                                      linear heads ship inside the ``lpips`` package)
      open_clip/<ARCH>/<TAG>.bin      open_clip checkpoint, e.g. open_clip/ViT-B-32/laion2b_s34b_b79k.bin
      hf/<org>--<name>/               a Hugging Face model folder (config.json + weights), e.g.
                                      hf/facebook--dinov2-small/ ; alternatively the model may sit in the
                                      Hugging Face cache (HF_HOME / HF_HUB_CACHE), read with local_files_only
      raft/raft_small.pth             torchvision RAFT-small state dict (flow_mag_raft, CPU tier)
      raft/raft_large.pth             torchvision RAFT-large state dict, Raft_Large_Weights.C_T_V2 (Chairs + Things,
                                      as VBench's raft-things): optical_flow_raft, dynamic_degree_vbench
      inception/inception_v3.pth      torchvision Inception-v3 ImageNet state dict (CPU-tier FD features)
      fid/weights-inception-2015-12-05-6726825d.pth
                                      torch-fidelity's FID Inception (TF 2015-12-05 graph): fid_teacher
      i3d/i3d_pretrained_400.pt       I3D Kinetics-400 state dict as cd-fvd / TATS ship it: fvd_i3d_teacher
      hf/facebook--dinov3-vitb16-pretrain-lvd1689m/
                                      DINOv3 ViT-B/16 (dino_similarity; another id with --dinov3-model)

Any missing file raises :class:`MissingWeightsError`, which names the model and the exact path to provide.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "PDMD_WEIGHTS_DIR"


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights for a metric are not available locally."""


def weights_dir() -> Path:
    """``$PDMD_WEIGHTS_DIR`` or ``~/.cache/pdmd/weights``."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pdmd" / "weights"


def require_file(model: str, relative: str) -> Path:
    """Path of ``relative`` under the weights folder; raise naming ``model`` if it is absent."""
    path = weights_dir() / relative
    if not path.is_file():
        raise MissingWeightsError(
            f"weights for {model} not found at {path}. This machine has no internet: copy the checkpoint there "
            f"(or point {ENV_VAR} at a folder that holds {relative})."
        )
    return path


def hf_model_source(model: str, repo_id: str) -> tuple[str, bool]:
    """Local folder to load a Hugging Face model from: ``$PDMD_WEIGHTS_DIR/hf/<org>--<name>`` if present, else
    the snapshot folder of ``repo_id`` in the HF cache (HF_HOME / HF_HUB_CACHE). Never touches the network;
    raises :class:`MissingWeightsError` when neither exists. Returns ``(folder, local_files_only=True)``."""
    folder = weights_dir() / "hf" / repo_id.replace("/", "--")
    if folder.is_dir():
        return str(folder), True
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "config.json")
    if isinstance(cached, str):
        return str(Path(cached).parent), True
    raise hf_missing(model, repo_id, FileNotFoundError("config.json not in the cache"))


def hf_missing(model: str, repo_id: str, err: Exception) -> MissingWeightsError:
    folder = weights_dir() / "hf" / repo_id.replace("/", "--")
    return MissingWeightsError(
        f"weights for {model} ({repo_id}) not found: neither {folder} nor the Hugging Face cache "
        f"(HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}) holds them ({type(err).__name__}: {err}). "
        f"Copy the model folder (config.json + weights) to {folder}."
    )
