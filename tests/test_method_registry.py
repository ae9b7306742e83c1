"""Method registry: declared parameter constraints, parameter descriptions, name clashes, the
banded ranking shared by the band baselines, and fit-then-select."""

import numpy as np
import pytest

from mmselect.errors import BudgetError, ConfigError
from mmselect.features.store import FeatureSet
from mmselect.methods import get_method, list_methods, method_class, register_method
from mmselect.methods.base import (
    Choice,
    Interval,
    Param,
    SelectionMethod,
    SelectionResult,
    top_k_mask,
)


@pytest.mark.parametrize(
    "name, params, shown",
    [
        ("datatailor", {"lam": "abc"}, "lam='abc'"),
        ("datatailor", {"lam": 0.0}, "(0, 1]"),
        ("perplexity", {"band": "middle"}, "'low', 'mid', 'high'"),
        ("el2n", {"band": "top"}, "band='top'"),
        ("coincide", {"n_clusters": -3}, "n_clusters=-3"),
        ("coincide", {"kmeans_dim": "wide"}, "'auto'"),
        ("semdedup", {"niter": 2.5}, "an integer"),
        ("clipper", {"n_bins": 0}, "[1, inf)"),
        ("prism", {"keep_text_only": "yes"}, "True, False"),
        ("d2-pruning", {"gamma": float("nan")}, "gamma=nan"),
    ],
)
def test_bad_values_fail_when_the_method_is_built(name, params, shown):
    with pytest.raises(ConfigError) as error:
        get_method(name, **params)
    message = str(error.value)
    (param,) = params
    assert f"method {name!r}" in message and param in message and shown in message


def test_constructor_checks_too_and_cross_parameter_checks_name_the_method():
    with pytest.raises(ConfigError, match="'middle'"):
        method_class("perplexity")(band="middle")
    with pytest.raises(ConfigError, match="method 'datatailor'.*approx_ward_points"):
        get_method("datatailor", approx_micro_clusters=100, approx_ward_points=50)


def test_good_values_pass_and_negative_budgets_are_refused():
    assert get_method("coincide", kmeans_dim="none", n_clusters=None).kmeans_dim == "none"
    assert get_method("datatailor", rate_clamp=(0.1, 0.5), lam=1).lam == 1
    with pytest.raises(BudgetError):
        get_method("random").select(FeatureSet.from_arrays(n=5), -1)


def test_every_builtin_parameter_is_declared_with_a_meaning():
    for name in list_methods():
        cls = method_class(name)
        rows = cls.describe_params()
        assert [row[0] for row in rows] == cls.param_names()
        for param, default, meaning, allowed in rows:
            assert meaning and allowed, f"{name}.{param} has no declared meaning or constraint"
            assert cls._parameter_constraints[param].accepts(default), f"{name}.{param} default {default!r}"


def test_describe_params_rows():
    rows = {row[0]: row for row in method_class("perplexity").describe_params()}
    assert rows["band"][1] == "mid" and rows["band"][3] == "one of 'low', 'mid', 'high'"


def test_register_method_refuses_a_taken_name():
    with pytest.raises(ConfigError, match="built-in"):
        register_method("datatailor")

    @register_method("registry-test-first")
    class First(SelectionMethod):
        def _select(self, features, k):
            return SelectionResult(selected=top_k_mask(np.zeros(features.n), k), scores=np.zeros(features.n))

    assert method_class("registry-test-first") is First
    with pytest.raises(ConfigError, match="already taken"):
        register_method("registry-test-first")
    assert get_method("registry-test-first").select(FeatureSet.from_arrays(n=4), 2).n_selected == 2


def test_perplexity_mid_band_scores_agree_with_the_selection():
    # 11 samples with decreasing NLL: sample i has rank 10 - i. The mid band of 2 is ranks 4 and 5
    # ((11 - 2) // 2 = 4), i.e. samples 6 and 5. The scores used to rank by distance to the
    # median rank 5 and gave the top two to samples 5 and 4.
    nll = np.linspace(1.0, 0.0, 11)
    result = get_method("perplexity", band="mid").select(FeatureSet.from_arrays(columns={"answer_nll": nll}), 2)
    assert np.flatnonzero(result.selected).tolist() == [5, 6]
    assert np.flatnonzero(top_k_mask(result.scores, 2)).tolist() == [5, 6]
    assert result.info["band_ranks"] == [4, 6]


