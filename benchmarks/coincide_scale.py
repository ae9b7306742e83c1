"""Scale benchmark of the COINCIDE selection stage (from a features directory).

Generates (once; reused when it exists with the same parameters) a features directory under
``--workdir`` with ``--n`` samples of a ``--width``-wide float16 ``coincide_embed.npy``
(default 20,480 = 5 layers x [visual 2,048 | text 2,048], as the official TinyLLaVA-2B
embedding; 27 GB at 665k rows) and an ``n_images`` column (6.1 % text-only records, as in
LLaVA-665K), then runs the selection in a fresh process and reports wall time and peak RSS per
stage.

    python benchmarks/coincide_scale.py run --workdir scratch/co100k --n 100000
    python benchmarks/coincide_scale.py run --workdir scratch/co665k --n 665298
    python benchmarks/coincide_scale.py compare --workdir scratch/co20k --n 20000   # effect of the reductions

``compare`` runs the selection with the full-width, all-rows k-means (official) and with the
reductions (``kmeans_dim``, ``kmeans_points_per_centroid``), plus the official configuration
with another seed as a yardstick, and reports the Jaccard index of the selected sets.

Synthetic rows: a hierarchy of concepts (groups -> sub-concepts -> points) in a 64-d latent
space; the visual halves of layer l are ``tanh(latent @ P_l^v + noise)``, the text halves the
same from a latent that mixes the concept with one of 40 "skills"; each half is L2-normalised
and the row divided by sqrt(2 * layers) (unit norm), as the official extraction does.
Text-only records have zero visual halves. Noise is drawn from a fixed bank of Gaussian rows
(two random bank rows per half), which keeps generation fast.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
from _measure import Monitor

LATENT = 64
TEXT_ONLY_FRACTION = 40688 / 665298
BANK_ROWS = 16384


# ----------------------------------------------------------------------------------------------
# synthetic features
# ----------------------------------------------------------------------------------------------
def _latent(n: int, seed: int, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Concept latents (n, 64) and skill ids: groups -> sub-concepts -> points."""
    rng = np.random.default_rng([seed, 1])
    group_of = rng.choice(n_groups, size=n, p=rng.dirichlet(np.full(n_groups, 2.0)))
    group_centres = rng.standard_normal((n_groups, LATENT)) * 1.0
    subs_per_group = 40
    sub_of = rng.integers(0, subs_per_group, n)
    sub_centres = rng.standard_normal((n_groups, subs_per_group, LATENT)) * 0.5
    spread = rng.uniform(0.15, 0.35, (n_groups, subs_per_group))
    latent = group_centres[group_of] + sub_centres[group_of, sub_of]
    latent += rng.standard_normal((n, LATENT)) * spread[group_of, sub_of][:, None]
    skills = (group_of * 7 + rng.integers(0, 3, n)) % 40
    return latent.astype(np.float32), skills


class Synth:
    def __init__(self, width: int, layers: int, seed: int):
        rng = np.random.default_rng([seed, 2])
        self.half = width // (2 * layers)
        self.layers = layers
        self.width = width
        self.proj = (rng.standard_normal((2 * layers, LATENT, self.half)) / np.sqrt(LATENT)).astype(np.float32)
        self.skill_latent = rng.standard_normal((40, LATENT)).astype(np.float32)
        self.bank = rng.standard_normal((BANK_ROWS, self.half), dtype=np.float32)

    def rows(self, latent, skills, text_only, rng) -> np.ndarray:
        n = len(latent)
        out = np.empty((n, self.width), dtype=np.float32)
        text_latent = 0.7 * latent + 0.7 * self.skill_latent[skills]
        for h in range(2 * self.layers):
            src = latent if h % 2 == 0 else text_latent
            part = src @ self.proj[h]
            part += (self.bank[rng.integers(0, BANK_ROWS, n)] + self.bank[rng.integers(0, BANK_ROWS, n)]) * 0.45
            np.tanh(part, out=part)
            part /= np.linalg.norm(part, axis=1, keepdims=True)
            if h % 2 == 0:
                part[text_only] = 0.0
            out[:, h * self.half : (h + 1) * self.half] = part
        out /= np.sqrt(2 * self.layers)
        return out


