"""The standard FID and FVD feature networks, with their reference preprocessing.

**FID** (:class:`FidInception`): torch-fidelity's ``FeatureExtractorInceptionV3``, the PyTorch port of the
TensorFlow FID Inception graph (``pt_inception-2015-12-05``) used by TTUR / pytorch-fid / torchmetrics. Input is
uint8 RGB of any size; the extractor itself resizes to 299×299 with TensorFlow-1-compatible bilinear
interpolation (no antialiasing) and maps pixels to ``(x - 128) / 128``; features are the 2048-d pool3 output.
Grey images are repeated to RGB; float samples are quantised by ``round(x·255)`` first (as a saved PNG would be).
Weights: ``$PDMD_WEIGHTS_DIR/fid/weights-inception-2015-12-05-6726825d.pth`` (torch-fidelity's release file).
With these weights FID values are comparable to papers that use TTUR / pytorch-fid / torch-fidelity /
torchmetrics(``antialias=False``); clean-fid's values differ (it resizes with PIL bicubic first).
``tests/integration/eval/test_standard_fid.py`` shows our streamed FID equals torch-fidelity's and torchmetrics'
on the same images within 1e-3 relative, using one set of random weights of this architecture for all of them
(the real file is not on this machine).

**FVD** (:class:`I3DFeatures`): the Inception-I3D network trained on Kinetics-400 (Carreira & Zisserman 2017), as
packaged by ``cd-fvd`` (``cdfvd.third_party.i3d.pytorch_i3d.InceptionI3d``, the piergiaj PyTorch port with the
TATS weight conversion ``i3d_pretrained_400.pt``). Features are the 400 Kinetics logits (as in StyleGAN-V and
cd-fvd). Preprocessing as cd-fvd: each frame resized bilinearly (no antialias) to 224×224, scaled to ``[-1, 1]``,
clips of ``frames`` frames. Weights: ``$PDMD_WEIGHTS_DIR/i3d/i3d_pretrained_400.pt``. Frame choice (ours, stated
because the paper does not say): ``frames=16`` evenly spaced over the clip (indices ``round(linspace(0, T-1,
16))``), so an 81-frame Wan clip is covered end to end; ``frames=None`` feeds all frames. FVD values are
comparable to cd-fvd's I3D FVD only with the real weights and the same frame choice and clip count; StyleGAN-V's
TorchScript I3D is a different port of the same TF-Hub model and differs in the last digits.

Without the weight files the loaders raise :class:`~pdmd_eval.weights.MissingWeightsError` naming the file.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pdmd_eval.backbones import model_device
from pdmd_eval.weights import require_file

FID_WEIGHTS = "fid/weights-inception-2015-12-05-6726825d.pth"
I3D_WEIGHTS = "i3d/i3d_pretrained_400.pt"
I3D_SIZE = 224
I3D_MIN_FRAMES = 9  # three temporal stride-2 stages and a 2-frame average pool need T ≥ 9


def _uint8_tensor(batch: Any, device: Any) -> Any:
    import torch

    x = torch.from_numpy(np.ascontiguousarray(batch)) if isinstance(batch, np.ndarray) else batch
    if x.dtype != torch.uint8:
        if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
            raise ValueError(f"float pixels must lie in [0, 1], got [{float(x.min()):.3g}, {float(x.max()):.3g}]")
        x = torch.round(x.to(torch.float32) * 255.0).to(torch.uint8)
    return x.to(device)


class FidInception:
    """2048-d FID features of uint8 (or [0, 1] float) ``N×C×H×W`` images, C in (1, 3); see the module docstring."""

    name = "fid_inception"

    def __init__(self, model: Any):
        self.model = model.eval()

    def __call__(self, batch: Any) -> Any:
        import torch

        x = _uint8_tensor(batch, model_device(self.model))
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"FID Inception takes N×C×H×W images with C in (1, 3), got shape {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        with torch.no_grad():
            out = self.model(x.contiguous())
        feats = out[0] if isinstance(out, tuple | list) else out
        return feats.reshape(len(x), -1).to(torch.float32).cpu()

    def to(self, device: Any) -> FidInception:
        self.model.to(device)
        return self


def build_fid_inception(weights_path: str) -> Any:
    """torch-fidelity's FID Inception with the state dict at ``weights_path``."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    return FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=weights_path)