@pytest.mark.parametrize("band", ["low", "mid", "high"])
def test_band_scores_agree_with_the_selection_for_every_budget(band):
    rng = np.random.default_rng(0)
    nll = rng.integers(0, 5, size=23).astype(float)  # many ties
    method = get_method("perplexity", band=band).fit(FeatureSet.from_arrays(columns={"answer_nll": nll}))
    for k in range(24):
        result = method.select_budget(k)
        assert np.array_equal(result.selected, top_k_mask(result.scores, k))


def test_select_equals_fit_then_select_budget():
    rng = np.random.default_rng(1)
    features = FeatureSet.from_arrays(columns={"answer_nll": rng.random(40), "n_answer_tokens": rng.integers(1, 9, 40)})
    for name, params in (("perplexity", {}), ("length", {}), ("random", {"seed": 3})):
        fitted = get_method(name, **params).fit(features)
        for budget in (0.1, 0.25, 7):
            once = get_method(name, **params).select(features, budget)
            again = fitted.select_budget(budget)
            assert np.array_equal(once.selected, again.selected) and np.array_equal(once.scores, again.scores)
    with pytest.raises(ConfigError, match="fit"):
        get_method("length").select_budget(3)


@pytest.mark.parametrize(
    "name, params",
    [
        ("semdedup", {"n_clusters": 4, "pca_dim": None, "kmeans_backend": "sklearn"}),
        ("d2-pruning", {"knn": "exact"}),
        ("prism", {}),
        ("prism", {"scope": "per_task", "keep_text_only": False}),
        ("el2n", {}),
        ("ifd", {"band": "mid"}),
    ],
)
def test_fitted_methods_sweep_budgets_like_fresh_selections(name, params):
    rng = np.random.default_rng(2)
    n = 240
    x = (rng.standard_normal((6, 16)) * 3)[rng.integers(0, 6, n)] + rng.standard_normal((n, 16))
    features = FeatureSet.from_arrays(
        tasks=np.repeat(["a", "b", "c"], [100, 80, 60]),
        columns={
            "aum": rng.random(n), "n_images": (rng.random(n) > 0.1).astype(int), "el2n": rng.random(n),
            "answer_nll": rng.random(n), "answer_nll_noinstr": rng.random(n),
        },
        arrays={"last_token_final": x.astype(np.float32), "mean_embed_final": x.astype(np.float32), "visual_mean": x},
    )
    fitted = get_method(name, **params).fit(features)
    for budget in (0.1, 0.15, 0.2, 0.1):
        swept = fitted.select_budget(budget)
        fresh = get_method(name, **params).select(features, budget)
        assert np.array_equal(swept.selected, fresh.selected)
        assert np.array_equal(swept.scores, fresh.scores, equal_nan=True)
        for key in fresh.values:
            assert np.array_equal(swept.values[key], fresh.values[key], equal_nan=True)
        if fresh.order is not None:
            assert np.array_equal(swept.order, fresh.order)


def test_subclasses_are_checked_once_with_their_own_parameters():
    checks = []

    class Base(SelectionMethod):
        _parameter_constraints = {"a": Param("a", Interval(int, 0, None))}

        def __init__(self, *, a: int = 1):
            self.a = a

        def check_params(self):
            checks.append(type(self).__name__)
            super().check_params()

    class Derived(Base):
        _parameter_constraints = {**Base._parameter_constraints, "b": Param("b", Choice("x", "y"))}

        def __init__(self, *, a: int = 1, b: str = "x"):
            super().__init__(a=a)
            self.b = b

    Derived(b="y")
    assert checks == ["Derived"] and Derived.param_names() == ["a", "b"]
    with pytest.raises(ConfigError, match="b='z'"):
        Derived(b="z")
    with pytest.raises(ConfigError, match="a=-1"):
        Base(a=-1)


def test_an_impossible_budget_fails_before_the_fit(monkeypatch):
    method = get_method("length")
    monkeypatch.setattr(method, "fit", lambda features: pytest.fail("fit ran"))
    with pytest.raises(BudgetError, match="exceeds"):
        method.select(FeatureSet.from_arrays(n=5, columns={"n_answer_tokens": np.arange(5)}), 6)
