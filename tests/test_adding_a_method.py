"""docs/adding-a-method.md, followed to the letter: a toy method registered through the public API
runs end to end (parameters checked when built, features extracted, several budgets, reports)."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

import mmselect
from mmselect.errors import ConfigError
from mmselect.methods import _REGISTERED
from mmselect.methods.base import NONE, FeatureNeed, Interval, Param, SelectionMethod, SelectionResult


@pytest.fixture
def shortest():
    @mmselect.register_method("shortest")
    class Shortest(SelectionMethod):
        """Keep the records with the least conversation text (a toy method).

        Parameters
        ----------
        per_task_cap : float or None, default None
            At most this share of each task's records is kept.
        """

        summary = "shortest conversations first (a toy)"
        _parameter_constraints = {
            "per_task_cap": Param("largest share of a task that may be kept", NONE, Interval(float, 0, 1, closed="right")),
        }

        def __init__(self, *, per_task_cap: float | None = None):
            self.per_task_cap = per_task_cap

        def feature_needs(self):
            return [FeatureNeed("n_text_chars", "column", produced_by=None)]

        def _fit(self, features):
            self.scores_ = -np.asarray(features.column("n_text_chars"), dtype=float)
            self.tasks_ = np.asarray(features.tasks).astype(str)
            self.fits_ = getattr(self, "fits_", 0) + 1

        def _select_budget(self, k):
            order = np.lexsort((np.arange(len(self.scores_)), -self.scores_))  # shortest first, then position
            tasks, sizes = np.unique(self.tasks_, return_counts=True)
            cap = {t: (n if self.per_task_cap is None else int(self.per_task_cap * n)) for t, n in zip(tasks, sizes)}
            taken = dict.fromkeys(tasks, 0)
            mask = np.zeros(len(order), dtype=bool)
            for row in order:
                if mask.sum() == k:
                    break
                if taken[self.tasks_[row]] < cap[self.tasks_[row]]:
                    mask[row] = True
                    taken[self.tasks_[row]] += 1
            return SelectionResult(selected=mask, scores=self.scores_, info={"per_task": taken,
                                   "budget_shortfall": int(k - mask.sum())})

    yield Shortest
    _REGISTERED.pop("shortest", None)


def test_a_taken_name_is_refused(shortest):
    with pytest.raises(ConfigError, match="already taken"):
        mmselect.register_method("shortest")(shortest)


def test_bad_parameters_fail_when_the_method_is_built(shortest):
    with pytest.raises(ConfigError, match="per_task_cap"):
        mmselect.get_method("shortest", per_task_cap=2.0)
    assert "shortest" in mmselect.list_methods()


def test_the_toy_method_runs_end_to_end(shortest, tmp_path, mini_data, mini_images):
    out = tmp_path / "out"
    results = mmselect.run(mini_data, method="shortest", budget="10,20", out=out, image_root=mini_images,
                           params={"per_task_cap": 0.5}, model="tiny-llava", progress=False)
    assert [r.n_selected for r in results] == [10, 20]
    table = pq.read_table(out / "budget-20" / "selection.parquet").to_pandas()
    kept = table[table.selected]
    candidates = table[table.duplicate_of.isna()]
    # the 20 shortest non-duplicate records (no task is large enough for the cap to bind at 20)
    assert sorted(kept.key) == sorted(candidates.sort_values(["score", "position"], ascending=[False, True]).key[:20])
    manifest = json.loads((out / "budget-20" / "manifest.json").read_text())
    assert manifest["method"] == "shortest" and manifest["params"] == {"per_task_cap": 0.5}
    assert (out / "budget-10" / "report.html").exists() and (out / "budget-20" / "subset.json").exists()
