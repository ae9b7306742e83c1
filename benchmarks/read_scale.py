"""Scale benchmark of reading a dataset: wall time and peak RSS of ``read_dataset``.

Generates (once; reused when it exists) synthetic LLaVA-style files under ``--workdir``:

* ``llava665k.json``: ``--n-json`` records (default 665,298) in one JSON list, the composition of
  llava_v1_5_mix665k.json (source blocks, 1–10 rounds of question/answer, 40,688 text-only);
* ``records10000000.jsonl``: ``--n-jsonl`` records (default 10,000,000), one a line, each a single
  question/answer round (about 0.4 kB, so the file stays near 4 GB; what stays in memory per record
  does not depend on its length).

Each measurement runs in a fresh process (``read_dataset(..., check_images=False)``: parse,
validate, key; no image is opened), then walks every sample's key and task, and reports wall time
and peak RSS (``VmHWM``). ``--compare-ref REV`` also reads the JSON file with the reader of git
revision REV (its ``src/mmselect`` exported to the work directory) for a before/after row.

    python benchmarks/read_scale.py --workdir scratch/read
    python benchmarks/read_scale.py --workdir scratch/read --compare-ref e700e41 --skip-jsonl
    python benchmarks/read_scale.py --workdir scratch/read --n-json 200000 --n-jsonl 1000000
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tarfile
import io
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = (("coco/train2017", 0.52), ("gqa/images", 0.11), ("ocr_vqa/images", 0.12), ("textvqa/train_images", 0.03),
           ("vg/VG_100K", 0.14), ("vg/VG_100K_2", 0.02), (None, 0.06))
WORDS = ("what is the colour of the object on the left side of the picture answer using a single word "
         "or phrase there are two people standing near a red bus in the street describe the image briefly "
         "the man is holding an umbrella while walking how many cars are visible in this photo").split()


def _text(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def synthetic_record(index: int, rng: random.Random, short: bool = False) -> dict:
    source = rng.choices([s for s, _ in SOURCES], [w for _, w in SOURCES])[0]
    rounds = 1 if short else rng.choice((1, 1, 1, 2, 3, 4, 5, 8, 10))
    conversations = []
    for turn in range(rounds):
        question = _text(rng, 6, 24)
        if turn == 0 and source is not None:
            question = "<image>\n" + question
        conversations += [{"from": "human", "value": question}, {"from": "gpt", "value": _text(rng, 1, 60)}]
    record = {"id": f"{index:09d}", "conversations": conversations}
    if source is not None:
        record["image"] = f"{source}/{rng.randrange(10**6):012d}.jpg"
        record["model"] = "" if rng.random() < 0.5 else None
    return record


def generate(path: Path, n: int, jsonl: bool, pool_size: int = 20_000) -> None:
    """Records drawn from a pool of ``pool_size`` conversations, each with its own id and image
    file (so every record, and its content hash, is distinct); fast enough for 10M lines."""
    if path.exists():
        return
    rng = random.Random(0)
    pool = []
    for index in range(pool_size):
        record = synthetic_record(index, rng, short=jsonl)
        record.pop("id")
        image = record.pop("image", None)
        body = json.dumps(record, ensure_ascii=False)[1:]
        pool.append((image.rsplit("/", 1)[0] if image else None, body))
    tmp = path.with_suffix(".partial")
    with tmp.open("w", encoding="utf-8") as handle:
        if not jsonl:
            handle.write("[\n")
        for index in range(n):
            folder, body = pool[rng.randrange(pool_size)]
            image = f'"image": "{folder}/{rng.randrange(10**9):012d}.jpg", ' if folder else ""
            text = f'{{"id": "{index:09d}", {image}{body}'
            if jsonl:
                handle.write(text + "\n")
            else:
                handle.write(("  " if index == 0 else ",\n  ") + text)
        if not jsonl:
            handle.write("\n]\n")
    tmp.rename(path)


CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import inspect
from mmselect.data import read_dataset
quiet = {"progress": False} if "progress" in inspect.signature(read_dataset).parameters else {}
started, cpu_started = time.perf_counter(), time.process_time()
dataset = read_dataset(sys.argv[2], check_images=False, **quiet)
read, read_cpu = time.perf_counter() - started, time.process_time() - cpu_started
tasks = {}
for sample in dataset.samples:
    tasks[sample.task] = tasks.get(sample.task, 0) + 1
    sample.key
walked = time.perf_counter() - started
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
import resource
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "read_cpu_s": round(read_cpu, 2), "records": dataset.n_records, "samples": len(dataset.samples), "rejected": len(dataset.rejected),
                  "read_s": round(read, 2), "read_and_walk_s": round(walked, 2), "peak_rss_gb": round(hwm() / 1e9, 3),
                  "tasks": len(tasks)}))
"""


def measure(package_parent: Path, data: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(package_parent), str(data)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def export_revision(rev: str, workdir: Path) -> Path:
    target = workdir / f"src-{rev}"
    if not (target / "mmselect").is_dir():
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src/mmselect"], check=True,
                                 capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(workdir / f"tmp-{rev}", filter="data")
        (workdir / f"tmp-{rev}" / "src").rename(target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=REPO / "scratch" / "read")
    parser.add_argument("--n-json", type=int, default=665_298)
    parser.add_argument("--n-jsonl", type=int, default=10_000_000)
    parser.add_argument("--skip-jsonl", action="store_true")
    parser.add_argument("--compare-ref", default=None, help="also read the JSON file with this git revision's reader")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    json_path = args.workdir / f"llava{args.n_json}.json"
    generate(json_path, args.n_json, jsonl=False)
    size = json_path.stat().st_size / 1e9
    rows.append(("this checkout", json_path.name, size, measure(REPO / "src", json_path)))
    if args.compare_ref:
        rows.append((args.compare_ref, json_path.name, size, measure(export_revision(args.compare_ref, args.workdir), json_path)))
    if not args.skip_jsonl:
        jsonl_path = args.workdir / f"records{args.n_jsonl}.jsonl"
        generate(jsonl_path, args.n_jsonl, jsonl=True)
        rows.append(("this checkout", jsonl_path.name, jsonl_path.stat().st_size / 1e9, measure(REPO / "src", jsonl_path)))
    print("| reader | file | size GB | records | read: wall s | read: CPU s | read + walk: wall s | process CPU s | peak RSS GB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for reader, name, size, result in rows:
        print(f"| {reader} | {name} | {size:.2f} | {result['records']:,} | {result['read_s']} | {result['read_cpu_s']} | "
              f"{result['read_and_walk_s']} | {result['cpu_s']} | {result['peak_rss_gb']} |", flush=True)


if __name__ == "__main__":
    main()
