"""Resumable per-sample results: a folder of safetensors shards keyed by sample, written atomically.

Layout: ``ROOT/<set fingerprint[:20]>/<what>/<shard>.safetensors``. ``what`` names the computation and its
settings (e.g. ``raft_flow-large-it20-native``); each shard holds one array per sample, keyed by the sample's
``prompt_id|seed``. A shard is written to a temporary file and renamed, so a killed run leaves only whole
shards; the next run loads them and computes only the samples that are missing. The set fingerprint
(:func:`pdmd_eval.reader.fingerprint_of`) changes when the samples change, so stale results are never reused.

:class:`FeatureCache` counts what it computed and reused (``stats``), which ``pdmd eval`` writes to
``results.json``.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

import numpy as np

SAFE = re.compile(r"[^A-Za-z0-9_.=-]+")


def sample_key(key: tuple[Hashable, int]) -> str:
    """``prompt_id|seed`` for a record key."""
    return f"{key[0]}|{key[1]}"


class FeatureCache:
    """Per-sample arrays under ``root`` (see the module docstring); ``root=None`` keeps them in memory only."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root is not None else None
        self._memory: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        self.stats: dict[str, dict[str, int]] = {}

    def _folder(self, fingerprint: str, what: str) -> Path | None:
        if self.root is None:
            return None
        return self.root / fingerprint[:20] / SAFE.sub("_", what)

    def load(self, fingerprint: str, what: str) -> dict[str, np.ndarray]:
        """Everything stored for ``(fingerprint, what)``."""
        mem = self._memory.setdefault((fingerprint, what), {})
        folder = self._folder(fingerprint, what)
        if folder is not None and folder.is_dir():
            from safetensors.numpy import load_file

            for shard in sorted(folder.glob("*.safetensors")):
                mem.update(load_file(str(shard)))
        return mem

    def store(self, fingerprint: str, what: str, values: dict[str, np.ndarray]) -> None:
        """Add one shard (atomic rename)."""
        if not values:
            return
        self._memory.setdefault((fingerprint, what), {}).update(values)
        folder = self._folder(fingerprint, what)
        if folder is None:
            return
        from safetensors.numpy import save_file

        folder.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        tmp = folder / f".{name}.tmp"
        save_file({k: np.ascontiguousarray(v) for k, v in values.items()}, str(tmp))
        os.replace(tmp, folder / f"{name}.safetensors")

    def compute(
        self,
        fingerprint: str,
        what: str,
        keys: Sequence[str],
        fn: Callable[[list[int]], list[np.ndarray]],
        chunk: int = 1,
        progress: bool = True,
    ) -> list[np.ndarray]:
        """Per-sample arrays for ``keys`` (in order): cached ones are loaded, the rest computed by
        ``fn(positions)`` (positions into ``keys``, ``chunk`` at a time) and stored shard by shard."""
        from tqdm.auto import tqdm

        have = self.load(fingerprint, what)
        todo = [i for i, k in enumerate(keys) if k not in have]
        stats = self.stats.setdefault(what, {"computed": 0, "reused": 0})
        stats["reused"] += len(keys) - len(todo)
        bar = tqdm(total=len(todo), desc=what, disable=not progress or not todo, leave=False, unit="sample")
        for start in range(0, len(todo), chunk):
            positions = todo[start : start + chunk]
            out = fn(positions)
            if len(out) != len(positions):
                raise RuntimeError(f"{what}: computed {len(out)} results for {len(positions)} samples")
            self.store(fingerprint, what, {keys[p]: np.asarray(v) for p, v in zip(positions, out, strict=True)})
            stats["computed"] += len(positions)
            bar.update(len(positions))
        bar.close()
        return [have[k] for k in keys]
