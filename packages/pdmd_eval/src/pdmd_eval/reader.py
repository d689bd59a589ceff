"""One lazy reader for both sample-set layouts: media files (:mod:`pdmd_eval.writer`) and the float32 array file
(``samples.safetensors``, :func:`pdmd_eval.samples.save_sample_set`).

>>> reader = open_sample_set("samples/phased")
>>> len(reader), reader.kind, reader.records[0].prompt
>>> clip = reader.read(0)             # T×C×H×W (video) / C×H×W (image): uint8 from media, float32 from arrays
>>> for i, x in reader.iter_samples():  # one sample in memory at a time
...     ...

Nothing is decoded until asked: opening reads the manifest and checks that every media file exists. ``read``
decodes one sample; memory is bounded by what the caller keeps. :attr:`SampleReader.samples` loads the whole set
as the float32 array of :class:`~pdmd_eval.samples.SampleSet` for code that needs it (CPU-tier metrics); large
sets should not touch it. :meth:`SampleReader.fingerprint` identifies the content for feature caches.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pdmd_eval.media import DEFAULT_FPS, read_png, read_video, to_uint8
from pdmd_eval.samples import (
    KINDS,
    MANIFEST_FILE,
    META_FILE,
    SAMPLES_FILE,
    SampleRecord,
    SampleSet,
    SampleSetError,
    method_of,
)

MEDIA_STORAGE, ARRAY_STORAGE = "media", "array"


def as_float(x: np.ndarray) -> np.ndarray:
    """uint8 → float32 in [0, 1] (``x / 255``); float input is returned as float32."""
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32, copy=False)


def _manifest(path: Path) -> list[dict[str, Any]]:
    lines = []
    with open(path) as fh:
        for i, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise SampleSetError(f"{path} line {i}: invalid JSON ({err})") from err
    return lines


class SampleReader:
    """Lazy access to a sample-set folder of either layout (see the module docstring)."""

    def __init__(self, folder: str | Path):
        src = Path(folder)
        for name in (MANIFEST_FILE, META_FILE):
            if not (src / name).is_file():
                raise SampleSetError(f"{src}: missing {name} (a sample set needs {MANIFEST_FILE} and {META_FILE}, "
                                     f"plus media files or {SAMPLES_FILE})")
        meta = json.loads((src / META_FILE).read_text())
        if meta.get("kind") not in KINDS:
            raise SampleSetError(f"{src / META_FILE}: kind={meta.get('kind')!r} must be one of {KINDS}")
        self.folder = src
        self.kind: str = meta["kind"]
        self.benchmark = str(meta.get("benchmark", ""))
        self.extras: dict[str, Any] = dict(meta.get("extras", {}))
        self.storage: str = meta.get("storage", ARRAY_STORAGE)
        self.fps = float(meta.get("fps", DEFAULT_FPS))
        self._lines = _manifest(src / MANIFEST_FILE)
        self.records = [SampleRecord.from_dict(d, line=i) for i, d in enumerate(self._lines, start=1)]
        keys = [r.key for r in self.records]
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise SampleSetError(f"{src / MANIFEST_FILE}: duplicate (prompt_id, seed) {dup}")
        self._array: Any = None
        self._whole: np.ndarray | None = None
        if self.storage == MEDIA_STORAGE:
            self._check_media()
        elif self.storage == ARRAY_STORAGE:
            self._open_array()
        else:
            raise SampleSetError(f"{src / META_FILE}: storage={self.storage!r} must be 'media' or 'array'")

    def _check_media(self) -> None:
        missing, bad = [], []
        for i, line in enumerate(self._lines, start=1):
            if "file" not in line:
                bad.append(i)
            elif not (self.folder / line["file"]).is_file():
                missing.append(line["file"])
        if bad:
            raise SampleSetError(f"{self.folder / MANIFEST_FILE}: lines {bad[:5]} lack 'file' (media sample sets "
                                 "name each sample's file)")
        if missing:
            raise SampleSetError(f"{self.folder}: {len(missing)} media file(s) listed in {MANIFEST_FILE} are missing, "
                                 f"e.g. {missing[:3]}; re-run the sampler with resume, or remove those lines")

    def _open_array(self) -> None:
        from safetensors import safe_open

        path = self.folder / SAMPLES_FILE
        if not path.is_file():
            raise SampleSetError(f"{self.folder}: missing {SAMPLES_FILE} (array sample set) and meta.json names no "
                                 "'storage': 'media'")
        handle = safe_open(str(path), framework="np")
        if "samples" not in handle.keys():
            raise SampleSetError(f"{path}: no key 'samples' (found {sorted(handle.keys())})")
        self._array = handle.get_slice("samples")
        shape = tuple(self._array.get_shape())
        ndim = {"image": 4, "video": 5, "points": 2}[self.kind]
        if len(shape) != ndim or shape[0] != len(self.records):
            raise SampleSetError(f"{path}: array of shape {shape} does not match kind={self.kind!r} "
                                 f"({ndim}-D) and {len(self.records)} manifest records")

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.records)

    @property
    def method(self) -> str:
        return method_of(self.records)

    def shape(self, i: int) -> tuple[int, ...]:
        """Shape of sample ``i`` in the sample-set layout, without decoding it."""
        if self.storage == ARRAY_STORAGE:
            return tuple(self._array.get_shape())[1:]
        line = self._lines[i]
        chw = (int(line["channels"]), int(line["height"]), int(line["width"]))
        return (int(line["frames"]), *chw) if self.kind == "video" else chw

    def read(self, i: int) -> np.ndarray:
        """Sample ``i`` in the sample-set layout: uint8 (media) or float32 (array file)."""
        if self.storage == ARRAY_STORAGE:
            x = np.asarray(self._array[i : i + 1])[0]
            if x.dtype != np.float32:
                raise SampleSetError(f"{self.folder / SAMPLES_FILE}: samples must be float32, got {x.dtype}")
            return x
        line = self._lines[i]
        path = self.folder / line["file"]
        channels = int(line.get("channels", 3))
        if self.kind == "image":
            return np.moveaxis(read_png(path, channels), -1, 0)
        return np.moveaxis(read_video(path, channels, line.get("frames")), -1, 1)

    def read_uint8(self, i: int) -> np.ndarray:
        """Sample ``i`` as uint8 (float arrays are rounded from ``x·255``)."""
        return to_uint8(self.read(i))

    def read_float(self, i: int) -> np.ndarray:
        """Sample ``i`` as float32 in [0, 1]."""
        return as_float(self.read(i))

    def iter_samples(self, indices: Sequence[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, sample)`` one at a time, in ``indices`` order (default all)."""
        for i in range(len(self)) if indices is None else indices:
            yield i, self.read(i)

    @property
    def samples(self) -> np.ndarray:
        """The whole set as one float32 array (loaded once). Memory = the whole set: for small sets only."""
        if self._whole is None:
            if self.storage == ARRAY_STORAGE:
                self._whole = np.asarray(self._array[:], dtype=np.float32)
            else:
                shapes = {self.shape(i) for i in range(len(self))}
                if len(shapes) > 1:
                    raise SampleSetError(f"{self.folder}: samples have different shapes {sorted(shapes)[:3]}; "
                                         "they cannot form one array (use read/iter_samples)")
                self._whole = np.stack([self.read_float(i) for i in range(len(self))])
        return self._whole

    def to_sample_set(self) -> SampleSet:
        """An in-memory, validated :class:`SampleSet` (float32); see :attr:`samples` about memory."""
        try:
            return SampleSet(self.samples, list(self.records), self.kind, self.benchmark, dict(self.extras))
        except SampleSetError as err:
            raise SampleSetError(f"{self.folder}: {err}") from err

    def fingerprint(self) -> str:
        """Hex digest of the manifest, meta data and every data file's size and mtime (no pixel reads)."""
        h = hashlib.sha256()
        for name in (MANIFEST_FILE, META_FILE):
            h.update((self.folder / name).read_bytes())
        files = [SAMPLES_FILE] if self.storage == ARRAY_STORAGE else [line["file"] for line in self._lines]
        for rel in files:
            st = (self.folder / rel).stat()
            h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns};".encode())
        return h.hexdigest()


