"""A killed evaluation resumes: per-sample results live in atomic cache shards, finished samples are not
computed again. Killed for real (SIGKILL of a subprocess mid-run) and by an injected exception."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from eval_helpers import CountingEmbedder, records

from pdmd_eval.evaluate import evaluate
from pdmd_eval.reader import open_sample_set
from pdmd_eval.samples import SampleSet, save_sample_set

SUPPORT = Path(__file__).resolve().parents[2] / "support"  # eval_helpers, for the child process
N = 12  # 3 prompts × 4 seeds


@pytest.fixture()
def media_images(tmp_path):
    imgs = np.random.default_rng(0).random((N, 3, 16, 16)).astype(np.float32)
    save_sample_set(SampleSet(imgs, records([0, 1, 2], [0, 1, 2, 3]), "image"), tmp_path / "set", storage="media")
    return tmp_path / "set"


def _run(folder: Path, embedder: CountingEmbedder, cache: Path | None):  # type: ignore[no-untyped-def]
    return evaluate(open_sample_set(folder), metrics=["clip_similarity"], models={"clip": embedder}, batch_size=1,
                    cache=cache, progress=False)["clip_similarity"]


def _shards(cache: Path) -> list[Path]:
    return list(cache.rglob("*.safetensors"))


def test_injected_failure_then_resume_computes_only_the_rest(media_images, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="injected failure after 5 batches"):
        _run(media_images, CountingEmbedder(fail_after=5), cache)
    assert len(_shards(cache)) == 5
    again = CountingEmbedder()
    resumed = _run(media_images, again, cache)
    assert again.images == N - 5
    fresh = _run(media_images, CountingEmbedder(), None)
    np.testing.assert_array_equal(resumed.values, fresh.values)
    third = CountingEmbedder()
    _run(media_images, third, cache)
    assert third.images == 0


def test_sigkill_mid_run_then_resume(media_images, tmp_path):
    cache = tmp_path / "cache"
    script = (
        "import sys; sys.path.insert(0, sys.argv[3])\n"
        "from eval_helpers import CountingEmbedder\n"
        "from pdmd_eval.evaluate import evaluate\n"
        "from pdmd_eval.reader import open_sample_set\n"
        "evaluate(open_sample_set(sys.argv[1]), metrics=['clip_similarity'],\n"
        "         models={'clip': CountingEmbedder(sleep=0.4)}, batch_size=1, cache=sys.argv[2], progress=False)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(media_images), str(cache), str(SUPPORT)])
    deadline = time.monotonic() + 120
    while len(_shards(cache)) < 3:
        assert proc.poll() is None, "the evaluation ended before it could be killed"
        assert time.monotonic() < deadline, "no cache shard appeared in 120 s"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = len(_shards(cache))
    assert 3 <= done < N
    from safetensors.numpy import load_file

    assert all(len(load_file(str(p))) == 1 for p in _shards(cache))  # only whole shards carry the name
    again = CountingEmbedder()
    resumed = _run(media_images, again, cache)
    assert again.images == N - done
    np.testing.assert_array_equal(resumed.values, _run(media_images, CountingEmbedder(), None).values)
