"""Extraction throughput: samples/s, tokens/s and model FLOPs utilisation (MFU) for a preset or a
random-weight architecture.

A random-weight model of a real architecture has the real model's FLOPs, so its throughput is the
real one's (architectures: ``mmselect.models.tiny.ARCHITECTURES``). Samples cycle through
examples/mini with their images resized to ``--image-size`` (default 640x480, a typical COCO photo;
it sets the number of image tokens of dynamic-resolution models such as Qwen2-VL). Examples::

    python benchmarks/extract.py --arch tiny-llava --n 256
    python benchmarks/extract.py --arch llava-onevision-0.5b-like --n 16 --batch-size 4
    python benchmarks/extract.py --arch llava-1.5-7b-like --device cuda --n 512 --batch-size 8,16,32 \\
        --features last_token --features spectrum,last_token,answer_nll
    python benchmarks/extract.py --arch qwen2-vl-7b-like --device cuda --n 512 --batch-size 16
    python benchmarks/extract.py --preset llava-1.5-7b --device cuda --n 512      # needs the hub
    python benchmarks/extract.py --arch tiny-llava --prepare-only --num-workers 0,1,2 --n 512
    python benchmarks/extract.py --arch tiny-llava --prepare-only --num-workers 1,2 --n 512 --rounds 8

Each run also reports, from a second pass over the same samples with the stages run in turn and
timed apart: prepare (with the run's worker count), host->device copy, forward, reductions (the
hooks' per-sample reductions) and writing (shard files, timed in the run itself), and names the
stage that bounds the run. MFU = forward FLOPs (``mmselect.flops``: from the architecture and the
actual token counts) / wall time / peak, against the peak a matmul probe measures in the same run
(bf16 on a GPU, the model's dtype on the CPU) and the datasheet's bf16 peak when the GPU is known.
``--prepare-only`` times the CPU half alone (render, images, processor, tokenizer) for each
``--num-workers``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FEATURES = "spectrum,last_token,answer_nll"


def main() -> None:
    from mmselect.models.tiny import ARCHITECTURES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--preset", help="model preset or HF id / directory")
    group.add_argument("--arch", default="tiny-llava", help=", ".join(ARCHITECTURES))
    parser.add_argument("--features", action="append",
                        help=f"comma-separated extract options (default {DEFAULT_FEATURES}); repeat to time several "
                             "sets on the same loaded model")
    parser.add_argument("--n", type=int, default=128, help="samples (cycled from examples/mini)")
    parser.add_argument("--batch-size", default="8", help="one or several, comma-separated")
    parser.add_argument("--image-size", default="640x480", help="WxH the example images are resized to")
    parser.add_argument("--max-length", type=int, default=None, help="default: the model's context length")
    parser.add_argument("--prefetch", default="auto",
                        help="batches prepared ahead in a background thread; auto (2 on a GPU, 0 on the CPU) or "
                             "several, comma-separated, to compare")
    parser.add_argument("--num-workers", default="auto",
                        help="batch-preparation processes; auto (min(8, CPUs - 1) on a GPU, 0 on the CPU) or several, "
                             "comma-separated, to compare")
    parser.add_argument("--prepare-only", action="store_true",
                        help="time batch preparation alone (no model forward) for each --num-workers")
    parser.add_argument("--rounds", type=int, default=1,
                        help="with --prepare-only: run the --num-workers list this many times in turn and report the "
                             "median of each round's speed-up over 1 worker (adjacent runs see the same machine load)")
    parser.add_argument("--no-stages", action="store_true", help="skip the per-stage pass and the MFU")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()

    from mmselect.data import read_dataset
    from mmselect.models.registry import load_model, resolve_device, resolve_dtype
    from mmselect.models.tiny import build_architecture

    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as workdir:
        samples = _samples(read_dataset(REPO / "examples/mini/data.json", image_root=REPO / "examples/mini/images"),
                           args.n, args.image_size, Path(workdir) / "images")
        if args.preset or args.arch.startswith("tiny-"):
            name = args.preset or args.arch
        else:
            name = str(Path(workdir) / args.arch)
            build_architecture(args.arch, Path(name), device=device, dtype=resolve_dtype(args.dtype, device))
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        started = time.perf_counter()
        bundle = load_model(name, device=device, dtype=args.dtype)
        load_seconds = time.perf_counter() - started

        worker_counts = [None if w == "auto" else int(w) for w in args.num_workers.split(",")]
        if args.prepare_only:
            for batch_size in (int(b) for b in args.batch_size.split(",")):
                _report_prepare(args, bundle, samples, batch_size, worker_counts)
            return
        peak = _matmul_peak(device, bundle) if not args.no_stages else None
        for names in args.features or [DEFAULT_FEATURES]:
            for batch_size in (int(b) for b in args.batch_size.split(",")):
                for prefetch in (None if p == "auto" else int(p) for p in args.prefetch.split(",")):
                    for workers in worker_counts:
                        _report(args, device, bundle, load_seconds, samples, names, batch_size, prefetch, workers,
                                peak, Path(workdir))


def _report(args, device, bundle, load_seconds, samples, names, batch_size, prefetch, workers, peak, workdir) -> None:
    from mmselect.features import shards
    from mmselect.features.extract import extract_features

    written = {"seconds": 0.0}
    write = shards.ShardStore.write

    def timed_write(store, name, output):  # the writing stage, timed inside the run
        started = time.perf_counter()
        write(store, name, output)
        written["seconds"] += time.perf_counter() - started

    def timed(batch, cache):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        result = extract_features(batch, bundle, names.split(","), cache_dir=workdir / cache, batch_size=batch_size,
                                  shard_size=max(len(batch), 1), max_length=args.max_length, progress=False,
                                  prefetch=prefetch, num_workers=workers)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return result, time.perf_counter() - started

    tag = f"{names}-{batch_size}-{prefetch}-{workers}"
    timed(samples[:batch_size], f"warm-{tag}")  # kernel selection, lazy initialisation: not counted
    shards.ShardStore.write = timed_write
    try:
        (featureset, rejected), seconds = timed(samples, f"cache-{tag}")
    finally:
        shards.ShardStore.write = write
    tokens = int(featureset.column("n_tokens").sum())
    result = {
        "model": args.preset or args.arch,
        "device": device if not device.startswith("cuda") else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(),
        "dtype": bundle.describe()["dtype"],
        "features": names,
        "samples": featureset.n,
        "rejected": len(rejected),
        "batch_size": batch_size,
        "prefetch": "auto" if prefetch is None else prefetch,
        "num_workers": _resolved_workers(bundle, workers),
        "seconds": round(seconds, 3),
        "samples_per_s": round(featureset.n / seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1),
        "mean_tokens": round(tokens / max(featureset.n, 1), 1),
        "load_seconds": round(load_seconds, 2),
        "image_size": args.image_size,
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
        **({"peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)} if device.startswith("cuda") else {}),
    }
    if peak is not None:
        result.update(_stages_and_mfu(args, device, bundle, samples, names, batch_size, workers, seconds,
                                      written["seconds"], peak))
    print(json.dumps(result) if args.json else "\n".join(f"{k:>14}: {v}" for k, v in result.items()), flush=True)


def _resolved_workers(bundle, workers):
    from mmselect.features.prepare_pool import default_workers

    return default_workers(bundle.device) if workers is None else workers


def _batches(samples, batch_size):
    return [samples[i : i + batch_size] for i in range(0, len(samples), batch_size)]


def _report_prepare(args, bundle, samples, batch_size, worker_counts) -> None:
    """Samples/s of the CPU half alone (in turn in this process for 0 workers), after a warm-up
    that starts the workers; ``--rounds`` times."""
    speedups: dict[int, list[float]] = {}
    for round_index in range(max(1, args.rounds)):
        rates = _prepare_round(args, bundle, samples, batch_size, worker_counts, round_index)
        for resolved, rate in rates.items():
            if 1 in rates and resolved != 1:
                speedups.setdefault(resolved, []).append(rate / rates[1])
    if args.rounds > 1:
        for resolved, values in speedups.items():
            summary = {"model": args.preset or args.arch, "mode": "prepare-only summary", "batch_size": batch_size,
                       "num_workers": resolved, "rounds": len(values),
                       "speedups_vs_1_worker": [round(v, 2) for v in values],
                       "median_speedup_vs_1_worker": round(statistics.median(values), 2)}
            print(json.dumps(summary) if args.json else "\n".join(f"{k:>20}: {v}" for k, v in summary.items()),
                  flush=True)


def _prepare_round(args, bundle, samples, batch_size, worker_counts, round_index) -> dict[int, float]:
    from mmselect.features.extractor import Extractor
    from mmselect.features.reducers import make_features

    rates = {}
    for workers in worker_counts:
        resolved = _resolved_workers(bundle, workers)
        extractor = Extractor(bundle, make_features(["tokens"], {}), batch_size=batch_size, max_length=args.max_length,
                              num_workers=resolved)
        batches = _batches(samples, batch_size)
        for _ in extractor.prepared_batches(batches[: max(2, 2 * resolved)], "full"):
            pass  # warm-up: worker start, first-call initialisation
        cpu_before = os.times()
        worker_cpu = _worker_cpu_seconds(extractor)
        started = time.perf_counter()
        prepared = 0
        for ready in extractor.prepared_batches(batches, "full"):
            prepared += len(ready.kept)
        seconds = time.perf_counter() - started
        cpu_after = os.times()
        worker_cpu = _worker_cpu_seconds(extractor) - worker_cpu
        extractor.close()
        rates[resolved] = prepared / seconds
        result = {
            "model": args.preset or args.arch, "mode": "prepare-only", "round": round_index, "batch_size": batch_size,
            "num_workers": resolved, "samples": prepared, "seconds": round(seconds, 3),
            "samples_per_s": round(prepared / seconds, 2),
            "cpu_seconds_main": round(cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system, 2),
            "cpu_seconds_workers": round(worker_cpu, 2),
            # Samples per CPU-second of all processes: parallel efficiency, whatever else runs on the machine.
            "samples_per_cpu_s": round(prepared / max(worker_cpu + cpu_after.user + cpu_after.system
                                                      - cpu_before.user - cpu_before.system, 1e-9), 2),
            "image_size": args.image_size, "cpus": len(os.sched_getaffinity(0)),
            "load_average_1min": round(os.getloadavg()[0], 2),
        }
        if 1 in rates and resolved != 1:
            result["speedup_vs_1_worker"] = round(rates[resolved] / rates[1], 2)
        print(json.dumps(result) if args.json else "\n".join(f"{k:>20}: {v}" for k, v in result.items()), flush=True)
    return rates


def _worker_cpu_seconds(extractor) -> float:
    """User + system CPU seconds of the extractor's live preparation workers (Linux /proc)."""
    pool = getattr(extractor, "_pool", None)
    iterator = getattr(getattr(pool, "_loader", None), "_iterator", None)
    total = 0.0
    for worker in getattr(iterator, "_workers", []):
        try:
            fields = Path(f"/proc/{worker.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return total


def _matmul_peak(device: str, bundle) -> dict:
    """Matmul throughput measured now: bf16 on a GPU, the model's dtype on the CPU (TFLOP/s)."""
    cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else next(bundle.model.parameters()).dtype
    n = 8192 if cuda else 1024
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    repeats = 200 if cuda else 5  # about a quarter of a second on an H200
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    from mmselect.flops import datasheet_peak_tflops

    return {"measured_tflops": 2 * n**3 * repeats / seconds / 1e12, "dtype": str(dtype).replace("torch.", ""),
            "datasheet_tflops": datasheet_peak_tflops(torch.cuda.get_device_name()) if cuda else None}


def _pass_shape(extractor, features) -> tuple[int, bool]:
    """(decoder layers that run, whether the LM head runs) for one view's features."""
    points = {tuple(p) for f in features for p in f.points(extractor.n_layers)}
    if ("final", None) in points:
        return extractor.n_layers, any(hasattr(f, "stat") for f in features)
    blocks = [index for kind, index in points if kind != "final"]
    return (max(blocks) + 1 if blocks else 0), False


def _stages_and_mfu(args, device, bundle, samples, names, batch_size, workers, run_seconds, write_seconds, peak) -> dict:
    """Stage times from a pass with the stages in turn, the FLOPs of the run, its MFU and bound."""
    from mmselect.features.extractor import Extractor
    from mmselect.features.reducers import FEATURES, make_features
    from mmselect.flops import FlopCount, count_forward_flops

    if not all(name in FEATURES for name in names.split(",")):
        return {"stages": "only for hook features"}
    resolved = _resolved_workers(bundle, workers)
    extractor = Extractor(bundle, make_features(names.split(","), {}), batch_size=batch_size,
                          max_length=args.max_length, num_workers=resolved)
    cuda = device.startswith("cuda")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    reduce_seconds = {"s": 0.0}
    for feature in extractor.features:  # time each reduction on its own (synchronised on both sides)
        def timed_reduce(*a, _reduce=feature.reduce, **k):
            sync()
            started = time.perf_counter()
            _reduce(*a, **k)
            sync()
            reduce_seconds["s"] += time.perf_counter() - started
        feature.reduce = timed_reduce
    config = bundle.model.config
    times = {"prepare": 0.0, "copy": 0.0, "forward": 0.0}
    flops = FlopCount()
    views = ["full"] + sorted({f.view for f in extractor.features} - {"full"})
    all_features = extractor.features
    for view in views:
        extractor.features = [f for f in all_features if f.view == view]
        layers, lm_head = _pass_shape(extractor, extractor.features)
        batches = _batches(samples, batch_size)
        for _ in extractor.prepared_batches(batches[: 2 * max(resolved, 1)], view):
            pass  # workers started (once per pass in a real run)
        started = time.perf_counter()
        prepared = [p for p in extractor.prepared_batches(batches, view) if p.batch is not None]
        times["prepare"] += time.perf_counter() - started
        for ready in prepared:
            batch = ready.batch
            sync()
            started = time.perf_counter()
            on_device = batch.to(bundle.device, non_blocking=True)
            sync()
            times["copy"] += time.perf_counter() - started
            started = time.perf_counter()
            if layers:
                extractor._forward(on_device)
            sync()
            times["forward"] += time.perf_counter() - started
            if layers:
                flops = flops + count_forward_flops(
                    config, batch.attention.sum(dim=1).tolist(), _image_tokens(config, batch), layers_run=layers,
                    lm_head_tokens=int(batch.answer[:, 1:].sum()) if lm_head else 0)
    extractor.features = all_features
    extractor.close()
    times["reductions"] = reduce_seconds["s"]
    times["forward"] -= times["reductions"]
    times["writing"] = write_seconds
    on_main_thread = times["copy"] + times["forward"] + times["reductions"] + times["writing"]
    if resolved > 0 or (cuda and extractor.prefetch > 0):  # preparation overlaps the device half
        bound = "prepare" if times["prepare"] > on_main_thread else max(
            ("copy", "forward", "reductions", "writing"), key=times.get)
    else:
        bound = max(times, key=times.get) + " (stages run in turn)"
    result = {"stage_seconds": {k: round(v, 3) for k, v in times.items()}, "bound": bound,
              "tflop_per_s": round(flops.total / run_seconds / 1e12, 4),
              "forward_tflop": round(flops.total / 1e12, 3),
              "peak_measured_tflops": round(peak["measured_tflops"], 3), "peak_dtype": peak["dtype"],
              "mfu_vs_measured": round(flops.total / run_seconds / 1e12 / peak["measured_tflops"], 4),
              "forward_only_mfu": round(flops.total / max(times["forward"] + times["reductions"], 1e-9) / 1e12
                                        / peak["measured_tflops"], 4)}
    if peak.get("datasheet_tflops"):
        result["peak_datasheet_tflops"] = peak["datasheet_tflops"]
        result["mfu_vs_datasheet"] = round(flops.total / run_seconds / 1e12 / peak["datasheet_tflops"], 4)
    return result


def _image_tokens(config, batch) -> list[int]:
    """Decoder tokens of each image of ``batch`` (Qwen2-VL: from its grid; LLaVA: fixed per image)."""
    grid = batch.inputs.get("image_grid_thw")
    if grid is not None:
        merge = config.vision_config.spatial_merge_size ** 2
        return [int(g.prod()) // merge for g in grid]
    total = int(batch.image.sum())
    per_image = int(getattr(config, "image_seq_length", 0) or total)
    return [per_image] * (total // per_image) if total else []


def _samples(dataset, n: int, image_size: str, image_dir: Path) -> list:
    """``n`` samples cycled from ``dataset``, each a distinct key, images resized to ``image_size``."""
    from PIL import Image

    from mmselect.data.records import Sample

    width, height = (int(v) for v in image_size.lower().split("x"))
    image_dir.mkdir(parents=True)
    resized: dict[str, str] = {}
    for sample in dataset.samples:
        for path in sample.image_paths:
            if path not in resized:
                resized[path] = str(image_dir / f"{len(resized)}.png")
                Image.open(path).convert("RGB").resize((width, height)).save(resized[path])
    samples = []
    for i in range(n):
        sample = dataset.samples[i % len(dataset.samples)]
        samples.append(Sample(i, f"{i:07d}-{sample.key}", sample.record, sample.turns, sample.images, sample.task,
                              sample.id, [resized[p] for p in sample.image_paths]))
    return samples


if __name__ == "__main__":
    main()
