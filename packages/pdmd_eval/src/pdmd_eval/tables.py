"""Result tables: Markdown, CSV and LaTeX (booktabs).

A row is one arm (method / checkpoint): ``Row(label, results)`` with ``results`` a ``{metric: MetricResult}``
dict from :func:`pdmd_eval.evaluate.evaluate`. Display cells read ``mean ± h`` with ``h = (high - low) / 2``,
the half-width of the bootstrap CI (intervals can be slightly asymmetric; the CSV keeps ``low`` and ``high``).
Set-level metrics (no CI) show the value alone. Headers carry the direction: ``name ↑`` / ``name ↓``.
The LaTeX table bolds the best mean per column.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pdmd_eval.registry import DOWN, MetricResult


@dataclass(frozen=True)
class Row:
    label: str
    results: dict[str, MetricResult]


def metric_columns(rows: Sequence[Row]) -> list[str]:
    """Metric names in first-seen order over the rows."""
    names: list[str] = []
    for row in rows:
        names.extend(n for n in row.results if n not in names)
    return names


def _direction(rows: Sequence[Row], name: str) -> str:
    return next(r.results[name].direction for r in rows if name in r.results)


def format_cell(result: MetricResult | None, digits: int = 3, pm: str = "±") -> str:
    if result is None:
        return "–"
    if math.isnan(result.low) or math.isnan(result.high):
        return f"{result.mean:.{digits}f}"
    return f"{result.mean:.{digits}f} {pm} {(result.high - result.low) / 2:.{digits}f}"


def to_markdown(rows: Sequence[Row], digits: int = 3, label_header: str = "method") -> str:
    names = metric_columns(rows)
    header = [label_header] + [f"{n} {_direction(rows, n)}" for n in names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.label] + [format_cell(row.results.get(n), digits) for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _best(rows: Sequence[Row], name: str) -> float | None:
    means = [r.results[name].mean for r in rows if name in r.results and not math.isnan(r.results[name].mean)]
    if len(means) < 2:
        return None
    return min(means) if _direction(rows, name) == DOWN else max(means)


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#")):
        text = text.replace(a, b)
    return text


def to_latex(rows: Sequence[Row], digits: int = 3, label_header: str = "Method", caption: str = "") -> str:
    names = metric_columns(rows)
    arrows = {"↑": r"$\uparrow$", "↓": r"$\downarrow$"}
    header = [label_header] + [f"{_latex_escape(n)} {arrows[_direction(rows, n)]}" for n in names]
    out = [r"\begin{table}[t]", r"\centering"]
    if caption:
        out.append(rf"\caption{{{_latex_escape(caption)}}}")
    out += [r"\begin{tabular}{l" + "c" * len(names) + "}", r"\toprule", " & ".join(header) + r" \\", r"\midrule"]
    best = {n: _best(rows, n) for n in names}
    for row in rows:
        cells = [_latex_escape(row.label)]
        for n in names:
            res = row.results.get(n)
            if res is None:
                cells.append("--")
                continue
            body = format_cell(res, digits, pm=r"\pm")
            cells.append(rf"$\mathbf{{{body}}}$" if best[n] is not None and res.mean == best[n] else f"${body}$")
        out.append(" & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"


def write_csv(rows: Sequence[Row], path: str | Path, label_header: str = "method") -> Path:
    """One line per arm; per metric the columns ``<name>``, ``<name>_low``, ``<name>_high``, ``<name>_n``."""
    names = metric_columns(rows)
    out = Path(path)
    with open(out, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([label_header] + [f"{n}{s}" for n in names for s in ("", "_low", "_high", "_n")])
        for row in rows:
            line: list[object] = [row.label]
            for n in names:
                res = row.results.get(n)
                line += ["", "", "", ""] if res is None else [res.mean, res.low, res.high, len(res.values)]
            writer.writerow(line)
    return out


def write_tables(
    rows: Sequence[Row], out_dir: str | Path, stem: str, digits: int = 3, caption: str = ""
) -> dict[str, Path]:
    """Write ``<stem>.md``, ``<stem>.csv`` and ``<stem>.tex`` into ``out_dir``; returns the paths by format."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    md = folder / f"{stem}.md"
    md.write_text(to_markdown(rows, digits))
    tex = folder / f"{stem}.tex"
    tex.write_text(to_latex(rows, digits, caption=caption))
    return {"md": md, "csv": write_csv(rows, folder / f"{stem}.csv"), "tex": tex}
