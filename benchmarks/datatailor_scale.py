"""Scale benchmark of the DataTailor selection stage on LLaVA-665k-sized synthetic features.

Generates a features directory under ``--workdir`` (once; reused when it exists with the same
size): 665,298 samples in the 12 task blocks of llava_v1_5_mix665k.json, a 4,096-d float16
``last_token.npy`` (5.4 GB) with clustered structure, and the ``sve``, ``sv_top_ratio``,
``rounds`` columns. Then runs ``DataTailor`` in a fresh process (so its peak RSS is the
selection's own) and reports wall time and peak RSS per stage.

    python benchmarks/datatailor_scale.py --workdir scratch/dt665k            # full size
    python benchmarks/datatailor_scale.py --workdir scratch/dt33k --scale 0.05  # quick run
    python benchmarks/datatailor_scale.py --cost-sizes 9000 10000 10001 15000 20000 40000 86417

``--cost-sizes`` instead times the clustering stage alone (``DataTailor.cluster`` with the
given ``--params``) on one synthetic task of each size, in memory: the cost across the switch
from exact Ward to the approximate route.

Synthetic features: each task has a centre; inside it a hierarchy of groups and sub-blobs
(Gaussian, with spreads that vary from blob to blob, and 1 % broad outliers) in a 64-d latent
space, mapped to 4,096-d by a fixed random matrix, plus a shared offset (as LLM hidden states
have) and small isotropic noise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _measure import Monitor, cpu_seconds

BLOCKS = (57669, 23240, 76803, 82783, 8998, 66160, 48447, 86417, 72140, 80000, 21953, 40688)
LATENT = 64


# ----------------------------------------------------------------------------------------------
# synthetic features
# ----------------------------------------------------------------------------------------------
class Synth:
    """Clustered synthetic last-token features (shared with datatailor_agreement.py)."""

    def __init__(self, dim: int = 4096, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.dim = dim
        self.seed = seed
        self.proj = (rng.standard_normal((LATENT, dim)) / np.sqrt(LATENT)).astype(np.float32)
        self.offset = (rng.standard_normal(dim) * 0.5).astype(np.float32)
        self.offset[rng.choice(dim, 8, replace=False)] += 20.0  # a few massive activations

    def task_latent(self, n: int, task_seed: int) -> np.ndarray:
        """Latent points of one task: groups -> sub-blobs -> points, plus outliers."""
        rng = np.random.default_rng([self.seed, task_seed])
        centre = rng.standard_normal(LATENT) * 3.0
        n_groups = int(rng.integers(8, 40))
        group_sizes = rng.multinomial(n, rng.dirichlet(np.full(n_groups, 1.5)))
        points = np.empty((n, LATENT), dtype=np.float32)
        at = 0
        for size in group_sizes:
            if size == 0:
                continue
            group = centre + rng.standard_normal(LATENT) * rng.uniform(0.6, 1.4)
            n_sub = int(rng.integers(2, 12))
            sub_sizes = rng.multinomial(size, rng.dirichlet(np.full(n_sub, 1.0)))
            for sub_size in sub_sizes:
                if sub_size == 0:
                    continue
                sub = group + rng.standard_normal(LATENT) * rng.uniform(0.15, 0.45)
                spread = rng.uniform(0.04, 0.2)
                points[at : at + sub_size] = sub + rng.standard_normal((sub_size, LATENT)) * spread
                at += sub_size
        outliers = rng.random(n) < 0.01
        points[outliers] = centre + rng.standard_normal((int(outliers.sum()), LATENT)) * 1.5
        return points[rng.permutation(n)]

    def features(self, latent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = latent @ self.proj
        x += self.offset
        x += rng.standard_normal(x.shape, dtype=np.float32) * 0.02
        return x


def scalar_columns(sizes, seed: int = 0):
    rng = np.random.default_rng([seed, 99])
    n = int(sum(sizes))
    task_ids = np.repeat(np.arange(len(sizes)), sizes)
    # Per-task level of sigma_1 / sum(sigma) (drives the budget split), spread within a task.
    level = rng.uniform(0.05, 0.25, size=len(sizes))
    top = np.clip(level[task_ids] * rng.lognormal(0.0, 0.25, n), 0.005, 0.95)
    sve = np.clip(rng.normal(5.5, 0.8, n), 0.5, None)
    multi = rng.random(len(sizes)) < 0.4  # some tasks are multi-round conversations
    rounds = np.where(multi[task_ids], rng.integers(1, 12, n), rng.integers(1, 3, n))
    return task_ids, sve, top, rounds


def generate(workdir: Path, scale: float, seed: int = 0, dim: int = 4096) -> dict:
    from mmselect.features.store import FeatureSet

    sizes = [max(50, int(round(b * scale))) for b in BLOCKS]
    n = sum(sizes)
    meta_path = workdir / "synth.json"
    meta = {"sizes": sizes, "seed": seed, "dim": dim}
    if meta_path.exists() and json.loads(meta_path.read_text()) == meta and (workdir / "last_token.npy").exists():
        print(f"reusing {workdir} ({n} samples)")
        return meta
    workdir.mkdir(parents=True, exist_ok=True)
    task_ids, sve, top, rounds = scalar_columns(sizes, seed)
    FeatureSet.from_arrays(
        tasks=[f"block{t:02d}" for t in task_ids],
        columns={"sve": sve, "sv_top_ratio": top, "rounds": rounds},
    ).save(workdir)
    synth = Synth(dim=dim, seed=seed)
    rng = np.random.default_rng([seed, 7])
    started = time.perf_counter()
    path = workdir / "last_token.npy"
    with open(path, "wb") as handle:  # plain writes: no memory map, low RSS
        np.lib.format.write_array_header_1_0(
            handle, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)), "fortran_order": False, "shape": (n, dim)}
        )
        for t, size in enumerate(sizes):
            latent = synth.task_latent(size, t)
            for a in range(0, size, 8192):
                handle.write(synth.features(latent[a : a + 8192], rng).astype(np.float16).tobytes())
            print(f"  task {t}: {size} rows ({time.perf_counter() - started:.0f}s)", flush=True)
    meta_path.write_text(json.dumps(meta))
    print(f"generated {n} x {dim} float16 in {time.perf_counter() - started:.0f}s -> {path}")
    return meta


# ----------------------------------------------------------------------------------------------
# measurement
# ----------------------------------------------------------------------------------------------
class StageLog(logging.Handler):
    """Collects the method's per-task stage records with the peak RSS and CPU time of each stage."""

    def __init__(self, sampler: Monitor):
        super().__init__(logging.INFO)
        self.sampler = sampler
        self.rows = []
        self.cpu = cpu_seconds()

    def emit(self, record):
        if hasattr(record, "dt_stage"):
            cpu = cpu_seconds()
            self.rows.append(
                {"task": record.dt_task, "stage": record.dt_stage, "seconds": record.dt_seconds,
                 "cpu_seconds": cpu - self.cpu, "peak_rss": self.sampler.take(), "message": record.getMessage()}
            )
            self.cpu = cpu
            row = self.rows[-1]
            print("   ", record.getMessage(), f"cpu {row['cpu_seconds']:.1f}s peak RSS {row['peak_rss'] / 2**30:.2f} GiB",
                  flush=True)


