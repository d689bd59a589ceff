import csv

import numpy as np
from eval_helpers import records

from pdmd_eval.figures import (
    convergence_curves,
    diversity_fidelity_scatter,
    motion_bars,
    sample_grid,
    tile,
    video_strip,
    write_gif,
)
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


def test_sample_grid_fits_one_screen_with_arms_as_columns(tmp_path):
    """11 arms × 10 prompts × 16 seeds of 8×8 digits: 4 prompt rows, one column per arm, well inside 1920×1080."""
    from PIL import Image

    rng = np.random.default_rng(1)
    arms = {f"arm_{i:02d}_long_name": SampleSet(rng.random((160, 1, 8, 8)).astype(np.float32),
                                                records(range(10), range(16), f"a{i}"), "image") for i in range(11)}
    img = Image.open(sample_grid(arms, tmp_path / "grid.png"))
    assert img.size[0] <= 1920 and img.size[1] <= 1080
    assert img.size[0] > 2 * img.size[1]  # wide: arms across, a few prompts down


def test_tile_lays_out_row_major_with_gaps():
    x = np.stack([np.full((1, 2, 2), v, dtype=np.float32) for v in (0.0, 0.25, 0.5)])
    out = tile(x, 2, 2)
    assert out.shape == (1, 5, 5)
    assert out[0, 0, 0] == 0.0 and out[0, 0, 3] == 0.25 and out[0, 3, 0] == 0.5 and out[0, 4, 4] == 1.0
    assert (out[0, 2, :] == 1.0).all()  # the white gap row


def test_motion_bars_are_horizontal_with_one_label_per_bar(tmp_path, monkeypatch):
    """Long arm names on the y axis, one per bar: their text boxes do not overlap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    captured = {}
    real_savefig = matplotlib.figure.Figure.savefig

    def keep(fig, *args, **kwargs):
        fig.canvas.draw()
        ax = fig.axes[0]
        captured["boxes"] = [t.get_window_extent() for t in ax.get_yticklabels()]
        return real_savefig(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    names = ["teacher_4", "teacher_40", "dmd", "dmd_full", "sgts", "phased_k2_sgts", "phased_k4"]
    bars = {n: _res("flow_mag", UP, 0.3 + 0.02 * i, 0.28 + 0.02 * i, 0.32 + 0.02 * i) for i, n in enumerate(names)}
    motion_bars(bars, tmp_path / "motion.png", teacher="teacher_40")
    boxes = captured["boxes"]
    assert len(boxes) == len(names)
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close("all")


def test_convergence_curves_written(tmp_path):
    panels = {"diversity: x ↓": {"dmd": {32: 0.9, 120: 0.95, 480: 0.96}, "sgts": {32: 0.8, 120: 0.85, 480: 0.86}},
              "fidelity: fd ↓": {"dmd": {32: 3.0, 120: 2.0, 480: 1.9}}}
    refs = {"diversity: x ↓": {"teacher_40": 0.9, "teacher_4": 0.95}}
    path = convergence_curves(panels, tmp_path / "conv.png", refs, default=120, title="t")
    assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"
