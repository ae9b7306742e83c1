"""What the arena compares: its conditions (full data, the clean world, random, the two references
that read the hidden labels, every method), the plan of runs, and the conditions that are not a
method's own selection: the references' subsets and mmSSR's stand-in scores."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..budget import Budget
from ..data.readers import read_dataset
from ..methods import list_methods
from ..select_options import SelectOptions
from .world import World

FULL = "full"
FULL_CLEAN = "full-clean-world"
RANDOM = "random"
ORACLE = "oracle"
ANTI_ORACLE = "anti-oracle"
REFERENCES = (ORACLE, ANTI_ORACLE)
#: ``select``'s default duplicate guard; runs under another guard get their own directories.
DEFAULT_DEDUP = SelectOptions().dedup
# Methods the arena cannot run as published, with the stand-in it uses or the reason it skips them.
STAND_INS = {
    "mmssr": (
        "stand-in scores: mmSSR's scorer/styler generations need its released 7B models. The arena passes "
        "user scores (`select --scores`): score_<task> = 5 x exp(-answer NLL under the reference model) for "
        "the record's own task (NaN for other tasks), styles from the record's form (multi-turn / one-word / "
        "phrase). No hidden label is read."
    ),
}
SKIPPED = {
    "clip-score": "needs a CLIP model (image and text towers trained together); the reference model has none",
}
# Oracle keeps clean records first; anti-oracle takes the most harmful pathologies first.
ORACLE_ORDER = ("clean", "trivial", "near_duplicate", "duplicate", "mismatch", "wrong_answer")
ANTI_ORDER = ("wrong_answer", "mismatch", "duplicate", "near_duplicate", "trivial", "clean")


def default_methods() -> list[str]:
    """Every registered method but ``random`` (a condition of its own)."""
    return [m for m in list_methods() if m != RANDOM]


@dataclass(frozen=True)
class Run:
    condition: str
    budget: str | None  # None: full data
    seed: int
    #: the duplicate guard of ``select`` (None: a condition that does not go through ``select``)
    dedup: str | None = None

    @property
    def label(self) -> str:
        guard = f" dedup={self.dedup}" if self.dedup not in (None, DEFAULT_DEDUP) else ""
        return f"{self.condition} budget={self.budget or 'all'}{guard} seed={self.seed}"

    def directory(self, out: Path) -> Path:
        budget = f"b{self.budget}" if self.budget else "all"
        if self.dedup not in (None, DEFAULT_DEDUP):
            budget += f"-dedup-{self.dedup}"
        return out / "runs" / self.condition / budget / f"s{self.seed}"


def plan_runs(methods: Sequence[str], budgets: Sequence[str], seeds: Sequence[int], dedup: str = DEFAULT_DEDUP) -> list[Run]:
    """The first seed's runs, then for every further seed full data, random and the two references
    (they calibrate the arena and its seed spread) before the methods. Random and the methods select
    through ``select`` with the duplicate guard ``dedup``; the other conditions do not depend on it."""
    runs = []
    for seed in seeds:
        runs += [Run(FULL, None, seed), Run(FULL_CLEAN, None, seed)]
        runs += [Run(RANDOM, budget, seed, dedup) for budget in budgets]
        runs += [Run(condition, budget, seed) for budget in budgets for condition in REFERENCES]
        if seed == seeds[0]:
            runs += [Run(method, budget, seed, dedup) for budget in budgets for method in methods]
    for seed in seeds[1:]:
        runs += [Run(method, budget, seed, dedup) for budget in budgets for method in methods]
    return runs


def reference_subset(world: World, run: Run, selection: Path) -> Path:
    """The oracle's or anti-oracle's subset of the pool, written under ``selection``: records ranked
    by their hidden pathology (``ORACLE_ORDER`` / ``ANTI_ORDER``), ties in a seeded random order."""
    truth = world.pathologies()
    keys = sorted(truth, key=lambda k: truth[k]["position"])
    k = Budget.parse(run.budget).resolve(len(keys))
    rng = np.random.default_rng(run.seed)
    order = ORACLE_ORDER if run.condition == ORACLE else ANTI_ORDER
    tier = {name: i for i, name in enumerate(order)}
    ranked = sorted(range(len(keys)), key=lambda i, r=rng.random(len(keys)): (tier[truth[keys[i]]["pathology"]], r[i]))
    chosen = sorted(ranked[:k])
    records = json.loads(world.data("pool").read_text())
    selection.mkdir(parents=True, exist_ok=True)
    path = selection / "subset.json"
    path.write_text(json.dumps([records[i] for i in chosen], indent=1) + "\n")
    write_json(selection / "keys.json", [keys[i] for i in chosen])
    return path


def write_mmssr_stand_in_scores(world: World, featureset, path: Path) -> None:
    """mmSSR's stand-in scores (see ``STAND_INS``) as a user scores file at ``path``."""
    dataset = read_dataset(world.data("pool"), image_root=world.image_root, check_images=False)
    by_key = dataset.by_key()
    nll = np.asarray(featureset.column("answer_nll"), dtype=float)
    tasks = [str(t) for t in featureset.tasks]
    capabilities = sorted(set(tasks))
    lines = []
    for key, task, value in zip(featureset.keys, tasks, nll):
        sample = by_key[str(key)]
        answers = [t.text for t in sample.turns if t.role == "assistant"]
        style = "multi-turn" if len(answers) > 1 else ("one-word" if len(answers[0].split()) == 1 else "phrase")
        row: dict[str, Any] = {"key": str(key), "styles": [style]}
        for capability in capabilities:
            row[f"score_{capability}"] = round(5.0 * float(np.exp(-value)), 6) if capability == task and np.isfinite(value) else None
        lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n")


def write_json(path: Path, payload: Any) -> None:
    """``payload`` as JSON at ``path``, written to a temporary name and renamed into place."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