def run_selection(workdir: Path, budget: str, params: dict) -> dict:
    from mmselect.features.store import FeatureSet
    from mmselect.methods import get_method

    sampler = Monitor()
    handler = StageLog(sampler)
    logger = logging.getLogger("mmselect.methods.datatailor")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    stages = []
    t0, c0 = time.perf_counter(), cpu_seconds()
    features = FeatureSet.load(workdir)
    stages.append({"stage": "load features", "seconds": time.perf_counter() - t0,
                   "cpu_seconds": cpu_seconds() - c0, "peak_rss": sampler.take()})
    method = get_method("datatailor", **params)
    t1, c1 = time.perf_counter(), cpu_seconds()
    handler.cpu = c1
    result = method.select(features, budget)
    select_seconds = time.perf_counter() - t1
    select_cpu = cpu_seconds() - c1
    sampler.stop()
    by_stage = {}
    for row in handler.rows:
        agg = by_stage.setdefault(row["stage"], {"stage": row["stage"], "seconds": 0.0, "cpu_seconds": 0.0, "peak_rss": 0})
        agg["seconds"] += row["seconds"]
        agg["cpu_seconds"] += row["cpu_seconds"]
        agg["peak_rss"] = max(agg["peak_rss"], row["peak_rss"])
    stages.extend(by_stage.values())
    stages.append({"stage": "budgets, ranks, combination", "seconds": select_seconds - sum(s["seconds"] for s in by_stage.values()),
                   "cpu_seconds": select_cpu - sum(s["cpu_seconds"] for s in by_stage.values()), "peak_rss": sampler.take()})
    total = time.perf_counter() - t0
    return {
        "n": features.n,
        "selected": result.n_selected,
        "budget": result.info["budget"],
        "stages": stages,
        "per_task": handler.rows,
        "select_seconds": select_seconds,
        "select_cpu_seconds": select_cpu,
        "total_seconds": total,
        "total_cpu_seconds": cpu_seconds() - c0,
        "load_average_mean": float(np.mean(sampler.loads)) if sampler.loads else None,
        "load_average_max": float(np.max(sampler.loads)) if sampler.loads else None,
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "routes": result.info["ward_routes"],
        "tasks": [
            {key: t.get(key) for key in ("task", "n", "budget", "clusters", "singleton_clusters", "largest_cluster",
                                         "route", "micro_clusters", "ward_points", "weight_error_mean",
                                         "uniqueness_sampled_clusters")}
            for t in result.info["tasks"]
        ],
        "params": params,
        "cpus": os.cpu_count(),
    }


