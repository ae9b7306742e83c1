"""``results.json`` (every number) and ``results.md`` (the tables) of an arena directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .conditions import DEFAULT_DEDUP
from .config import PATHOLOGIES, TASKS, ArenaConfig

CATEGORIES = ("clean", *PATHOLOGIES)


def _spread(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def aggregate(runs: list[dict[str, Any]], pool_counts: dict[str, int], pool_tasks: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """One row per (condition, budget): mean and spread (sample std over seeds) of every accuracy,
    relative figures against full data and random at the same budget, robustness ratios."""
    groups: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["condition"], run["budget"]), []).append(run)
    pool_total = sum(pool_counts.values())
    rows = []
    for (condition, budget), items in groups.items():
        items = sorted(items, key=lambda r: r["seed"])
        names = list(items[0]["accuracy"])
        mean = {n: float(np.mean([r["accuracy"][n] for r in items])) for n in names}
        spread = {n: _spread([r["accuracy"][n] for r in items]) for n in names}
        row: dict[str, Any] = {
            "condition": condition, "budget": budget, "seeds": [r["seed"] for r in items],
            "n_train": int(np.mean([r["n_train"] for r in items])), "steps": int(np.mean([r["steps"] for r in items])),
            "mean": {k: round(v, 4) for k, v in mean.items()}, "spread": {k: round(v, 4) for k, v in spread.items()},
            "per_seed": {r["seed"]: r["accuracy"]["macro_mean"] for r in items},
            "train_seconds": round(float(np.mean([r["seconds"]["train"] for r in items])), 2),
        }
        compositions = [r["composition"] for r in items if r.get("composition")]
        if compositions and pool_total:
            ratios = {}
            for category in CATEGORIES:
                pool_share = pool_counts.get(category, 0) / pool_total
                shares = [c["pathologies"][category] / max(1, c["n"]) for c in compositions]
                ratios[category] = round(float(np.mean(shares)) / pool_share, 3) if pool_share > 0 else None
            row["robustness"] = ratios
            if pool_tasks:
                row["task_mix"] = {
                    task: round(float(np.mean([c["tasks"].get(task, 0) / max(1, c["n"]) for c in compositions]))
                                / (count / pool_total), 3)
                    for task, count in sorted(pool_tasks.items())
                }
        rows.append(row)
    full = next((r for r in rows if r["condition"] == "full"), None)
    for row in rows:
        macro = row["mean"]["macro_mean"]
        if full is not None:
            row["vs_full"] = {"ratio": round(macro / full["mean"]["macro_mean"], 4) if full["mean"]["macro_mean"] else None,
                              "difference": round(macro - full["mean"]["macro_mean"], 4)}
        random_row = next((r for r in rows if r["condition"] == "random" and r["budget"] == row["budget"]), None)
        if random_row is not None and row["budget"] is not None:
            difference = macro - random_row["mean"]["macro_mean"]
            row["vs_random"] = {
                "ratio": round(macro / random_row["mean"]["macro_mean"], 4) if random_row["mean"]["macro_mean"] else None,
                "difference": round(difference, 4),
                "difference_spread": round(float(np.sqrt(row["spread"]["macro_mean"] ** 2 + random_row["spread"]["macro_mean"] ** 2)), 4),
            }
    return rows


def discrimination(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The checks the arena must pass: oracle above random and anti-oracle by many seed spreads;
    clean-world full data above noisy full data."""
    found: dict[str, Any] = {}

    def get(condition, budget=None):
        return next((r for r in rows if r["condition"] == condition and (budget is None or r["budget"] == budget)), None)

    for row in rows:
        if row["condition"] != "oracle":
            continue
        budget = row["budget"]
        for other in ("random", "anti-oracle"):
            peer = get(other, budget)
            if peer is None:
                continue
            gap = row["mean"]["macro_mean"] - peer["mean"]["macro_mean"]
            spread = max(row["spread"]["macro_mean"], peer["spread"]["macro_mean"])
            found[f"oracle_minus_{other}@{budget}"] = {"gap": round(gap, 4), "max_seed_spread": round(spread, 4),
                                                       "gap_over_spread": round(gap / spread, 1) if spread > 0 else None}
    full, clean = get("full"), get("full-clean-world")
    if full and clean:
        found["clean_world_full_minus_noisy_full"] = round(clean["mean"]["macro_mean"] - full["mean"]["macro_mean"], 4)
    return found


def _fmt(mean: float, spread: float, n_seeds: int) -> str:
    return f"{mean:.3f} ± {spread:.3f}" if n_seeds > 1 else f"{mean:.3f}"