def load_fid_inception() -> FidInception:
    """From ``$PDMD_WEIGHTS_DIR/fid/weights-inception-2015-12-05-6726825d.pth``."""
    path = require_file("FID Inception-v3 (torch-fidelity, TF 2015-12-05 graph)", FID_WEIGHTS)
    return FidInception(build_fid_inception(str(path)))


def clip_indices(total: int, frames: int | None) -> np.ndarray:
    """``frames`` evenly spaced indices over ``total`` frames (``round(linspace(0, total-1, frames))``); all
    frames when ``frames`` is None or at least ``total``."""
    if frames is None or frames >= total:
        return np.arange(total)
    if frames < 1:
        raise ValueError(f"frames={frames} must be positive")
    return np.round(np.linspace(0, total - 1, frames)).astype(int)


def preprocess_i3d(videos: Any, size: int = I3D_SIZE) -> Any:
    """uint8 videos ``B×T×H×W×C`` (C = 3) → float ``B×C×T×size×size`` in [-1, 1], the same operations in the
    same order as cd-fvd's ``preprocess_i3d`` (float, bilinear resize without antialias, ``2x/255 - 1``)."""
    import torch
    import torch.nn.functional as F

    b, t, h, w, c = videos.shape
    frames = videos.reshape(b * t, h, w, c).to(torch.float32).permute(0, 3, 1, 2).contiguous()
    frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False)
    clips = frames.view(b, t, c, size, size).transpose(1, 2).contiguous()
    return 2.0 * clips / 255.0 - 1


class I3DFeatures:
    """400-d I3D (Kinetics-400 logits) features of videos ``B×T×C×H×W`` (uint8, or float in [0, 1])."""

    name = "i3d"

    def __init__(self, model: Any, frames: int | None = 16):
        self.model = model.eval()
        self.frames = frames

    def __call__(self, videos: Any) -> Any:
        import torch

        x = _uint8_tensor(videos, model_device(self.model))
        if x.ndim != 5 or x.shape[2] not in (1, 3):
            raise ValueError(f"I3D takes B×T×C×H×W videos with C in (1, 3), got shape {tuple(x.shape)}")
        idx = clip_indices(x.shape[1], self.frames)
        if len(idx) < I3D_MIN_FRAMES:
            raise ValueError(f"I3D needs at least {I3D_MIN_FRAMES} frames per clip, got {len(idx)}")
        x = x[:, torch.as_tensor(idx, device=x.device)]
        if x.shape[2] == 1:
            x = x.expand(-1, -1, 3, -1, -1)
        with torch.no_grad():
            logits = self.model(preprocess_i3d(x.permute(0, 1, 3, 4, 2)))
        return logits.reshape(len(x), -1).to(torch.float32).cpu()

    def to(self, device: Any) -> I3DFeatures:
        self.model.to(device)
        return self


def build_i3d(state_dict: dict | None = None) -> Any:
    """cd-fvd's ``InceptionI3d(400)``; ``state_dict=None`` leaves the random initialisation (tests only)."""
    from cdfvd.third_party.i3d.pytorch_i3d import InceptionI3d

    model = InceptionI3d(400, in_channels=3)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model.eval()


def load_i3d(frames: int | None = 16) -> I3DFeatures:
    """From ``$PDMD_WEIGHTS_DIR/i3d/i3d_pretrained_400.pt``."""
    import torch

    path = require_file("I3D (Kinetics-400, cd-fvd / TATS conversion)", I3D_WEIGHTS)
    return I3DFeatures(build_i3d(torch.load(path, map_location="cpu", weights_only=True)), frames)
