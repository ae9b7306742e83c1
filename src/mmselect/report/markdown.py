"""A short Markdown report of a selection: counts, composition by task before and after, scores."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .gather import reason_group

REPORT_FILE = "report.md"


def _quantiles(values: np.ndarray) -> str:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return "no finite scores"
    qs = np.quantile(finite, [0, 0.25, 0.5, 0.75, 1.0])
    return " / ".join(f"{q:.4g}" for q in qs)


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
        lines += ["", "## Method diagnostics", "", "```"]
        for key, value in info.items():
            text = str(value)
            lines.append(f"{key}: {text[:500]}{'...' if len(text) > 500 else ''}")
        lines.append("```")
    path = out_dir / REPORT_FILE
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
