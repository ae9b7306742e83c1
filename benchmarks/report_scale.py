"""Scale benchmark of the HTML report: time and size of ``report.html`` for a 665k-record selection.

Builds (once; reused when it exists with the same parameters) a synthetic output directory under
``--workdir``: ``selection.parquet`` with ``--n`` rows (LLaVA-665K's task mix, DataTailor's value
columns and clusters, 15% selected), ``rejected.jsonl``, a manifest with DataTailor-like
diagnostics, a features directory (``samples.parquet`` with turns / images / length and a
``--width``-wide float16 ``last_token.npy``) and a JSONL dataset whose records point at a few
small PNGs. Then it writes the report three ways and reports wall time, peak RSS and file size:

- ``outputs only``: no dataset (as after ``mmselect select`` without ``--data``);
- ``dataset in memory``: the ``Dataset`` passed in, as ``mmselect run`` / ``select --data`` do;
- ``dataset re-read``: ``mmselect report OUT``, which reads the dataset named in the manifest again.

    python benchmarks/report_scale.py --workdir scratch/report665k --n 665298
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import Monitor

# LLaVA-665K's sources, by share of records.
TASKS = {"coco": 0.547, "gqa": 0.108, "ocr_vqa": 0.120, "textvqa": 0.033, "vg": 0.130, "text": 0.062}


def build(workdir: Path, n: int, width: int, seed: int = 0) -> Path:
    from PIL import Image

    from mmselect.data.records import sample_key

    out = workdir / "out"
    stamp = workdir / "params.json"
    params = {"n": n, "width": width, "seed": seed}
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return out
    rng = np.random.default_rng(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    images = workdir / "images"
    for task in TASKS:
        (images / task).mkdir(parents=True, exist_ok=True)
        for i in range(4):
            Image.new("RGB", (320, 240), tuple(int(v) for v in rng.integers(0, 255, 3))).save(images / task / f"{i}.png")
    names = list(TASKS)
    task_index = rng.choice(len(names), size=n, p=np.array(list(TASKS.values())) / sum(TASKS.values()))
    rounds = np.minimum(rng.geometric(0.45, size=n), 30)
    n_rejected = n // 500
    rejected_positions = np.sort(rng.choice(n, size=n_rejected, replace=False))
    usable = np.ones(n, dtype=bool)
    usable[rejected_positions] = False

    keys = []
    data = workdir / "data.jsonl"
    with data.open("w", encoding="utf-8") as handle:
        for position in range(n):
            task = names[task_index[position]]
            turns = []
            for r in range(int(rounds[position])):
                question = f"Question {r} about record {position}?"
                turns += [{"from": "human", "value": ("<image>\n" if r == 0 and task != "text" else "") + question},
                          {"from": "gpt", "value": f"Answer {r} to record {position}, " + "words " * int(rng.integers(2, 40))}]
            record = {"id": f"{task}-{position}", "conversations": turns}
            if task != "text":
                image = f"{task}/{position % 4}.png" if usable[position] else f"{task}/missing-{position}.png"
                record["image"] = image
            handle.write(json.dumps(record) + "\n")
            keys.append(sample_key(position, record))
    keys = np.array(keys, dtype=object)

    rows = np.flatnonzero(usable)
    m = len(rows)
    selected = np.zeros(m, dtype=bool)
    selected[rng.choice(m, size=int(0.15 * m), replace=False)] = True
    informativeness = rng.normal(3.5, 0.1, m)
    uniqueness = rng.gamma(2.0, 1.0, m)
    uniqueness[rng.random(m) < 0.2] = np.nan
    representativeness = rng.normal(9.4, 0.2, m)
    score = rng.random(m)
    cluster = rng.integers(0, m // 4, m)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "key": pa.array(keys[rows].tolist(), pa.string()),
        "position": pa.array(rows.astype(np.int64)),
        "task": pa.array([names[i] for i in task_index[rows]], pa.string()),
        "selected": pa.array(selected),
        "score": pa.array(score),
        "informativeness": pa.array(informativeness),
        "uniqueness": pa.array(uniqueness),
        "representativeness": pa.array(representativeness),
        "association": pa.array(rng.normal(2.6, 0.05, m)),
        "cluster": pa.array(cluster.astype(np.int64)),
    }), out / "selection.parquet")
    with (out / "rejected.jsonl").open("w", encoding="utf-8") as handle:
        for position in rejected_positions:
            task = names[task_index[position]]
            handle.write(json.dumps({"key": keys[position], "position": int(position), "id": f"{task}-{position}",
                                     "reason": f"image not found: {task}/missing-{position}.png", "stage": "read"}) + "\n")

    features = workdir / "features"
    features.mkdir(exist_ok=True)
    chars = rounds[rows] * rng.integers(40, 400, m)
    pq.write_table(pa.table({
        "key": pa.array(keys[rows].tolist(), pa.string()),
        "position": pa.array(rows.astype(np.int64)),
        "task": pa.array([names[i] for i in task_index[rows]], pa.string()),
        "rounds": pa.array(rounds[rows].astype(np.int64)),
        "n_images": pa.array((task_index[rows] != names.index("text")).astype(np.int64)),
        "n_text_chars": pa.array(chars.astype(np.int64)),
    }), features / "samples.parquet")
    embedding = np.lib.format.open_memmap(features / "last_token.npy", mode="w+", dtype=np.float16, shape=(m, width))
    centres = rng.normal(size=(64, width)).astype(np.float32)
    for start in range(0, m, 50_000):
        stop = min(m, start + 50_000)
        embedding[start:stop] = centres[cluster[start:stop] % 64] + rng.normal(scale=0.5, size=(stop - start, width))
    embedding.flush()
    (features / "manifest.json").write_text(json.dumps({"data": str(data), "image_root": str(images), "seconds": 0.0}))

    per_task = [{"task": t, "n": int((task_index[rows] == i).sum()), "budget": int(selected[task_index[rows] == i].sum()),
                 "clusters": int(m // 4 // len(names)), "route": "approximate"} for i, t in enumerate(names)]
    counts = {"input_records": n, "selected": int(selected.sum()), "not_selected": int(m - selected.sum()),
              "rejected": int(n_rejected)}
    manifest = {
        "method": "datatailor", "params": {"lam": 0.1, "seed": seed}, "budget": "0.15",
        "budget_samples": int(selected.sum()), "seed": seed, "data": str(data), "image_root": str(images),
        "features": str(features), "feature_dir": str(features),
        "model": {"name": "synthetic", "revision": None}, "counts": counts,
        "outputs": {"selection": "selection.parquet", "rejected": "rejected.jsonl", "report": "report.md"},
        "method_info": {"tasks": per_task, "ward_routes": {t: "approximate" for t in names},
                        "capped_tasks": [], "budget": int(selected.sum())},
        "seconds": 0.0,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    stamp.write_text(json.dumps(params))
    return out


def measure(out: Path) -> list[dict]:
    from mmselect.data.readers import read_dataset
    from mmselect.report import write_html_report

    manifest = json.loads((out / "manifest.json").read_text())
    results = []
    monitor = Monitor()
    started = time.perf_counter()
    path = write_html_report(out, data=Path(out / "no-such-dataset.jsonl"))
    results.append({"case": "outputs only", "seconds": time.perf_counter() - started, "bytes": path.stat().st_size})
    monitor.mark("outputs only")
    dataset = read_dataset(manifest["data"], image_root=manifest["image_root"], check_images=False)
    monitor.mark("read dataset (not counted)")
    started = time.perf_counter()
    path = write_html_report(out, dataset=dataset)
    results.append({"case": "dataset in memory", "seconds": time.perf_counter() - started, "bytes": path.stat().st_size})
    monitor.mark("dataset in memory")
    del dataset
    started = time.perf_counter()
    path = write_html_report(out)
    results.append({"case": "dataset re-read", "seconds": time.perf_counter() - started, "bytes": path.stat().st_size})
    monitor.mark("dataset re-read")
    monitor.stop()
    peaks = {s["stage"]: s["peak_rss"] for s in monitor.stages}
    for row in results:
        row["peak_rss"] = peaks.get(row["case"])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("scratch/report665k"))
    parser.add_argument("--n", type=int, default=665_298)
    parser.add_argument("--width", type=int, default=1024, help="width of the synthetic last_token.npy (float16)")
    args = parser.parse_args()
    started = time.perf_counter()
    out = build(args.workdir, args.n, args.width)
    print(f"synthetic output ready in {time.perf_counter() - started:.0f} s: {out}", flush=True)
    for row in measure(out):
        rss = f"{row['peak_rss'] / 2**20:,.0f} MiB" if row.get("peak_rss") else "?"
        print(f"{row['case']:>18}: {row['seconds']:6.1f} s, report.html {row['bytes'] / 2**20:.2f} MiB, peak RSS {rss}")


if __name__ == "__main__":
    main()
