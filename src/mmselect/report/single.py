"""``report.html``: the page of one selection, written from its output directory."""

from __future__ import annotations

import json
import os
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from ..data.dataset import Dataset
from ..export import MANIFEST_FILE
from . import charts
from .page import cards, figure, key_values, page, render_value, stat, table
from .projection import projection
from .record_cards import card_rows, rejected_cards, selection_cards
from .sources import Output, Records, find_records, load_features, load_output
from .summaries import (
    COMPOSITION_EDGES,
    COMPOSITION_TITLES,
    binned_composition,
    cluster_summary,
    histogram,
    record_attributes,
    rejected_groups,
    task_composition,
    timings,
)

HTML_FILE = "report.html"
COUNT_LABELS = {
    "input_records": "input records",
    "usable": "usable",
    "rejected": "rejected",
    "selected": "selected",
    "not_selected": "not selected",
    "duplicates": "duplicates (not selected)",
}


def _describe_guard(dedup: dict | None) -> str:
    if not dedup:
        return "–"
    text = f"{dedup.get('mode')}: {dedup.get('duplicates', 0):,} set aside ({dedup.get('exact', 0):,} exact"
    if dedup.get("mode") == "near":
        text += f", {dedup.get('near', 0):,} near at cosine ≥ {dedup.get('threshold')} on {dedup.get('embedding')}"
    return text + ")"


def _headline(output: Output, times: dict[str, float]) -> list[str]:
    manifest = output.manifest
    counts = dict(manifest.get("counts", {}))
    if "selected" in counts and "not_selected" in counts:
        counts["usable"] = counts["selected"] + counts["not_selected"]
    stats = [stat(COUNT_LABELS[name], counts[name], ("count", name)) for name in COUNT_LABELS if name in counts]
    if manifest.get("budget_samples") is not None:
        stats.append(stat(f"budget ({manifest.get('budget')})", manifest["budget_samples"], ("count", "budget_samples")))
    for name, seconds in times.items():
        stats.append(stat(f"seconds, {name}", f"{seconds:.1f}", ("seconds", name), raw=seconds))
    model = manifest.get("model") or {}
    rows = [
        ["method", f"<code data-field=\"method\">{escape(str(manifest.get('method')))}</code>"],
        ["budget", f"<code data-field=\"budget\">{escape(str(manifest.get('budget')))}</code>"],
        ["model", escape(str(model.get("name") or model.get("source") or "–"))],
        ["revision", escape(str(model.get("revision") or "–"))],
        ["data", f"<code>{escape(str(manifest.get('data') or '–'))}</code>"],
        ["features", f"<code>{escape(str(manifest.get('feature_dir') or manifest.get('features') or '–'))}</code>"],
        ["seed", manifest.get("seed")],
        ["duplicate guard", escape(_describe_guard(manifest.get("dedup")))],
    ]
    params = manifest.get("params") or {}
    parts = [f'<div class="stats">{"".join(stats)}</div>']
    if str(model.get("name", "")).startswith("tiny-"):
        parts.insert(0, f'<p class="warn">Features come from <code>{escape(model["name"])}</code>, a randomly '
                        "initialised test model: this selection carries no meaning.</p>")
    parts.append(table(None, rows))
    if params:
        parts.append("<h3>Parameters</h3>" + key_values(params))
    return parts


def _rejected_section(output: Output, records: Records) -> list[str]:
    if not output.rejected:
        return ['<h2 id="rejected">Rejected records</h2><p class="note">None: every input record was usable.</p>']
    rows = []
    for group in rejected_groups(output.rejected):
        examples = "; ".join(
            f"<code>{escape(str(e.get('key')))}</code> {escape(str(e.get('reason', '')))}" for e in group["examples"]
        )
        rows.append([escape(group["reason"]), group["count"], f"<span>{examples}</span>"])
    parts = ['<h2 id="rejected">Rejected records</h2>', table(["reason", "records", "examples"], rows, {1})]
    parts.append('<p class="note">Every rejected record is listed with its key and reason in <code>rejected.jsonl</code>.</p>')
    parts.append(cards(rejected_cards(output, records)))
    return parts


def _composition_section(output: Output, attributes: dict[str, np.ndarray]) -> list[str]:
    selected = output.selected
    n_before, n_after = max(len(selected), 1), max(int(selected.sum()), 1)
    comps = [task_composition(output)]
    for name, (title, edges) in COMPOSITION_EDGES.items():
        if name in attributes:
            comps.append(binned_composition(title, attributes[name], selected, edges))
    parts = ['<h2 id="composition">Composition before and after</h2>',
             ('<p class="note">Share of the usable records ("all") and of the selected ones in each category; '
              "hover a bar for counts.</p>")]
    for comp in comps:
        share_before = [b / n_before for b in comp.before]
        share_after = [a / n_after for a in comp.after]
        tips = [[f"{b:,} records ({s:.1%})" for b, s in zip(comp.before, share_before)],
                [f"{a:,} records ({s:.1%})" for a, s in zip(comp.after, share_after)]]
        svg = charts.grouped_bars(
            f"composition-{comp.title}", comp.categories,
            [("all usable", share_before), ("selected", share_after)],
            f"Composition by {COMPOSITION_TITLES[comp.title]}", percent=True, tooltips=tips, classes=["s1", "s0"],
        )
        rows = [
            [escape(c), b, a, f"{a / b:.1%}" if b else "–"]
            for c, b, a in zip(comp.categories, comp.before, comp.after)
        ]
        data_attr = f' data-composition="{escape(comp.title)}"'
        parts.append(f"<h3>By {escape(COMPOSITION_TITLES[comp.title])}</h3>")
        parts.append(f'<div class="charts"{data_attr}>{figure(svg)}<div>'
                     + table([comp.title, "usable", "selected", "rate"], rows, {1, 2, 3}) + "</div></div>")
    if len(comps) == 1:
        parts.append('<p class="note">Turns, images and length need the features directory or the dataset.</p>')
    return parts


