"""How many selected records have their identical copy selected too, per method, with and without
the duplicate guard.

Builds ``examples/mini`` plus ``--copies`` exact copies of records drawn at random (seeded), extracts
every method's features once with ``--model`` (default ``tiny-llava``, offline), then selects
``--budget`` with each method under ``--dedup none``, ``exact`` and ``near``, and counts the selected
records whose identical copy (same content) is also selected.

``--scale DIR`` instead times the guard alone (time and peak RSS) on a synthetic features directory
from ``benchmarks/baselines_scale.py generate`` (665k rows, float16 ``last_token``, 5% near copies),
whose keys are given mmselect's form with 5% exact copies:

    python benchmarks/dedup_copies.py --out scratch/dedup
    python benchmarks/baselines_scale.py generate --n 665298 --dim 4096 --out scratch/f665k
    python benchmarks/dedup_copies.py --scale scratch/f665k --out scratch/dedup-scale [--with-semdedup]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from mmselect import pipeline
from mmselect.features.store import FeatureSet
from mmselect.methods import list_methods

MINI = Path(__file__).resolve().parents[1] / "examples" / "mini"
NEEDS_OTHER_MODELS = {"clip-score", "mmssr"}  # a CLIP model / scorer generations: not offline


def build_dataset(out: Path, copies: int, seed: int) -> Path:
    records = json.loads((MINI / "data.json").read_text())
    rng = np.random.default_rng(seed)
    extra = [records[i] for i in rng.choice(len(records), copies, replace=False)]
    path = out / "data_with_copies.json"
    path.write_text(json.dumps(records + extra, ensure_ascii=False))
    return path


def redundant_pairs(selection_path: Path) -> int:
    """Selected records whose identical copy (same content hash) is selected too."""
    import pyarrow.parquet as pq

    table = pq.read_table(selection_path, columns=["key", "selected"]).to_pydict()
    hashes = [key.rsplit("-", 1)[-1] for key, chosen in zip(table["key"], table["selected"]) if chosen]
    counts: dict[str, int] = {}
    for digest in hashes:
        counts[digest] = counts.get(digest, 0) + 1
    return sum(c for c in counts.values() if c > 1)


def time_at_scale(features_dir: Path, out: Path, with_semdedup: bool = False) -> None:
    from _measure import Monitor

    from mmselect.dedup import find_duplicates

    monitor = Monitor()
    features = FeatureSet.load(features_dir)
    n = features.n
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**40, n)
    copies = rng.choice(n, n // 20, replace=False)
    hashes[copies] = hashes[rng.integers(0, n, len(copies))]
    keys = np.asarray([f"{i:07d}-{h:010x}" for i, h in enumerate(hashes)], dtype=object)
    features = FeatureSet({**{c: features.column(c) for c in features.column_names}, "key": keys,
                           "position": np.arange(n)}, {"last_token": features.array("last_token")})
    monitor.mark("load")
    rows = []
    for mode in ("exact", "near"):
        load = os.getloadavg()[0]
        started = time.perf_counter()
        guard = find_duplicates(features, mode)
        monitor.mark(mode)
        rows.append({"mode": mode, "seconds": round(time.perf_counter() - started, 1), **guard.info,
                     "peak_rss_gb": round(monitor.stages[-1]["peak_rss"] / 2**30, 2),
                     "load_before_after": [round(load, 1), round(os.getloadavg()[0], 1)]})
        print(rows[-1], flush=True)
    if with_semdedup:
        # SemDeDup's own selection on the same embedding in the same process: the yardstick the
        # near pass is held to, under the same load.
        from mmselect.methods import get_method

        load = os.getloadavg()[0]
        started = time.perf_counter()
        get_method("semdedup", embedding="last_token").select(features, "0.2")
        monitor.mark("semdedup")
        rows.append({"mode": "semdedup (select 0.2)", "seconds": round(time.perf_counter() - started, 1),
                     "peak_rss_gb": round(monitor.stages[-1]["peak_rss"] / 2**30, 2),
                     "load_before_after": [round(load, 1), round(os.getloadavg()[0], 1)]})
        print(rows[-1], flush=True)
    monitor.stop()
    (out / "scale.json").write_text(json.dumps({"n": n, "dim": int(features.array("last_token").shape[1]),
                                                "rows": rows}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="tiny-llava")
    parser.add_argument("--copies", type=int, default=88)
    parser.add_argument("--budget", default="0.2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=None, help="comma-separated (default: every method that runs offline)")
    parser.add_argument("--scale", type=Path, default=None, help="time the guard alone on this synthetic features directory")
    parser.add_argument("--with-semdedup", action="store_true",
                        help="with --scale: also time SemDeDup's selection on the same features, in the same process")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.scale is not None:
        time_at_scale(args.scale, args.out, args.with_semdedup)
        return
    data = build_dataset(args.out, args.copies, args.seed)
    methods = args.methods.split(",") if args.methods else [m for m in list_methods() if m not in NEEDS_OTHER_MODELS]
    features_dir = args.out / "features"
    started = time.perf_counter()
    pipeline.extract(data, out=features_dir, model=args.model, methods=methods, features=["last_token"],
                     image_root=MINI / "images", progress=False)
    print(f"extracted in {time.perf_counter() - started:.1f} s")
    features = FeatureSet.load(features_dir)
    rows = []
    for method in methods:
        row = {"method": method}
        for mode in ("none", "exact", "near"):
            out = args.out / f"{method}-{mode}"
            started = time.perf_counter()
            pipeline.select(features, method=method, budget=args.budget, out=out, data=data,
                            image_root=MINI / "images", dedup=mode)
            row[mode] = redundant_pairs(out / "selection.parquet")
            row[f"{mode}_s"] = round(time.perf_counter() - started, 2)
        rows.append(row)
        print(row, flush=True)
    print("\n| method | none | exact | near |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['method']} | {row['none']} | {row['exact']} | {row['near']} |")
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
