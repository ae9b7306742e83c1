"""Extraction throughput: samples/s and tokens/s for a preset or a random-weight architecture.

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
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from dataclasses import replace
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

        for names in args.features or [DEFAULT_FEATURES]:
            for batch_size in (int(b) for b in args.batch_size.split(",")):
                for prefetch in (None if p == "auto" else int(p) for p in args.prefetch.split(",")):
                    _report(args, device, bundle, load_seconds, samples, names, batch_size, prefetch, Path(workdir))


def _report(args, device, bundle, load_seconds, samples, names, batch_size, prefetch, workdir) -> None:
    from mmselect.features.extract import extract_features

    def timed(batch, cache):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        result = extract_features(batch, bundle, names.split(","), cache_dir=workdir / cache, batch_size=batch_size,
                                  shard_size=max(len(batch), 1), max_length=args.max_length, progress=False,
                                  prefetch=prefetch)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return result, time.perf_counter() - started

    tag = f"{names}-{batch_size}-{prefetch}"
    timed(samples[:batch_size], f"warm-{tag}")  # kernel selection, lazy initialisation: not counted
    (featureset, rejected), seconds = timed(samples, f"cache-{tag}")
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
        "seconds": round(seconds, 3),
        "samples_per_s": round(featureset.n / seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1),
        "mean_tokens": round(tokens / max(featureset.n, 1), 1),
        "load_seconds": round(load_seconds, 2),
        "image_size": args.image_size,
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
        **({"peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)} if device.startswith("cuda") else {}),
    }
    print(json.dumps(result) if args.json else "\n".join(f"{k:>14}: {v}" for k, v in result.items()), flush=True)


def _samples(dataset, n: int, image_size: str, image_dir: Path) -> list:
    """``n`` samples cycled from ``dataset``, each a distinct key, images resized to ``image_size``."""
    from PIL import Image

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
        samples.append(replace(sample, key=f"{i:07d}-{sample.key}", position=i,
                               image_paths=[resized[p] for p in sample.image_paths]))
    return samples


if __name__ == "__main__":
    main()
