"""Write a sample set one sample at a time as media files (PNG / MP4) plus the manifest: a sampler never holds
more than the sample it is writing.

Folder layout (``storage: "media"``; :mod:`pdmd_eval.reader` reads it and the older array layout alike)::

    meta.json        {"kind", "benchmark", "extras", "storage": "media", "fps", "video_quality"}
    manifest.jsonl   one line per sample: method, prompt_id, prompt, seed, steps, nfe, checkpoint (as before)
                     plus file (relative path), channels, height, width and, for videos, frames
    media/000000.png or media/000000.mp4, numbered in writing order

Each media file is written under a temporary name and renamed when complete; its manifest line is appended and
flushed only after that, so a killed sampler leaves a consistent set. ``SampleSetWriter(..., resume=True)`` opens
such a set again; :meth:`SampleSetWriter.has` tells the sampler which ``(prompt_id, seed)`` are done.

>>> with SampleSetWriter("samples/phased", "video", benchmark="wan22-t2v", fps=16) as w:
...     for prompt_id, prompt in prompts:
...         if not w.has(prompt_id, 42):
...             w.append(SampleRecord("phased", prompt_id, prompt, 42, 4, 4, ckpt), video)  # T×C×H×W, [0,1] or uint8

Images are ``C×H×W`` and videos ``T×C×H×W`` (the sample-set layout), float in [0, 1] or uint8, numpy or torch;
C is 1 (grey) or 3 (RGB). Video encoding: :data:`pdmd_eval.media.VIDEO_QUALITIES` (default lossless H.264 RGB).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from pdmd_eval.media import DEFAULT_FPS, VIDEO_QUALITIES, VideoWriter, to_uint8, write_png
from pdmd_eval.samples import MANIFEST_FILE, META_FILE, SAMPLES_FILE, SampleRecord, SampleSetError

MEDIA_DIR = "media"
MEDIA_KINDS = ("image", "video")


def _as_numpy(sample: Any) -> np.ndarray:
    if hasattr(sample, "detach"):  # a torch tensor, without importing torch here
        sample = sample.detach().to("cpu").numpy()
    return np.asarray(sample)


def _channels_last(sample: np.ndarray, kind: str) -> np.ndarray:
    """Sample-set layout (``C×H×W`` / ``T×C×H×W``) → uint8 channels-last (``H×W×C`` / ``T×H×W×C``)."""
    ndim = 3 if kind == "image" else 4
    if sample.ndim != ndim or sample.shape[-3] not in (1, 3):
        layout = "C×H×W" if kind == "image" else "T×C×H×W"
        raise SampleSetError(f"a {kind} sample must be {layout} with C in (1, 3), got shape {sample.shape}")
    if sample.dtype != np.uint8 and not np.issubdtype(sample.dtype, np.floating):
        raise SampleSetError(f"samples must be float in [0, 1] or uint8, got {sample.dtype}")
    return np.moveaxis(to_uint8(sample), -3, -1)


def _write_meta(folder: Path, kind: str, benchmark: str, extras: dict[str, Any], fps: float, quality: str) -> None:
    meta = {"kind": kind, "benchmark": benchmark, "extras": extras, "storage": "media", "fps": fps,
            "video_quality": quality}
    tmp = folder / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, folder / META_FILE)


class SampleSetWriter:
    """Append samples one by one to a media sample-set folder (see the module docstring)."""

    def __init__(self, folder: str | Path, kind: str, benchmark: str = "", extras: dict[str, Any] | None = None,
                 fps: float = DEFAULT_FPS, quality: str = "lossless", resume: bool = False):
        if kind not in MEDIA_KINDS:
            raise SampleSetError(f"kind={kind!r}: media sample sets hold {MEDIA_KINDS}; points use save_sample_set")
        if quality not in VIDEO_QUALITIES:
            raise SampleSetError(f"quality={quality!r} must be one of {sorted(VIDEO_QUALITIES)}")
        self.folder, self.kind, self.fps, self.quality = Path(folder), kind, fps, quality
        self.benchmark, self.extras = benchmark, dict(extras or {})
        self.records: list[SampleRecord] = []
        self._keys: set[tuple[int | str, int]] = set()
        manifest = self.folder / MANIFEST_FILE
        if (self.folder / SAMPLES_FILE).exists():
            raise SampleSetError(f"{self.folder} holds an array sample set ({SAMPLES_FILE}); write to a new folder")
        if manifest.exists() and manifest.stat().st_size > 0:
            if not resume:
                raise SampleSetError(f"{self.folder} already holds samples; pass resume=True to append to it, or "
                                     "write to an empty folder")
            self._load_existing()
        (self.folder / MEDIA_DIR).mkdir(parents=True, exist_ok=True)
        _write_meta(self.folder, kind, benchmark, self.extras, fps, quality)
        self._fh = open(manifest, "a")

    def _load_existing(self) -> None:
        from pdmd_eval.reader import open_sample_set

        existing = open_sample_set(self.folder)
        if existing.kind != self.kind:
            raise SampleSetError(f"{self.folder} holds {existing.kind!r} samples, not {self.kind!r}")
        self.records = list(existing.records)
        self._keys = {r.key for r in self.records}

    def __enter__(self) -> SampleSetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.records)

    def has(self, prompt_id: int | str, seed: int) -> bool:
        """Whether ``(prompt_id, seed)`` is already in the set (to skip it when resuming)."""
        return (prompt_id, seed) in self._keys

    def append(self, record: SampleRecord, sample: Any) -> Path:
        """Encode one sample and add its manifest line; returns the media file's path."""
        if record.key in self._keys:
            raise SampleSetError(f"duplicate (prompt_id, seed) {record.key}: each pair must appear once")
        arr = _channels_last(_as_numpy(sample), self.kind)
        index = len(self.records)
        ext = ".png" if self.kind == "image" else ".mp4"
        rel = f"{MEDIA_DIR}/{index:06d}{ext}"
        final = self.folder / rel
        tmp = final.with_name(final.stem + ".part" + ext)
        if self.kind == "image":
            write_png(tmp, arr)
        else:
            with VideoWriter(tmp, self.fps, self.quality) as vw:
                for frame in arr:
                    vw.write(frame)
        os.replace(tmp, final)
        line: dict[str, Any] = {**asdict(record), "file": rel, "channels": int(arr.shape[-1]),
                                "height": int(arr.shape[-3]), "width": int(arr.shape[-2])}
        if self.kind == "video":
            line["frames"] = int(arr.shape[0])
        self._fh.write(json.dumps(line) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.records.append(record)
        self._keys.add(record.key)
        return final

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