def open_sample_set(folder: str | Path) -> SampleReader:
    """A lazy :class:`SampleReader` over a sample-set folder of either layout."""
    return SampleReader(folder)


def fingerprint_of(sample_set: Any) -> str:
    """Content identity of a reader (its :meth:`SampleReader.fingerprint`) or an in-memory :class:`SampleSet`
    (a hash of its array bytes and manifest records)."""
    if isinstance(sample_set, SampleReader):
        return sample_set.fingerprint()
    h = hashlib.sha256()
    arr = np.ascontiguousarray(sample_set.samples)
    h.update(f"{sample_set.kind}:{arr.dtype}:{arr.shape}".encode())
    h.update(arr.tobytes())
    h.update(json.dumps([r.key for r in sample_set.records], default=str).encode())
    return h.hexdigest()


def read_sample(sample_set: Any, i: int) -> np.ndarray:
    """Sample ``i`` of a reader or of an in-memory :class:`SampleSet` (float32 view)."""
    if isinstance(sample_set, SampleReader):
        return sample_set.read(i)
    return sample_set.samples[i]


def sample_shape(sample_set: Any, i: int) -> tuple[int, ...]:
    """Shape of sample ``i`` of a reader (no decoding) or of an in-memory :class:`SampleSet`."""
    if isinstance(sample_set, SampleReader):
        return sample_set.shape(i)
    return tuple(sample_set.samples.shape[1:])
