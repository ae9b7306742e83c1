"""A budget sweep with one fit against one full selection per budget (DataTailor, COINCIDE).

``method.fit(features)`` does the budget-independent work once (DataTailor: Ward clustering and
the three values per task; COINCIDE: k-means, densities, transferabilities) and
``method.select_budget(b)`` only splits the budget and picks. The sweep is timed both ways on
synthetic features, and the selections are checked to be identical.

    python benchmarks/budget_sweep.py --budgets 0.1 0.15 0.2

DataTailor: ``--dt-tasks`` tasks of ``--dt-task-size`` samples, ``last_token`` of width
``--dt-dim`` (exact Ward on every task). COINCIDE: ``--cc-n`` rows of a 5-layer embedding of
width ``--cc-dim``, the official K = N / 67 clusters.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def datatailor_features(n_tasks: int, task_size: int, dim: int, seed: int):
    from mmselect.features.store import FeatureSet

    rng = np.random.default_rng(seed)
    n = n_tasks * task_size
    centres = rng.standard_normal((40, dim)).astype(np.float32) * 4
    x = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, dim), dtype=np.float32)
    return FeatureSet.from_arrays(
        tasks=np.repeat([f"task{t}" for t in range(n_tasks)], task_size),
        columns={
            "sve": rng.uniform(3, 7, n),
            "sv_top_ratio": np.repeat(rng.uniform(0.05, 0.3, n_tasks), task_size),
            "rounds": rng.integers(1, 5, n),
        },
        arrays={"last_token": x.astype(np.float16)},
    )


def coincide_features(n: int, dim: int, seed: int):
    from mmselect.features.store import FeatureSet

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((200, dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.7 * rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return FeatureSet.from_arrays(n=n, arrays={"coincide_embed": x.astype(np.float16)})


def sweep(name: str, params: dict, features, budgets: list[str], warmup) -> dict:
    from mmselect.methods import get_method

    get_method(name, **params).select(warmup, budgets[0])  # imports and first-call costs, untimed
    t0 = time.perf_counter()
    full = [get_method(name, **params).select(features, b) for b in budgets]
    separate_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    fitted = get_method(name, **params).fit(features)
    fit_s = time.perf_counter() - t0
    per_budget = []
    swept = []
    for b in budgets:
        t1 = time.perf_counter()
        swept.append(fitted.select_budget(b))
        per_budget.append(round(time.perf_counter() - t1, 3))
    sweep_s = time.perf_counter() - t0
    identical = all(np.array_equal(a.selected, b.selected) for a, b in zip(full, swept))
    return {
        "method": name,
        "n": features.n,
        "budgets": budgets,
        "full_selections_s": round(separate_s, 2),
        "fit_s": round(fit_s, 2),
        "select_budget_s": per_budget,
        "fit_then_sweep_s": round(sweep_s, 2),
        "speedup": round(separate_s / sweep_s, 2),
        "identical_selections": identical,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", nargs="+", default=["0.1", "0.15", "0.2"])
    parser.add_argument("--dt-tasks", type=int, default=3)
    parser.add_argument("--dt-task-size", type=int, default=4000)
    parser.add_argument("--dt-dim", type=int, default=1024)
    parser.add_argument("--cc-n", type=int, default=40000)
    parser.add_argument("--cc-dim", type=int, default=640)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["datatailor", "coincide"])
    args = parser.parse_args(argv)
    results = []
    if args.only in (None, "datatailor"):
        features = datatailor_features(args.dt_tasks, args.dt_task_size, args.dt_dim, args.seed)
        warmup = datatailor_features(2, 200, args.dt_dim, args.seed + 1)
        results.append(sweep("datatailor", {}, features, args.budgets, warmup))
        print(json.dumps(results[-1]), flush=True)
    if args.only in (None, "coincide"):
        features = coincide_features(args.cc_n, args.cc_dim, args.seed)
        warmup = coincide_features(2000, args.cc_dim, args.seed + 1)
        results.append(sweep("coincide", {"n_layers": 5}, features, args.budgets, warmup))
        print(json.dumps(results[-1]), flush=True)


if __name__ == "__main__":
    main()
