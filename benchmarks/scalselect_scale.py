"""Scale benchmark of the ScalSelect selection stage (fit + select on a memory-mapped array).

Generates (once; reused when it exists with the same parameters) a features directory under
``--workdir``: ``--n`` records (default 665,298, as LLaVA-665K), the last ``--text-only``
(default 40,688, the ShareGPT block) without vision tokens, a ``--dim``-wide float32
``scalselect_embed.npy`` (default 4,096: 10.9 GB; zero rows for the text-only records) and the
``scalselect_vision_tokens`` column. Rows are a seeded random low-rank signal (``--rank``
directions, scales 8 x 0.93^j) plus a common offset and isotropic noise (``--noise``), written block by block
with ``numpy.lib.format.open_memmap``. ``--features DIR`` runs on an existing features directory
instead.

The selection runs in a fresh process (its resident set is then the method's alone), which
reports wall time, CPU time and peak RSS per stage (RSS sampled every 50 ms from
``/proc/self/status``; the total is the process's high-water mark ``VmHWM``) and the per-pass times the method records.

    python benchmarks/scalselect_scale.py --workdir scratch/ss665k
    python benchmarks/scalselect_scale.py --workdir scratch/ss665k_1024 --dim 1024
    python benchmarks/scalselect_scale.py --features feats/ --budget 0.16

``--cleanup`` deletes the generated array afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _measure import Monitor, proc_status

ARRAY = "scalselect_embed.npy"


def generate(workdir: Path, n: int, dim: int, text_only: int, rank: int, noise: float, seed: int) -> None:
    from mmselect.features.store import FeatureSet

    meta = {"n": n, "dim": dim, "text_only": text_only, "rank": rank, "noise": noise, "seed": seed, "generator": 1}
    meta_path, path = workdir / "synth.json", workdir / ARRAY
    if meta_path.exists() and json.loads(meta_path.read_text()) == meta and path.exists():
        print(f"reusing {workdir} ({n} x {dim})")
        return
    workdir.mkdir(parents=True, exist_ok=True)
    tokens = np.full(n, 576, dtype=np.int64)
    tokens[n - text_only :] = 0
    FeatureSet.from_arrays(n=n, columns={"scalselect_vision_tokens": tokens}).save(workdir)
    rng = np.random.default_rng([seed, 1])
    basis = np.linalg.qr(rng.standard_normal((dim, rank)))[0].T.astype(np.float32)  # (rank, dim), orthonormal rows
    scales = (8.0 * 0.93 ** np.arange(rank)).astype(np.float32)
    offset = (rng.standard_normal(dim) * 2.0).astype(np.float32)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    started, step = time.perf_counter(), 8192
    image_rows = n - text_only
    for start in range(0, n, step):
        stop = min(n, start + step)
        block_rng = np.random.default_rng([seed, 2, start])
        block = block_rng.standard_normal((stop - start, dim), dtype=np.float32) * np.float32(noise)
        block += (block_rng.standard_normal((stop - start, rank), dtype=np.float32) * scales) @ basis
        block += offset
        block[max(0, image_rows - start) :] = 0.0  # text-only records: no representation
        out[start:stop] = block
        if start % (step * 16) == 0:
            out.flush()
            print(f"  {stop} rows ({time.perf_counter() - started:.0f}s)", flush=True)
    out.flush()
    del out
    meta_path.write_text(json.dumps(meta))
    print(f"generated {n} x {dim} float32 ({path.stat().st_size / 1e9:.1f} GB) in {time.perf_counter() - started:.0f}s")


def run_selection(features_dir: Path, budget: str, params: dict) -> dict:
    from mmselect.features.store import FeatureSet
    from mmselect.methods import get_method

    monitor = Monitor()
    t0 = time.perf_counter()
    features = FeatureSet.load(features_dir)
    monitor.mark("load features")
    method = get_method("scalselect", **params).fit(features)
    monitor.mark("fit (streamed passes + eigh)")
    result = method.select_budget(budget)
    monitor.mark("select")
    total = time.perf_counter() - t0
    monitor.stop()
    return {
        "n": features.n,
        "dim": int(features.array("scalselect_embed").shape[1]),
        "budget": result.info["budget"],
        "selected": result.n_selected,
        "k": result.info["scalselect_k"],
        "energy_captured": result.info["energy_captured"],
        "candidates": result.info["candidates"],
        "passes": result.info["fit_time_s"],
        "stages": monitor.stages,
        "total_seconds": total,
        # VmHWM, not ru_maxrss: a forked child's ru_maxrss starts from its parent's high-water mark,
        # which after generating the array through a memory map is the array's size
        "peak_rss": proc_status("VmHWM"),
        "params": params,
        "cpus": os.cpu_count(),
        "load_average_max": max(monitor.loads) if monitor.loads else os.getloadavg()[0],
    }


def print_report(report: dict) -> None:
    gib = 2**30
    print(f"\nScalSelect {json.dumps(report['params'])}: {report['n']} x {report['dim']} float32, "
          f"{report['candidates']} candidates, budget {report['budget']}, selected {report['selected']}, "
          f"k = {report['k']} ({report['energy_captured']:.4f} of the energy), {report['cpus']} CPUs, "
          f"highest 1-min load average {report['load_average_max']:.1f}")
    print(f"{'stage':40s} {'wall s':>8s} {'CPU s':>8s} {'peak RSS GiB':>13s}")
    for s in report["stages"]:
        print(f"{s['stage']:40s} {s['seconds']:8.1f} {s['cpu_seconds']:8.1f} {s['peak_rss'] / gib:13.2f}")
    cpu = sum(s["cpu_seconds"] for s in report["stages"])
    print(f"{'total (load + fit + select)':40s} {report['total_seconds']:8.1f} {cpu:8.1f} "
          f"{report['peak_rss'] / gib:13.2f}  (VmHWM)")
    print("inside fit (wall s): " + ", ".join(f"{name} {s:.1f}" for name, s in report["passes"].items()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("scratch/ss665k"))
    parser.add_argument("--features", type=Path, default=None, help="an existing features directory (no generation)")
    parser.add_argument("--n", type=int, default=665298)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--text-only", type=int, default=40688)
    parser.add_argument("--rank", type=int, default=64, help="directions of the planted signal")
    parser.add_argument("--noise", type=float, default=0.1, help="standard deviation of the isotropic noise")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", default="100000", help="official NUM_SELECTED by default")
    parser.add_argument("--params", default="{}", help="JSON dict of ScalSelect parameters")
    parser.add_argument("--cleanup", action="store_true", help="delete the generated array afterwards")
    parser.add_argument("--select-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    features_dir = args.features or args.workdir
    if args.select_only:
        print_report(run_selection(features_dir, args.budget, json.loads(args.params)))
        return
    if args.features is None:
        generate(args.workdir, args.n, args.dim, args.text_only, args.rank, args.noise, args.seed)
    command = [sys.executable, __file__, "--features", str(features_dir), "--budget", args.budget,
               "--params", args.params, "--select-only"]
    try:
        subprocess.run(command, check=True)
    finally:
        if args.cleanup and args.features is None:
            (args.workdir / ARRAY).unlink(missing_ok=True)
            (args.workdir / "synth.json").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
