import csv

import numpy as np
from eval_helpers import records

from pdmd_eval.figures import diversity_fidelity_scatter, motion_bars, sample_grid, video_strip, write_gif
from pdmd_eval.registry import DOWN, UP, MetricResult
from pdmd_eval.samples import SampleSet
from pdmd_eval.tables import Row, format_cell, to_latex, to_markdown, write_tables


def _res(name, direction, mean, low, high, unit="prompt"):
    return MetricResult(name, direction, unit, [0, 1], np.array([low, high]), mean, low, high)


def _fd(value):
    return MetricResult.scalar("fd_teacher", DOWN, value)


ROWS = [
    Row("teacher", {"div_dino": _res("div_dino", DOWN, 0.70, 0.68, 0.72), "fd_teacher": _fd(0.0)}),
    Row("dmd2_sgts", {"div_dino": _res("div_dino", DOWN, 0.83, 0.80, 0.86), "fd_teacher": _fd(55.7)}),
    Row("phased", {"div_dino": _res("div_dino", DOWN, 0.78, 0.75, 0.81)}),
]


def test_cells_show_mean_and_ci_half_width():
    assert format_cell(ROWS[0].results["div_dino"]) == "0.700 ± 0.020"
    assert format_cell(ROWS[1].results["fd_teacher"], digits=1) == "55.7"
    assert format_cell(None) == "–"


def test_markdown_has_direction_headers_and_missing_cells():
    md = to_markdown(ROWS)
    lines = md.splitlines()
    assert lines[0] == "| method | div_dino ↓ | fd_teacher ↓ |"
    assert lines[4] == "| phased | 0.780 ± 0.030 | – |"


def test_latex_is_booktabs_with_arrows_and_bold_best():
    tex = to_latex(ROWS, caption="Diversity")
    for token in (r"\toprule", r"\midrule", r"\bottomrule", r"div\_dino $\downarrow$", r"\caption{Diversity}"):
        assert token in tex
    assert r"$\mathbf{0.700 \pm 0.020}$" in tex  # lowest similarity is best
    assert r"$\mathbf{0.000}$" in tex


def test_write_tables_writes_three_formats_with_numeric_csv(tmp_path):
    paths = write_tables(ROWS, tmp_path, "diversity")
    assert {p.name for p in paths.values()} == {"diversity.md", "diversity.csv", "diversity.tex"}
    rows = list(csv.DictReader(open(paths["csv"])))
    assert rows[1]["method"] == "dmd2_sgts" and float(rows[1]["div_dino_low"]) == 0.80
    assert rows[2]["fd_teacher"] == "" and rows[0]["fd_teacher_low"] == "nan"


def test_figures_are_written(tmp_path):
    rng = np.random.default_rng(0)
    arms = {
        name: SampleSet(rng.random((4, 3, 8, 8)).astype(np.float32), records([0, 1], [0, 1], name), "image")
        for name in ("teacher", "phased")
    }
    fid = {k: MetricResult.scalar("fd_teacher", DOWN, v) for k, v in {"teacher": 0.0, "phased": 1.0}.items()}
    div = {k: _res("div_lpips", UP, m, m - 0.01, m + 0.02) for k, m in {"teacher": 0.6, "phased": 0.5}.items()}
    outs = [
        diversity_fidelity_scatter({k: (div[k], fid[k]) for k in div}, tmp_path / "scatter.png"),
        motion_bars({"teacher": _res("flow_mag", UP, 3.0, 2.5, 3.5), "phased": _res("flow_mag", UP, 2.5, 2.0, 3.0)},
                    tmp_path / "motion.png", teacher="teacher"),
        sample_grid(arms, tmp_path / "grid.png"),
        video_strip(rng.random((6, 1, 8, 8)).astype(np.float32), tmp_path / "strip.png"),
    ]
    for path in outs:
        assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"
    gif = write_gif(rng.random((5, 3, 8, 8)).astype(np.float32), tmp_path / "v.gif", scale=2)
    from PIL import Image

    img = Image.open(gif)
    assert img.n_frames == 5 and img.size == (16, 16)