def _write_part(args):
    path, header_len, start, stop, width, layers, seed, n, n_groups = args
    import torch

    torch.set_num_threads(1)
    latent, skills = _latent(n, seed, n_groups)
    text_only = _text_only(n, seed)
    synth = Synth(width, layers, seed)
    with open(path, "r+b") as handle:
        handle.seek(header_len + start * width * 2)
        for a in range(start, stop, 4096):
            b = min(stop, a + 4096)
            rng = np.random.default_rng([seed, 3, a])
            rows = synth.rows(latent[a:b], skills[a:b], text_only[a:b], rng)
            handle.write(torch.from_numpy(rows).half().numpy().tobytes())
    return stop - start


def _text_only(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, 4]).random(n) < TEXT_ONLY_FRACTION


def generate(workdir: Path, n: int, width: int, layers: int, seed: int, workers: int = 2) -> None:
    from concurrent.futures import ProcessPoolExecutor

    from mmselect.features.store import FeatureSet

    meta = {"n": n, "width": width, "layers": layers, "seed": seed, "generator": 2}
    meta_path = workdir / "synth.json"
    path = workdir / "coincide_embed.npy"
    if meta_path.exists() and json.loads(meta_path.read_text()) == meta and path.exists():
        print(f"reusing {workdir} ({n} x {width})")
        return
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in workdir.glob("*.npy"):
        stale.unlink()
    text_only = _text_only(n, seed)
    FeatureSet.from_arrays(n=n, columns={"n_images": (~text_only).astype(np.int64)}).save(workdir)
    started = time.perf_counter()
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)), "fortran_order": False, "shape": (n, width)}
        )
        header_len = handle.tell()
        handle.truncate(header_len + n * width * 2)
    n_groups = max(4, n // 2500)
    bounds = np.linspace(0, n, 8 * workers + 1).astype(int)
    jobs = [(path, header_len, int(a), int(b), width, layers, seed, n, n_groups) for a, b in pairwise(bounds)]
    done = 0
    with ProcessPoolExecutor(workers) as pool:
        for rows in pool.map(_write_part, jobs):
            done += rows
            print(f"  {done}/{n} rows ({time.perf_counter() - started:.0f}s)", flush=True)
    meta_path.write_text(json.dumps(meta))
    print(f"generated {n} x {width} float16 ({path.stat().st_size / 1e9:.1f} GB) in {time.perf_counter() - started:.0f}s")


# ----------------------------------------------------------------------------------------------
# measurement
# ----------------------------------------------------------------------------------------------
def _instrument(sampler: Monitor) -> None:
    """Close a stage when each of COINCIDE's internal steps returns."""
    from mmselect.methods.coincide import clusters, method

    def wrap(name, label, module=method):
        inner = getattr(module, name)

        def wrapped(*args, **kwargs):
            out = inner(*args, **kwargs)
            sampler.mark(label if name != "spherical_kmeans" else f"{label} ({kwargs.get('rows') is not None and len(kwargs['rows'])} rows)")
            return out

        setattr(module, name, wrapped)

    wrap("spherical_kmeans", "k-means", clusters)
    wrap("_cluster_pass", "density + kernels (per-cluster pass)")
    wrap("transferability", "transferability")
    wrap("allocate", "allocation")


def run_selection(workdir: Path, budget: str, params: dict) -> dict:
    import torch

    from mmselect.features.store import FeatureSet
    from mmselect.methods import get_method

    sampler = Monitor()
    _instrument(sampler)
    t0 = time.perf_counter()
    features = FeatureSet.load(workdir)
    sampler.mark("load features")
    method = get_method("coincide", **params)
    result = method.select(features, budget)
    sampler.mark("greedy MMD + output")
    total = time.perf_counter() - t0
    sampler.stop()
    clusters = result.info["clusters"]
    return {
        "n": features.n,
        "width": int(features.array("coincide_embed").shape[1]),
        "budget": result.info["budget"],
        "selected": result.n_selected,
        "stages": sampler.stages,
        "total_seconds": total,
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "clusters": {key: clusters.get(key) for key in ("n_clusters", "backend", "kmeans_dim", "kmeans_points_per_centroid")},
        "kmeans_runs": clusters.get("runs"),
        "allocation": result.info["allocation"],
        "timings": result.info["timings"],
        "params": params,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "selected_indices": result.indices.tolist(),
    }


def print_report(report: dict) -> None:
    gib = 2**30
    print(f"\nCOINCIDE selection: {report['n']} x {report['width']}, budget {report['budget']}, selected "
          f"{report['selected']}, K = {report['clusters']['n_clusters']} ({report['clusters']['backend']}, "
          f"kmeans_dim {report['clusters']['kmeans_dim']}, points/centroid {report['clusters']['kmeans_points_per_centroid']}), "
          f"{report['cpus']} CPUs, load average at the end {report['load_average'][0]:.1f}")
    print(f"{'stage':50s} {'wall s':>8s} {'CPU s':>8s} {'disk GB':>8s} {'peak RSS GiB':>13s}")
    for s in report["stages"]:
        print(f"{s['stage']:50s} {s['seconds']:8.1f} {s['cpu_seconds']:8.1f} {s.get('disk_read', 0) / 1e9:8.1f} "
              f"{s['peak_rss'] / gib:13.2f}")
    cpu = sum(s["cpu_seconds"] for s in report["stages"])
    disk = sum(s.get("disk_read", 0) for s in report["stages"])
    print(f"{'total (load + select)':50s} {report['total_seconds']:8.1f} {cpu:8.1f} {disk / 1e9:8.1f} "
          f"{report['ru_maxrss'] / gib:13.2f}  (ru_maxrss)")
    for run in report.get("kmeans_runs") or []:
        print("  k-means", json.dumps({k: v for k, v in run.items() if k != "backend"}))
    print("  allocation", json.dumps(report["allocation"]))


def jaccard(a, b) -> float:
    a, b = set(a), set(b)
    return len(a & b) / max(1, len(a | b))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["generate", "run", "compare", "select-only"])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--n", type=int, default=665298)
    parser.add_argument("--width", type=int, default=20480)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", default="0.2")
    parser.add_argument("--params", default="{}", help="JSON dict of Coincide parameters")
    parser.add_argument("--report", type=Path, help="write the JSON report here")
    args = parser.parse_args(argv)
    params = json.loads(args.params)
    if args.mode == "select-only":
        report = run_selection(args.workdir, args.budget, params)
        print_report(report)
        if args.report:
            args.report.write_text(json.dumps(report))
        return
    generate(args.workdir, args.n, args.width, args.layers, args.seed)
    if args.mode == "generate":
        return

    def fresh_process(run_params: dict, report_path: Path) -> dict:
        # A fresh process, so that the peak RSS is the selection's alone.
        command = [sys.executable, __file__, "select-only", "--workdir", str(args.workdir), "--budget", args.budget,
                   "--params", json.dumps(run_params), "--report", str(report_path)]
        subprocess.run(command, check=True)
        return json.loads(report_path.read_text())

    report_dir = args.report.parent if args.report else args.workdir
    if args.mode == "run":
        fresh_process(params, args.report or args.workdir / "report.json")
        return
    # compare: official k-means vs the reductions, and official with other seeds as a yardstick
    full = {"kmeans_dim": None, "kmeans_points_per_centroid": None}
    configs = {
        "official k-means (full width, all rows)": {**params, **full},
        "official k-means, seed 2": {**params, **full, "seed": 2},
        "official k-means, seed 3": {**params, **full, "seed": 3},
        "kmeans_dim=128": {**params, "kmeans_dim": 128, "kmeans_points_per_centroid": None},
        "kmeans_dim=128, 16 points/centroid": {**params, "kmeans_dim": 128, "kmeans_points_per_centroid": 16},
        "kmeans_dim=128, 16 points/centroid, seed 2": {**params, "kmeans_dim": 128, "kmeans_points_per_centroid": 16, "seed": 2},
    }
    reports = {}
    for i, (name, run_params) in enumerate(configs.items()):
        print(f"\n=== {name}: {json.dumps(run_params)}")
        reports[name] = fresh_process(run_params, report_dir / f"compare_{i}.json")
    names = list(reports)
    reference = reports[names[0]]["selected_indices"]
    n, k = reports[names[0]]["n"], len(reference)
    rng = np.random.default_rng(0)
    random_j = np.mean([jaccard(reference, rng.choice(n, k, replace=False)) for _ in range(5)])
    print(f"\nJaccard index of the selected sets (N={n}, k={k}); uniform random subsets: {random_j:.3f}")
    print(f"{'':40s} " + " ".join(f"{'#' + str(i):>6s}" for i in range(len(names))) + f" {'wall s':>8s} {'k-means s':>10s}")
    for i, a in enumerate(names):
        row = " ".join(f"{jaccard(reports[a]['selected_indices'], reports[b]['selected_indices']):6.3f}" for b in names)
        kmeans_s = sum(s["seconds"] for s in reports[a]["stages"] if s["stage"].startswith("k-means"))
        print(f"#{i} {a:37s} {row} {reports[a]['total_seconds']:8.1f} {kmeans_s:10.1f}")


if __name__ == "__main__":
    main()
