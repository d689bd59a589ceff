"""Sample sets: the on-disk format every metric consumes.

Two layouts share one manifest and one reader (:func:`pdmd_eval.reader.open_sample_set`):

- **media** (``meta.json`` has ``"storage": "media"``): one PNG / MP4 per sample, uint8, written one sample at a
  time by :class:`pdmd_eval.writer.SampleSetWriter` and read lazily; for sets that do not fit in memory
  (paper-scale videos). ``save_sample_set(s, folder, storage="media")`` writes an in-memory set this way.
- **array** (the original layout, below): one float32 array file, loaded whole by :func:`load_sample_set`.

:func:`load_sample_set` reads both into an in-memory :class:`SampleSet` (media pixels become ``k / 255``).

An array sample set is a folder with

- ``samples.safetensors``: key ``samples``, float32. Images ``N×C×H×W`` in [0, 1], videos ``N×T×C×H×W`` in
  [0, 1], low-dimensional points ``N×D`` (raw coordinates).
- ``manifest.jsonl``: one JSON object per sample, in the same order as the array, with the keys
  ``method, prompt_id, prompt, seed, steps, nfe, checkpoint``.
- ``meta.json``: ``{"kind": "image"|"video"|"points", "benchmark": str, "extras": {...}}``; ``extras`` is free-form
  (e.g. the mixture mode centres read by :mod:`pdmd_eval.functional.modes`).
- optional previews (``previews/*.png`` for images, ``previews/*.gif`` for videos), never read back.

Teacher samples on the same prompts and seeds are a sample set too; :func:`pair_indices` matches two sets on
``(prompt_id, seed)``.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

SAMPLES_FILE = "samples.safetensors"
MANIFEST_FILE = "manifest.jsonl"
META_FILE = "meta.json"
KINDS = ("image", "video", "points")
MANIFEST_KEYS = ("method", "prompt_id", "prompt", "seed", "steps", "nfe", "checkpoint")
_NDIM = {"image": 4, "video": 5, "points": 2}


class SampleSetError(ValueError):
    """A sample set on disk or in memory does not follow the format."""


@dataclass(frozen=True)
class SampleRecord:
    """One manifest line. ``prompt_id`` is an int (class index on the CPU tier) or a string."""

    method: str
    prompt_id: int | str
    prompt: str
    seed: int
    steps: int
    nfe: int
    checkpoint: str

    def __post_init__(self) -> None:
        # numpy integers (e.g. from label arrays) become plain ints so the manifest stays JSON and keys compare
        for name in ("prompt_id", "seed", "steps", "nfe"):
            value = getattr(self, name)
            if isinstance(value, np.integer):
                object.__setattr__(self, name, int(value))
        if not isinstance(self.prompt_id, int | str) or isinstance(self.prompt_id, bool):
            raise SampleSetError(f"prompt_id={self.prompt_id!r} must be an int or a str")
        for name in ("seed", "steps", "nfe"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise SampleSetError(f"{name}={value!r} must be an int")

    @classmethod
    def from_dict(cls, data: dict[str, Any], line: int = 0) -> SampleRecord:
        missing = [k for k in MANIFEST_KEYS if k not in data]
        if missing:
            raise SampleSetError(f"manifest line {line}: missing keys {missing}; required keys are {MANIFEST_KEYS}")
        try:
            return cls(
                method=str(data["method"]),
                prompt_id=data["prompt_id"],
                prompt=str(data["prompt"]),
                seed=data["seed"],
                steps=data["steps"],
                nfe=data["nfe"],
                checkpoint=str(data["checkpoint"]),
            )
        except SampleSetError as err:
            raise SampleSetError(f"manifest line {line}: {err}") from err

    @property
    def key(self) -> tuple[int | str, int]:
        return (self.prompt_id, self.seed)


@dataclass
class SampleSet:
    """Samples (float32 array), their manifest records and the set's meta data."""

    samples: np.ndarray
    records: list[SampleRecord]
    kind: str
    benchmark: str = ""
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate(self)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def method(self) -> str:
        return method_of(self.records)

    def subset(self, indices: Sequence[int]) -> SampleSet:
        idx = list(indices)
        return SampleSet(self.samples[idx], [self.records[i] for i in idx], self.kind, self.benchmark, self.extras)


def validate(sample_set: SampleSet) -> None:
    """Check array rank/dtype/range against ``kind`` and the manifest length; raise :class:`SampleSetError`."""
    s = sample_set
    if s.kind not in KINDS:
        raise SampleSetError(f"kind={s.kind!r} is not one of {KINDS}")
    if not isinstance(s.samples, np.ndarray) or s.samples.dtype != np.float32:
        dtype = getattr(s.samples, "dtype", type(s.samples))
        raise SampleSetError(f"samples must be a float32 numpy array, got {dtype}")
    if s.samples.ndim != _NDIM[s.kind]:
        raise SampleSetError(
            f"kind={s.kind!r} needs a {_NDIM[s.kind]}-D array, got shape {tuple(s.samples.shape)}"
        )
    if s.samples.shape[0] != len(s.records):
        raise SampleSetError(f"{s.samples.shape[0]} samples but {len(s.records)} manifest records")
    if not np.isfinite(s.samples).all():
        raise SampleSetError("samples contain NaN or Inf")
    if s.kind in ("image", "video") and s.samples.size and (s.samples.min() < 0.0 or s.samples.max() > 1.0):
        raise SampleSetError(
            f"{s.kind} samples must lie in [0, 1], got range [{s.samples.min():.3g}, {s.samples.max():.3g}]"
        )
    keys = [r.key for r in s.records]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise SampleSetError(f"duplicate (prompt_id, seed) {dup}: each pair must appear once")


