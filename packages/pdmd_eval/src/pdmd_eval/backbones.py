"""Pretrained image networks used by the metrics: CLIP (open_clip), DINOv2/v3 (transformers), LPIPS, Inception.

Each wrapper takes an already built model, so tests can pass random-weight networks (``pretrained=None``,
``from_config``); the ``load_*`` functions build the real ones from local weights (see
:mod:`pdmd_eval.weights`) and raise :class:`~pdmd_eval.weights.MissingWeightsError` when they are absent.
Inputs are float tensors ``N×C×H×W`` in [0, 1] (uint8 is accepted and divided by 255); one-channel images are
repeated to RGB. Every wrapper has ``to(device)``; inputs are moved to the model's device and outputs come back
on the CPU, so callers never deal with devices. ``pdmd eval`` puts them on CUDA when it is present.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pdmd_eval.weights import MissingWeightsError, hf_missing, hf_model_source, require_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def model_device(model: Any) -> Any:
    """Device of a module's first parameter (CPU for parameter-free modules)."""
    import torch

    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def unit_float(batch: Any, device: Any = None) -> Any:
    """A tensor (or numpy array) batch as float32 in [0, 1] on ``device``: uint8 is divided by 255 there, so
    only bytes travel to the GPU."""
    import numpy as np
    import torch

    x = torch.from_numpy(np.ascontiguousarray(batch)) if isinstance(batch, np.ndarray) else batch
    x = x.to(device) if device is not None else x
    return x.to(torch.float32) / 255.0 if x.dtype == torch.uint8 else x.to(torch.float32)


def to_rgb(batch: Any) -> Any:
    if batch.shape[1] == 1:
        return batch.expand(-1, 3, -1, -1)
    if batch.shape[1] != 3:
        raise ValueError(f"images must have 1 or 3 channels, got shape {tuple(batch.shape)}")
    return batch


def prepare(batch: Any, size: int | None, mean: Sequence[float], std: Sequence[float]) -> Any:
    """RGB, resized (bilinear, antialiased) to ``size×size`` when given, then normalised."""
    import torch
    import torch.nn.functional as F

    x = to_rgb(unit_float(batch))
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


