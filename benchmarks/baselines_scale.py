"""Scale benchmark of the selection stage of the baselines ifd, el2n, clip-score, semdedup and
d2-pruning (not a test).

Synthetic features at LLaVA-665K scale: a features directory with ``samples.parquet`` (the score
columns) and a memory-mapped float16 ``last_token.npy`` of shape (n, d) (``mean_embed.npy``,
``last_token_final.npy`` and ``mean_embed_final.npy`` are
hard links to the same file). The rows are clustered: a mean vector, about ``n / 66`` cluster
centres in a 256-d subspace, within-cluster spread in that subspace, isotropic noise, and 5% near
duplicates of another row; the scale keeps nearest-neighbour squared distances of order 0.1-1.

Each method runs in a fresh subprocess, so its peak RSS is its own: ``/proc/self/status``
VmHWM at the end (``ru_maxrss`` is reported too, but on Linux it keeps the parent's peak across
fork + exec), plus VmRSS sampled every 50 ms in a thread. The method's per-stage timings
(``info["timings_s"]``) cut the sampled trace into stages (``check`` is the part of ``select``
before ``_select``: feature validation, which reads the whole array once).

Commands::

    python benchmarks/baselines_scale.py generate --n 665298 --dim 4096 --out DIR
    python benchmarks/baselines_scale.py run --features DIR --method semdedup [--param key=value ...]
    python benchmarks/baselines_scale.py all --n 665298 --dim 4096 --out DIR --results results.json
    python benchmarks/baselines_scale.py reduction --n 20000 --dim 4096 --out DIR --results reduction.json
    python benchmarks/baselines_scale.py knn-recall --features DIR --queries 500 --results recall.json

``knn-recall`` measures, at full scale on a sample of queries, the recall of D2-Pruning's IVF
neighbour search (per ``nprobe``) against exact kNN in the PCA space and in the full embedding.

``reduction`` measures what the scale reductions (PCA before k-means / kNN, k-means on a sample,
IVF search) change in the selection, as a Jaccard index against the unreduced run at a size where
both fit, next to the Jaccard between two seeds of the unreduced run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _measure import Monitor, proc_status

METHODS = ["ifd", "el2n", "clip-score", "semdedup", "d2-pruning"]
BLOCK = 16_384


# --- synthetic features ---------------------------------------------------------------------------
def generate(out: Path, n: int, dim: int, seed: int = 0, rank: int = 256) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_centres = max(2, n // 66)
    basis = np.linalg.qr(rng.standard_normal((dim, rank)).astype(np.float32))[0].T.copy()  # (rank, dim)
    centres = (rng.standard_normal((n_centres, rank)) / np.sqrt(rank)).astype(np.float32)  # norm ~ 1
    mean = (2.0 * rng.standard_normal(dim) / np.sqrt(dim)).astype(np.float32)  # norm ~ 2
    path = out / "last_token.npy"
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, dim))
    t0 = time.perf_counter()
    for start in range(0, n, BLOCK):
        stop = min(n, start + BLOCK)
        b = stop - start
        labels = rng.integers(0, n_centres, b)
        latent = centres[labels] + (0.3 / np.sqrt(rank)) * rng.standard_normal((b, rank), dtype=np.float32)
        block = mean + latent @ basis + (0.2 / np.sqrt(dim)) * rng.standard_normal((b, dim), dtype=np.float32)
        dup = rng.random(b) < 0.05
        sources = rng.integers(0, b, int(dup.sum()))
        block[dup] = block[sources] + (1e-3 / np.sqrt(dim)) * rng.standard_normal((int(dup.sum()), dim), dtype=np.float32)
        array[start:stop] = block.astype(np.float16)
    array.flush()
    del array
    for name in ("mean_embed", "last_token_final", "mean_embed_final"):  # one synthetic array serves every name
        link = out / f"{name}.npy"
        if link.exists():
            link.unlink()
        os.link(path, link)
    nll_noinstr = rng.gamma(2.0, 0.6, n)
    clip = rng.normal(0.25, 0.05, n)
    clip[rng.random(n) < 0.1] = np.nan  # text-only records
    table = pa.table(
        {
            "key": pa.array([str(i) for i in range(n)]),
            "task": pa.array(["synthetic"] * n),
            "answer_nll": nll_noinstr + rng.normal(-0.2, 0.3, n),
            "answer_nll_noinstr": nll_noinstr,
            "el2n": rng.beta(2.0, 3.0, n),
            "aum": rng.uniform(-0.5, 1.0, n),
            "clip_score": clip,
        }
    )
    pq.write_table(table, out / "samples.parquet")
    (out / "manifest.json").write_text(json.dumps({"synthetic": True, "n": n, "dim": dim, "seed": seed}))
    print(f"generated {n} x {dim} float16 in {time.perf_counter() - t0:.1f} s -> {out}", flush=True)
    return out


# --- one run, in this process ---------------------------------------------------------------------
def parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"None": None, "True": True, "False": False}.get(text, text)


def run_one(features: Path, method_name: str, params: dict, budget: str) -> dict:
    import torch

    from mmselect.features.store import FeatureSet
    from mmselect.methods import get_method

    sampler = Monitor()
    t0 = time.perf_counter()
    fs = FeatureSet.load(features)
    t1 = time.perf_counter()
    method = get_method(method_name, **params)
    result = method.select(fs, budget)
    t2 = time.perf_counter()
    time.sleep(2 * sampler.interval)  # one more sample after the end
    sampler.stop()
    timings = result.info.get("timings_s", {})

    def peak_gb(start, stop):
        peak = sampler.peak_between(start, stop)
        return None if peak is None else round(peak / 2**30, 2)

    def cpu_s(start, stop):
        cpu = sampler.cpu_between(start, stop)
        return None if cpu is None else round(cpu, 1)

    stages = []
    cursor = t2 - sum(timings.values())
    stages.append({"stage": "check", "s": round(cursor - t1, 2), "cpu_s": cpu_s(t1, cursor),
                   "peak_rss_gb": peak_gb(t1, cursor)})
    for name, seconds in timings.items():
        stages.append({"stage": name, "s": round(seconds, 2), "cpu_s": cpu_s(cursor, cursor + seconds),
                       "peak_rss_gb": peak_gb(cursor, cursor + seconds)})
        cursor += seconds
    keep = ("eps", "kept_at_eps", "knn", "n_clusters", "ivf", "pca", "mean_forward_weight", "n_eligible",
            "filled_above_threshold", "n_without_score")
    info = {key: result.info[key] for key in keep if key in result.info}
    if "kmeans" in result.info:
        info["kmeans"] = {key: result.info["kmeans"].get(key) for key in
                          ("backend", "n_train", "dim", "reduction", "read_s", "train_s", "assign_s", "centroid_pass_s")}
    return {
        "method": method_name,
        "params": params,
        "n": fs.n,
        "budget": budget,
        "selected": result.n_selected,
        "load_s": round(t1 - t0, 2),
        "select_s": round(t2 - t1, 2),
        "select_cpu_s": cpu_s(t1, t2),
        "stages": stages,
        # VmHWM: high-water mark of this process image. ru_maxrss is kept for reference, but on
        # Linux it carries over the parent's peak across fork + exec.
        "peak_rss_gb": round(proc_status("VmHWM") / 2**30, 2),
        "ru_maxrss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "threads": torch.get_num_threads(),
        "loadavg_1min_at_end": round(os.getloadavg()[0], 2),
        "info": info,
        "selected_indices": np.flatnonzero(result.selected).tolist() if fs.n <= 100_000 else None,
    }


def run_subprocess(features: Path, method: str, params: dict, budget: str) -> dict:
    command = [sys.executable, __file__, "run", "--features", str(features), "--method", method, "--budget", budget]
    for key, value in params.items():
        command += ["--param", f"{key}={value}"]
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{done.stderr[-4000:]}")
    record = json.loads(done.stdout.strip().splitlines()[-1])
    record["wall_s"] = round(time.perf_counter() - t0, 2)
    return record


def hardware() -> dict:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": model, "cores": os.cpu_count(), "ram_gb": round(mem, 1), "python": platform.python_version()}


def jaccard(a, b) -> float:
    a, b = set(a), set(b)
    return round(len(a & b) / len(a | b), 4) if a | b else 1.0


# --- commands -------------------------------------------------------------------------------------
def cmd_all(args):
    out = Path(args.out)
    if not (out / "samples.parquet").exists():
        generate(out, args.n, args.dim)
    results = {"hardware": hardware(), "n": args.n, "dim": args.dim, "budget": args.budget, "runs": []}
    for method in args.methods:
        record = run_subprocess(out, method, {}, args.budget)
        record.pop("selected_indices", None)
        results["runs"].append(record)
        print(json.dumps(record), flush=True)
        Path(args.results).write_text(json.dumps(results, indent=2))
    print(table(results["runs"]))


def cmd_reduction(args):
    out = Path(args.out)
    if not (out / "samples.parquet").exists():
        generate(out, args.n, args.dim, seed=1)
    share = 100_000 / 665_298  # the share of rows k-means trains on at 665k with the defaults
    cases = {
        "semdedup": [
            ("unreduced", {"pca_dim": None, "kmeans_max_points": None}),
            ("unreduced, seed 7", {"pca_dim": None, "kmeans_max_points": None, "seed": 7}),
            ("pca 128", {"kmeans_max_points": None}),
            (f"pca 128 + k-means on {share:.0%} of rows", {"kmeans_max_points": int(share * args.n)}),
        ],
        "d2-pruning": [
            ("exact, full dim", {"knn": "exact"}),
            ("exact on pca 128, no rerank", {"knn": "ivf", "nprobe": 1_000_000, "rerank": None}),
            ("ivf nprobe 16, full dim", {"knn": "ivf", "pca_dim": None}),
            ("ivf nprobe 16 + pca 128, no rerank", {"knn": "ivf", "rerank": None}),
            ("ivf nprobe 16 + pca 128 + rerank 32 (default at scale)", {"knn": "ivf"}),
            ("normalize: exact, full dim", {"knn": "exact", "normalize": True}),
            ("normalize: ivf + pca 128 + rerank 32", {"knn": "ivf", "normalize": True}),
        ],
    }
    results = {"hardware": hardware(), "n": args.n, "dim": args.dim, "budget": args.budget, "runs": []}
    for method, variants in cases.items():
        reference = None
        for label, params in variants:
            record = run_subprocess(out, method, params, args.budget)
            indices = record.pop("selected_indices")
            if label.startswith("normalize: exact"):
                reference = indices
            elif reference is None:
                reference = indices
            record["variant"] = label
            record["jaccard_vs_reference"] = jaccard(indices, reference)
            results["runs"].append(record)
            print(json.dumps(record), flush=True)
            Path(args.results).write_text(json.dumps(results, indent=2))
    print(table(results["runs"], with_jaccard=True))


def _exact_neighbours(x, queries: np.ndarray, k: int, normalize: bool = False) -> np.ndarray:
    """Exact kNN (squared L2, self excluded) of the rows ``queries`` against all rows of ``x``,
    streaming ``x`` in blocks (it may be a float16 memory map)."""
    import torch

    from mmselect.numerics import read_rows

    q = torch.from_numpy(read_rows(x, queries, normalize=normalize)).double()
    q_sq = (q * q).sum(1, keepdim=True)
    best_d = torch.full((len(queries), k), float("inf"), dtype=torch.float64)
    best_i = torch.full((len(queries), k), -1, dtype=torch.int64)
    for start in range(0, len(x), BLOCK):
        stop = min(len(x), start + BLOCK)
        block = torch.from_numpy(read_rows(x, slice(start, stop), normalize=normalize)).double()
        d = q_sq - 2.0 * q @ block.T + (block * block).sum(1)[None, :]
        ids = torch.arange(start, stop)
        d[torch.from_numpy(queries)[:, None] == ids[None, :]] = float("inf")
        cand_d = torch.cat([best_d, d], 1)
        cand_i = torch.cat([best_i, ids.expand(len(queries), -1)], 1)
        top = torch.topk(cand_d, k, dim=1, largest=False)
        best_d, best_i = top.values, torch.gather(cand_i, 1, top.indices)
    return best_i.numpy()


def cmd_knn_recall(args):
    """Recall@k of the D2-Pruning neighbour search at full scale, on a sample of queries:
    IVF in the 128-d PCA space against exact kNN in the same space, and against exact kNN in
    the full embedding (what the PCA costs)."""
    from mmselect.features.store import FeatureSet
    from mmselect.numerics import build_ivf_index, search_ivf
    from mmselect.numerics import pca_project, read_rows

    fs = FeatureSet.load(args.features)
    x = fs.array("mean_embed")
    rng = np.random.default_rng(0)
    queries = np.sort(rng.choice(len(x), args.queries, replace=False))
    k = 5
    out = {"hardware": hardware(), "n": len(x), "dim": x.shape[1], "queries": len(queries), "k": k}
    t0, c0 = time.perf_counter(), time.process_time()
    z, out["pca"] = pca_project(x, 128, seed=0, center=True, normalize_input=False, normalize_output=False)
    out["pca_s"] = [round(time.perf_counter() - t0, 1), round(time.process_time() - c0, 1)]
    t0, c0 = time.perf_counter(), time.process_time()
    index, out["ivf"] = build_ivf_index(z, seed=0)
    out["build_s"] = [round(time.perf_counter() - t0, 1), round(time.process_time() - c0, 1)]
    exact_pca = _exact_neighbours(z, queries, k)
    t0 = time.perf_counter()
    exact_full = _exact_neighbours(x, queries, k)
    out["exact_full_s_for_queries"] = round(time.perf_counter() - t0, 1)

    def recall(found, truth):
        return round(float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth)])), 4)

    out["recall_exact_pca_vs_full"] = recall(exact_pca, exact_full)
    full_rows = read_rows(x, queries)
    out["ivf"]["by_nprobe"] = []
    for nprobe in args.nprobe:
        t0, c0 = time.perf_counter(), time.process_time()
        _, found = search_ivf(index, z, queries, k, nprobe=nprobe)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        # what D2-Pruning does by default: 32 candidates in the PCA space, re-ranked in full
        _, candidates = search_ivf(index, z, queries, args.rerank, nprobe=nprobe)
        reranked = []
        for q_row, cand in zip(full_rows, candidates):
            cand = cand[cand >= 0]
            dist = ((read_rows(x, cand).astype(np.float64) - q_row) ** 2).sum(1)
            reranked.append(cand[np.lexsort((cand, dist))[:k]])
        out["ivf"]["by_nprobe"].append({
            "nprobe": nprobe,
            "recall_vs_exact_pca": recall(found, exact_pca),
            "recall_vs_exact_full": recall(found, exact_full),
            f"recall_vs_exact_full_after_rerank_{args.rerank}": recall(reranked, exact_full),
            "search_cpu_s_all_rows_extrapolated": round(cpu * len(x) / len(queries), 1),
            "search_wall_s_queries": round(wall, 2),
        })
        print(json.dumps(out["ivf"]["by_nprobe"][-1]), flush=True)
    Path(args.results).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


def table(runs, with_jaccard=False) -> str:
    lines = ["| method | variant | select wall s (CPU s) | stages: wall s (CPU s) / peak GB | peak RSS GB | load |"
             + (" Jaccard |" if with_jaccard else "")]
    lines.append("|---|---|---|---|---|---|" + ("---|" if with_jaccard else ""))
    for r in runs:
        stages = ", ".join(f"{s['stage']} {s['s']} ({s.get('cpu_s')}) / {s['peak_rss_gb']}" for s in r["stages"])
        row = (f"| {r['method']} | {r.get('variant', 'defaults')} | {r['select_s']} ({r.get('select_cpu_s')}) | {stages} "
               f"| {r['peak_rss_gb']} | {r.get('loadavg_1min_at_end')} |")
        if with_jaccard:
            row += f" {r['jaccard_vs_reference']} |"
        lines.append(row)
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--n", type=int, default=665_298)
    g.add_argument("--dim", type=int, default=4096)
    g.add_argument("--out", required=True)
    g.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("run")
    r.add_argument("--features", required=True)
    r.add_argument("--method", required=True, choices=METHODS)
    r.add_argument("--budget", default="0.2")
    r.add_argument("--param", action="append", default=[])
    a = sub.add_parser("all")
    a.add_argument("--n", type=int, default=665_298)
    a.add_argument("--dim", type=int, default=4096)
    a.add_argument("--out", required=True)
    a.add_argument("--budget", default="0.2")
    a.add_argument("--methods", nargs="+", default=METHODS)
    a.add_argument("--results", default="baselines_scale.json")
    red = sub.add_parser("reduction")
    red.add_argument("--n", type=int, default=20_000)
    red.add_argument("--dim", type=int, default=4096)
    red.add_argument("--out", required=True)
    red.add_argument("--budget", default="0.2")
    red.add_argument("--results", default="baselines_reduction.json")
    kr = sub.add_parser("knn-recall")
    kr.add_argument("--features", required=True)
    kr.add_argument("--queries", type=int, default=500)
    kr.add_argument("--nprobe", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    kr.add_argument("--rerank", type=int, default=32)
    kr.add_argument("--results", default="baselines_knn_recall.json")
    args = parser.parse_args(argv)
    if args.command == "generate":
        generate(Path(args.out), args.n, args.dim, args.seed)
    elif args.command == "run":
        params = dict(item.split("=", 1) for item in args.param)
        record = run_one(Path(args.features), args.method, {k: parse_value(v) for k, v in params.items()}, args.budget)
        print(json.dumps(record))
    elif args.command == "all":
        cmd_all(args)
    elif args.command == "knn-recall":
        cmd_knn_recall(args)
    else:
        cmd_reduction(args)


if __name__ == "__main__":
    main()
