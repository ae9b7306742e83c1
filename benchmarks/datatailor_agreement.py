"""Agreement of DataTailor's approximate Ward route with exact Ward, on tasks small enough for both.

For each task size, one synthetic task (same generator as datatailor_scale.py) is clustered by
exact Ward and by the approximate route (k-means micro-clusters -> size-weighted Ward), and the
full selection is run both ways at the given budget. Reported: adjusted Rand index of the
cluster labels, numbers of clusters, and Jaccard index of the two selections.

The approximate route's accuracy depends on the number of samples per micro-cluster
(n / approx_micro_clusters). ``--ratios`` forces the approximate route (``exact_ward_max=0``) at
given samples-per-micro-cluster ratios, so that a task small enough for exact Ward reproduces the
regime of a larger one (the default gives the 86,417-sample task ceil(n / 5) micro-clusters, a
ratio of 5); ``--default`` also runs the package defaults as they are (exact Ward up to
``exact_ward_max``, above it ``approx_micro_clusters="auto"``). Weights are exact unless
``--ward-factor`` rounds them to fit ``factor x micro-clusters`` repeated points (the earlier
defaults: 4).

    python benchmarks/datatailor_agreement.py --sizes 2000 5000 10000 20000 --ratios 5 21
    python benchmarks/datatailor_agreement.py --sizes 15000 25000 --ratios 5 --default
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datatailor_scale import Synth  # noqa: E402


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def main(argv=None):
    from sklearn.metrics import adjusted_rand_score

    from mmselect.features.store import FeatureSet
    from mmselect.methods.datatailor import DataTailor

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 10000, 20000])
    parser.add_argument("--ratios", type=float, nargs="*", default=[5.0, 21.0],
                        help="samples per micro-cluster of the forced approximate route")
    parser.add_argument("--default", action="store_true", help="also run the default parameters as they are")
    parser.add_argument("--ward-factor", type=float, default=None,
                        help="approx_ward_points = factor x micro-clusters (rounded weights; the earlier "
                             "defaults were 16384/4096 = 4); default: exact weights")
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--budget", default="0.15")
    parser.add_argument("--tasks-per-size", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--uniqueness-max-refs", type=int, default=10**9,
                        help="passed to both runs (default: exact uniqueness, so only the clustering differs)")
    parser.add_argument("--noise-floor", action="store_true",
                        help="also compare exact Ward on the features with exact Ward on the same features "
                             "rounded to float16 (how much the method itself moves under storage rounding)")
    parser.add_argument("--lam-reference", type=float, default=None,
                        help="also compare exact Ward at lam=0.1 with exact Ward at this lam (the method's own "
                             "sensitivity to its cut, as a yardstick for the approximation)")
    parser.add_argument("--report", type=Path)
    args = parser.parse_args(argv)

    synth = Synth(dim=args.dim, seed=args.seed)
    rows = []
    for size in args.sizes:
        for rep in range(args.tasks_per_size):
            task_seed = 1000 + 10 * size + rep
            rng = np.random.default_rng(task_seed)
            x = synth.features(synth.task_latent(size, task_seed), rng)
            features = FeatureSet.from_arrays(
                columns={
                    "sve": np.clip(rng.normal(5.5, 0.8, size), 0.5, None),
                    "sv_top_ratio": rng.uniform(0.05, 0.2, size),
                    "rounds": rng.integers(1, 4, size),
                },
                arrays={"last_token": x},
            )
            started = time.perf_counter()
            exact = DataTailor(exact_ward_max=10**9, uniqueness_max_refs=args.uniqueness_max_refs,
                               seed=args.seed).select(features, args.budget)
            exact_s = time.perf_counter() - started
            floor = {}
            if args.noise_floor:
                rounded = features.with_arrays(last_token=x.astype(np.float16).astype(np.float32))
                other = DataTailor(exact_ward_max=10**9, uniqueness_max_refs=args.uniqueness_max_refs,
                                   seed=args.seed).select(rounded, args.budget)
                floor = {
                    "ari_fp16": float(adjusted_rand_score(exact.values["cluster"], other.values["cluster"])),
                    "jaccard_fp16": jaccard(exact.selected, other.selected),
                }
                print(json.dumps({"n": size, "task": rep, **floor}), flush=True)
            if args.lam_reference is not None:
                other = DataTailor(exact_ward_max=10**9, uniqueness_max_refs=args.uniqueness_max_refs,
                                   lam=args.lam_reference, seed=args.seed).select(features, args.budget)
                floor["ari_lam"] = float(adjusted_rand_score(exact.values["cluster"], other.values["cluster"]))
                floor["jaccard_lam"] = jaccard(exact.selected, other.selected)
                print(json.dumps({"n": size, "task": rep, **floor}), flush=True)
            configs = [("default", {})] if args.default else []
            for ratio in args.ratios:
                micro = max(2, int(round(size / ratio)))
                ward_points = "auto" if args.ward_factor is None else int(args.ward_factor * micro)
                configs.append((f"{ratio:g}", {"exact_ward_max": 0, "approx_micro_clusters": micro,
                                               "approx_ward_points": ward_points}))
            for label, params in configs:
                params = {**params, "uniqueness_max_refs": args.uniqueness_max_refs, "seed": args.seed}
                started = time.perf_counter()
                approx = DataTailor(**params).select(features, args.budget)
                approx_s = time.perf_counter() - started
                task = approx.info["tasks"][0]
                row = {
                    "n": size,
                    "task": rep,
                    "config": label,
                    "route": task["route"],
                    "micro_clusters": task.get("micro_clusters"),
                    "ward_points": task.get("ward_points"),
                    "clusters_exact": exact.info["tasks"][0]["clusters"],
                    "clusters_approx": task["clusters"],
                    "ari": float(adjusted_rand_score(exact.values["cluster"], approx.values["cluster"])),
                    "jaccard": jaccard(exact.selected, approx.selected),
                    **floor,
                    "exact_s": exact_s,
                    "approx_s": approx_s,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    nan = float("nan")
    print(f"\n{'n':>6s} {'config':>8s} {'micro':>6s} {'K exact':>7s} {'K approx':>8s} {'ARI':>6s} {'Jaccard':>7s} "
          f"{'ARI fp16':>8s} {'J fp16':>7s} {'ARI lam':>7s} {'J lam':>6s} {'exact s':>8s} {'approx s':>8s}")
    for r in rows:
        print(f"{r['n']:6d} {r['config']:>8s} {r['micro_clusters'] or 0:6d} {r['clusters_exact']:7d} {r['clusters_approx']:8d} "
              f"{r['ari']:6.3f} {r['jaccard']:7.3f} {r.get('ari_fp16', nan):8.3f} {r.get('jaccard_fp16', nan):7.3f} "
              f"{r.get('ari_lam', nan):7.3f} {r.get('jaccard_lam', nan):6.3f} {r['exact_s']:8.1f} {r['approx_s']:8.1f}")
    if args.report:
        args.report.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