class ClipEmbedder:
    """open_clip image/text embeddings, L2-normalised."""

    def __init__(self, model: Any, tokenizer: Any = None, image_size: int | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        size: Any = image_size or getattr(model.visual, "image_size", 224)
        self.image_size = int(size[0] if isinstance(size, tuple | list) else size)

    def __call__(self, batch: Any) -> Any:
        import torch

        with torch.no_grad():
            x = unit_float(batch, model_device(self.model))
            emb = self.model.encode_image(prepare(x, self.image_size, CLIP_MEAN, CLIP_STD))
        return torch.nn.functional.normalize(emb.float(), dim=-1).cpu()

    def to(self, device: Any) -> ClipEmbedder:
        self.model.to(device)
        return self

    def embed_texts(self, texts: Sequence[str]) -> Any:
        import torch

        if self.tokenizer is None:
            raise ValueError("this ClipEmbedder has no tokenizer; pass one to embed texts (CLIP score)")
        with torch.no_grad():
            emb = self.model.encode_text(self.tokenizer(list(texts)).to(model_device(self.model)))
        return torch.nn.functional.normalize(emb.float(), dim=-1).cpu()


def load_clip(arch: str = "ViT-B-32", tag: str = "laion2b_s34b_b79k") -> ClipEmbedder:
    """CLIP from ``$PDMD_WEIGHTS_DIR/open_clip/<arch>/<tag>.bin``."""
    import open_clip

    path = require_file(f"open_clip {arch} ({tag})", f"open_clip/{arch}/{tag}.bin")
    model = open_clip.create_model(arch, pretrained=str(path))
    return ClipEmbedder(model, open_clip.get_tokenizer(arch))


class DinoEmbedder:
    """DINOv2/DINOv3 (transformers) CLS embedding (``pooler_output``), L2-normalised."""

    def __init__(self, model: Any, image_size: int | None = None):
        self.model = model.eval()
        self.image_size = image_size or int(getattr(model.config, "image_size", 224))

    def __call__(self, batch: Any) -> Any:
        import torch

        with torch.no_grad():
            x = unit_float(batch, model_device(self.model))
            out = self.model(pixel_values=prepare(x, self.image_size, IMAGENET_MEAN, IMAGENET_STD))
        return torch.nn.functional.normalize(out.pooler_output.float(), dim=-1).cpu()

    def to(self, device: Any) -> DinoEmbedder:
        self.model.to(device)
        return self


DINO_DEFAULT = "facebook/dinov2-small"


def dinov3_supported() -> bool:
    """Whether the installed transformers has DINOv3 (``DINOv3ViTModel``, transformers ≥ 4.56)."""
    try:
        from transformers import DINOv3ViTModel  # noqa: F401
    except ImportError:
        return False
    return True


def load_dino(repo_id: str = DINO_DEFAULT, image_size: int = 224) -> DinoEmbedder:
    """DINO from ``$PDMD_WEIGHTS_DIR/hf/<org>--<name>`` or the HF cache (offline).

    DINOv3 (``facebook/dinov3-*``) needs a transformers release with ``DINOv3ViTModel``; an older one raises
    an ImportError that says so instead of loading a different model.
    """
    import transformers

    if "dinov3" in repo_id.lower() and not dinov3_supported():
        raise ImportError(
            f"{repo_id} needs DINOv3 support (transformers.DINOv3ViTModel), missing in transformers "
            f"{transformers.__version__}; install a newer transformers in an isolated environment"
        )
    source, offline = hf_model_source(f"DINO {repo_id}", repo_id)
    try:
        model = transformers.AutoModel.from_pretrained(source, local_files_only=offline)
    except OSError as err:
        raise hf_missing(f"DINO {repo_id}", repo_id, err) from err
    return DinoEmbedder(model, image_size)


class LpipsDistance:
    """LPIPS distance between image batches (``lpips`` package); images resized up to ``min_size``.

    AlexNet's stride-4 stem and pooling need about 64 px; smaller images (CPU tier, 16–32 px) are upsampled
    bilinearly to ``min_size`` before the distance, larger ones are used at native size.
    """

    def __init__(self, model: Any, min_size: int = 64):
        self.model = model.eval()
        self.min_size = min_size

    def _prep(self, batch: Any) -> Any:
        import torch.nn.functional as F

        x = to_rgb(unit_float(batch, model_device(self.model)))
        h, w = x.shape[-2:]
        if min(h, w) < self.min_size:
            scale = self.min_size / min(h, w)
            x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bilinear", align_corners=False)
        return x * 2.0 - 1.0

    def __call__(self, a: Any, b: Any) -> Any:
        """Per-pair distances ``N`` between two ``N×C×H×W`` batches in [0, 1]."""
        import torch

        with torch.no_grad():
            return self.model(self._prep(a), self._prep(b)).reshape(-1).float().cpu()

    def to(self, device: Any) -> LpipsDistance:
        self.model.to(device)
        return self


def build_lpips(backbone_state: dict | None) -> Any:
    """LPIPS-Alex with the package's linear heads; backbone from ``backbone_state`` (None = random, tests only)."""
    import warnings

    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # lpips passes torchvision's deprecated `pretrained=` flag
        model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    if backbone_state is not None:
        # torchvision AlexNet keys are features.<i>.*; lpips splits them into slices, keyed by the same index
        own = model.net.state_dict()
        mapped = {}
        for key, value in backbone_state.items():
            if not key.startswith("features."):
                continue
            idx = key.split(".")[1]
            match = [k for k in own if k.endswith(f".{idx}.{key.split('.')[-1]}")]
            if len(match) != 1:
                raise ValueError(f"cannot map AlexNet weight {key} onto the LPIPS backbone")
            mapped[match[0]] = value
        model.net.load_state_dict(mapped, strict=True)
    return model


def load_lpips(min_size: int = 64) -> LpipsDistance:
    """LPIPS-Alex with the AlexNet backbone from ``$PDMD_WEIGHTS_DIR/lpips/alexnet.pth``."""
    import torch

    path = require_file("LPIPS AlexNet backbone", "lpips/alexnet.pth")
    return LpipsDistance(build_lpips(torch.load(path, map_location="cpu", weights_only=True)), min_size)


class InceptionFeatures:
    """torchvision Inception-v3 2048-d pool features for the CPU tier's ``fd_*`` metrics (not the TF-FID graph:
    values are not comparable to papers; :mod:`pdmd_eval.standard` has the paper-comparable FID network)."""

    def __init__(self, model: Any):
        import torch

        model.fc = torch.nn.Identity()
        self.model = model.eval()

    def __call__(self, batch: Any) -> Any:
        import torch

        with torch.no_grad():
            x = unit_float(batch, model_device(self.model))
            return self.model(prepare(x, 299, IMAGENET_MEAN, IMAGENET_STD)).float().cpu()

    def to(self, device: Any) -> InceptionFeatures:
        self.model.to(device)
        return self


def load_inception() -> InceptionFeatures:
    import torch
    from torchvision.models import inception_v3

    path = require_file("Inception-v3", "inception/inception_v3.pth")
    model = inception_v3(weights=None, aux_logits=True, init_weights=False)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return InceptionFeatures(model)


__all__ = [
    "ClipEmbedder",
    "DinoEmbedder",
    "InceptionFeatures",
    "LpipsDistance",
    "MissingWeightsError",
    "build_lpips",
    "load_clip",
    "load_dino",
    "load_inception",
    "load_lpips",
]