def render_markdown(summary: dict[str, Any]) -> str:
    rows = summary["conditions"]
    seeds = summary["seeds"]
    tasks = [t for t in TASKS if any(t in r["mean"] for r in rows)]
    lines = [
        "# Arena results",
        "",
        *([] if summary.get("complete", True) else
          [f"**Partial: {summary['runs_done']} of {summary['runs_planned']} runs done.**", ""]),
        f"Seeds: {', '.join(map(str, seeds))}; budgets: {', '.join(summary['budgets'])}; "
        f"duplicate guard (random and the methods): `{summary.get('dedup', DEFAULT_DEDUP)}`; "
        f"steps per run: {summary['config']['training']['steps'] if not summary['config']['training']['epochs'] else 'epoch-matched'}; "
        f"reference model: {summary['reference']['parameters']:,} parameters, stage-1 test macro mean "
        f"{summary['reference']['accuracy']['macro_mean']:.3f}.",
        "",
        "Exact match on the clean held-out test set (macro mean over tasks; ± is the sample standard deviation "
        "over seeds). `vs full` = ratio to full data; `vs random` = difference to random at the same budget. "
        "*oracle* and *anti-oracle* read the hidden pathology labels (references, not methods).",
        "",
        "| condition | budget | n | macro mean | vs full | vs random | " + " | ".join(tasks) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(tasks),
    ]
    for row in rows:
        n_seeds = len(row["seeds"])
        vs_full = f"{row['vs_full']['ratio']:.3f}" if row.get("vs_full") and row["vs_full"]["ratio"] is not None else "–"
        vs_random = f"{row['vs_random']['difference']:+.3f}" if row.get("vs_random") else "–"
        name = row["condition"] + (" (reads labels)" if row["condition"] in ("oracle", "anti-oracle") else "")
        lines.append(
            f"| {name} | {row['budget'] or 'all'} | {row['n_train']} | "
            f"{_fmt(row['mean']['macro_mean'], row['spread']['macro_mean'], n_seeds)} | {vs_full} | {vs_random} | "
            + " | ".join(f"{row['mean'].get(t, float('nan')):.3f}" for t in tasks) + " |"
        )
    lines += [
        "",
        "## Robustness: share of each pathology among the selected records / its share in the pool",
        "",
        "Random ≈ 1.0; below 1 the method avoids the pathology, above 1 it prefers it.",
        "",
        "| condition | budget | " + " | ".join(CATEGORIES) + " |",
        "|---|---|" + "---|" * len(CATEGORIES),
    ]
    for row in rows:
        if "robustness" in row:
            lines.append(f"| {row['condition']} | {row['budget'] or 'all'} | "
                         + " | ".join("–" if row["robustness"][c] is None else f"{row['robustness'][c]:.2f}" for c in CATEGORIES) + " |")
    mixed = [row for row in rows if "task_mix" in row]
    if mixed:
        task_names = list(mixed[0]["task_mix"])
        lines += [
            "",
            "## Task mix: share of each task among the selected records / its share in the pool",
            "",
            "| condition | budget | " + " | ".join(task_names) + " |",
            "|---|---|" + "---|" * len(task_names),
        ]
        for row in mixed:
            lines.append(f"| {row['condition']} | {row['budget'] or 'all'} | "
                         + " | ".join(f"{row['task_mix'][t]:.2f}" for t in task_names) + " |")
    lines += ["", "## Discrimination checks", ""]
    for name, value in summary["discrimination"].items():
        lines.append(f"- `{name}`: {json.dumps(value)}")
    if summary.get("stand_ins") or summary.get("skipped"):
        lines += ["", "## Stand-ins and skipped methods", ""]
        for name, note in summary.get("stand_ins", {}).items():
            lines.append(f"- **{name}** (stand-in): {note}")
        for name, note in summary.get("skipped", {}).items():
            lines.append(f"- **{name}** (skipped): {note}")
    return "\n".join(lines) + "\n"


def write_results(
    out: str | Path,
    *,
    config: ArenaConfig,
    runs: list[dict[str, Any]],
    reference: dict[str, Any],
    features: dict[str, Any],
    methods: Sequence[str],
    budgets: Sequence[str],
    seeds: Sequence[int],
    skipped: dict[str, str],
    stand_ins: dict[str, str],
    versions: dict[str, str],
    complete: bool = True,
    planned: int | None = None,
    dedup: str = DEFAULT_DEDUP,
) -> dict[str, Any]:
    """Write ``results.json`` and ``results.md`` (``results-dedup-<mode>.*`` for a duplicate guard other
    than ``select``'s default, so both can sit in one arena directory); returns the summary."""
    out = Path(out)
    sidecar = json.loads((out / "world" / "pathologies.json").read_text())
    pool_counts = sidecar["counts"]
    pool_tasks: dict[str, int] = {}
    for item in sidecar["records"].values():
        pool_tasks[item["task"]] = pool_tasks.get(item["task"], 0) + 1
    rows = aggregate(runs, pool_counts, pool_tasks)
    summary = {
        "complete": complete,
        "runs_done": len(runs),
        "runs_planned": planned if planned is not None else len(runs),
        "config": config.to_dict(),
        "methods": list(methods),
        "budgets": list(budgets),
        "seeds": list(seeds),
        "dedup": dedup,
        "pool_pathologies": pool_counts,
        "reference": {k: reference[k] for k in ("parameters", "stage1_records", "train", "accuracy")},
        "features": {k: features[k] for k in ("extracted", "seconds", "columns")},
        "conditions": rows,
        "discrimination": discrimination(rows),
        "skipped": skipped,
        "stand_ins": stand_ins,
        "runs": runs,
        "versions": versions,
    }
    stem = results_stem(dedup)
    tmp = out / f"{stem}.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1, sort_keys=False, default=str) + "\n")
    os.replace(tmp, out / f"{stem}.json")
    (out / f"{stem}.md").write_text(render_markdown(summary))
    return summary


def results_stem(dedup: str = DEFAULT_DEDUP) -> str:
    """``results`` under select's default duplicate guard, ``results-dedup-<mode>`` otherwise."""
    return "results" if dedup == DEFAULT_DEDUP else f"results-dedup-{dedup}"
