"""The outputs of one selection, after the method has picked: the selection table, the rejected
records, the subset (and its trainer formats), the manifest and both reports; and the budget list
the select stage works through."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .budget import Budget
from .data.dataset import Dataset
from .dedup import DuplicateGuard
from .errors import BudgetError, MMSelectError
from .data.rejected import RejectedRecord
from .export import build_manifest, write_manifest, write_rejected, write_selection_table, write_subset
from .features.store import FeatureSet
from .methods.base import SelectionResult
from .report import write_html_report, write_report
from .trainer_formats import write_trainer_subset


def parse_budgets(budget) -> list[Budget]:
    if isinstance(budget, (list, tuple)):
        items = list(budget)
    elif isinstance(budget, str) and "," in budget:
        items = [b for b in budget.split(",") if b.strip()]
    else:
        items = [budget]
    budgets = [Budget.parse(b) for b in items]
    if not budgets:
        raise BudgetError("no budget given")
    if len({str(b) for b in budgets}) != len(budgets):
        raise BudgetError(f"budget {budget!r} lists the same budget twice")
    return budgets


def check_budget_after_guard(budget: Budget, n_pool: int, guard: DuplicateGuard) -> None:
    try:
        k = budget.resolve(n_pool)
    except BudgetError as err:
        if guard.n_duplicates:
            raise BudgetError(
                f"the duplicate guard (--dedup {guard.mode}) set aside {guard.n_duplicates:,} duplicate record(s), "
                f"leaving {n_pool:,}: fewer than the budget of {budget}. Lower the budget, or keep duplicates "
                "with --dedup none"
            ) from None
        raise err
    if k == 0:
        raise BudgetError(f"budget {budget} of {n_pool:,} usable records selects no record; raise the budget")


def write_selection(
    out: Path, result: SelectionResult, *, featureset: FeatureSet, selector, method: str, budget: Budget,
    guard: DuplicateGuard, dataset: Dataset | None, by_key: dict, rejected: list[RejectedRecord],
    export_format: str, started: float, extra_manifest: dict[str, Any] | None,
) -> None:
    """Every output of one selection: selection table, rejected, subset(s), manifest, reports."""
    positions = featureset.column("position") if featureset.has_column("position") else None
    write_selection_table(
        featureset.keys, featureset.tasks, result.selected, result.scores, result.values, out, positions, result.order
    )
    write_rejected(rejected, out)
    counts = {
        "input_records": dataset.n_records if dataset is not None else featureset.n + len(rejected),
        "selected": result.n_selected,
        "not_selected": int(featureset.n - result.n_selected),
        "rejected": len(rejected),
    }
    if counts["selected"] + counts["not_selected"] + counts["rejected"] != counts["input_records"]:
        raise MMSelectError(f"records unaccounted for: {counts}")
    counts["duplicates"] = guard.n_duplicates  # among not_selected
    outputs: dict[str, Any] = {"subset": None, "selection": "selection.parquet", "rejected": "rejected.jsonl",
                               "report": "report.md"}
    if dataset is not None:
        chosen = [by_key[k] for k in featureset.keys[result.selected]]
        outputs["subset"] = write_subset(dataset, [s.position for s in chosen], out).name
        if export_format != "same":
            outputs["trainer_subset"] = [p.name for p in write_trainer_subset(chosen, out, export_format)]
    params = selector.get_params()
    manifest = build_manifest(
        started=started,
        counts=counts,
        method=method,
        params=params,
        budget=str(budget),
        budget_samples=result.info.get("budget", result.n_selected),
        seed=params.get("seed"),
        dedup={**guard.info, "duplicates": guard.n_duplicates},
        data=str(dataset.path) if dataset is not None else None,
        image_root=str(dataset.image_root) if dataset is not None and dataset.image_root else None,
        features=str(featureset.root) if featureset.root is not None else None,
        model=featureset.manifest.get("model"),
        outputs=outputs,
        method_info=result.info,
    )
    manifest.update(extra_manifest or {})
    write_manifest(manifest, out)
    write_report(
        out,
        method=method,
        params=params,
        budget=str(budget),
        counts=counts,
        tasks=featureset.tasks,
        selected=result.selected,
        scores=result.scores,
        rejected=[r.to_json() for r in rejected],
        info={**result.info, "duplicate_guard": {**guard.info, "duplicates": guard.n_duplicates}},
        model=(featureset.manifest.get("model") or {}).get("name"),
    )
    write_html_report(out, dataset=dataset, features=featureset)
