"""Scale benchmark of the PRISM selection stage (from a features directory).

Generates (once; reused when it exists with the same parameters) a features directory under
``--workdir``: ``--n`` samples (default 665,298, in the 12 source blocks of
llava_v1_5_mix665k.json, the last one, 40,688 rows, text-only), a ``--dim``-wide float16
``visual_mean.npy`` (default 4,096: 5.4 GB at 665k rows; the text-only rows are zero) and the
``n_images`` column. Then runs PRISM in a fresh process per configuration and reports wall time
and peak RSS per streamed pass.

    python benchmarks/prism_scale.py --workdir scratch/pr665k
    python benchmarks/prism_scale.py --workdir scratch/pr33k --n 33000

Synthetic rows: per source block a centre, groups and sub-blobs in a 64-d latent space, mapped
to ``dim`` by a fixed random matrix, plus a shared offset (hidden states have one) and noise.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _measure import Monitor

BLOCKS = (57669, 23240, 76803, 82783, 8998, 66160, 48447, 86417, 72140, 80000, 21953, 40688)
LATENT = 64


def _block_sizes(n: int) -> list[int]:
    sizes = np.floor(np.array(BLOCKS) * n / sum(BLOCKS)).astype(int)
    sizes[0] += n - sizes.sum()
    return sizes.tolist()


def generate(workdir: Path, n: int, dim: int, seed: int) -> None:
    import torch

    from mmselect.features.store import FeatureSet

    meta = {"n": n, "dim": dim, "seed": seed, "generator": 1}
    meta_path, path = workdir / "synth.json", workdir / "visual_mean.npy"
    if meta_path.exists() and json.loads(meta_path.read_text()) == meta and path.exists():
        print(f"reusing {workdir} ({n} x {dim})")
        return
    workdir.mkdir(parents=True, exist_ok=True)
    sizes = _block_sizes(n)
    tasks = np.repeat([f"block{t:02d}" for t in range(len(sizes))], sizes)
    n_images = np.ones(n, dtype=np.int64)
    n_images[n - sizes[-1] :] = 0  # the last block is text-only, as ShareGPT in LLaVA-665K
    FeatureSet.from_arrays(n=n, tasks=tasks, columns={"n_images": n_images}).save(workdir)
    rng = np.random.default_rng([seed, 1])
    proj = (rng.standard_normal((LATENT, dim)) / np.sqrt(LATENT)).astype(np.float32)
    offset = (rng.standard_normal(dim) * 0.5).astype(np.float32)
    bank = rng.standard_normal((8192, dim), dtype=np.float32) * 0.05
    started = time.perf_counter()
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)), "fortran_order": False, "shape": (n, dim)}
        )
        for t, size in enumerate(sizes):
            if t == len(sizes) - 1:  # text-only block: no visual feature
                handle.write(np.zeros((size, dim), dtype=np.float16).tobytes())
                continue
            brng = np.random.default_rng([seed, 2, t])
            centre = brng.standard_normal(LATENT) * 3.0
            n_groups = int(brng.integers(8, 40))
            group = brng.integers(0, n_groups, size)
            group_centres = centre + brng.standard_normal((n_groups, LATENT)) * brng.uniform(0.6, 1.4, (n_groups, 1))
            sub = brng.integers(0, 8, size)
            sub_centres = brng.standard_normal((n_groups, 8, LATENT)) * 0.3
            latent = group_centres[group] + sub_centres[group, sub] + brng.standard_normal((size, LATENT)) * 0.12
            for a in range(0, size, 8192):
                x = latent[a : a + 8192].astype(np.float32) @ proj + offset
                x += bank[brng.integers(0, len(bank), len(x))]
                handle.write(torch.from_numpy(x).half().numpy().tobytes())
            print(f"  block {t}: {size} rows ({time.perf_counter() - started:.0f}s)", flush=True)
    meta_path.write_text(json.dumps(meta))
    print(f"generated {n} x {dim} float16 ({path.stat().st_size / 1e9:.1f} GB) in {time.perf_counter() - started:.0f}s")


def run_selection(workdir: Path, budget: str, params: dict) -> dict:
    from mmselect.features.store import FeatureSet
    from mmselect.methods import get_method
    from mmselect.methods import prism as module

    sampler = Monitor()
    inner = module.iter_row_blocks
    count = {"passes": 0}

    def counted(*args, **kwargs):  # one call = one streamed pass over the rows
        yield from inner(*args, **kwargs)
        count["passes"] += 1
        sampler.mark(f"streamed pass {count['passes']}")

    module.iter_row_blocks = counted
    t0 = time.perf_counter()
    features = FeatureSet.load(workdir)
    sampler.mark("load features")
    result = get_method("prism", **params).select(features, budget)
    sampler.mark("ranking + output")
    total = time.perf_counter() - t0
    sampler.stop()
    stages = sampler.stages
    if len(stages) > 8:  # per-task scope: many small passes; summarise them
        passes = [s for s in stages if s["stage"].startswith("streamed")]
        stages = [stages[0], {"stage": f"{len(passes)} streamed passes (all tasks)", "seconds": sum(s["seconds"] for s in passes),
                              "cpu_seconds": sum(s["cpu_seconds"] for s in passes),
                              "peak_rss": max(s["peak_rss"] for s in passes)}, stages[-1]]
    return {
        "n": features.n,
        "dim": int(features.array("visual_mean").shape[1]),
        "budget": result.info["budget"],
        "selected": result.n_selected,
        "stages": stages,
        "total_seconds": total,
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "info": result.info,
        "params": params,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }


def print_report(report: dict) -> None:
    gib = 2**30
    print(f"\nPRISM {json.dumps(report['params'])}: {report['n']} x {report['dim']}, budget {report['budget']}, "
          f"selected {report['selected']}, {report['cpus']} CPUs, load average at the end {report['load_average'][0]:.1f}")
    print(f"{'stage':40s} {'wall s':>8s} {'CPU s':>8s} {'peak RSS GiB':>13s}")
    for s in report["stages"]:
        print(f"{s['stage']:40s} {s['seconds']:8.1f} {s['cpu_seconds']:8.1f} {s['peak_rss'] / gib:13.2f}")
    cpu = sum(s["cpu_seconds"] for s in report["stages"])
    print(f"{'total (load + select)':40s} {report['total_seconds']:8.1f} {cpu:8.1f} {report['ru_maxrss'] / gib:13.2f}  (ru_maxrss)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--n", type=int, default=665298)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", default="0.3")
    parser.add_argument(
        "--configs",
        default='[{}, {"center": "per_vector"}, {"scope": "per_task"}]',
        help="JSON list of PRISM parameter dicts, one fresh process each",
    )
    parser.add_argument("--select-only", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.select_only is not None:
        report = run_selection(args.workdir, args.budget, json.loads(args.select_only))
        print_report(report)
        return
    generate(args.workdir, args.n, args.dim, args.seed)
    for params in json.loads(args.configs):
        command = [sys.executable, __file__, "--workdir", str(args.workdir), "--budget", args.budget,
                   "--select-only", json.dumps(params)]
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
