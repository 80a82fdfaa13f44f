"""An eval report as a Markdown table (stdout), and as one self-contained HTML page with
plots (matplotlib, embedded as PNG): reward histograms of chosen vs rejected (or best vs
the rest), the margin distribution, and reward against response length."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["html_report", "markdown_table"]


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _acc(entry: Mapping[str, Any], key: str = "accuracy") -> str:
    n_key = "pairs" if "pairs" in entry else "sets"
    return f"{_fmt(entry[key])} ({entry[n_key]})"


def _table(report: Mapping[str, Any]) -> tuple[str, list[str], list[list[str]]]:
    """A title line, the header and one row per signal (the reward first, then each
    component)."""
    signals: Mapping[str, Any] = report["signals"]
    subsets = list(next(iter(signals.values()))["subsets"])
    title = (
        f"pipeline `{report['pipeline']}` ({report['pipeline_version']}), {report['source']}: "
        f"{report['examples']} {'pairs' if report['format'] == 'pairs' else 'best-of-N sets'} "
        f"from {report['input']}, {report['item_errors']} item errors, "
        f"{len(report['bad_lines'])} bad lines skipped"
    )
    if report["format"] == "pairs":
        head = ["signal", "accuracy (pairs)", *subsets, "mean margin", "length corr",
                "chosen shorter", "chosen longer"]  # fmt: skip
        rows = [
            [name, _acc(m), *[_acc(m["subsets"][s]) for s in subsets],
             _fmt(m["margin"].get("mean")), _fmt(m["length"]["correlation"]),
             _acc(m["length"]["chosen_shorter"]), _acc(m["length"]["chosen_longer"])]
            for name, m in signals.items()
        ]  # fmt: skip
    else:
        head = ["signal", "top-1 (sets)", *subsets, "random top-1", "spearman", "length corr"]
        rows = [
            [name, _acc(m, "top1_accuracy"),
             *[_acc(m["subsets"][s], "top1_accuracy") for s in subsets],
             _fmt(m["random_top1"]), _fmt((m["spearman"] or {}).get("mean")),
             _fmt(m["length"]["correlation"])]
            for name, m in signals.items()
        ]  # fmt: skip
    return title, head, rows


def markdown_table(report: Mapping[str, Any]) -> str:
    title, head, rows = _table(report)
    lines = [title, "", "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(report: Mapping[str, Any]) -> str:
    title, head, rows = _table(report)
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    head_row = f"<thead><tr>{cells}</tr></thead>"
    return f"<p>{html.escape(title)}</p><table>{head_row}<tbody>{body}</tbody></table>"


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _values(rows: list[dict[str, Any]], key: str, signal: str) -> list[tuple[float, int]]:
    """(value, length) of one response per row (``key``: chosen/rejected)."""
    out = []
    for row in rows:
        cell = row[key]
        value = cell["reward"] if signal == "reward" else (cell["components"] or {}).get(signal)
        if value is not None and cell["error"] is None:
            out.append((float(value), int(cell["length"])))
    return out


def _bon_values(rows: list[dict[str, Any]], signal: str, best: bool) -> list[tuple[float, int]]:
    out = []
    for row in rows:
        top = max(row["labels"])
        for label, cell in zip(row["labels"], row["responses"], strict=True):
            value = cell["reward"] if signal == "reward" else (cell["components"] or {}).get(signal)
            if value is not None and cell["error"] is None and (label == top) == best:
                out.append((float(value), int(cell["length"])))
    return out


def _signal_figure(report: Mapping[str, Any], signal: str) -> Figure:
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    rows = report["rows"]
    pairs = report["format"] == "pairs"
    if pairs:
        good, bad = _values(rows, "chosen", signal), _values(rows, "rejected", signal)
        names = ("chosen", "rejected")
    else:
        good, bad = _bon_values(rows, signal, True), _bon_values(rows, signal, False)
        names = ("best-labelled", "others")
    figure = Figure(figsize=(12, 3.2))
    hist, middle, scatter = figure.subplots(1, 3)
    hist.hist([[v for v, _ in good], [v for v, _ in bad]], bins=20, label=list(names),
              color=["#2a9d8f", "#e76f51"])  # fmt: skip
    hist.set_title(f"{signal}: reward")
    hist.legend()
    if pairs:
        margins = []
        for row in rows:
            c, r = _values([row], "chosen", signal), _values([row], "rejected", signal)
            if c and r:
                margins.append(c[0][0] - r[0][0])
        middle.hist(margins, bins=20, color="#264653")
        middle.axvline(0.0, color="black", linewidth=0.8)
        middle.set_title(f"{signal}: margin (chosen - rejected)")
    else:
        tops = [m for m in (report["signals"][signal]["subsets"] or {}).items()]
        middle.bar([name for name, _ in tops], [m["top1_accuracy"] or 0.0 for _, m in tops],
                   color="#264653")  # fmt: skip
        middle.set_ylim(0, 1)
        middle.set_title(f"{signal}: top-1 accuracy per subset")
    for points, name, color in ((good, names[0], "#2a9d8f"), (bad, names[1], "#e76f51")):
        scatter.scatter([n for _, n in points], [v for v, _ in points], s=12, label=name,
                        color=color, alpha=0.7)  # fmt: skip
    scatter.set_xlabel("response length (characters)")
    scatter.set_title(f"{signal}: reward vs length")
    scatter.legend()
    return figure


def html_report(report: Mapping[str, Any]) -> str:
    """One HTML file with no outside references: the table, plots per signal, bad lines."""
    table = _html_table(report)
    plots = "\n".join(
        f'<h2>{html.escape(signal)}</h2>\n<img alt="{html.escape(signal)} plots" '
        f'src="data:image/png;base64,{_png(_signal_figure(report, signal))}">'
        for signal in report["signals"]
    )
    bad = "".join(
        f"<li>line {b['line']}: {html.escape(b['message'])}</li>" for b in report["bad_lines"]
    )
    # raw text inside <script> (entities are not decoded there): no "<" at all, as \u003c
    summary = json.dumps({k: v for k, v in report.items() if k != "rows"})
    data = summary.replace("<", "\\u003c")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Referee eval: {html.escape(str(report["pipeline"]))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #1d2d35; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ border: 1px solid #c8d3d9; padding: 0.3rem 0.6rem; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
img {{ max-width: 100%; }}
</style></head>
<body>
<h1>Referee eval: pipeline {html.escape(str(report["pipeline"]))}</h1>
{table}
{f"<h2>Bad lines skipped</h2><ul>{bad}</ul>" if bad else ""}
{plots}
<script type="application/json" id="referee-eval">{data}</script>
</body></html>
"""
