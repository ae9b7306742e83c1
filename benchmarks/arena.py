"""Wall time of the default arena (every method once at 20% plus full, clean-world full, random,
oracle and anti-oracle; one seed) on this machine, with the load average before and after.

    python benchmarks/arena.py --out scratch/arena-bench [--config FILE] [--seeds 1] [--device cpu]

Prints one JSON line: total seconds, stage-1, extraction and per-run seconds, and the load average
(other processes on the same cores inflate every figure; measure on a quiet machine). The figure
for the 2-core CPU machine is in docs/arena.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--config", default=None)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--keep", action="store_true", help="Resume an existing OUT instead of starting afresh.")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mmselect.arena import run_arena

    if args.out.exists() and not args.keep:
        shutil.rmtree(args.out)
    load_before = os.getloadavg()
    started = time.time()
    summary = run_arena(args.out, config=args.config, seeds=args.seeds, device=args.device)
    total = time.time() - started
    runs = summary["runs"]
    print(json.dumps({
        "total_seconds": round(total, 1),
        "stage1_seconds": summary["reference"]["train"]["seconds"],
        "extract_seconds": summary["features"]["seconds"],
        "runs": len(runs),
        "mean_run_seconds": round(sum(r["seconds"]["total"] for r in runs) / max(1, len(runs)), 1),
        "threads": summary["config"]["training"]["threads"],
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
