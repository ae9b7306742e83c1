"""Extraction throughput: samples/s and tokens/s for a preset or a random-weight architecture.

A random-weight model of a real architecture has the real model's FLOPs, so its throughput is the
real one's. Examples::

    python benchmarks/extract.py --arch tiny-llava --n 256
    python benchmarks/extract.py --arch llava-onevision-0.5b-like --n 16 --batch-size 4
    python benchmarks/extract.py --arch llava-1.5-7b-like --device cuda --dtype bfloat16 --n 512 --batch-size 16
    python benchmarks/extract.py --preset llava-1.5-7b --device cuda --n 512      # needs the hub
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

# Text/vision sizes of real models, built with random weights (no download).
ARCHS = {
    "llava-1.5-7b-like": dict(vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                          num_attention_heads=16, image_size=336, patch_size=14),
                              text=dict(vocab_size=32064, hidden_size=4096, intermediate_size=11008,
                                        num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32)),
    "llava-onevision-0.5b-like": dict(vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                                  num_attention_heads=12, image_size=224, patch_size=16),
                                      text=dict(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                                                num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2)),
}


def build_arch(name: str, directory: Path, dtype: torch.dtype) -> None:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from mmselect.models.tiny import _tokenizer

    spec = ARCHS[name]
    tokenizer = _tokenizer(["<image>"])
    size = spec["vision"]["image_size"]
    patch = spec["vision"]["patch_size"]
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size}),
        tokenizer=tokenizer, patch_size=patch, vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**spec["vision"]),
        text_config=LlamaConfig(pad_token_id=tokenizer.pad_token_id, max_position_embeddings=4096, **spec["text"]),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(size // patch) ** 2,
        vision_feature_layer=-2,
    )
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = LlavaForConditionalGeneration(config).to(dtype)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--preset", help="model preset or HF id / directory")
    group.add_argument("--arch", default="tiny-llava", help=f"tiny-llava, tiny-qwen2-vl, {', '.join(ARCHS)}")
    parser.add_argument("--features", default="spectrum,last_token,answer_nll", help="extract options")
    parser.add_argument("--n", type=int, default=128, help="samples (cycled from examples/mini)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()

    from mmselect.data import read_dataset
    from mmselect.features.extract import extract_features
    from mmselect.models.registry import load_model, resolve_dtype

    dataset = read_dataset(REPO / "examples/mini/data.json", image_root=REPO / "examples/mini/images")
    base = dataset.samples
    samples = []
    for i in range(args.n):
        sample = base[i % len(base)]
        samples.append(type(sample)(**{**sample.__dict__, "key": f"{i:07d}-{sample.key}", "position": i}))

    with tempfile.TemporaryDirectory() as workdir:
        if args.preset or args.arch.startswith("tiny-"):
            name = args.preset or args.arch
        else:
            name = str(Path(workdir) / args.arch)
            build_arch(args.arch, Path(name), resolve_dtype(args.dtype, args.device))
        started = time.perf_counter()
        bundle = load_model(name, device=args.device, dtype=args.dtype)
        load_seconds = time.perf_counter() - started
        # Warm-up batch, not timed (kernel selection, lazy initialisation).
        extract_features(samples[: args.batch_size], bundle, args.features.split(","), cache_dir=Path(workdir) / "warm",
                         batch_size=args.batch_size, progress=False)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        features, rejected = extract_features(samples, bundle, args.features.split(","), cache_dir=Path(workdir) / "cache",
                                              batch_size=args.batch_size, shard_size=max(args.n, 1), progress=False)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    tokens = int(features.column("n_tokens").sum())
    result = {
        "model": args.preset or args.arch,
        "device": args.device if not args.device.startswith("cuda") else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(),
        "dtype": bundle.describe()["dtype"],
        "features": args.features,
        "samples": features.n,
        "rejected": len(rejected),
        "batch_size": args.batch_size,
        "seconds": round(seconds, 3),
        "samples_per_s": round(features.n / seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1),
        "mean_tokens": round(tokens / max(features.n, 1), 1),
        "load_seconds": round(load_seconds, 2),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
    }
    print(json.dumps(result) if args.json else "\n".join(f"{k:>14}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