def save_sample_set(
    sample_set: SampleSet, folder: str | Path, previews: bool = False, storage: str = "array", **media: Any
) -> Path:
    """Write the folder format; ``previews=True`` also writes PNGs (images) or GIFs (videos).

    ``storage="media"`` writes PNG / MP4 files instead of the float32 array (pixels rounded to uint8; ``media``
    keyword arguments ``fps`` and ``quality`` go to :class:`pdmd_eval.writer.SampleSetWriter`). Points sets are
    always arrays.
    """
    from safetensors.numpy import save_file

    validate(sample_set)
    out = Path(folder)
    if storage == "media":
        from pdmd_eval.writer import SampleSetWriter

        with SampleSetWriter(out, sample_set.kind, sample_set.benchmark, sample_set.extras, **media) as writer:
            for rec, sample in zip(sample_set.records, sample_set.samples, strict=True):
                writer.append(rec, sample)
        if previews:
            from pdmd_eval.figures import write_previews

            write_previews(sample_set, out / "previews")
        return out
    if storage != "array":
        raise SampleSetError(f"storage={storage!r} must be 'array' or 'media'")
    out.mkdir(parents=True, exist_ok=True)
    save_file({"samples": np.ascontiguousarray(sample_set.samples)}, str(out / SAMPLES_FILE))
    with open(out / MANIFEST_FILE, "w") as fh:
        for rec in sample_set.records:
            fh.write(json.dumps(asdict(rec)) + "\n")
    meta = {"kind": sample_set.kind, "benchmark": sample_set.benchmark, "extras": sample_set.extras}
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    if previews and sample_set.kind != "points":
        from pdmd_eval.figures import write_previews

        write_previews(sample_set, out / "previews")
    return out


def load_sample_set(folder: str | Path) -> SampleSet:
    """Read and validate a sample-set folder; errors name the file and the bad value."""
    from safetensors.numpy import load_file

    src = Path(folder)
    meta_path = src / META_FILE
    if meta_path.is_file() and json.loads(meta_path.read_text()).get("storage") == "media":
        from pdmd_eval.reader import open_sample_set

        return open_sample_set(src).to_sample_set()
    for name in (SAMPLES_FILE, MANIFEST_FILE, META_FILE):
        if not (src / name).is_file():
            needed = f"{SAMPLES_FILE}, {MANIFEST_FILE}, {META_FILE}"
            raise SampleSetError(f"{src}: missing {name} (a sample set needs {needed})")
    tensors = load_file(str(src / SAMPLES_FILE))
    if "samples" not in tensors:
        raise SampleSetError(f"{src / SAMPLES_FILE}: no key 'samples' (found {sorted(tensors)})")
    records = []
    with open(src / MANIFEST_FILE) as fh:
        for i, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as err:
                raise SampleSetError(f"{src / MANIFEST_FILE} line {i}: invalid JSON ({err})") from err
            records.append(SampleRecord.from_dict(data, line=i))
    meta = json.loads((src / META_FILE).read_text())
    if "kind" not in meta:
        raise SampleSetError(f"{src / META_FILE}: missing 'kind' (one of {KINDS})")
    try:
        return SampleSet(
            samples=tensors["samples"],
            records=records,
            kind=meta["kind"],
            benchmark=str(meta.get("benchmark", "")),
            extras=dict(meta.get("extras", {})),
        )
    except SampleSetError as err:
        raise SampleSetError(f"{src}: {err}") from err


class HasRecords(Protocol):
    """Anything with a manifest: :class:`SampleSet` or :class:`pdmd_eval.reader.SampleReader`."""

    records: list[SampleRecord]


def method_of(records: Sequence[SampleRecord]) -> str:
    """The set's method name: the records' one method, or the sorted methods joined by '+'."""
    methods = sorted({r.method for r in records})
    return methods[0] if len(methods) == 1 else "+".join(methods)


def group_by_prompt(sample_set: HasRecords) -> dict[Hashable, list[int]]:
    """Indices of the samples of each prompt, prompts in first-seen order, seeds sorted within a prompt."""
    groups: dict[Hashable, list[int]] = {}
    for i, rec in enumerate(sample_set.records):
        groups.setdefault(rec.prompt_id, []).append(i)
    return {pid: sorted(idx, key=lambda i: sample_set.records[i].seed) for pid, idx in groups.items()}


def pair_indices(a: HasRecords, b: HasRecords, require_all: bool = False) -> tuple[list[int], list[int]]:
    """Indices ``(ia, ib)`` such that ``a[ia[k]]`` and ``b[ib[k]]`` share ``(prompt_id, seed)``.

    ``require_all=True`` raises if any sample of ``a`` has no partner in ``b``. Raises if nothing matches.
    """
    lookup = {rec.key: i for i, rec in enumerate(b.records)}
    ia, ib = [], []
    unmatched = []
    for i, rec in enumerate(a.records):
        j = lookup.get(rec.key)
        if j is None:
            unmatched.append(rec.key)
        else:
            ia.append(i)
            ib.append(j)
    if not ia:
        raise SampleSetError("no (prompt_id, seed) pair in common between the two sample sets")
    if require_all and unmatched:
        raise SampleSetError(f"{len(unmatched)} samples have no reference partner, e.g. {unmatched[:3]}")
    return ia, ib