def print_report(report: dict) -> None:
    gib = 2**30
    print(f"\nDataTailor selection: {report['n']} samples, budget {report['budget']}, selected {report['selected']} "
          f"({report['cpus']} CPUs)")
    print(f"{'stage':32s} {'wall s':>9s} {'CPU s':>9s} {'peak RSS GiB':>13s}")
    for s in report["stages"]:
        print(f"{s['stage']:32s} {s['seconds']:9.1f} {s['cpu_seconds']:9.1f} {s['peak_rss'] / gib:13.2f}")
    print(f"{'total (load + select)':32s} {report['total_seconds']:9.1f} {report['total_cpu_seconds']:9.1f} "
          f"{report['ru_maxrss'] / gib:13.2f}  (ru_maxrss)")
    if report["load_average_mean"] is not None:
        print(f"1-min load average during the run: mean {report['load_average_mean']:.1f}, "
              f"max {report['load_average_max']:.1f} (on {report['cpus']} CPUs)")
    print("\nper task:")
    for t in report["tasks"]:
        print("  ", json.dumps(t))


def cost_curve(sizes, params: dict, dim: int = 4096, seed: int = 0) -> list[dict]:
    """Wall and CPU seconds of the clustering stage of one synthetic task per size."""
    from mmselect.methods import get_method

    synth = Synth(dim=dim, seed=seed)
    # Warm-up (imports of faiss/fastcluster, BLAS threads), not timed.
    warm = synth.features(synth.task_latent(300, 0), np.random.default_rng(0))
    get_method("datatailor", **{**params, "exact_ward_max": 0}).cluster(warm)
    get_method("datatailor", **{**params, "exact_ward_max": 300}).cluster(warm)
    rows = []
    for size in sizes:
        x = synth.features(synth.task_latent(size, 1000 + size), np.random.default_rng([seed, size]))
        method = get_method("datatailor", **params)
        sampler = Monitor()
        started, cpu = time.perf_counter(), cpu_seconds()
        labels, route = method.cluster(x, rng=np.random.default_rng([seed, size]))
        row = {"n": size, "route": route["route"], "micro_clusters": route.get("micro_clusters"),
               "clusters": int(labels.max()) + 1, "seconds": time.perf_counter() - started,
               "cpu_seconds": cpu_seconds() - cpu, "peak_rss": sampler.take()}
        sampler.stop()
        rows.append(row)
        print(json.dumps(row), flush=True)
        del x
    print(f"\n{'n':>7s} {'route':>12s} {'micro':>6s} {'K':>4s} {'wall s':>7s} {'CPU s':>7s} {'peak RSS GiB':>12s}")
    for r in rows:
        print(f"{r['n']:7d} {r['route']:>12s} {r['micro_clusters'] or 0:6d} {r['clusters']:4d} {r['seconds']:7.1f} "
              f"{r['cpu_seconds']:7.1f} {r['peak_rss'] / 2**30:12.2f}")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--cost-sizes", type=int, nargs="+", help="time the clustering of one task per size")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the 665,298 samples (e.g. 0.05)")
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--budget", default="0.15")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--params", default="{}", help="JSON dict of DataTailor parameters")
    parser.add_argument("--report", type=Path, help="write the JSON report here")
    parser.add_argument("--select-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    params = json.loads(args.params)
    if args.cost_sizes:
        rows = cost_curve(args.cost_sizes, params, dim=args.dim, seed=args.seed)
        if args.report:
            args.report.write_text(json.dumps(rows, indent=2))
        return
    if args.workdir is None:
        parser.error("--workdir is required (unless --cost-sizes)")
    if args.select_only:
        report = run_selection(args.workdir, args.budget, params)
        print_report(report)
        if args.report:
            args.report.write_text(json.dumps(report, indent=2))
        return
    generate(args.workdir, args.scale, seed=args.seed, dim=args.dim)
    # Fresh process, so the peak RSS is the selection's alone.
    command = [sys.executable, __file__, "--workdir", str(args.workdir), "--budget", args.budget,
               "--params", args.params, "--select-only"]
    if args.report:
        command += ["--report", str(args.report)]
    subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
