"""``mmselect compare``: how several selections' subsets differ (overlap, composition, unique picks, rank agreement)."""

from __future__ import annotations

import os
from html import escape
from pathlib import Path

import numpy as np
from scipy import stats

from . import charts
from .page import cards, figure, page, table
from .record_cards import selection_cards
from .sources import Output, Records, ReportError, find_records, load_output

HTML_FILE = "compare.html"
MD_FILE = "compare.md"
UNIQUE_CARDS = 6


def jaccard_matrix(selections: list[set[str]]) -> np.ndarray:
    """|A ∩ B| / |A ∪ B| for every pair of selected-key sets (1 on the diagonal, also for two empty sets)."""
    n = len(selections)
    matrix = np.ones((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            union = len(selections[i] | selections[j])
            value = len(selections[i] & selections[j]) / union if union else 1.0
            matrix[i, j] = matrix[j, i] = value
    return matrix


def rank_agreement(outputs: list[Output]) -> tuple[np.ndarray, np.ndarray]:
    """Spearman correlation of the scores on the keys each pair shares (NaN scores left out), and the number of keys used."""
    n = len(outputs)
    rho, used = np.eye(n), np.zeros((n, n), dtype=int)
    score_maps = [dict(zip(o.columns["key"].tolist(), o.scores.tolist())) for o in outputs]
    for i in range(n):
        used[i, i] = int(np.isfinite(outputs[i].scores).sum())
        for j in range(i + 1, n):
            common = sorted(set(score_maps[i]) & set(score_maps[j]))
            a = np.array([score_maps[i][k] for k in common], dtype=np.float64)
            b = np.array([score_maps[j][k] for k in common], dtype=np.float64)
            finite = np.isfinite(a) & np.isfinite(b)
            used[i, j] = used[j, i] = int(finite.sum())
            if finite.sum() < 3 or np.ptp(a[finite]) == 0 or np.ptp(b[finite]) == 0:
                value = np.nan
            else:
                value = float(stats.spearmanr(a[finite], b[finite]).statistic)
            rho[i, j] = rho[j, i] = value
    return rho, used


def _labels(outputs: list[Output]) -> list[str]:
    labels = [o.label for o in outputs]
    if len(set(labels)) < len(labels):
        labels = [f"{label} ({o.path.name})" for label, o in zip(labels, outputs)]
    if len(set(labels)) < len(labels):
        labels = [f"{label} #{i + 1}" for i, label in enumerate(labels)]
    return labels


def _task_table(outputs: list[Output]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Tasks (by number of usable records in the first output), usable and selected counts per output."""
    tasks = list(dict.fromkeys(t for o in outputs for t in o.task_names))
    usable = np.zeros((len(tasks), len(outputs)), dtype=int)
    chosen = np.zeros_like(usable)
    index = {t: i for i, t in enumerate(tasks)}
    for j, o in enumerate(outputs):
        rows = np.array([index[t] for t in o.task_names], dtype=np.int64)
        usable[:, j] = np.bincount(rows[o.task_codes], minlength=len(tasks))
        chosen[:, j] = np.bincount(rows[o.task_codes[o.selected]], minlength=len(tasks))
    order = np.argsort(-usable.max(axis=1), kind="stable")
    return [tasks[i] for i in order], usable[order], chosen[order]


def compare(outs: list[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Write ``out/compare.html`` and ``out/compare.md`` comparing the selections in ``outs``."""
    if len(outs) < 2:
        raise ReportError("compare needs at least two output directories")
    outputs = [load_output(o) for o in outs]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = _labels(outputs)
    selections = [set(o.columns["key"][o.selected].tolist()) for o in outputs]
    overlap = jaccard_matrix(selections)
    rho, used = rank_agreement(outputs)
    tasks, usable, chosen = _task_table(outputs)
    unique = [selections[i] - set().union(*(s for j, s in enumerate(selections) if j != i)) for i in range(len(outputs))]
    kept_by_all = set.intersection(*selections)

    body = ['<div class="stats">']
    for label, o, sel in zip(labels, outputs, selections):
        body.append(f'<div class="stat"><div class="v" data-selected="{escape(label)}" data-value="{len(sel)}">{len(sel):,}</div>'
                    f'<div class="k">selected by {escape(label)} of {o.n:,}</div></div>')
    body.append(f'<div class="stat"><div class="v" data-count="kept_by_all" data-value="{len(kept_by_all)}">{len(kept_by_all):,}</div>'
                '<div class="k">kept by all</div></div></div>')
    body.append('<h2 id="overlap">Overlap of the selections (Jaccard)</h2>')
    body.append('<p class="note">|A ∩ B| / |A ∪ B| of the selected records, matched by sample key.</p>')
    body.append(figure(charts.heatmap("jaccard", labels, overlap, "Jaccard overlap of the selections")))
    body.append(table([""] + labels, [[f"<b>{escape(l)}</b>"] + [f"{v:.3f}" for v in row] for l, row in zip(labels, overlap)]))
    body.append('<h2 id="composition">Composition by task</h2>')
    shares = [(label, (chosen[:, j] / max(chosen[:, j].sum(), 1)).tolist()) for j, label in enumerate(labels)]
    all_share = usable[:, 0] / max(usable[:, 0].sum(), 1)
    body.append(figure(charts.grouped_bars(
        "composition-task", tasks, [("all usable", all_share.tolist())] + shares, "Share of each task in each selection",
        percent=True, classes=["s1"] + [("s0", "s2", "s3", "s4", "s5", "s6", "s7")[j % 7] for j in range(len(labels))],
    )))
    rows = [[escape(t), int(usable[i, 0])] + [int(v) for v in chosen[i]] for i, t in enumerate(tasks)]
    body.append(table(["task", "usable"] + labels, rows, set(range(1, len(labels) + 2))))
    body.append('<h2 id="ranks">Agreement of the score rankings (Spearman)</h2>')
    body.append('<p class="note">Spearman correlation of the scores over the records both selections scored '
                "(a method whose score is a rank or a pick order still ranks). Number of records used in brackets.</p>")
    body.append(table([""] + labels, [
        [f"<b>{escape(l)}</b>"] + [("–" if not np.isfinite(v) else f"{v:.3f}") + f" ({n:,})" for v, n in zip(row, nrow)]
        for l, row, nrow in zip(labels, rho, used)
    ]))
    body.append('<h2 id="unique">Records only one selection kept</h2>')
    records_cache: dict[str, Records] = {}
    for label, o, keys in zip(labels, outputs, unique):
        body.append(f'<h3>Only {escape(label)}: <span data-unique="{escape(label)}" data-value="{len(keys)}">{len(keys):,}</span> records</h3>')
        rows_unique = np.flatnonzero(np.isin(o.columns["key"], np.array(sorted(keys), dtype=object)))
        order = rows_unique[np.argsort(-np.nan_to_num(o.scores[rows_unique], nan=-np.inf), kind="stable")][:UNIQUE_CARDS]
        data_key = str(o.manifest.get("data"))
        if data_key not in records_cache:
            records_cache[data_key] = find_records(o)
        records = records_cache[data_key]
        if records.dataset is None and records.note:
            body.append(f'<p class="note">{escape(records.note)}</p>')
        body.append(cards(selection_cards(o, records, order, "unique", ["score"]), empty="none"))
    subtitle = " vs ".join(f"<code>{escape(label)}</code>" for label in labels)
    (out / HTML_FILE).write_text(page("Comparison of selections", subtitle, body), encoding="utf-8")
    (out / MD_FILE).write_text(_markdown(labels, outputs, selections, overlap, rho, used, tasks, usable, chosen, unique), encoding="utf-8")
    return out / HTML_FILE


def _markdown(labels, outputs, selections, overlap, rho, used, tasks, usable, chosen, unique) -> str:
    lines = ["# Comparison of selections", ""]
    lines += ["| selection | directory | selected | usable |", "|---|---|---:|---:|"]
    lines += [f"| {l} | `{o.path}` | {len(s):,} | {o.n:,} |" for l, o, s in zip(labels, outputs, selections)]
    header = "| | " + " | ".join(labels) + " |"
    rule = "|---|" + "---:|" * len(labels)
    lines += ["", "## Overlap (Jaccard of the selected keys)", "", header, rule]
    lines += [f"| {l} | " + " | ".join(f"{v:.3f}" for v in row) + " |" for l, row in zip(labels, overlap)]
    lines += ["", "## Agreement of the score rankings (Spearman; records used)", "", header, rule]
    lines += [
        f"| {l} | " + " | ".join(("–" if not np.isfinite(v) else f"{v:.3f}") + f" ({n:,})" for v, n in zip(row, nrow)) + " |"
        for l, row, nrow in zip(labels, rho, used)
    ]
    lines += ["", "## Selected per task", "", "| task | usable | " + " | ".join(labels) + " |", "|---|---:|" + "---:|" * len(labels)]
    lines += [f"| {t} | {usable[i, 0]:,} | " + " | ".join(f"{v:,}" for v in chosen[i]) + " |" for i, t in enumerate(tasks)]
    lines += ["", "## Records only one selection kept", ""]
    lines += [f"- {l}: {len(k):,}" for l, k in zip(labels, unique)]
    return "\n".join(lines) + "\n"
