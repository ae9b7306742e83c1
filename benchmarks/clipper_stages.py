"""Benchmark: CLIPPER's two inference stages with a randomly initialised model.

Stage 1 (zero-shot): one forward per sample, mean NLL of the answer tokens given image + question.
Stage 2 (one-shot): for every query, ``m`` forwards, each with one demonstration (its image and
QA) before the query; labels are masked to the query's answer tokens. The cost of stage 2 grows
with ``m`` (``m`` forwards per query, each about twice as long as a zero-shot one).

This is a standalone loop for timing (the production extraction engine lives elsewhere); the
pairs come from :func:`mmselect.methods.clipper.clipper_pairs` and the per-sample features from
:func:`mmselect.methods.clipper.aggregate_pairs`, as the engine will use them.

    .venv/bin/python benchmarks/clipper_stages.py                          # tiny model
    .venv/bin/python benchmarks/clipper_stages.py --arch qwen2-vl-2b --n 4 --batch-size 4 --m 1,2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mmssr_generation import ARCHS, build_qwen2_vl, hardware, synthetic_samples  # noqa: E402

from mmselect.methods.clipper import aggregate_pairs, clipper_pairs  # noqa: E402


def _messages(turns, with_image: bool):
    """Chat messages of one QA (first round of the sample) and its answer text."""
    question, answer = turns[0][1].replace("<image>\n", ""), turns[1][1]
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": question}]
    return [{"role": "user", "content": content}], answer


def build_text(processor, query, demo=None):
    """(prompt text up to the answer, answer text) for a zero-shot (demo None) or one-shot query."""
    messages = []
    if demo is not None:
        demo_messages, demo_answer = _messages(demo, True)
        messages += demo_messages + [{"role": "assistant", "content": [{"type": "text", "text": demo_answer}]}]
    query_messages, answer = _messages(query, True)
    messages += query_messages
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return prompt, answer


def answer_nll(model, processor, items, batch_size):
    """Mean answer-token NLL per item; ``items``: (prompt, answer, images)."""
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "right"
    out = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        images = [im for _, _, ims in chunk for im in ims]
        prefix = processor(text=[p for p, _, _ in chunk], images=images, return_tensors="pt", padding=True)
        full = processor(text=[p + a for p, a, _ in chunk], images=images, return_tensors="pt", padding=True)
        prefix_len = prefix["attention_mask"].sum(1)
        labels = full["input_ids"].clone()
        positions = torch.arange(labels.shape[1])[None, :]
        labels[(positions < prefix_len[:, None]) | (full["attention_mask"] == 0)] = -100
        with torch.inference_mode():
            logits = model(**full).logits.float()
        shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
        loss = torch.nn.functional.cross_entropy(
            shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), reduction="none",
            ignore_index=-100,
        ).view(shift_labels.shape)
        counts = (shift_labels != -100).sum(1).clamp(min=1)
        out.extend((loss.sum(1) / counts).tolist())
    return np.asarray(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), default="tiny")
    parser.add_argument("--n", type=int, default=32, help="samples (queries)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--m", default="1,2,4", help="comma-separated numbers of demonstrations per query")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--image-size", type=int, default=None, help="square image side in pixels (default: per arch)")
    args = parser.parse_args(argv)

    spec = dict(ARCHS[args.arch])
    spec["image_size"] = args.image_size or spec["image_size"]
    samples = synthetic_samples(args.n, spec["image_size"], words_per_answer=40)
    corpus = [t for turns, _ in samples for _, t in turns] * 20
    model, processor, build_s = build_qwen2_vl(args.arch, corpus, getattr(torch, args.dtype), image_size=spec["image_size"])
    print(f"hardware: {hardware()}")
    print(f"arch {args.arch}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters ({args.dtype}), "
          f"built in {build_s:.1f} s; {args.n} samples, batch {args.batch_size}")

    zero_items = [(*build_text(processor, turns), images) for turns, images in samples]
    answer_nll(model, processor, zero_items[:2], 2)  # warm-up
    started = time.perf_counter()
    zero = answer_nll(model, processor, zero_items, args.batch_size)
    zero_s = time.perf_counter() - started
    print(f"stage 1 zero-shot: {zero_s:8.2f} s, {args.n / zero_s:.4g} samples/s ({zero_s / args.n:.3g} s/sample)")

    for m in [int(x) for x in args.m.split(",")]:
        if m > args.n - 1:
            print(f"stage 2 one-shot m={m}: skipped (needs --n > m so that every query has m other samples)")
            continue
        query, demo = clipper_pairs(args.n, m=m, seed=0)
        items = []
        for q, d in zip(query, demo):
            prompt, answer = build_text(processor, samples[q][0], samples[d][0])
            items.append((prompt, answer, samples[d][1] + samples[q][1]))
        started = time.perf_counter()
        one = answer_nll(model, processor, items, args.batch_size)
        seconds = time.perf_counter() - started
        icl, gain = aggregate_pairs(args.n, query, demo, zero, one)
        assert np.isfinite(icl).all()
        print(f"stage 2 one-shot m={m}: {seconds:8.2f} s for {len(items)} pairs, {len(items) / seconds:.4g} pairs/s, "
              f"{args.n / seconds:.4g} samples/s ({seconds / args.n:.3g} s/sample, {seconds / zero_s:.2f}x stage 1)")


if __name__ == "__main__":
    main()