def _score_section(output: Output) -> list[str]:
    parts = ['<h2 id="scores">Scores, selected vs not</h2>',
             '<p class="note">Counts per bin; the selected records are the lower part of each bar.</p><div class="charts">']
    selected = output.selected
    for name in output.value_columns():
        h = histogram(name, output.columns[name], selected)
        missing = h.missing_kept + h.missing_dropped
        caption = f"{missing:,} records without a value (NaN), {h.missing_kept:,} of them selected" if missing else None
        svg = charts.stacked_histogram(f"score-{name}", h.edges, h.kept, h.dropped, f"Distribution of {name}")
        parts.append(figure(svg, caption, title=name))
    parts.append("</div>")
    return parts


def _cards_section(output: Output, records: Records) -> list[str]:
    parts = ['<h2 id="records">Records</h2>']
    if records.dataset is None:
        parts.append(f'<p class="note">{escape(records.note or "records not available")}</p>')
    elif records.note:
        parts.append(f'<p class="note">{escape(records.note)}</p>')
    values = output.value_columns()
    for group, rows in card_rows(output).items():
        parts.append(f"<h3>{escape(group[0].upper() + group[1:])}</h3>")
        parts.append(cards(selection_cards(output, records, rows, group, values)))
    return parts


def _diagnostics_section(output: Output) -> list[str]:
    info = output.manifest.get("method_info") or {}
    parts = ['<h2 id="diagnostics">Method diagnostics</h2>']
    if not info:
        parts.append('<p class="note">The method reported none.</p>')
    scalars = {k: v for k, v in info.items() if v is None or isinstance(v, (str, int, float, bool))}
    if scalars:
        parts.append(render_value(scalars))
    for key, value in info.items():
        if key in scalars:
            continue
        parts.append(f"<h3>{escape(key.replace('_', ' '))}</h3>" + render_value(value))
    clusters = cluster_summary(output)
    if clusters:
        parts.append("<h3>Clusters (from selection.parquet)</h3>" + render_value(clusters))
    return parts


def _map_section(output: Output, featureset) -> list[str]:
    proj = projection(output, featureset)
    if proj is None:
        return []
    caption = (
        f"PCA of {proj.array} ({len(proj.x):,} of {proj.n_total:,} records, sampled); "
        f"PC1 {proj.explained[0]:.0%}, PC2 {proj.explained[1]:.0%} of the variance"
    )
    svg = charts.scatter("map", proj.x, proj.y, proj.selected, f"2-D map of {proj.array}", ("PC1", "PC2"))
    return ['<h2 id="map">Map of the records</h2>', figure(svg, caption)]


def _update_manifest_outputs(out_dir: Path) -> None:
    path = out_dir / MANIFEST_FILE
    manifest = json.loads(path.read_text(encoding="utf-8"))
    outputs = manifest.setdefault("outputs", {})
    if outputs.get("report_html") != HTML_FILE:
        outputs["report_html"] = HTML_FILE
        path.write_text(json.dumps(manifest, indent=2) + "\n")


def write_html_report(
    out_dir: str | os.PathLike,
    dataset: Dataset | None = None,
    features: Any = None,
    *,
    data: str | os.PathLike | None = None,
    image_root: str | os.PathLike | None = None,
) -> Path:
    """Write ``out_dir/report.html`` from the output directory alone.

    ``dataset`` (the records, for cards and composition) is re-read from ``manifest["data"]`` when
    not given (or from ``data``); ``features`` (a FeatureSet or a directory, for turns/images/length
    and the 2-D map) defaults to the manifest's features directory.
    """
    out_dir = Path(out_dir)
    output = load_output(out_dir)
    _update_manifest_outputs(out_dir)
    output.manifest.setdefault("outputs", {})["report_html"] = HTML_FILE
    records = find_records(output, dataset, data, image_root)
    featureset = load_features(output, features)
    attributes = record_attributes(output, featureset, records)
    times = timings(output, featureset)
    manifest = output.manifest
    subtitle = (
        f"<code>{escape(str(manifest.get('method')))}</code>, budget <code>{escape(str(manifest.get('budget')))}</code>"
        f" · {escape(out_dir.name)}"
    )
    body: list[str] = []
    body += _headline(output, times)
    body += _rejected_section(output, records)
    body += _composition_section(output, attributes)
    body += _score_section(output)
    body += _cards_section(output, records)
    body += _map_section(output, featureset)
    body += _diagnostics_section(output)
    body.append(f'<p class="note">Files in this directory: {", ".join(f"<code>{escape(str(v))}</code>" for v in manifest.get("outputs", {}).values() if v)}. '
                f"Versions: {escape(', '.join(f'{k} {v}' for k, v in (manifest.get('versions') or {}).items()))}.</p>")
    html = page(f"Selection report: {manifest.get('method')}", subtitle, body)
    path = out_dir / HTML_FILE
    path.write_text(html, encoding="utf-8")
    return path


__all__ = ["HTML_FILE", "write_html_report"]
