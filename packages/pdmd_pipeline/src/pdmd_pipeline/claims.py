"""The paper's claims as paired comparisons, and the verdict rules — fixed before any result was seen.

Each claim is a list of sub-claims `Comparison(metric, a, b, relation)`; `a`/`b` are arm names or teacher
references (`teacher_40`, `teacher_4`). Metric roles are resolved per sample kind (`DIVERSITY`, `MOTION`,
`FIDELITY`), because the CPU tier measures diversity in a feature net's space for images and videos and by
pairwise distance for 2-D points.

Units and pairing. Every comparison is paired on units `(training seed, prompt)`: both arms were trained with
the same seeds and sampled on the same prompts and sample seeds. Per-sample metrics are averaged within a prompt
first. A teacher reference has no training seed; its per-prompt value is paired with each seed's value.

Statistic. `d` = per-unit difference oriented so that d > 0 means `a` is better (a − b for ↑ metrics, b − a for
↓ metrics); its mean with a 95 % bootstrap CI [lo, hi] and the two-sided Wilcoxon signed-rank p-value
(`pdmd_eval.stats.paired_comparison`). The margin δ = MARGIN × |mean of b| (5 %) separates "practically
equal" from "different".

Verdict rules (per sub-claim):
- `better` (a > b): **held** if lo > 0 and p < ALPHA; **not held** if hi < 0 and p < ALPHA (b is better), or
  if the whole CI lies inside [−δ, δ] (no practical advantage); otherwise **inconclusive**.
- `equivalent` (a ≈ b): **held** if the CI lies inside [−δ, δ]; **not held** if the CI lies entirely outside
  it (lo > δ or hi < −δ); otherwise **inconclusive**.
- `not_worse` (a ≥ b): **held** if lo > −δ; **not held** if hi < −δ; otherwise **inconclusive**.
- Fewer than MIN_UNITS paired units: **inconclusive**.
A claim is **held** when all its sub-claims that could be run are held, **not held** when any is not held, and
**inconclusive** otherwise; a claim whose arms or metrics are absent on a benchmark is **not run** there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

ALPHA = 0.05
MARGIN = 0.05
MIN_UNITS = 6
Relation = Literal["better", "equivalent", "not_worse"]
HELD, NOT_HELD, INCONCLUSIVE, NOT_RUN = "held", "not held", "inconclusive", "not run"

# Metric roles per sample kind (names from the pdmd_eval registry; fd_teacher_prompt is the pipeline's
# per-prompt Fréchet distance to the teacher in the same feature space as pdmd_eval's fd_teacher).
DIVERSITY = {"points": "pairwise_distance", "image": "featnet_similarity", "video": "featnet_similarity"}
MOTION = {"video": "flow_mag"}
FIDELITY = {"points": "fd_teacher_prompt", "image": "fd_teacher_prompt", "video": "fd_teacher_prompt"}
TEACHER = "teacher_40"
MAIN = "phased_k2_sgts"


@dataclass(frozen=True)
class Comparison:
    role: str          # diversity | motion | fidelity
    a: str
    b: str
    relation: Relation


@dataclass(frozen=True)
class Claim:
    key: str
    title: str
    paper: str
    comparisons: tuple[Comparison, ...]


CLAIMS: tuple[Claim, ...] = (
    Claim("diversity", "Diversity: Phased > SGTS ≈ vanilla 4-step DMD",
          "Table 3: DINOv3 0.782 (Phased) vs 0.826 (DMD2/SGTS) vs 0.825 (vanilla), Wan2.1",
          (Comparison("diversity", MAIN, "sgts", "better"),
           Comparison("diversity", "sgts", "dmd_full", "equivalent"))),
    Claim("motion", "Motion: Phased ≈ teacher > SGTS",
          "Table 2: optical flow 9.30 (Phased) vs 10.26 (base) vs 3.23 (DMD2), Wan2.2 T2V",
          (Comparison("motion", MAIN, TEACHER, "equivalent"),
           Comparison("motion", MAIN, "sgts", "better"))),
    Claim("fidelity", "Fidelity to the teacher: Phased closer than SGTS",
          "Table 2: FID to base 47.24 (Phased) vs 55.70 (DMD2), Wan2.2 T2V",
          (Comparison("fidelity", MAIN, "sgts", "better"),)),
    Claim("phases", "4 phases ≥ 2 phases + SGTS",
          "Table 6: OF 9.43 vs 9.30, FID 45.40 vs 47.24, FVD 578 vs 701",
          (Comparison("diversity", "phased_k4", MAIN, "not_worse"),
           Comparison("motion", "phased_k4", MAIN, "not_worse"),
           Comparison("fidelity", "phased_k4", MAIN, "not_worse"))),
    Claim("intervals", "Reverse-nested re-noise intervals > disjoint",
          "App. C.2 (qualitative): disjoint intervals give low contrast and off colours",
          (Comparison("fidelity", "phased_k4", "phased_k4_disjoint", "better"),)),
    Claim("unbiased", "Unbiased subinterval target > naive ε − x_s",
          "§2.2 / App. A: the naive target violates assumption A2 (suggested ablation)",
          (Comparison("fidelity", "phased_k4", "phased_k4_naive", "better"),)),
    Claim("noise_level", "DMD needs high-noise re-noising: t = 0.882 > t = 0.357",
          "Fig. 11: vanilla DMD with t fixed at 0.357 fails to converge, at 0.882 it works",
          (Comparison("fidelity", "dmd_t0882", "dmd_t0357", "better"),)),
    Claim("one_step", "SGTS diversity ≈ one-step DMD",
          "§2.1.3: SGTS 'collapses to one-step distillation' (claimed, never measured in the paper)",
          (Comparison("diversity", "sgts", "dmd", "equivalent"),)),
)


def metric_for(role: str, kind: str) -> str | None:
    table = {"diversity": DIVERSITY, "motion": MOTION, "fidelity": FIDELITY}[role]
    return table.get(kind)


@dataclass(frozen=True)
class Outcome:
    claim: str
    role: str
    metric: str
    a: str
    b: str
    relation: str
    n: int
    mean_a: float
    mean_b: float
    diff: float          # oriented: > 0 means a is better
    low: float
    high: float
    margin: float
    p_value: float
    verdict: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def verdict(relation: Relation, low: float, high: float, p_value: float, margin: float, n: int) -> str:
    """The pre-registered rule (module docstring) for one oriented difference CI."""
    if n < MIN_UNITS or not (np.isfinite(low) and np.isfinite(high)):
        return INCONCLUSIVE
    significant = np.isfinite(p_value) and p_value < ALPHA
    inside = -margin <= low and high <= margin
    if relation == "better":
        if low > 0 and significant:
            return HELD
        if (high < 0 and significant) or inside:
            return NOT_HELD
        return INCONCLUSIVE
    if relation == "equivalent":
        if inside:
            return HELD
        if low > margin or high < -margin:
            return NOT_HELD
        return INCONCLUSIVE
    if relation == "not_worse":
        if low > -margin:
            return HELD
        if high < -margin:
            return NOT_HELD
        return INCONCLUSIVE
    raise ValueError(f"relation {relation!r} is not one of better, equivalent, not_worse")


def compare(claim: str, comp: Comparison, metric: str, direction: str, a: Sequence[float],
            b: Sequence[float], confidence: float = 0.95) -> Outcome:
    """Apply the rule to paired per-unit values of arms a and b on `metric` (direction '↑' or '↓')."""
    from pdmd_eval.stats import paired_comparison

    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    up = direction in ("↑", "up")
    better_a, better_b = (xa, xb) if up else (xb, xa)
    res = paired_comparison(better_a, better_b, confidence)
    margin = MARGIN * abs(float(xb.mean()))
    return Outcome(claim, comp.role, metric, comp.a, comp.b, comp.relation, res.n, float(xa.mean()),
                   float(xb.mean()), res.mean_diff, res.diff_low, res.diff_high, margin, res.wilcoxon_p,
                   verdict(comp.relation, res.diff_low, res.diff_high, res.wilcoxon_p, margin, res.n))


def combine(verdicts: Sequence[str]) -> str:
    run = [v for v in verdicts if v != NOT_RUN]
    if not run:
        return NOT_RUN
    if any(v == NOT_HELD for v in run):
        return NOT_HELD
    if all(v == HELD for v in run):
        return HELD
    return INCONCLUSIVE
