"""A short Markdown report of a selection: counts, composition by task before and after, scores."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .summaries import reason_group

REPORT_FILE = "report.md"


def _quantiles(values: np.ndarray) -> str:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return "no finite scores"
    qs = np.quantile(finite, [0, 0.25, 0.5, 0.75, 1.0])
    return " / ".join(f"{q:.4g}" for q in qs)


MARKDOWN_ROWS = 30


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value) if _is_scalar(value) else json.dumps(value, default=str)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 120 else text[:119] + "…"


def _markdown_value(value: Any) -> list[str]:
    """A table for a list of dicts / dict of dicts / dict of scalars; a summary for long lists."""
    if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
        value = [{"": k, **v} for k, v in value.items()]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        columns = list(dict.fromkeys(c for v in value for c in v))
        rows = [f"| {' | '.join(c or ' ' for c in columns)} |", "|" + "---|" * len(columns)]
        rows += [f"| {' | '.join(_cell(v.get(c, '')) for c in columns)} |" for v in value[:MARKDOWN_ROWS]]
        if len(value) > MARKDOWN_ROWS:
            rows.append(f"\n… {len(value) - MARKDOWN_ROWS} more rows")
        return rows
    if isinstance(value, dict) and value and all(_is_scalar(v) for v in value.values()):
        return ["| | |", "|---|---|"] + [f"| {k} | {_cell(v)} |" for k, v in value.items()]
    if isinstance(value, dict) and value:
        scalars = {k: v for k, v in value.items() if _is_scalar(v)}
        lines = ["| | |", "|---|---|"] + [f"| {k} | {_cell(v)} |" for k, v in scalars.items()] if scalars else []
        for key, nested in value.items():
            if key not in scalars:
                lines += ["", f"*{key}*", ""] + _markdown_value(nested)
        return lines
    if isinstance(value, list) and len(value) > 20 and all(isinstance(v, (int, float)) for v in value):
        finite = np.asarray(value, dtype=np.float64)
        return [f"{len(value):,} values: min {np.nanmin(finite):.4g}, median {np.nanmedian(finite):.4g}, max {np.nanmax(finite):.4g}"]
    return [_cell(value) if value not in ([], {}) else "none"]


def write_report(
    out_dir: Path,
    *,
    method: str,
    params: dict[str, Any],
    budget: str,
    counts: dict[str, int],
    tasks: np.ndarray,
    selected: np.ndarray,
    scores: np.ndarray,
    rejected: list[dict[str, Any]],
    info: dict[str, Any],
    model: str | None = None,
) -> Path:
    lines = [f"# Selection report: `{method}`", ""]
    if model and model.startswith("tiny-"):
        lines += [f"> Features come from `{model}`, a randomly initialised test model: this selection carries no meaning.", ""]
    lines += ["| | count |", "|---|---:|"]
    lines += [f"| {name.replace('_', ' ')} | {value:,} |" for name, value in counts.items()]
    lines += ["", f"Budget: `{budget}`. Parameters: `{params}`.", ""]
    before = Counter(str(t) for t in tasks)
    after = Counter(str(t) for t, s in zip(tasks, selected) if s)
    lines += ["## Composition by task", "", "| task | candidates | selected | rate |", "|---|---:|---:|---:|"]
    for task in sorted(before):
        rate = after[task] / before[task] if before[task] else 0.0
        lines.append(f"| {task} | {before[task]:,} | {after[task]:,} | {rate:.1%} |")
    lines += ["", "## Scores", "", "min / q25 / median / q75 / max", ""]
    lines.append(f"- all samples: {_quantiles(scores)}")
    lines.append(f"- selected: {_quantiles(scores[selected])}")
    if (~selected).any():
        lines.append(f"- not selected: {_quantiles(scores[~selected])}")
    if rejected:
        reasons = Counter(reason_group(r.get("reason", "")) for r in rejected)
        lines += ["", "## Rejected records", "", "| reason | count |", "|---|---:|"]
        lines += [f"| {reason} | {count} |" for reason, count in reasons.most_common()]
        lines += ["", "Every rejected record is listed with its key and full reason in `rejected.jsonl`."]
    if info:
        lines += ["", "## Method diagnostics", ""]
        scalars = {k: v for k, v in info.items() if _is_scalar(v)}
        if scalars:
            lines += ["| | |", "|---|---|"] + [f"| {k} | {_cell(v)} |" for k, v in scalars.items()] + [""]
        for key, value in info.items():
            if key not in scalars:
                lines += [f"**{key}**", ""] + _markdown_value(value) + [""]
        lines.append("All of it is in `manifest.json` (`method_info`); `report.html` shows it as tables.")
    path = out_dir / REPORT_FILE
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
