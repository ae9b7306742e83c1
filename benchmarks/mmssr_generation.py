"""Benchmark: mmSSR scorer/styler generation throughput with a randomly initialised model.

Builds a model of the chosen architecture from a config (random weights, nothing downloaded), a
byte-level BPE tokenizer trained on the fly and an image-only Qwen2-VL processor, then times
``generate_replies`` on synthetic LLaVA-style samples with the real mmSSR prompts.

    .venv/bin/python benchmarks/mmssr_generation.py                       # tiny model, quick
    .venv/bin/python benchmarks/mmssr_generation.py --arch qwen2-vl-2b --n 8 --batch-size 4

A random model never emits the end-of-sequence token, so every reply runs to ``max_new_tokens``;
the real scorer answers with one digit (about 2 new tokens with the end token) and the styler with
a short list (about 5-15 tokens), hence the default ``--new-tokens 2,16``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from mmselect.features import mmssr_scoring as ms  # noqa: E402

QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WORDS = (
    "the a cat dog red blue green mat table chart value year shows what which how many is are on in of left right "
    "picture image question answer number text sign person people car street building sky water tree two three"
).split()

# Text and vision sizes; "qwen2-vl-2b" follows the published Qwen2-VL-2B-Instruct config.
ARCHS = {
    "tiny": dict(
        text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, mrope_section=[2, 3, 3], vocab_size=None),
        vision=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=4, mlp_ratio=2),
        image_size=64,
    ),
    "qwen2-vl-2b": dict(
        text=dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                  num_key_value_heads=2, mrope_section=[16, 24, 24], vocab_size=151936),
        vision=dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4),
        image_size=448,
    ),
}


def build_tokenizer(corpus, vocab_size=2000):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<unk>", "<s>", "</s>", *special],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        additional_special_tokens=special,
    )


def build_qwen2_vl(arch: str, corpus, dtype=torch.float32, seed=0, image_size=None):
    """(model, processor) of a random Qwen2-VL of the given size, built offline."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.processing_utils import ProcessorMixin

    class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    spec = ARCHS[arch]
    tok = build_tokenizer(corpus)
    vision_tokens = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"]
    ids = dict(zip(["image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"],
                   tok.convert_tokens_to_ids(vision_tokens)))
    side = image_size or spec["image_size"]
    processor = ImageOnlyQwen2VLProcessor(
        Qwen2VLImageProcessorPil(min_pixels=side * side, max_pixels=side * side), tok, chat_template=QWEN_TEMPLATE
    )
    text = dict(spec["text"])
    mrope = text.pop("mrope_section")
    text["vocab_size"] = text["vocab_size"] or len(tok)
    config = Qwen2VLConfig(
        text_config=dict(**text, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": mrope}),
        vision_config=dict(spec["vision"]),
        **ids,
    )
    torch.manual_seed(seed)
    started = time.perf_counter()
    with torch.device("cpu"):
        model = Qwen2VLForConditionalGeneration(config).to(dtype).eval()
    build_s = time.perf_counter() - started
    return model, processor, build_s


def synthetic_samples(n, image_size, words_per_answer=60, seed=0):
    """LLaVA-style single-image samples: 1-3 QA rounds, answers of about ``words_per_answer`` words."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        turns = []
        for r in range(int(rng.integers(1, 4))):
            question = " ".join(rng.choice(WORDS, int(rng.integers(8, 20)))) + "?"
            answer = " ".join(rng.choice(WORDS, int(rng.integers(words_per_answer // 2, words_per_answer))))
            turns += [("user", ("<image>\n" if r == 0 else "") + question), ("assistant", answer)]
        pixels = rng.integers(0, 255, (image_size, image_size, 3), dtype=np.uint8)
        samples.append((turns, [Image.fromarray(pixels)]))
    return samples


def corpus_for_tokenizer(samples):
    texts = [ms.build_prompt_text(turns, "spatial") for turns, _ in samples[:64]]
    texts.append(ms.STYLE_QUERY + " ".join(ms.STYLE_CANDIDATES) + ms.SYSTEM_MESSAGE)
    return texts * 20


def hardware() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}, torch {torch.__version__}"


def time_sampler(n: int, budget: float = 0.1, n_sources: int = 60, seed: int = 0):
    """Time the mmSSR sampler on synthetic integer scores for the 14 capabilities."""
    from mmselect.methods.mmssr_sampler import mmssr_sample, tie_break_ranks

    rng = np.random.default_rng(seed)
    scores = [rng.integers(0, 6, n).astype(float) for _ in ms.CAPABILITIES]
    candidates = np.array(ms.STYLE_CANDIDATES, dtype=object)
    styles = [list(candidates[rng.choice(9, size=int(rng.integers(1, 3)), replace=False)]) for _ in range(n)]
    sources = rng.choice([f"source{i}" for i in range(n_sources)], n).tolist()
    keys = [f"s{i}" for i in range(n)]
    started = time.perf_counter()
    tie = tie_break_ranks(keys, seed)
    tie_s = time.perf_counter() - started
    started = time.perf_counter()
    outcome = mmssr_sample(scores, styles, sources, int(budget * n), tie_rank=tie)
    sample_s = time.perf_counter() - started
    print(f"hardware: {hardware()}")
    print(f"sampler: n={n}, 14 capabilities, {outcome['info']['n_bins']} bins, budget {int(budget * n)}: "
          f"tie-break hash {tie_s:.2f} s, sampling {sample_s:.2f} s ({outcome['info']['rounds']} rounds)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), default="tiny")
    parser.add_argument("--n", type=int, default=32, help="samples")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--new-tokens", default="2,16", help="comma-separated max_new_tokens values to time")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--image-size", type=int, default=None, help="square image side in pixels (default: per arch)")
    parser.add_argument("--sampler-n", type=int, default=0,
                        help="time only the sampler on this many synthetic scored samples (no model)")
    args = parser.parse_args(argv)
    if args.sampler_n:
        return time_sampler(args.sampler_n)

    spec = dict(ARCHS[args.arch])
    spec["image_size"] = args.image_size or spec["image_size"]
    samples = synthetic_samples(args.n, spec["image_size"])
    model, processor, build_s = build_qwen2_vl(
        args.arch, corpus_for_tokenizer(samples), getattr(torch, args.dtype), image_size=spec["image_size"]
    )
    params = sum(p.numel() for p in model.parameters())
    print(f"hardware: {hardware()}")
    print(f"arch {args.arch}: {params / 1e6:.1f}M parameters ({args.dtype}), built in {build_s:.1f} s")
    requests = [(ms.build_messages(turns, len(images), "spatial"), images) for turns, images in samples]
    batch = processor(
        text=[processor.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m, _ in requests[:8]],
        images=[im for _, ims in requests[:8] for im in ims], return_tensors="pt", padding=True,
    )
    tokens = batch["attention_mask"].sum(1).float().mean().item()
    image_tokens = (batch["input_ids"] == model.config.image_token_id).sum(1).float().mean().item()
    print(f"prompt: {tokens:.0f} tokens on average ({image_tokens:.0f} image tokens), {args.n} samples, "
          f"batch {args.batch_size}")
    # warm-up (first call pays one-off costs)
    ms.generate_replies(model, processor, requests[: min(2, args.n)], batch_size=2, max_new_tokens=1, progress=False)
    rates = {}
    for new_tokens in [int(x) for x in args.new_tokens.split(",")]:
        started = time.perf_counter()
        replies = ms.generate_replies(model, processor, requests, batch_size=args.batch_size,
                                      max_new_tokens=new_tokens, progress=False)
        seconds = time.perf_counter() - started
        assert len(replies) == len(requests)
        rates[new_tokens] = args.n / seconds
        print(f"max_new_tokens={new_tokens:>3}: {seconds:8.2f} s, {rates[new_tokens]:.4g} samples/s "
              f"({seconds / args.n:.3g} s/sample) per generation pass")
    if len(rates) >= 2:
        score_rate, style_rate = rates[min(rates)], rates[max(rates)]
        per_sample = 14 / score_rate + 1 / style_rate
        print(f"full mmSSR scoring (14 score passes at {min(rates)} tokens + 1 style pass at {max(rates)} tokens): "
              f"{per_sample:.4g} s/sample = {1 / per_sample:.4g} samples/s")


if __name__ == "__main__":
    main()
