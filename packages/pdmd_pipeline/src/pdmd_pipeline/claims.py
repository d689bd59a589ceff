"""The paper's claims as paired comparisons, and the verdict rules — fixed before any result was seen.

Claims are data: `Claim`s made of `Comparison(role, a, b, relation)`; `a`/`b` are arm names or teacher references
(`teacher_40`, `teacher_4`); a role (diversity, coverage, motion, fidelity, precision) names metrics per sample kind
through a roles table (`CPU_TIER_ROLES` here; another study passes its own, e.g. DINOv3 similarity for diversity).
The rules are functions: `verdict`, `compare`, `artefact_flag`, `combine`, `evaluate_claims`, `budget_direction`,
`plateau`. The SGTS baseline in every claim is arm `sgts`: DMD2's SGTS with re-noise transport (the clean
prediction plus fresh noise between steps, as DMD2 and the real-scale presets train and sample it); `sgts_euler`
(the same with Euler steps, this tier's baseline until then) is an ablation arm that no claim names.
Rules history: until this version the interval was a bootstrap over (seed, prompt) units treated as independent
(reports/verdicts_before.json keeps the verdicts it gave); the rules below replaced it before any result under
them was seen.

Units and pairing. The unit of replication is the training seed: all prompts of one seed are sampled from one
trained model, so they are not independent. Every comparison is paired on (training seed, prompt): both arms were
trained with the same seeds and sampled on the same prompts and sample seeds; only the seeds both arms ran are
used. Per-sample metrics are averaged within a prompt first; a set-level metric has one unit per seed. A teacher
reference has no training seed (the teacher was trained once and is a fixed reference): its per-prompt value is
paired with each seed's value.

Statistic. `d` = per-unit difference oriented so that d > 0 means `a` is better (a − b for ↑ metrics, b − a for ↓
metrics), averaged over the prompts of each training seed: G seed means. Their mean, the 95 % Student-t interval
[lo, hi] on G − 1 degrees of freedom and the two-sided t-test p-value of the seed means
(`pdmd_eval.stats.clustered_paired_comparison`; for this balanced design it is the test of a mixed model with a
random seed intercept, and p < 0.05 exactly when the interval excludes 0). The exact Wilcoxon signed-rank p-value
of the seed means is reported beside it but not used: it cannot fall below 2/2^G (0.0625 with 5 seeds). The
margin δ = MARGIN × |mean of b| (5 %) separates "practically equal" from "different".

Verdict rules (per sub-claim):
- Fewer than MIN_SEEDS training seeds shared by both arms: **inconclusive**.
- `better` (a > b): **held** if lo > 0 and p < ALPHA; **not held** if hi < 0 and p < ALPHA (b is better), or
  if the whole CI lies inside [−δ, δ] (no practical advantage); otherwise **inconclusive**.
- `equivalent` (a ≈ b): **held** if the CI lies inside [−δ, δ]; **not held** if the CI lies entirely outside
  it (lo > δ or hi < −δ); otherwise **inconclusive**.
- `not_worse` (a ≥ b): **held** if lo > −δ; **not held** if hi < −δ; otherwise **inconclusive**.
- Diversity with artefacts: a held diversity sub-claim of relation `better` or `not_worse` becomes **diversity
  with artefacts** when arm a's precision against the teacher (role `precision`: k-NN precision within prompt) is
  lower than b's by more than δp = MARGIN × |b's mean precision|, judged on the point estimate of the oriented
  difference (< −δp): the flag withholds a win, so it does not wait for the loss to be significant.
- Coverage: every diversity claim has a coverage twin, the same arms and relations on the coverage measures against
  the teacher's samples (role `coverage`: k-NN recall within prompt; on mog2d also modes covered and mode balance),
  each measure a sub-claim with its own verdict under the same rules.
A claim is **not held** when any sub-claim that could be run is not held; otherwise **inconclusive** when any is
inconclusive; otherwise **diversity with artefacts** when any is flagged; otherwise **held**. A claim whose arms or
metrics are absent on a benchmark is **not run** there.

Budget stability. The convergence stage trains the claims' arms with one seed at several multiples of the default
budget; per budget and sub-claim, the direction of the per-prompt mean of d is `a` (d > δ), `b` (d < −δ) or `≈`
(within ±δ). One seed has no run-to-run spread, so these are directions, not verdicts. The default budget sits on
a plateau when, for every arm and claim metric (the metrics of the claims' roles on that benchmark), the values at
the budgets above the default differ from the value at the default by at most PLATEAU_FRACTION of that metric's
range over the arms at the default budget (a change that is small beside the differences the claims are about).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

ALPHA = 0.05
MARGIN = 0.05
MIN_SEEDS = 3
PLATEAU_FRACTION = 0.1
Relation = Literal["better", "equivalent", "not_worse"]
HELD, NOT_HELD, INCONCLUSIVE, NOT_RUN = "held", "not held", "inconclusive", "not run"
ARTEFACTS = "diversity with artefacts"
VERDICTS = (HELD, ARTEFACTS, INCONCLUSIVE, NOT_HELD, NOT_RUN)

# role → sample kind → metric names (pdmd_eval registry; fd_teacher_prompt is the pipeline's per-prompt Fréchet
# distance to the teacher in the same feature space as pdmd_eval's fd_teacher).
Roles = Mapping[str, Mapping[str, tuple[str, ...]]]
_KINDS = ("points", "image", "video")
CPU_TIER_ROLES: Roles = {
    "diversity": {"points": ("pairwise_distance",), "image": ("featnet_similarity",),
                  "video": ("featnet_similarity",)},
    "coverage": {"points": ("recall_teacher_prompt", "modes_covered", "mode_balance"),
                 "image": ("recall_teacher_prompt",), "video": ("recall_teacher_prompt",)},
    "motion": {"video": ("flow_mag",)},
    "fidelity": {k: ("fd_teacher_prompt",) for k in _KINDS},
    "precision": {k: ("precision_teacher_prompt",) for k in _KINDS},
}
DIVERSITY_ROLE, PRECISION_ROLE = "diversity", "precision"
TEACHER = "teacher_40"
MAIN = "phased_k2_sgts"


@dataclass(frozen=True)
class Comparison:
    role: str          # a key of the roles table: diversity | coverage | motion | fidelity
    a: str
    b: str
    relation: Relation


@dataclass(frozen=True)
class Claim:
    key: str
    title: str
    paper: str
    comparisons: tuple[Comparison, ...]
    checks: str | None = None  # the key of the claim whose diversity this coverage twin checks


def coverage_twin(claim: Claim) -> Claim:
    """The same arms and relations on the coverage role (the pre-registered check of a diversity claim)."""
    comps = tuple(Comparison("coverage", c.a, c.b, c.relation) for c in claim.comparisons if c.role == DIVERSITY_ROLE)
    return Claim(f"{claim.key}_coverage", f"Coverage of the teacher, beside “{claim.title}”",
                 "not in the paper: our coverage check of the diversity claim (k-NN recall of the teacher's samples "
                 "within prompt; on mog2d also modes covered and mode balance)", comps, checks=claim.key)


_DIVERSITY = Claim("diversity", "Diversity: Phased > SGTS ≈ vanilla 4-step DMD",
                   "Table 3: DINOv3 0.782 (Phased) vs 0.826 (DMD2/SGTS) vs 0.825 (vanilla), Wan2.1",
                   (Comparison("diversity", MAIN, "sgts", "better"),
                    Comparison("diversity", "sgts", "dmd_full", "equivalent")))
_PHASES = Claim("phases", "4 phases ≥ 2 phases + SGTS",
                "Table 6: OF 9.43 vs 9.30, FID 45.40 vs 47.24, FVD 578 vs 701",
                (Comparison("diversity", "phased_k4", MAIN, "not_worse"),
                 Comparison("motion", "phased_k4", MAIN, "not_worse"),
                 Comparison("fidelity", "phased_k4", MAIN, "not_worse")))
_ONE_STEP = Claim("one_step", "SGTS diversity ≈ one-step DMD",
                  "§2.1.3: SGTS 'collapses to one-step distillation' (claimed, never measured in the paper)",
                  (Comparison("diversity", "sgts", "dmd", "equivalent"),))

CLAIMS: tuple[Claim, ...] = (
    _DIVERSITY,
    coverage_twin(_DIVERSITY),
    Claim("motion", "Motion: Phased ≈ teacher > SGTS",
          "Table 2: optical flow 9.30 (Phased) vs 10.26 (base) vs 3.23 (DMD2), Wan2.2 T2V",
          (Comparison("motion", MAIN, TEACHER, "equivalent"),
           Comparison("motion", MAIN, "sgts", "better"))),
    Claim("fidelity", "Fidelity to the teacher: Phased closer than SGTS",
          "Table 2: FID to base 47.24 (Phased) vs 55.70 (DMD2), Wan2.2 T2V",
          (Comparison("fidelity", MAIN, "sgts", "better"),)),
    _PHASES,
    coverage_twin(_PHASES),
    Claim("intervals", "Reverse-nested re-noise intervals > disjoint",
          "App. C.2 (qualitative): disjoint intervals give low contrast and off colours",
          (Comparison("fidelity", "phased_k4", "phased_k4_disjoint", "better"),)),
    Claim("unbiased", "Unbiased subinterval target > naive ε − x_s",
          "§2.2 / App. A: the naive target violates assumption A2 (suggested ablation)",
          (Comparison("fidelity", "phased_k4", "phased_k4_naive", "better"),)),
    Claim("noise_level", "DMD needs high-noise re-noising: t = 0.882 > t = 0.357",
          "Fig. 11: vanilla DMD with t fixed at 0.357 fails to converge, at 0.882 it works",
          (Comparison("fidelity", "dmd_t0882", "dmd_t0357", "better"),)),
    _ONE_STEP,
    coverage_twin(_ONE_STEP),
)


def metrics_for(role: str, kind: str, roles: Roles = CPU_TIER_ROLES) -> tuple[str, ...]:
    """The metrics that play `role` for samples of `kind` (empty when the role is not measured there)."""
    if role not in roles:
        raise KeyError(f"role {role!r} is not in the roles table; roles: {sorted(roles)}")
    return tuple(roles[role].get(kind, ()))


def claim_metrics(kind: str, claims: Sequence[Claim] = CLAIMS, roles: Roles = CPU_TIER_ROLES) -> list[str]:
    """Every metric the claims read on `kind` (incl. the artefact check's precision), in first-use order."""
    names: list[str] = []
    for claim in claims:
        for comp in claim.comparisons:
            names += [m for m in metrics_for(comp.role, kind, roles) if m not in names]
    names += [m for m in (metrics_for(PRECISION_ROLE, kind, roles) if PRECISION_ROLE in roles else ())
              if m not in names]
    return names


@dataclass(frozen=True)
class Outcome:
    claim: str
    role: str
    metric: str
    a: str
    b: str
    relation: str
    n: int               # training seeds shared by both arms
    units: int           # (seed, prompt) units
    mean_a: float
    mean_b: float
    diff: float          # oriented: > 0 means a is better
    low: float
    high: float
    margin: float
    p_value: float       # t-test of the seed means
    wilcoxon_p: float    # Wilcoxon signed-rank of the seed means (reported, not used)
    verdict: str
    precision_check: dict[str, Any] | None = None  # the artefact check of a diversity win (artefact_flag)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verdict(relation: Relation, low: float, high: float, p_value: float, margin: float, n: int) -> str:
    """The pre-registered rule (module docstring) for one oriented difference CI from `n` training seeds."""
    if n < MIN_SEEDS or not (np.isfinite(low) and np.isfinite(high)):
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


def _is_up(direction: str) -> bool:
    if direction not in ("↑", "up", "↓", "down"):
        raise ValueError(f"direction {direction!r} must be ↑/up or ↓/down")
    return direction in ("↑", "up")


def compare(claim: str, comp: Comparison, metric: str, direction: str, a: Sequence[Sequence[float]],
            b: Sequence[Sequence[float]], confidence: float = 0.95) -> Outcome:
    """Apply the rule to paired values of arms a and b on `metric` (direction '↑' or '↓'): one row per shared
    training seed, one value per prompt (rows may differ in length; a and b pair element by element)."""
    from pdmd_eval.stats import clustered_paired_comparison

    up = _is_up(direction)
    res = clustered_paired_comparison(a, b, confidence) if up else clustered_paired_comparison(b, a, confidence)
    mean_a, mean_b = (res.mean_a, res.mean_b) if up else (res.mean_b, res.mean_a)
    margin = MARGIN * abs(mean_b)
    return Outcome(claim, comp.role, metric, comp.a, comp.b, comp.relation, res.n_clusters, res.n_units, mean_a,
                   mean_b, res.mean_diff, res.diff_low, res.diff_high, margin, res.ttest_p, res.wilcoxon_p,
                   verdict(comp.relation, res.diff_low, res.diff_high, res.ttest_p, margin, res.n_clusters))


def artefact_flag(precision: Outcome) -> bool:
    """The pre-registered flag: a's precision against the teacher is lower than b's by more than the margin
    (point estimate of the oriented difference)."""
    return bool(math.isfinite(precision.diff) and precision.diff < -precision.margin)


def with_artefact_check(outcome: Outcome, precision: Outcome | None) -> Outcome:
    """A diversity outcome with its precision check attached; a held win that fails it becomes ARTEFACTS."""
    if precision is None or outcome.role != DIVERSITY_ROLE or outcome.relation == "equivalent":
        return outcome
    flagged = artefact_flag(precision)
    check = {k: getattr(precision, k) for k in ("metric", "n", "mean_a", "mean_b", "diff", "low", "high", "margin",
                                                 "p_value")} | {"flagged": flagged}
    new = ARTEFACTS if outcome.verdict == HELD and flagged else outcome.verdict
    return Outcome(**{**asdict(outcome), "verdict": new, "precision_check": check})


def combine(verdicts: Sequence[str]) -> str:
    run = [v for v in verdicts if v != NOT_RUN]
    if not run:
        return NOT_RUN
    for v in (NOT_HELD, INCONCLUSIVE, ARTEFACTS):
        if v in run:
            return v
    return HELD


# ------------------------------------------------------------------------------------------------ pairing
UnitKey = tuple[int, Hashable]
ArmValues = Mapping[str, Mapping[UnitKey, float]]   # arm → {(training seed or -1, prompt or 'all'): value}


def paired_by_seed(values: ArmValues, a: str, b: str) -> tuple[list[int], list[list[float]], list[list[float]]]:
    """(seeds, rows of a, rows of b): per training seed both arms share, their values on the prompts both have. A
    teacher reference (seed −1) pairs with every seed of the other arm."""
    va, vb = values[a], values[b]
    train_a, train_b = {s for s, _ in va} - {-1}, {s for s, _ in vb} - {-1}
    shared = sorted(train_a & train_b if train_a and train_b else train_a | train_b)

    def lookup(v: Mapping[UnitKey, float], seed: int, prompt: Hashable) -> float | None:
        return v.get((seed, prompt), v.get((-1, prompt)))

    out_seeds, rows_a, rows_b = [], [], []
    for seed in shared:
        prompts = sorted({p for s, p in va if s in (seed, -1)} | {p for s, p in vb if s in (seed, -1)}, key=str)
        pairs = [(lookup(va, seed, p), lookup(vb, seed, p)) for p in prompts]
        kept = [(x, y) for x, y in pairs if x is not None and y is not None]
        if kept:
            out_seeds.append(seed)
            rows_a.append([x for x, _ in kept])
            rows_b.append([y for _, y in kept])
    return out_seeds, rows_a, rows_b


def _not_run(comp: Comparison, metric: str | None, n: int | None = None, verdict_: str = NOT_RUN) -> dict[str, Any]:
    row: dict[str, Any] = {"role": comp.role, "metric": metric, "a": comp.a, "b": comp.b, "relation": comp.relation,
                           "verdict": verdict_}
    if n is not None:
        row["n"] = n
    return row


def evaluate_claims(values: Mapping[str, ArmValues], directions: Mapping[str, str], kind: str, confidence: float,
                    claims: Sequence[Claim] = CLAIMS, roles: Roles = CPU_TIER_ROLES) -> list[dict[str, Any]]:
    """Every claim on one benchmark: values = metric → arm → {(seed, prompt): value}, directions = metric → ↑/↓.
    One outcome per comparison and metric of its role; a comparison whose metric or arms are absent is not run."""

    def outcome(claim: Claim, comp: Comparison, metric: str) -> dict[str, Any] | Outcome:
        per_arm = values.get(metric, {})
        if comp.a not in per_arm or comp.b not in per_arm:
            return _not_run(comp, metric)
        seeds, xa, xb = paired_by_seed(per_arm, comp.a, comp.b)
        if len(seeds) < 2:
            return _not_run(comp, metric, len(seeds), INCONCLUSIVE)
        return compare(claim.key, comp, metric, directions[metric], xa, xb, confidence)

    rows = []
    for claim in claims:
        outcomes: list[dict[str, Any]] = []
        for comp in claim.comparisons:
            metrics = metrics_for(comp.role, kind, roles)
            if not metrics:
                outcomes.append(_not_run(comp, None))
                continue
            for metric in metrics:
                res = outcome(claim, comp, metric)
                if isinstance(res, Outcome) and comp.role == DIVERSITY_ROLE and PRECISION_ROLE in roles:
                    checks = [outcome(claim, Comparison(PRECISION_ROLE, comp.a, comp.b, comp.relation), m)
                              for m in metrics_for(PRECISION_ROLE, kind, roles)]
                    precision = next((c for c in checks if isinstance(c, Outcome)), None)
                    res = with_artefact_check(res, precision)
                outcomes.append(res.as_dict() if isinstance(res, Outcome) else res)
        rows.append({"claim": claim.key, "title": claim.title, "paper": claim.paper, "checks": claim.checks,
                     "verdict": combine([o["verdict"] for o in outcomes]), "comparisons": outcomes})
    return rows


# ------------------------------------------------------------------------------------------------ budgets
def budget_direction(diff: float, margin: float) -> str:
    """Direction of one seed's oriented mean difference at one budget: 'a', 'b' or '≈' (within ±margin)."""
    if not math.isfinite(diff):
        return "–"
    if diff > margin:
        return "a"
    if diff < -margin:
        return "b"
    return "≈"


def plateau(curves: Mapping[str, Mapping[int, float]], default: int) -> tuple[bool, dict[str, float]]:
    """Whether the default budget is on a plateau for one metric: curves = arm → {budget: value}. Returns the
    verdict and, per arm, the largest change above the default as a fraction of the metric's range over the arms
    at the default budget (nan when an arm lacks the default budget)."""
    at_default = [c[default] for c in curves.values() if default in c and math.isfinite(c[default])]
    spread = (max(at_default) - min(at_default)) if len(at_default) > 1 else 0.0
    changes: dict[str, float] = {}
    for arm, curve in curves.items():
        later = [v for b, v in curve.items() if b > default and math.isfinite(v)]
        if default not in curve or not later:
            changes[arm] = float("nan")
            continue
        change = max(abs(v - curve[default]) for v in later)
        changes[arm] = change / spread if spread > 0 else (0.0 if change == 0 else float("inf"))
    known = [c for c in changes.values() if not math.isnan(c)]
    return bool(known) and all(c <= PLATEAU_FRACTION for c in known), changes
